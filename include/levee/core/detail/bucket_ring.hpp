// levee: a ring of time buckets, the shape shared by the breaker's time
// window and the retry budget.
//
// Time is cut into buckets `width` nanoseconds wide; bucket `i` covers
// [i * width, (i + 1) * width). A ring of `size` buckets keeps the newest
// (`head`) and the `size - 1` before it. Moving the head forward clears the
// buckets it passes over, handing each to `evict` first (the retry budget
// keeps running sums; the breaker sums on demand and passes nothing).
#pragma once

#include <cstdint>
#include <limits>

namespace levee::detail {

/// Floor division (toward negative infinity) for a positive `b`; safe for every
/// `a`, `numeric_limits<int64_t>::min()` included.
constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) noexcept {
  return a / b - (a % b != 0 && a < 0 ? 1 : 0);  // no negation: no overflow
}

/// Where the newest bucket is. `started()` is false until the first advance.
struct ring_cursor {
  std::int64_t head = std::numeric_limits<std::int64_t>::min();  // newest bucket's index
  std::uint32_t pos = 0;                                         // its position in the ring

  bool started() const noexcept { return head != std::numeric_limits<std::int64_t>::min(); }
};

struct no_evict {
  template <class Bucket>
  void operator()(const Bucket&) const noexcept {}
};

/// Makes bucket `index` (newer than the head, or the first) the head of the
/// ring `ring[0, size)`, clearing (`= {}`) every bucket it passes over after
/// `evict(bucket)`. Returns the head's position.
template <class Bucket, class Evict = no_evict>
std::uint32_t ring_advance(Bucket* ring, std::uint32_t size, ring_cursor& c, std::int64_t index,
                           Evict&& evict = {}) noexcept {
  if (!c.started() || index - c.head >= static_cast<std::int64_t>(size)) {
    for (std::uint32_t i = 0; i < size; ++i) {
      evict(ring[i]);
      ring[i] = {};
    }
    c.pos = 0;
  } else {
    for (auto steps = static_cast<std::uint32_t>(index - c.head); steps > 0; --steps) {
      if (++c.pos == size) c.pos = 0;
      evict(ring[c.pos]);
      ring[c.pos] = {};
    }
  }
  c.head = index;
  return c.pos;
}

/// The position of bucket `index`, at most `size - 1` older than the head;
/// `size` (no position) when it is older than the whole ring.
inline std::uint32_t ring_position(std::uint32_t size, const ring_cursor& c,
                                   std::int64_t index) noexcept {
  const std::int64_t back = c.head - index;
  if (back < 0 || back >= static_cast<std::int64_t>(size)) return size;
  const auto b = static_cast<std::uint32_t>(back);
  return c.pos >= b ? c.pos - b : c.pos + size - b;
}

}  // namespace levee::detail
