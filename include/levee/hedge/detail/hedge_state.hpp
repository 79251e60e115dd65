// levee: a hedge's shared state (sans-I/O, any thread): the latency
// histogram behind the percentile delay, the budget, and the counters.
#pragma once

#include <levee/core/detail/event_hub.hpp>
#include <levee/core/detail/spinlock.hpp>
#include <levee/hedge/options.hpp>

#include <array>
#include <atomic>
#include <cstdint>

namespace levee::detail {

/// Log-spaced latency buckets: values below 8 ns each have one; above, 8
/// buckets per power of two (each at most 12.5 % wide), up to 2^63 ns.
struct latency_buckets {
  static constexpr std::size_t count = 8 + 60 * 8;
  /// The bucket of `ns` (negative: 0).
  static std::size_t index(std::int64_t ns) noexcept;
  /// The upper bound of bucket `i` (exclusive; saturated at max).
  static std::int64_t upper(std::size_t i) noexcept;
};

/// The state every call of one hedge shares. Each member function takes a
/// short internal lock (a few stores, a scan of the buckets at most once
/// per 16 samples) or reads atomics: callers on any thread. `now` is in ns
/// on the hedge's clock.
class hedge_state {
 public:
  explicit hedge_state(const hedge_options& options);

  const hedge_options& options() const noexcept { return options_; }

  /// A call starts: counted in the budget's window. \return the delay
  /// before its first hedge.
  std::int64_t begin_call(std::int64_t now) noexcept;
  /// May a hedge start now? true: counted in the window; false: a budget
  /// refusal.
  bool try_hedge(std::int64_t now) noexcept;
  /// An attempt took `latency_ns` (or was cancelled after that long: a
  /// lower bound of its latency).
  void sample(std::int64_t now, std::int64_t latency_ns) noexcept;

  /// A counter.
  void count(std::atomic<std::uint64_t> hedge_state::*c) noexcept {
    (this->*c).fetch_add(1, std::memory_order_relaxed);
  }

  hedge_metrics metrics(std::int64_t now) noexcept;

  /// The listeners (`basic_hedge::listen`).
  event_hub<hedge_event> events;
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> attempts{0};
  std::atomic<std::uint64_t> hedges{0};
  std::atomic<std::uint64_t> hedge_wins{0};
  std::atomic<std::uint64_t> budget_refusals{0};
  std::atomic<std::uint64_t> not_idempotent{0};
  std::atomic<std::uint64_t> rejections{0};
  std::atomic<std::uint64_t> cancelled{0};

 private:
  struct window {
    std::array<std::uint32_t, latency_buckets::count> buckets{};
    std::uint64_t samples = 0;
    std::uint64_t calls = 0;
    std::uint64_t hedges = 0;
  };
  void rotate(std::int64_t now) noexcept;  // under lock_
  void estimate() noexcept;                // under lock_
  window& current() noexcept { return windows_[cur_]; }
  window& previous() noexcept { return windows_[cur_ ^ 1]; }

  hedge_options options_;
  std::int64_t fixed_ns_;
  std::int64_t window_ns_;
  spinlock lock_;  // the windows, their start, the pending-sample count
  std::array<window, 2> windows_{};
  unsigned cur_ = 0;
  std::int64_t start_ = 0;  // of the current window
  bool started_ = false;
  unsigned since_estimate_ = 0;
  std::atomic<std::int64_t> delay_ns_;  // what the next call uses
};

}  // namespace levee::detail
