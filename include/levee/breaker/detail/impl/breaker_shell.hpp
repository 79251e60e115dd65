// levee: the bodies of the breaker's Asio shell (breaker/detail/breaker_shell.hpp).
//
// Out of the class, so that `extern template` keeps them out of the users'
// translation units for the steady_clock breaker: lib/ compiles them once.
#pragma once

#include <algorithm>
#include <chrono>
#include <memory>

namespace levee::detail {

template <class Clock, class WaitTraits>
breaker_impl<Clock, WaitTraits>::breaker_impl(asio::any_io_executor ex, breaker_options options,
                                              std::string name)
    : core_(detail::checked(std::move(options))),
      telemetry_(std::move(name), clock_now()),
      timer_(std::move(ex)) {}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::reconfigure(const breaker_options& options) {
  validate(options);  // throws, naming the member: nothing changed
  transition t;
  {
    small_lock g(timer_lock_);  // one reconfiguration at a time; the open timer
    t = core_.reconfigure(options, window_now<Clock>());
    // An OPEN breaker's timer: the new open duration, from when it opened.
    const std::uint64_t generation = core_.generation();
    const auto low = static_cast<std::uint32_t>(generation);
    if (core_.state() == circuit_state::open && !telemetry_.detached()) {
      if (timer_generation_ == low && open_generation_ == low) {
        arm_at(generation, saturating_add(opened_at_, core_.current_open_duration()));
      } else if (!older(generation)) {
        stale_open_ = low;  // tripped, not armed yet: its arm takes the new duration
      }
    }
  }
  if (telemetry_.wants(event_kind::reconfigured)) telemetry_.reconfigured(core_.state());
  apply(t);
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::detach(std::shared_ptr<breaker_impl> self) noexcept {
  breaker_impl& b = *self;
  b.telemetry_.detach(b);  // from now on no timer is armed
  {
    small_lock g(b.timer_lock_);
    b.timer_.cancel();
  }
  b.last_owner_ = std::move(self);
  if (b.core_.orphan()) b.release_last_owner();
}

template <class Clock, class WaitTraits>
outcome breaker_impl<Clock, WaitTraits>::classify(const call_result& r) const noexcept {
  const breaker_options& o = options();
  if (!o.classifier) return default_classify(r);
  try {
    return o.classifier(r);
  } catch (...) {
    return outcome::failure;
  }
}

template <class Clock, class WaitTraits>
auto breaker_impl<Clock, WaitTraits>::start_timed(nanos slow) const noexcept -> call_start {
  if (!coarse_enough<Clock>(slow)) return {clock_now(), start_kind::precise};
  if (options().probe_timeout == nanos::zero() && sample_latency()) [[unlikely]]
    return {sampled_now(), start_kind::sampled};
  return {window_now<Clock>(), start_kind::coarse};
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::settle(permit p, std::int64_t stamp,
                                             std::uint32_t epoch) noexcept {
  apply(core_.success_recorded(p, stamp, epoch));
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::finish_general(permit p, outcome o, call_start start,
                                                     const call_result* r, bool told) noexcept {
  if (start.kind != start_kind::none) [[unlikely]]
    return finish_timed(p, o, start, r);
  // Not measured when it started (slow-call detection came on since, by a
  // reconfiguration): not slow.
  if (core_.needs_elapsed()) [[unlikely]]
    sample_measured(o, nanos::zero());
  finish_measured(p, o, nanos::zero(), core_.needs_time() ? window_now<Clock>() : nanos::zero(), r,
                  told);
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::finish_timed(permit p, outcome o, call_start start,
                                                   const call_result* r) noexcept {
  nanos elapsed = nanos::zero();
  nanos now;
  if (start.kind == start_kind::coarse) {
    now = window_now<Clock>();  // one read: the duration's end and the window's time
    if (core_.needs_elapsed()) elapsed = now - start.at;
  } else {
    // The precise clock: the duration's end, and the window's time too (the
    // same clock as window_now's, read more exactly).
    now = clock_now();
    const nanos took = now - start.at;
    if (start.kind == start_kind::sampled) {
      if (o == outcome::success) note_latency(took);  // for the automatic probe deadline
      if (core_.needs_elapsed()) elapsed = took;
    } else if (core_.needs_elapsed()) {
      elapsed = took;
      sample_measured(o, elapsed);
    }
  }
  finish_measured(p, o, elapsed, now, r);
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::finish_measured(permit p, outcome o, nanos elapsed, nanos now,
                                                      const call_result* r, bool told) noexcept {
  // Without a listener this is one relaxed load. A call event is posted
  // before the core records the call, so that a transition the call causes
  // comes after it.
  const event_mask mask = telemetry_.wanted();
  if ((mask & call_events) && !told) [[unlikely]]
    call_event(mask, o, elapsed);
  // The last failure, kept only while a listener wants transitions: with
  // none, a failure costs nothing more than this test of the same load.
  if (o == outcome::failure && (mask & static_cast<event_mask>(event_kind::transition)))
      [[unlikely]]
    telemetry_.note_failure(r);
  if (const transition t = core_.complete(p, o, now, elapsed)) [[unlikely]]
    apply(t);
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::abandon(permit p) noexcept {
  if (telemetry_.wants(event_kind::ignored)) [[unlikely]]
    telemetry_.call_event(event_kind::ignored, core_.state(), false);
  core_.release(p);
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::rejected() noexcept {
  if (telemetry_.wants(event_kind::rejected)) [[unlikely]]
    telemetry_.call_event(event_kind::rejected, core_.state(), false);
}

template <class Clock, class WaitTraits>
nanos breaker_impl<Clock, WaitTraits>::retry_after() noexcept {
  const std::uint64_t generation = core_.generation();
  switch (core_.state()) {
    case circuit_state::closed:
    case circuit_state::disabled:
    case circuit_state::metrics_only:
      return nanos::zero();
    case circuit_state::forced_open:
      return nanos::max();
    case circuit_state::half_open:
      if (core_.probes_in_flight() < options().half_open_probes) return nanos::zero();
      break;
    case circuit_state::open:
      break;
  }
  time_point deadline;
  {
    small_lock g(timer_lock_);
    if (static_cast<std::uint32_t>(generation) != timer_generation_) {
      // Not armed for this state yet: the thread that tripped it is about to
      // arm it (or not armed any more: the state moved on). In OPEN, the
      // shortest the period can be, never "now" (issue 18, item 5).
      if (core_.state() == circuit_state::open && core_.generation() == generation)
        return core_.shortest_open_duration();
      return nanos::zero();
    }
    deadline = timer_.expiry();
  }
  if (deadline == time_point::max()) return nanos::max();  // "for ever"
  const time_point now = Clock::now();
  if (deadline <= now) return nanos::zero();
  return std::chrono::duration_cast<nanos>(deadline - now);
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::apply(const transition& t,
                                            const fleet_origin* origin) noexcept {
  if (!t) return;
  if (t.to == circuit_state::open) {
    arm(t.generation, t.open_for, true);
  } else if (t.to != circuit_state::half_open) {
    // CLOSED (probes succeeded) or a manual state: neither the open timer
    // nor the half-open timer has anything left to do.
    disarm(t.generation);
  }
  telemetry_.deliver(t, core_.trip_basis(t), &clock_now, *this, origin);
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::round_started(std::uint64_t generation) noexcept {
  const nanos limit = options().max_half_open_duration;
  if (limit == nanos::max()) return;  // no limit
  arm(generation, limit);
}

template <class Clock, class WaitTraits>
nanos breaker_impl<Clock, WaitTraits>::probe_timeout() const noexcept {
  const breaker_options& o = options();
  if (o.probe_timeout != nanos::zero()) return o.probe_timeout;
  // Automatic (options.hpp): 4 x the p99 estimate, at least 1 ms, at most
  // slow_call_duration when set.
  const nanos slow = o.slow_call_duration;
  const std::int64_t p99 = latency_p99_.load(std::memory_order_relaxed);
  if (p99 == 0) return slow > nanos::zero() ? slow : nanos::max();
  constexpr std::int64_t forever = nanos::max().count();
  nanos d = p99 > forever / 4 ? nanos::max() : nanos(p99 * 4);
  d = std::max<nanos>(d, std::chrono::milliseconds(1));
  if (slow > nanos::zero()) d = std::min(d, slow);
  return d;
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::note_latency(nanos elapsed) noexcept {
  // A frugal streaming estimate of the p99 (Ma, Muthukrishnan and Sandler,
  // 2013), in one word: up by a quarter on a sample above it, down by 1/512
  // otherwise. It settles where P(sample > estimate) * ln(1.25) balances
  // P(sample <= estimate) / 512, i.e. near the 99.1th percentile.
  const std::int64_t x = elapsed.count();
  if (x <= 0) return;
  constexpr std::int64_t forever = nanos::max().count();
  std::int64_t e = latency_p99_.load(std::memory_order_relaxed);
  std::int64_t next = 0;
  do {
    if (e == 0) {
      next = x;  // the first sample
    } else if (x > e) {
      next = e > forever - e / 4 ? forever : e + std::max<std::int64_t>(e / 4, 1);
    } else {
      next = e - e / 512;
    }
    if (next == e) return;
  } while (!latency_p99_.compare_exchange_weak(e, next, std::memory_order_relaxed));
}

template <class Clock, class WaitTraits>
breaker_metrics breaker_impl<Clock, WaitTraits>::metrics() noexcept {
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
  r.reconfigurations = core_.reconfigurations();
  telemetry_.fill(r, clock_now(), options().recovery_window);
  return r;
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::call_event(event_mask mask, outcome o,
                                                 nanos elapsed) noexcept {
  const event_kind kind = o == outcome::success   ? event_kind::success
                          : o == outcome::failure ? event_kind::failure
                                                  : event_kind::ignored;
  if (!(mask & static_cast<event_mask>(kind))) return;
  const nanos slow_at = options().slow_call_duration;
  const bool slow = slow_at > nanos::zero() && elapsed >= slow_at && o != outcome::ignored;
  telemetry_.call_event(kind, core_.state(), slow);
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::arm_stuck(nanos left_closed, nanos recovery_window) noexcept {
  if (telemetry_.detached()) return;  // the breaker object is gone
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

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::cancel_stuck() noexcept {
  if (stuck_timer_) stuck_timer_->cancel();
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::arm(std::uint64_t generation, nanos open_for,
                                          bool open_period) noexcept {
  small_lock g(timer_lock_);
  if (older(generation) || telemetry_.detached()) return;
  const time_point now = Clock::now();
  if (open_period) {
    const auto low = static_cast<std::uint32_t>(generation);
    // Reconfigured between the trip and this arm: the new open duration.
    if (stale_open_ == low) open_for = core_.current_open_duration();
    open_generation_ = low;
    opened_at_ = now;
  }
  arm_at(generation, saturating_add(now, open_for));
}

template <class Clock, class WaitTraits>
auto breaker_impl<Clock, WaitTraits>::saturating_add(time_point from, nanos d) noexcept
    -> time_point {
  // As Asio's expires_after: a deadline past the clock's range is "for ever".
  if (d >= nanos::max()) return time_point::max();
  const auto wait = std::chrono::ceil<typename Clock::duration>(d);
  if (from > time_point() && wait >= time_point::max() - from) return time_point::max();
  return from + wait;
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::arm_at(std::uint64_t generation,
                                             time_point deadline) noexcept {
  timer_generation_ = static_cast<std::uint32_t>(generation);
  timer_.expires_at(deadline);
  timer_.async_wait([weak = this->weak_from_this(), generation](boost::system::error_code ec) {
    if (ec) return;  // cancelled: the breaker is gone or was re-armed
    if (auto self = weak.lock()) {
      if (self->core_.state() == circuit_state::open) {
        // Gated: record the expiry, the fleet link decides.
        std::uint64_t w = self->fleet_.load();
        while (w & fleet_gate_bit)
          if (self->fleet_.compare_exchange_weak(w, fleet_gate_bit | generation)) return;
      }
      // The open timer of OPEN `generation`, or the half-open timer of
      // HALF_OPEN `generation`: the core knows which, by the state.
      if (const transition t = self->core_.open_elapsed(generation)) return self->apply(t);
      self->apply(self->core_.half_open_elapsed(generation));
    }
  });
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::disarm(std::uint64_t generation) noexcept {
  small_lock g(timer_lock_);
  if (older(generation) || static_cast<std::uint32_t>(generation) == timer_generation_) return;
  timer_generation_ = static_cast<std::uint32_t>(generation);
  timer_.cancel();
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::release_last_owner() noexcept {
  std::shared_ptr<breaker_impl> last = std::move(last_owner_);  // destroys *this
}

template <class Clock, class WaitTraits>
void breaker_impl<Clock, WaitTraits>::throw_rejection() {
  throw_circuit_open(retry_after(), name());
}

template <class Clock, class WaitTraits>
std::exception_ptr breaker_impl<Clock, WaitTraits>::make_rejection() noexcept {
  return make_circuit_open(retry_after(), name());
}

}  // namespace levee::detail
