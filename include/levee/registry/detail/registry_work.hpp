// levee: the registry's eviction constants and its work counters (for
// levee's tests).
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace levee {

namespace detail {

/// How many breakers a registry at `max_breakers` samples to choose the one a
/// new key evicts (see \ref basic_breaker_registry).
inline constexpr std::size_t registry_victim_sample = 16;
/// The most entries an idle sweep examines in one hold of the registry's lock.
inline constexpr std::size_t registry_sweep_batch = 256;

/// The work a registry's eviction did, counted for levee's tests (not an
/// interface): entries examined to choose victims at `max_breakers`, and the
/// most entries one idle sweep examined under one hold of the registry's lock.
struct registry_work {
  std::atomic<std::uint64_t> victim_searches{0};      ///< victims looked for at the bound
  std::atomic<std::uint64_t> victim_examined{0};      ///< entries examined for them
  std::atomic<std::uint64_t> sweep_holds{0};          ///< lock holds of the idle sweeps
  std::atomic<std::uint64_t> sweep_most_per_hold{0};  ///< most entries examined in one hold
  std::atomic<std::uint64_t> sweep_examined{0};       ///< entries the idle sweeps examined
  /// Records one lock hold of a sweep that examined `n` entries.
  /// \param n The entries examined.
  void sweep_hold(std::uint64_t n) noexcept {
    sweep_holds.fetch_add(1, std::memory_order_relaxed);
    sweep_examined.fetch_add(n, std::memory_order_relaxed);
    std::uint64_t most = sweep_most_per_hold.load(std::memory_order_relaxed);
    while (n > most &&
           !sweep_most_per_hold.compare_exchange_weak(most, n, std::memory_order_relaxed)) {
    }
  }
};

/// The idle sweep that `get` runs one batch at a time (see
/// \ref basic_breaker_registry): where it is, and since when.
struct alignas(64) sweep_progress {  // its own cache line: every get reads `running`
  std::atomic<bool> running{false};  ///< a sweep is under way (written under `busy`)
  std::atomic<bool> busy{false};     ///< a get runs one of its batches: the others skip it
  std::size_t cursor = 0;            ///< under `busy`: the next entry is slots_[cursor - 1]
  std::int64_t started = 0;          ///< under `busy`: the time the sweep judges idleness at
  std::atomic<int> gets_waiting{0};  ///< gets waiting for the registry's lock
};

}  // namespace detail

}  // namespace levee
