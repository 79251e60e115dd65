// levee: the Asio shell around the breaker's core.
//
// `breaker_impl` is the shared state behind a `basic_circuit_breaker`: the
// sans-I/O core (detail/breaker_core.hpp), the open timer, and the
// telemetry (detail/breaker_telemetry.hpp, compiled once). It is a template
// only for what needs the clock: reading it, and its timers.
#pragma once

#include <levee/classify.hpp>
#include <levee/detail/breaker_core.hpp>
#include <levee/detail/breaker_telemetry.hpp>
#include <levee/detail/small_mutex.hpp>
#include <levee/detail/validate.hpp>
#include <levee/detail/window_clock.hpp>
#include <levee/error.hpp>
#include <levee/observe.hpp>
#include <levee/options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/basic_waitable_timer.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <exception>
#include <memory>
#include <string>
#include <string_view>

namespace levee::detail {

namespace asio = boost::asio;

template <class Clock, class WaitTraits>
class breaker_impl final : public std::enable_shared_from_this<breaker_impl<Clock, WaitTraits>>,
                           private stuck_alarm {
 public:
  using timer_type = asio::basic_waitable_timer<Clock, WaitTraits, asio::any_io_executor>;
  using time_point = typename Clock::time_point;

  breaker_impl(asio::any_io_executor ex, breaker_options options, std::string name)
      : options_(detail::checked(std::move(options))),
        core_(options_),
        telemetry_(std::move(name), options_.recovery_window, clock_now()),
        timer_(std::move(ex)) {}

  /// The clock's time since its epoch.
  static nanos clock_now() noexcept {
    return std::chrono::duration_cast<nanos>(Clock::now().time_since_epoch());
  }

  /// The breaker object is gone: its timers stop (nothing of it stays pending
  /// on the executor), and the shared state lives on until the last call in
  /// flight ends (`leave`), or goes now if there is none.
  static void detach(std::shared_ptr<breaker_impl> self) noexcept {
    breaker_impl& b = *self;
    b.detached_.store(true, std::memory_order_relaxed);
    {
      small_lock g(b.timer_lock_);
      b.timer_.cancel();
    }
    b.telemetry_.detach(b);
    b.last_owner_ = std::move(self);
    if (b.core_.orphan()) b.release_last_owner();
  }

  /// A call is done with the shared state (see `call_scope`).
  void leave() noexcept {
    if (core_.leave()) [[unlikely]]
      release_last_owner();
  }

  const breaker_options& options() const noexcept { return options_; }
  breaker_core& core() noexcept { return core_; }
  const breaker_core& core() const noexcept { return core_; }
  breaker_telemetry& telemetry() noexcept { return telemetry_; }
  asio::any_io_executor get_executor() noexcept { return timer_.get_executor(); }
  std::string_view name() const noexcept { return telemetry_.name(); }

  outcome classify(const call_result& r) const noexcept {
    if (!options_.classifier) return default_classify(r);
    try {
      return options_.classifier(r);
    } catch (...) {
      return outcome::failure;
    }
  }

  /// The outcome of a call that returned `value`. Without a classifier the
  /// default rules need no `call_result`: a value is a success, a tuple's
  /// error_code decides.
  template <class T>
  outcome classify_value(const T& value) const noexcept {
    if (options_.classifier) return classify(make_value_result(value));
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

  /// When a call starts: the time slow-call detection measures from (the
  /// epoch when it is off: no clock read).
  time_point start_time() const noexcept {
    return core_.needs_elapsed() ? Clock::now() : time_point();
  }

  /// Records a finished call and acts on what the core decides. `r`: the
  /// call's result, when known (for the last failure of a transition event).
  void finish(permit p, outcome o, time_point start, const call_result* r) noexcept {
    const nanos elapsed = core_.needs_elapsed()
                              ? std::chrono::duration_cast<nanos>(Clock::now() - start)
                              : nanos::zero();
    finish_measured(p, o, elapsed, r);
  }

  /// The same, for a call whose duration was measured by the caller.
  void finish_measured(permit p, outcome o, nanos elapsed, const call_result* r) noexcept {
    const nanos now = core_.needs_time() ? window_now<Clock>() : nanos::zero();
    // Without a listener this is one relaxed load. A call event is posted
    // before the core records the call, so that a transition the call causes
    // comes after it.
    if (const event_mask mask = telemetry_.wanted()) [[unlikely]]
      call_telemetry(mask, o, elapsed, r);
    apply(core_.complete(p, o, now, elapsed));
  }

  /// A call abandoned before it finished (its coroutine or handler destroyed):
  /// gives the permit back, counted as ignored.
  void abandon(permit p) noexcept {
    if (telemetry_.wants(event_kind::ignored)) [[unlikely]]
      telemetry_.call_event(event_kind::ignored, core_.state(), false);
    core_.release(p);
  }

  /// A call was refused.
  void rejected() noexcept {
    if (telemetry_.wants(event_kind::rejected)) [[unlikely]]
      telemetry_.call_event(event_kind::rejected, core_.state(), false);
  }

  /// See `basic_circuit_breaker::retry_after`.
  nanos retry_after() noexcept {
    const std::uint64_t generation = core_.generation();
    switch (core_.state()) {
      case circuit_state::closed:
      case circuit_state::disabled:
      case circuit_state::metrics_only:
        return nanos::zero();
      case circuit_state::forced_open:
        return nanos::max();
      case circuit_state::half_open:
        if (core_.probes_in_flight() < options_.half_open_probes) return nanos::zero();
        break;
      case circuit_state::open:
        break;
    }
    time_point deadline;
    {
      small_lock g(timer_lock_);
      // Not armed for this state (yet, or no more): no better answer than now.
      if (static_cast<std::uint32_t>(generation) != timer_generation_) return nanos::zero();
      deadline = timer_.expiry();
    }
    if (deadline == time_point::max()) return nanos::max();  // "for ever"
    const time_point now = Clock::now();
    if (deadline <= now) return nanos::zero();
    return std::chrono::duration_cast<nanos>(deadline - now);
  }

  /// The exception of a rejection (the exception forms), out of the hot path.
  [[noreturn]] void throw_rejection() { throw_circuit_open(retry_after(), name()); }
  std::exception_ptr make_rejection() noexcept { return make_circuit_open(retry_after(), name()); }

  /// Acts on a transition the core returned (after its lock was released):
  /// the timers, then the telemetry.
  void apply(const transition& t) noexcept {
    if (!t) return;
    if (t.to == circuit_state::open) {
      arm(t.generation, t.open_for);
    } else if (t.to != circuit_state::half_open) {
      // CLOSED (probes succeeded) or a manual state: neither the open timer
      // nor the half-open timer has anything left to do.
      disarm(t.generation);
    }
    telemetry_.deliver(t, core_.trip_basis(t), &clock_now, *this);
  }

  /// A probe of HALF_OPEN state `generation` was admitted: the round's first
  /// arms the half-open timer (`max_half_open_duration`). Not on the CLOSED
  /// path: only probes come here.
  void probe_admitted(std::uint64_t generation) noexcept {
    if (options_.max_half_open_duration == nanos::max()) return;  // no limit
    arm(generation, options_.max_half_open_duration, /*once=*/true);
  }

  breaker_metrics metrics() noexcept {
    breaker_metrics r;
    r.state = core_.state();
    const breaker_counters c = core_.counters();
    r.successes = c.successes;
    r.failures = c.failures;
    r.ignored = c.ignored;
    r.slow = c.slow;
    r.rejected = c.rejected;
    const window_totals w = core_.window(window_now<Clock>());
    r.window_calls = w.calls;
    r.window_failures = w.failures;
    r.window_slow = w.slow;
    if (w.calls) {
      r.failure_rate = static_cast<double>(w.failures) / static_cast<double>(w.calls);
      r.slow_call_rate = static_cast<double>(w.slow) / static_cast<double>(w.calls);
    }
    r.open_streak = core_.open_streak();
    telemetry_.fill(r, clock_now());
    return r;
  }

 private:
  void call_telemetry(event_mask mask, outcome o, nanos elapsed, const call_result* r) noexcept {
    const event_kind kind = o == outcome::success   ? event_kind::success
                            : o == outcome::failure ? event_kind::failure
                                                    : event_kind::ignored;
    if (mask & static_cast<event_mask>(kind)) {
      const bool slow = options_.slow_call_duration > nanos::zero() &&
                        elapsed >= options_.slow_call_duration && o != outcome::ignored;
      telemetry_.call_event(kind, core_.state(), slow);
    }
    // The last failure, kept only while a listener wants transitions.
    if (o == outcome::failure && (mask & static_cast<event_mask>(event_kind::transition)))
      telemetry_.note_failure(r);
  }

  // stuck_alarm, under the telemetry's order lock.
  void arm_stuck(nanos left_closed, nanos recovery_window) noexcept override {
    if (detached_.load(std::memory_order_relaxed)) return;  // the breaker object is gone
    try {
      using duration = typename Clock::duration;
      const time_point from(std::chrono::duration_cast<duration>(left_closed));
      // Saturating: a deadline past the clock's range never comes, so no timer.
      const auto wait = std::chrono::ceil<duration>(recovery_window);
      if (wait >= time_point::max() - std::max(from, time_point())) {
        cancel_stuck();
        return;
      }
      if (!stuck_timer_) stuck_timer_ = std::make_unique<timer_type>(timer_.get_executor());
      stuck_timer_->expires_at(from + wait);
      stuck_timer_->async_wait(
          [weak = this->weak_from_this(), left_closed](boost::system::error_code ec) {
            if (ec) return;
            if (auto self = weak.lock()) self->telemetry_.stuck_elapsed(left_closed);
          });
    } catch (...) {
    }
  }
  void cancel_stuck() noexcept override {
    if (stuck_timer_) stuck_timer_->cancel();
  }

  // Arms the timer: the open timer of OPEN `generation`, or (`once`: unless
  // already armed for it) the half-open timer of HALF_OPEN `generation`.
  // Serialised by `timer_lock_` (a mutex: arming allocates): a transition to
  // OPEN can come from any thread that completes a call. `timer_generation_`
  // keeps a late arm or disarm (another thread's, for an older transition)
  // from undoing a newer one.
  void arm(std::uint64_t generation, nanos open_for, bool once = false) noexcept {
    small_lock g(timer_lock_);
    if (older(generation) || detached_.load(std::memory_order_relaxed)) return;
    if (once && static_cast<std::uint32_t>(generation) == timer_generation_) return;
    timer_generation_ = static_cast<std::uint32_t>(generation);
    timer_.expires_after(std::chrono::ceil<typename Clock::duration>(open_for));
    timer_.async_wait([weak = this->weak_from_this(), generation](boost::system::error_code ec) {
      if (ec) return;  // cancelled: the breaker is gone or was re-armed
      if (auto self = weak.lock()) {
        // The open timer of OPEN `generation`, or the half-open timer of
        // HALF_OPEN `generation`: the core knows which, by the state.
        if (const transition t = self->core_.open_elapsed(generation)) return self->apply(t);
        self->apply(self->core_.half_open_elapsed(generation));
      }
    });
  }
  void disarm(std::uint64_t generation) noexcept {
    small_lock g(timer_lock_);
    if (older(generation) || static_cast<std::uint32_t>(generation) == timer_generation_) return;
    timer_generation_ = static_cast<std::uint32_t>(generation);
    timer_.cancel();
  }
  bool older(std::uint64_t generation) const noexcept {  // than the timer's, under timer_lock_
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(generation) - timer_generation_) <
           0;
  }

  void release_last_owner() noexcept {
    std::shared_ptr<breaker_impl> last = std::move(last_owner_);  // destroys *this
  }

  breaker_options options_;
  breaker_core core_;
  breaker_telemetry telemetry_;
  small_mutex timer_lock_;              // timer_, timer_generation_
  std::atomic<bool> detached_{false};   // the breaker object is gone: arm no timer
  std::uint32_t timer_generation_ = 0;  // low bits; compared modulo 2^32
  timer_type timer_;
  std::unique_ptr<timer_type>
      stuck_timer_;  // with `recovery_window`, under the telemetry's order lock
  std::shared_ptr<breaker_impl> last_owner_;  // set by `detach` while calls are in flight
};

}  // namespace levee::detail
