// levee: the breaker's sliding time window.
//
// `window` is cut into `window_buckets` buckets of calls, failures and slow
// calls (a ring: core/detail/bucket_ring.hpp). The breaker keeps one ring per
// shard (per thread slot, on cache lines of its own); a shard's ring is only
// touched under that shard's lock, and the window is the sum over shards.
// Everything here is a handful of plain loads and stores: it runs under the
// shard's spinlock.
#pragma once

#include <levee/core/detail/bucket_ring.hpp>
#include <levee/core/vocabulary.hpp>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <limits>

namespace levee::detail {

struct time_bucket {
  std::uint32_t calls;
  std::uint32_t failures;
  std::uint32_t slow;
};

class time_window {
 public:
  /// One shard's ring position (the ring itself is the shard's trailing
  /// memory, `buckets()` of `time_bucket`). Sixteen bytes: a shard's header
  /// and ten buckets fit three cache lines.
  struct slice {
    ring_cursor cursor;
  };

  time_window(std::chrono::nanoseconds window, std::uint32_t buckets) noexcept
      : width_ns_(window.count() / static_cast<std::int64_t>(buckets)), buckets_(buckets) {}

  std::uint32_t buckets() const noexcept { return buckets_; }
  std::size_t ring_bytes() const noexcept { return buckets_ * sizeof(time_bucket); }

  /// The bucket that holds `now`: the head's without a division when it is
  /// still current (one multiplication instead).
  std::int64_t index_of(const slice& s, std::chrono::nanoseconds now) const noexcept {
    const std::int64_t t = now.count();
    if (s.cursor.started()) {
      // <= a time seen, so no overflow for any clock that stays a bucket
      // width away from the int64 range's lower end.
      const std::int64_t head_start = s.cursor.head * width_ns_;
      if (t >= head_start && t - head_start < width_ns_) return s.cursor.head;
    }
    return floor_div(t, width_ns_);
  }

  /// Makes `index` the head if it is newer (clearing the buckets passed over).
  void advance_to(slice& s, time_bucket* ring, std::int64_t index) const noexcept {
    if (index > s.cursor.head) advance(s, ring, index);
  }

  /// Counts one call in bucket `index`, or, when that bucket is older than the
  /// whole window, in the newest. Returns the bucket it went in.
  std::int64_t record(slice& s, time_bucket* ring, std::int64_t index, bool failed,
                      bool slow) const noexcept {
    std::uint32_t pos;
    if (index == s.cursor.head) {
      pos = s.cursor.pos;
    } else if (index > s.cursor.head) {
      pos = advance(s, ring, index);
    } else {
      // Finished a little before a call another thread already recorded in a
      // later bucket: still inside the window, it goes in its own bucket.
      pos = ring_position(buckets_, s.cursor, index);
      if (pos == buckets_) {  // older than the whole window: counted as the newest
        index = s.cursor.head;
        pos = s.cursor.pos;
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

  /// Overwrites bucket `index` (the head after advancing) with the counts given:
  /// a test hook.
  void preload(slice& s, time_bucket* ring, std::int64_t index, time_bucket counts) const noexcept {
    advance_to(s, ring, index);
    if (index == s.cursor.head) ring[s.cursor.pos] = counts;
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

  void clear(slice& s, time_bucket* ring) const noexcept {
    std::memset(static_cast<void*>(ring), 0, ring_bytes());
    s = slice{};
  }

 private:
  std::uint32_t advance(slice& s, time_bucket* ring, std::int64_t index) const noexcept {
    return ring_advance(ring, buckets_, s.cursor, index);
  }

  std::int64_t width_ns_;
  std::uint32_t buckets_;
};

}  // namespace levee::detail
