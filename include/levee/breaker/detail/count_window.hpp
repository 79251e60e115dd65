// levee: the breaker's count window (`window_kind::count`), one of the window
// kinds behind the seam of breaker/detail/window_kinds.hpp: the outcomes of
// the last `window_calls` calls, as two bit rings (failed, slow) and their
// running sums. It keeps nothing per shard: its state is the breaker's shared
// part (after the shards, in their block), recorded and read under shard 0's
// lock (`shared_only`: the core takes that lock for it, the only lock a call
// takes). Plain loads and stores only.
#pragma once

#include <levee/breaker/options.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/core/vocabulary.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <new>
#include <type_traits>

namespace levee::detail {

class count_window {
 public:
  // ---- the window kind (breaker/detail/window_kinds.hpp) ---------------------
  static constexpr window_kind kind = window_kind::count;
  static constexpr const char* name = "count";
  static constexpr bool needs_time = false;
  static constexpr bool fleet_shareable = false;  // no buckets of time to add up
  static constexpr bool shared_only = true;       // recorded under shard 0's lock
  static void validate(const breaker_options& o) {
    if (o.minimum_calls > o.window_calls)
      reject_option("breaker_options", "minimum_calls",
                    "must not exceed window_calls with a count window");
  }

  explicit count_window(const breaker_options& o) noexcept
      : size_(static_cast<std::uint32_t>(o.window_calls)) {}

  std::size_t part_bytes() const noexcept { return 0; }
  /// The shared part: the ring's header, then the failure bits, then the slow bits.
  std::size_t shared_bytes() const noexcept { return sizeof(ring) + 2 * words() * 8; }
  void init_part(std::byte*) const noexcept {}
  void init_shared(std::byte* shared) const noexcept {
    new (shared) ring();
    std::fill_n(bits(shared), 2 * words(), std::uint64_t{0});
  }

  /// Records a call (under shard 0's lock, which the core took to check the
  /// call's generation: `shared_only`). The stamp is always 0: a call that is neither failed
  /// nor slow can only replace one that was as good or worse, so it never
  /// raises a rate.
  [[gnu::always_inline]] std::int64_t record(std::byte*, std::byte* shared,
                                             std::chrono::nanoseconds, bool failed,
                                             bool slow) const noexcept {
    ring& r = header(shared);
    std::uint64_t* const b = bits(shared);
    std::uint64_t& fail_word = b[r.next / 64];
    std::uint64_t& slow_word = b[words() + r.next / 64];
    const std::uint64_t bit = std::uint64_t{1} << (r.next % 64);
    if (r.filled == size_) {  // the slot holds the oldest call: evict it
      if (fail_word & bit) --r.failures;
      if (slow_word & bit) --r.slow;
    } else {
      ++r.filled;
    }
    fail_word = failed ? (fail_word | bit) : (fail_word & ~bit);
    slow_word = slow ? (slow_word | bit) : (slow_word & ~bit);
    r.failures += failed;
    r.slow += slow;
    r.next = r.next + 1 == size_ ? 0 : r.next + 1;
    return 0;
  }
  std::int64_t stamp_at(const std::byte*, std::chrono::nanoseconds) const noexcept { return 0; }
  window_totals part_totals(std::byte*, std::int64_t) const noexcept { return {}; }
  /// Under shard 0's lock.
  window_totals shared_totals(std::byte* shared) const noexcept {
    const ring& r = header(shared);
    return {r.filled, r.failures, r.slow};
  }
  void clear_part(std::byte*) const noexcept {}
  /// Empties the window, under shard 0's lock, with its generation moved:
  /// no call of an older one records after this.
  void clear_shared(std::byte* shared) const noexcept {
    ring& r = header(shared);
    std::fill_n(bits(shared), 2 * words(), std::uint64_t{0});
    r.next = r.filled = r.failures = r.slow = 0;
  }

 private:
  struct alignas(8) ring {  // and the bits: under shard 0's lock
    std::uint32_t next = 0;
    std::uint32_t filled = 0;
    std::uint32_t failures = 0;
    std::uint32_t slow = 0;
  };
  static_assert(std::is_trivially_destructible_v<ring> && sizeof(ring) % 8 == 0);

  std::size_t words() const noexcept { return (size_ + 63) / 64; }
  static ring& header(std::byte* shared) noexcept {
    return *std::launder(reinterpret_cast<ring*>(shared));
  }
  static std::uint64_t* bits(std::byte* shared) noexcept {
    return reinterpret_cast<std::uint64_t*>(shared + sizeof(ring));
  }

  std::uint32_t size_;
};

}  // namespace levee::detail
