// levee: duration arithmetic that saturates at the limits of nanoseconds
// instead of overflowing: `nanoseconds::max()` means "forever".
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <limits>
#include <ratio>
#include <type_traits>

namespace levee::detail {

using nanos = std::chrono::nanoseconds;

/// `d` in nanoseconds, rounded up (as `std::chrono::ceil`), clamped to
/// [nanoseconds::min(), nanoseconds::max()] instead of overflowing.
template <class Rep, class Period>
constexpr nanos saturating_ns(std::chrono::duration<Rep, Period> d) noexcept {
  using from = std::chrono::duration<Rep, Period>;
  if constexpr (std::is_floating_point_v<Rep>) {
    const long double ns = std::ceil(static_cast<long double>(d.count()) * Period::num *
                                     std::nano::den / (static_cast<long double>(Period::den)));
    if (!(ns == ns)) return nanos::zero();  // NaN
    if (ns >= static_cast<long double>(nanos::max().count())) return nanos::max();
    if (ns <= static_cast<long double>(nanos::min().count())) return nanos::min();
    return nanos(static_cast<nanos::rep>(ns));
  } else if constexpr (std::ratio_less_equal_v<Period, std::nano>) {
    return std::chrono::ceil<nanos>(d);  // never larger in magnitude
  } else {
    // A coarser unit: compare in that unit first, where nothing overflows.
    constexpr auto top = std::chrono::floor<from>(nanos::max());
    constexpr auto bottom = std::chrono::ceil<from>(nanos::min());
    if (d > top) return nanos::max();
    if (d < bottom) return nanos::min();
    return std::chrono::duration_cast<nanos>(d);
  }
}

/// a + b, clamped to the range of nanoseconds.
constexpr nanos saturating_add(nanos a, nanos b) noexcept {
  if (b > nanos::zero() && a > nanos::max() - b) return nanos::max();
  if (b < nanos::zero() && a < nanos::min() - b) return nanos::min();
  return a + b;
}

/// a + b for time points of any clock with a nanosecond-or-coarser duration:
/// clamped to the clock's range.
template <class TimePoint>
constexpr TimePoint saturating_add(TimePoint t, nanos d) noexcept {
  using duration = typename TimePoint::duration;
  const auto since = t.time_since_epoch();
  const auto step = std::chrono::ceil<duration>(d);
  if (step > duration::zero() && since > duration::max() - step) return TimePoint::max();
  if (step < duration::zero() && since < duration::min() - step) return TimePoint::min();
  return t + step;
}

/// A duration in nanoseconds given as a double, rounded to the nearest,
/// clamped to [0, nanoseconds::max()] (NaN: 0).
inline nanos saturating_from_double(double ns) noexcept {
  if (!(ns > 0)) return nanos::zero();
  // 2^63 is the first double above nanoseconds::max().
  if (ns >= 9223372036854775808.0) return nanos::max();
  return nanos(std::llround(ns));
}

}  // namespace levee::detail
