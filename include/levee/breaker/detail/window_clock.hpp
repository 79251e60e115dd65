// levee: how the time window reads the time.
#pragma once

#include <chrono>

#if defined(__linux__)
#include <time.h>
#endif

namespace levee::detail {

/// The time used to place a finished call in a bucket of the time window.
///
/// For most clocks, `Clock::now()`. For `std::chrono::steady_clock` on Linux,
/// `CLOCK_MONOTONIC_COARSE`: the same clock as steady_clock (CLOCK_MONOTONIC),
/// read from the last kernel tick (1 to 4 ms old) at a fraction of the cost
/// (about 8 ns against 32 ns on the reference machine; see bench/README.md).
/// The only effect is that a call finishing within one tick after a bucket
/// boundary may be counted in the bucket before. Timers and slow-call
/// durations always use `Clock::now()`.
template <class Clock>
inline std::chrono::nanoseconds window_now() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
}

#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
template <>
inline std::chrono::nanoseconds window_now<std::chrono::steady_clock>() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::chrono::nanoseconds(static_cast<long long>(ts.tv_sec) * 1'000'000'000LL + ts.tv_nsec);
}
#endif

}  // namespace levee::detail
