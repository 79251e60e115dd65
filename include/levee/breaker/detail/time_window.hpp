// levee: the breaker's sliding time window (`window_kind::time`), one of the
// window kinds behind the seam of breaker/detail/window_kinds.hpp.
//
// `window` is cut into `window_buckets` buckets of calls, failures and slow
// calls (a ring: core/detail/bucket_ring.hpp). The breaker keeps one ring per
// shard (per thread slot, on cache lines of its own): a shard's part is its
// ring's cursor followed by the ring, only touched under that shard's lock,
// and the window is the sum over shards. Everything here is a handful of
// plain loads and stores: it runs under the shard's spinlock.
#pragma once

#include <levee/breaker/options.hpp>
#include <levee/core/detail/bucket_ring.hpp>
#include <levee/core/vocabulary.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <new>

namespace levee::detail {

struct time_bucket {
  std::uint32_t calls;
  std::uint32_t failures;
  std::uint32_t slow;
};

// Twelve bytes, packed: the core keeps them in its first cache line, with
// its shards' stride in the four that would be padding.
class [[gnu::packed]] time_window {
 public:
  // ---- the window kind (breaker/detail/window_kinds.hpp) ---------------------
  static constexpr window_kind kind = window_kind::time;
  static constexpr const char* name = "time";
  static constexpr bool needs_time = true;       // `record` reads `now`
  static constexpr bool fleet_shareable = true;  // the fleet link adds its buckets up
  static constexpr bool shared_only = false;     // a ring per shard, under its lock
  /// `window` and `window_buckets` are checked for every kind (options.ipp).
  static void validate(const breaker_options&) {}

  explicit time_window(const breaker_options& o) noexcept
      : width_ns_(o.window.count() / static_cast<std::int64_t>(o.window_buckets)),
        buckets_(static_cast<std::uint32_t>(o.window_buckets)) {}

  /// A shard's part: its cursor, then its ring of `buckets()` buckets.
  std::size_t part_bytes() const noexcept { return sizeof(ring_cursor) + ring_bytes(); }
  std::size_t shared_bytes() const noexcept { return 0; }
  void init_part(std::byte* part) const noexcept { clear_part(part); }
  void init_shared(std::byte*) const noexcept {}

  /// Counts one call that ended at `now` in its bucket, under its shard's
  /// lock; returns the bucket (the stamp: within one bucket nothing leaves
  /// the window, so a success cannot raise a rate).
  [[gnu::always_inline]] std::int64_t record(std::byte* part, std::byte*,
                                             std::chrono::nanoseconds now, bool failed,
                                             bool slow) const noexcept {
    ring_cursor& c = cursor(part);
    return count_in(c, ring(part), index_of(c, now), failed, slow);
  }
  /// The stamp of `now` (its bucket).
  std::int64_t stamp_at(const std::byte* part, std::chrono::nanoseconds now) const noexcept {
    return index_of(cursor(part), now);
  }
  /// One shard's part of the window as of bucket `stamp`, under its lock.
  window_totals part_totals(std::byte* part, std::int64_t stamp) const noexcept {
    ring_cursor& c = cursor(part);
    if (stamp > c.head) ring_advance(ring(part), buckets_, c, stamp);
    return sum(ring(part));
  }
  window_totals shared_totals(std::byte*) const noexcept { return {}; }
  void clear_part(std::byte* part) const noexcept {
    new (part) ring_cursor();
    std::memset(static_cast<void*>(ring(part)), 0, ring_bytes());
  }
  void clear_shared(std::byte*) const noexcept {}

  /// Test hook: overwrites the bucket of `now` (the head after advancing).
  void preload(std::byte* part, std::chrono::nanoseconds now, window_totals counts) const noexcept {
    ring_cursor& c = cursor(part);
    const std::int64_t index = index_of(c, now);
    if (index > c.head) ring_advance(ring(part), buckets_, c, index);
    if (index == c.head) {
      ring(part)[c.pos] = {static_cast<std::uint32_t>(counts.calls),
                           static_cast<std::uint32_t>(counts.failures),
                           static_cast<std::uint32_t>(counts.slow)};
    }
  }

  std::uint32_t buckets() const noexcept { return buckets_; }

 private:
  std::size_t ring_bytes() const noexcept { return buckets_ * sizeof(time_bucket); }
  static ring_cursor& cursor(std::byte* part) noexcept {
    return *std::launder(reinterpret_cast<ring_cursor*>(part));
  }
  static const ring_cursor& cursor(const std::byte* part) noexcept {
    return *std::launder(reinterpret_cast<const ring_cursor*>(part));
  }
  static time_bucket* ring(std::byte* part) noexcept {
    return reinterpret_cast<time_bucket*>(part + sizeof(ring_cursor));
  }

  /// The bucket that holds `now`: the head's without a division when it is
  /// still current (one multiplication instead).
  [[gnu::always_inline]] std::int64_t index_of(const ring_cursor& c,
                                               std::chrono::nanoseconds now) const noexcept {
    const std::int64_t t = now.count();
    if (c.started()) {
      // <= a time seen, so no overflow for any clock that stays a bucket
      // width away from the int64 range's lower end.
      const std::int64_t head_start = c.head * width_ns_;
      if (t >= head_start && t - head_start < width_ns_) return c.head;
    }
    return floor_div(t, width_ns_);
  }

  /// Counts one call in bucket `index`, or, when that bucket is older than the
  /// whole window, in the newest. Returns the bucket it went in.
  [[gnu::always_inline]] std::int64_t count_in(ring_cursor& c, time_bucket* ring,
                                               std::int64_t index, bool failed,
                                               bool slow) const noexcept {
    std::uint32_t pos;
    if (index == c.head) {
      pos = c.pos;
    } else if (index > c.head) {
      pos = ring_advance(ring, buckets_, c, index);
    } else {
      // Finished a little before a call another thread already recorded in a
      // later bucket: still inside the window, it goes in its own bucket.
      pos = ring_position(buckets_, c, index);
      if (pos == buckets_) {  // older than the whole window: counted as the newest
        index = c.head;
        pos = c.pos;
      }
    }
    time_bucket& b = ring[pos];
    // A bucket about to pass 2^32 - 1 calls (a long bucket on a busy shard)
    // is halved rather than wrapped: its rates are kept, and it weighs half
    // as much against the other buckets from then on. (Wider counters would
    // double the shards' memory for a case that needs 4e9 calls in one bucket
    // of one shard.)
    if (b.calls == std::numeric_limits<std::uint32_t>::max()) [[unlikely]] {
      b.calls >>= 1;
      b.failures >>= 1;
      b.slow >>= 1;
    }
    ++b.calls;
    b.failures += failed;
    b.slow += slow;
    return index;
  }

  window_totals sum(const time_bucket* ring) const noexcept {
    window_totals t;
    for (std::uint32_t i = 0; i < buckets_; ++i) {
      t.calls += ring[i].calls;
      t.failures += ring[i].failures;
      t.slow += ring[i].slow;
    }
    return t;
  }

  std::int64_t width_ns_;
  std::uint32_t buckets_;
};
static_assert(sizeof(time_window) == 12);

}  // namespace levee::detail
