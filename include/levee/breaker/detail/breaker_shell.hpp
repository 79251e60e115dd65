// levee: the Asio shell around the breaker's core.
//
// `breaker_impl` is the shared state behind a `basic_circuit_breaker`: the
// sans-I/O core (breaker/detail/breaker_core.hpp), the open timer, and the
// telemetry (breaker/detail/breaker_telemetry.hpp, compiled once). It is a template
// only for what needs the clock: reading it, and its timers.
#pragma once

#include <levee/breaker/detail/breaker_core.hpp>
#include <levee/breaker/detail/breaker_telemetry.hpp>
#include <levee/breaker/detail/window_clock.hpp>
#include <levee/breaker/observe.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/sampler.hpp>
#include <levee/core/detail/small_mutex.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/core/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/wait_traits.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

namespace levee::detail {

namespace asio = boost::asio;

template <class Shell>
class basic_fleet_hook;  // breaker/detail/fleet_hook.hpp

template <class Clock, class WaitTraits>
class breaker_impl final : public std::enable_shared_from_this<breaker_impl<Clock, WaitTraits>>,
                           private stuck_alarm {
 public:
  using timer_type = asio::basic_waitable_timer<Clock, WaitTraits, asio::any_io_executor>;
  using time_point = typename Clock::time_point;
  using clock_type = Clock;

  breaker_impl(asio::any_io_executor ex, breaker_options options, std::string name);

  /// The clock's time since its epoch.
  static nanos clock_now() noexcept {
    return std::chrono::duration_cast<nanos>(Clock::now().time_since_epoch());
  }

  /// The breaker object is gone: its timers stop (nothing of it stays pending
  /// on the executor), and the shared state lives on until the last call in
  /// flight ends (`leave`), or goes now if there is none.
  static void detach(std::shared_ptr<breaker_impl> self) noexcept;

  /// A call is done with the shared state (see `call_scope`).
  [[gnu::always_inline]] void leave() noexcept {
    if (core_.leave()) [[unlikely]]
      release_last_owner();
  }

  /// The options in force: valid as long as the shared state (see
  /// `breaker_core::options`).
  const breaker_options& options() const noexcept { return core_.options(); }

  /// See `basic_circuit_breaker::reconfigure`.
  void reconfigure(const breaker_options& options);
  breaker_core& core() noexcept { return core_; }
  const breaker_core& core() const noexcept { return core_; }
  breaker_telemetry& telemetry() noexcept { return telemetry_; }
  asio::any_io_executor get_executor() noexcept { return timer_.get_executor(); }
  std::string_view name() const noexcept { return telemetry_.name(); }

  outcome classify(const call_result& r) const noexcept;

  /// The outcome of a call that returned `value`. Without a classifier the
  /// default rules need no `call_result`: a value is a success, a tuple's
  /// error_code decides.
  template <class T>
  outcome classify_value(const T& value) const noexcept {
    if (options().classifier) return classify(make_value_result(value));
    if constexpr (is_error_tuple_v<T>) {
      const boost::system::error_code& ec = std::get<0>(value);
      if (!ec) return outcome::success;
      // As default_classify: cancellations and inner levee rejections say
      // nothing of the downstream's health.
      return is_cancellation(ec) || is_rejection(ec) ? outcome::ignored : outcome::failure;
    } else {
      return outcome::success;
    }
  }

  /// How `start_time` read a call's start, for `finish`.
  enum class start_kind : std::uint8_t {
    none,     // no read (slow-call detection off, the call not sampled)
    coarse,   // `window_now`: slow-call detection with a threshold at or above
              // `coarse_line`; the end is one `window_now` read, the window's too
    precise,  // `Clock::now()`: slow-call detection below the line
    sampled,  // `Clock::now()`: one of the calls sampled for the automatic
              // probe deadline (about one in 16)
  };
  /// When a call started (the clock's time since its epoch), and how it was read.
  struct call_start {
    nanos at{};
    start_kind kind = start_kind::none;
  };

  /// When a call starts: what slow-call detection measures from. Off: no
  /// clock read, except for about one call in 16 measured for the automatic
  /// probe deadline (`probe_timeout`). On, with a threshold at or above
  /// `coarse_line` (100 x the coarse clock's resolution): the coarse clock,
  /// and the sampled calls on the precise one; below it, the precise clock.
  [[gnu::always_inline]] call_start start_time() const noexcept {
    const nanos slow = core_.slow_call_duration();
    if (slow > nanos::zero()) [[unlikely]]
      return start_timed(slow);
    if (options().probe_timeout == nanos::zero() && sample_latency()) [[unlikely]]
      return {sampled_now(), start_kind::sampled};
    return {};
  }
  [[gnu::noinline]] static nanos sampled_now() noexcept { return clock_now(); }
  /// `start_time` with slow-call detection on (`slow`), out of line.
  call_start start_timed(nanos slow) const noexcept;

  /// The deadline of a probe admitted now: `options().probe_timeout`, or the
  /// automatic one (see options.hpp); `nanoseconds::max()` for none. Read on
  /// the probe's path only.
  nanos probe_timeout() const noexcept;

  /// A duration measured anyway (slow-call detection, a guard set's call)
  /// feeds the automatic probe deadline's estimate at the rate of the sampled
  /// ones (about one call in 16).
  void sample_measured(outcome o, nanos elapsed) noexcept {
    if (o == outcome::success && options().probe_timeout == nanos::zero() && sample_latency())
        [[unlikely]]
      note_latency(elapsed);
  }

  /// The automatic probe deadline's p99 estimate (zero: no sample yet).
  nanos latency_p99() const noexcept { return nanos(latency_p99_.load(std::memory_order_relaxed)); }

  /// Records a finished call and acts on what the core decides, then
  /// leaves (`leave`: the call's last use of the shared state). `r`: the
  /// call's result, when known (for the last failure of a transition event).
  /// Inline for the common case (a CLOSED call's success, not timed:
  /// `breaker_core::complete_success_and_leave`, its event posted first when
  /// a listener wants successes), out of line (`finish_general`) for every
  /// other.
  [[gnu::always_inline]] void finish_and_leave(permit p, outcome o, call_start start,
                                               const call_result* r) noexcept {
    if (start.kind == start_kind::none && o == outcome::success) [[likely]] {
      if (telemetry_.wanted() & call_events) [[unlikely]]
        return finish_listened_success(p, r);
      const breaker_core::fast_end e = core_.complete_success_and_leave(
          p, [](bool read) __attribute__((always_inline)) {
            return read ? window_now<Clock>() : nanos::zero();
          },
          [this, p](std::int64_t stamp, std::uint32_t epoch) { settle(p, stamp, epoch); });
      if (e == breaker_core::fast_end::left) [[likely]]
        return;
      if (e == breaker_core::fast_end::last) return release_last_owner();
    }
    finish_general(p, o, start, r);
    leave();
  }
  /// `finish_and_leave` without the leave, for any call, out of line.
  /// `told`: its call event was posted already.
  void finish_general(permit p, outcome o, call_start start, const call_result* r,
                      bool told = false) noexcept;
  /// `finish_and_leave` for a success not timed while some listener wants
  /// call events, out of line: as the inline path, with the success event
  /// posted once the call is taken, before it is recorded (and before any
  /// transition the record causes).
  [[gnu::noinline]] void finish_listened_success(permit p, const call_result* r) noexcept {
    bool told = false;
    const breaker_core::fast_end e = core_.complete_success_and_leave(
        p,
        [this, &told](bool read) {
          if (telemetry_.wants(event_kind::success)) tell_success();
          told = true;
          return read ? window_now<Clock>() : nanos::zero();
        },
        [this, p](std::int64_t stamp, std::uint32_t epoch) { settle(p, stamp, epoch); });
    if (e == breaker_core::fast_end::left) return;
    if (e == breaker_core::fast_end::last) return release_last_owner();
    finish_general(p, outcome::success, call_start{}, r, told);
    leave();
  }
  /// A success event for a call `complete_success_and_leave` took.
  [[gnu::noinline]] void tell_success() noexcept {
    telemetry_.call_event(event_kind::success, core_.state(), false);
  }
  /// The window's check after `complete_success_and_leave`, out of line.
  void settle(permit p, std::int64_t stamp, std::uint32_t epoch) noexcept;

  /// The same, for a call the caller measured: it took `elapsed` and ended
  /// at `now` (the clock's time since its epoch).
  void finish_measured(permit p, outcome o, nanos elapsed, nanos now, const call_result* r,
                       bool told = false) noexcept;

  /// A call abandoned before it finished (its coroutine or handler destroyed):
  /// gives the permit back, counted as ignored.
  void abandon(permit p) noexcept;

  /// A call was refused.
  void rejected() noexcept;

  /// See `basic_circuit_breaker::retry_after`.
  nanos retry_after() noexcept;

  /// The exception of a rejection (the exception forms), out of the hot path.
  [[noreturn]] void throw_rejection();
  std::exception_ptr make_rejection() noexcept;

  /// Acts on a transition the core returned (after its lock was released):
  /// the timers, then the telemetry.
  void apply(const transition& t, const fleet_origin* origin = nullptr) noexcept;

  /// The core admitted the first probe of HALF_OPEN state `generation` (its
  /// permit's `first_probe()`): arms the half-open timer for
  /// `max_half_open_duration`, unless that is "no limit". The core decides
  /// which permit that is, once per round; the shell only arms.
  void round_started(std::uint64_t generation) noexcept;

  breaker_metrics metrics() noexcept;

 private:
  // ---- fleet hooks (levee::fleet_link), through its hook only ----------------
  // breaker/detail/fleet_hook.hpp says what each does.
  friend class basic_fleet_hook<breaker_impl>;

  void fleet_gate(bool on) noexcept {
    if (on) {
      fleet_.fetch_or(fleet_gate_bit);
      return;
    }
    // One word: the timer either recorded its expiry before this (applied
    // here) or finds the gate off and acts itself.
    const std::uint64_t expired = fleet_.fetch_and(~fleet_gate_bit) & ~fleet_gate_bit;
    const std::uint64_t g = core_.generation();
    if (expired == g) apply(core_.open_elapsed(g));
  }
  bool fleet_open_expired() const noexcept {
    const std::uint64_t g = core_.generation();
    return core_.state() == circuit_state::open && (fleet_.load() & ~fleet_gate_bit) == g;
  }
  /// OPEN `generation` -> HALF_OPEN now (reason `open_elapsed`), as if its
  /// timer fired.
  void fleet_half_open(std::uint64_t generation) noexcept { apply(core_.open_elapsed(generation)); }
  /// CLOSED -> OPEN (reason `fleet`) for `open_for` (zero: the breaker's own
  /// duration), following `origin`'s record (null: the fleet's window);
  /// returns the duration, zero when it was not CLOSED.
  nanos fleet_open(nanos open_for, const fleet_origin* origin = nullptr) noexcept {
    const transition t = core_.fleet_open(open_for);
    apply(t, origin);
    return t ? t.open_for : nanos::zero();
  }
  /// OPEN or HALF_OPEN -> CLOSED (reason `fleet`), following `origin`'s record.
  void fleet_close(const fleet_origin* origin = nullptr) noexcept {
    apply(core_.fleet_close(), origin);
  }

  void call_event(event_mask mask, outcome o, nanos elapsed) noexcept;

  // The automatic probe deadline's samples (breaker/detail/impl/breaker_shell.hpp): true
  // for about one call in 16 (core/detail/sampler.hpp).
  struct probe_deadline_samples;
  [[gnu::always_inline]] static bool sample_latency() noexcept {
    return one_in_16<probe_deadline_samples, true, 0x9e3779b97f4a7c15u>::pick();
  }
  [[gnu::noinline]] void note_latency(nanos elapsed) noexcept;
  [[gnu::noinline]] void finish_timed(permit p, outcome o, call_start start,
                                      const call_result* r) noexcept;

  // stuck_alarm, under the telemetry's order lock.
  void arm_stuck(nanos left_closed, nanos recovery_window) noexcept override;
  void cancel_stuck() noexcept override;
  nanos recovery_window() const noexcept override { return options().recovery_window; }

  // Arms the timer: the open timer of OPEN `generation` (`open_period`: its
  // start is kept, for a reconfiguration to re-arm it), or the half-open
  // timer of HALF_OPEN `generation`.
  // Serialised by `timer_lock_` (a mutex: arming allocates): a transition to
  // OPEN can come from any thread that completes a call. `timer_generation_`
  // keeps a late arm or disarm (another thread's, for an older transition)
  // from undoing a newer one.
  void arm(std::uint64_t generation, nanos open_for, bool open_period = false) noexcept;
  void arm_at(std::uint64_t generation, time_point deadline) noexcept;  // under timer_lock_
  static time_point saturating_add(time_point from, nanos d) noexcept;
  void disarm(std::uint64_t generation) noexcept;
  bool older(std::uint64_t generation) const noexcept {  // than the timer's, under timer_lock_
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(generation) - timer_generation_) <
           0;
  }

  void release_last_owner() noexcept;

  breaker_core core_;  // with the options (`options()`)
  breaker_telemetry telemetry_;
  small_mutex timer_lock_;              // timer_, timer_generation_, the open period; reconfigure
  std::uint32_t timer_generation_ = 0;  // low bits; compared modulo 2^32
  // The OPEN generation whose timer was armed at `opened_at_` (for a
  // reconfiguration to re-arm it from there), and one that a reconfiguration
  // found not armed yet (its arm then takes the new open duration).
  std::uint32_t open_generation_ = 0;
  std::uint32_t stale_open_ = 0;
  time_point opened_at_{};
  timer_type timer_;
  std::unique_ptr<timer_type>
      stuck_timer_;  // with `recovery_window`, under the telemetry's order lock
  std::shared_ptr<breaker_impl> last_owner_;  // set by `detach` while calls are in flight
  // Fleet hooks, one word (memory per breaker is a target): bit 63, the gate
  // (a fleet link decides OPEN -> HALF_OPEN); below, the OPEN generation whose
  // timer fired while gated.
  static constexpr std::uint64_t fleet_gate_bit = std::uint64_t{1} << 63;
  std::atomic<std::uint64_t> fleet_{0};
  // The automatic probe deadline (`probe_timeout` zero): the p99 estimate of
  // sampled successful calls, in ns (0: no sample yet).
  std::atomic<std::int64_t> latency_p99_{0};
};

}  // namespace levee::detail

#include <levee/breaker/detail/impl/breaker_shell.hpp>

namespace levee::detail {
// The steady_clock breaker's shell is compiled once, in lib/
// (breaker/impl/breaker_shell.ipp).
extern template class breaker_impl<std::chrono::steady_clock,
                                   boost::asio::wait_traits<std::chrono::steady_clock>>;
}  // namespace levee::detail
