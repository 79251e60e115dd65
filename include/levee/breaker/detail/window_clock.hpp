// levee: how the time window reads the time, and when a duration may be
// timed on the same cheap clock.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

#if defined(__linux__)
#include <time.h>
#endif

namespace levee::detail {

/// The time used to place a finished call in a bucket of the time window.
///
/// For most clocks, `Clock::now()`. For `std::chrono::steady_clock` on Linux,
/// `CLOCK_MONOTONIC_COARSE`: the same clock as steady_clock (CLOCK_MONOTONIC),
/// read from the last kernel tick (1 to 4 ms old) at a fraction of the cost
/// (about 3 to 8 ns against 23 to 32 ns on the reference machine; see
/// bench/README.md). The only effect is that a call finishing within one tick
/// after a bucket boundary may be counted in the bucket before. Timers always
/// use `Clock::now()`; slow-call durations use this clock only above
/// `coarse_line` (see there).
template <class Clock>
inline std::chrono::nanoseconds window_now() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
}

/// The shortest duration that is timed with two `window_now` reads instead
/// of two `Clock::now()` reads: 100 times the coarse clock's resolution
/// (`clock_getres`; 4 ms on a 250 Hz kernel, so 400 ms). A duration timed on
/// it is off by less than one tick either way, under 1 % of any threshold at
/// or above the line. `nanoseconds::max()` (never) for a clock without a
/// coarse variant (where `window_now` is `Clock::now()` anyway: a
/// manual_clock's virtual time is read as before).
template <class Clock>
inline std::chrono::nanoseconds coarse_line() noexcept {
  return std::chrono::nanoseconds::max();
}

/// True when a threshold of `d` is timed on the coarse clock (`coarse_line`).
template <class Clock>
inline bool coarse_enough(std::chrono::nanoseconds d) noexcept {
  return d >= coarse_line<Clock>();
}

#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
template <>
[[gnu::always_inline]] inline std::chrono::nanoseconds
window_now<std::chrono::steady_clock>() noexcept {
  timespec ts;
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::chrono::nanoseconds(static_cast<long long>(ts.tv_sec) * 1'000'000'000LL + ts.tv_nsec);
}

/// 100 x the resolution of CLOCK_MONOTONIC_COARSE, read once (0: not yet).
inline std::atomic<std::int64_t> coarse_line_ns{0};
[[gnu::noinline]] inline std::int64_t read_coarse_line() noexcept {
  timespec res{};
  std::int64_t line = std::chrono::nanoseconds::max().count();  // no resolution: never coarse
  if (::clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec < 1000)
    line = 100 * (static_cast<std::int64_t>(res.tv_sec) * 1'000'000'000LL + res.tv_nsec);
  if (line <= 0) line = std::chrono::nanoseconds::max().count();
  coarse_line_ns.store(line, std::memory_order_relaxed);
  return line;
}
template <>
inline std::chrono::nanoseconds coarse_line<std::chrono::steady_clock>() noexcept {
  std::int64_t line = coarse_line_ns.load(std::memory_order_relaxed);
  if (line == 0) [[unlikely]]
    line = read_coarse_line();
  return std::chrono::nanoseconds(line);
}
#endif

}  // namespace levee::detail
