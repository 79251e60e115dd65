/// \file
/// A virtual clock for tests, whose timers fire when the test moves it.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>

namespace levee {

/// A clock that only moves when told to. Use it as the breaker's clock
/// (`basic_circuit_breaker<manual_clock>`: its `wait_traits` are found) and as
/// the clock of your own fake downstream's timers; then a test moves time with
/// `advance()` and runs what became due with `io_context::poll()`:
///
///     levee::manual_clock::reset();
///     levee::manual_clock::advance(30s);
///     ioc.poll();  // timers of this clock that are now due complete
///
/// The time is one process-wide value per `Tag` (like `steady_clock`), safe
/// to read and move from any thread. Its `wait_traits` make Asio's reactor
/// re-check the clock on every turn instead of sleeping until a deadline that
/// means nothing in real time: while a timer of this clock is pending, `run()`
/// spins; tests use `poll()`.
template <class Tag = void>
class basic_manual_clock {
 public:
  using rep = std::int64_t;                                        ///< a count of ticks
  using period = std::nano;                                        ///< a tick is 1 ns
  using duration = std::chrono::nanoseconds;                       ///< `rep` and `period`
  using time_point = std::chrono::time_point<basic_manual_clock>;  ///< a time of this clock
  static constexpr bool is_steady = true;  ///< only `set` and `reset` move it back

  /// The current time, counted as a read (`read_count`).
  /// \return the time the tests set.
  static time_point now() noexcept {
    reads().fetch_add(1, std::memory_order_relaxed);
    return time_point(duration(ticks().load(order)));
  }

  /// How many times `now()` was called (for tests that count clock reads).
  /// \return the reads since the process started, of this `Tag`'s clock.
  static std::uint64_t read_count() noexcept { return reads().load(std::memory_order_relaxed); }

  /// Moves the clock forward.
  /// \param d How far (>= 0), converted to nanoseconds (toward zero).
  template <class Rep, class Period>
  static void advance(std::chrono::duration<Rep, Period> d) noexcept {
    ticks().fetch_add(std::chrono::duration_cast<duration>(d).count(), order);
  }

  /// Sets the clock to `t`. Tests call `reset()` first so that each starts at
  /// the same time.
  /// \param t The new time (it may go back).
  static void set(time_point t) noexcept { ticks().store(t.time_since_epoch().count(), order); }

  /// Back to the epoch.
  static void reset() noexcept { set(time_point()); }

  /// Asio wait traits: never block waiting for this clock.
  struct wait_traits {
    /// How long the reactor may sleep for a relative wait.
    /// \return zero: check again at once.
    static duration to_wait_duration(const duration&) noexcept { return duration::zero(); }
    /// How long the reactor may sleep for a timer's expiry.
    /// \return zero: check again at once.
    static duration to_wait_duration(const time_point&) noexcept { return duration::zero(); }
  };

 private:
  static constexpr std::memory_order order = std::memory_order_seq_cst;
  static std::atomic<rep>& ticks() noexcept {
    static std::atomic<rep> value{0};
    return value;
  }
  static std::atomic<std::uint64_t>& reads() noexcept {
    static std::atomic<std::uint64_t> value{0};
    return value;
  }
};

/// The virtual clock tests use.
using manual_clock = basic_manual_clock<>;

}  // namespace levee
