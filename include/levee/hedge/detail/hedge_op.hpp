// levee: one hedged call: its attempts, the delay timer and the caller's
// cancellation, serialised on a strand.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/detail/attempt_thread.hpp>
#include <levee/core/detail/caller_side.hpp>
#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/initiation_mark.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/core/error.hpp>
#include <levee/hedge/detail/hedge_attempt.hpp>
#include <levee/hedge/detail/hedge_state.hpp>
#include <levee/timeout/detail/race.hpp>
#include <levee/timeout/detail/strand_pool.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace levee::detail {

namespace asio = boost::asio;

/// One hedged call (see `basic_hedge::operator()` for the rules).
///
/// As `race_op` (timeout/detail/race.hpp), and for the same reasons (no
/// `parallel_group`): every attempt runs on `child_ex_` (a strand), with a
/// cancellation signal of its own; the delay timer's handler, the emits
/// into the attempts, the caller's cancellation (posted from its slot,
/// dispatched by `cancel`) and the attempts' ends all run there, so the op's fields need no lock.
/// The caller is resumed, on its own executor, once every attempt has finished: a loser has been
/// cancelled and has returned, so nothing the call started outlives it.
///
/// Two steps, from the `hedged` coroutine: `launch` starts the first
/// attempt, inside the strand, on the caller's thread when the strand can
/// run there at once (a strand of the call's own, or the caller's). An
/// attempt that answers there without waiting ends the call inside the
/// launch: `launch` returns true, the result is in `failure()` and
/// `value()`, nothing else was started (no timer, no other attempt), and
/// the caller goes on without suspending: no pass of the scheduler, no
/// handler. Otherwise the caller awaits `await`, whose initiation hands the
/// op its handler on the strand and arms the delay timer there.
///
/// Ownership: the op is shared by the `hedged` frame, the attempts'
/// threads, the timer's handler and the posted steps; the caller's slot
/// holds a weak_ptr.
template <class Clock, class Executor, class Value, class Factory>
class hedge_op : public std::enable_shared_from_this<hedge_op<Clock, Executor, Value, Factory>>,
                 public caller_side<hedge_op<Clock, Executor, Value, Factory>, Executor,
                                    void(std::exception_ptr, Value)> {
  using caller = caller_side<hedge_op, Executor, void(std::exception_ptr, Value)>;
  friend caller;

 public:
  using value_type = Value;
  using typename caller::handler_type;
  using timer_type = asio::basic_waitable_timer<Clock, wait_traits_of_t<Clock>, Executor>;

  hedge_op(const Executor& caller_ex, Factory&& factory, std::shared_ptr<hedge_state> state,
           std::int64_t delay_ns, classifier judge)
      : caller(caller_ex),
        lease_(caller_ex),
        child_ex_(lease_.get()),
        factory_(std::move(factory)),
        state_(std::move(state)),
        delay_ns_(delay_ns),
        own_judge_(std::move(judge)),
        judge_(own_judge_ ? &own_judge_ : &state_->options().classifier),
        max_attempts_(state_->options().max_attempts),
        sampling_(state_->options().percentile != 0.0) {}

  /// Starts the first attempt. \return true when the call ended inside
  /// (see the class).
  bool launch() {
    const initiation_mark here(this);
    // Dispatched: on a strand nobody holds (a call's own), from a thread of
    // its context, the launch runs at once, inside the strand; on the
    // caller's own strand, at once too.
    asio::dispatch(child_ex_, [self = this->shared_from_this()] { self->start_attempt(); });
    return ended_in_launch_;  // written only by this thread, inside the dispatch
  }

  /// The result, after `launch` returned true.
  std::exception_ptr& failure() noexcept { return result_e_; }
  Value& value() noexcept { return result_v_; }

  /// Attempt `i`'s thread was destroyed before it ended
  /// (`attempt_thread_entry`): Asio dropped it, its frames destroyed on the
  /// strand (a completion inside it could not be dispatched, out of memory;
  /// the failure left through run()), or the context is being destroyed.
  /// Nothing may be emitted into its frames any more: its slot is cleared.
  /// It counts as a failed attempt (`asio::error::operation_aborted`),
  /// reported from a handler of its own, so that the call goes on and its
  /// caller is resumed once the others have ended. If that post fails too,
  /// the caller waits until the context is destroyed.
  void on_attempt_lost(std::size_t i) noexcept {
    attempts_[i].signal.slot().clear();
    if (!attempts_[i].running) return;
    try {
      // Reported unless its end was reported meanwhile (`start_attempt`'s
      // catch posts one for a launch that threw).
      asio::post(child_ex_, [self = this->shared_from_this(), i] {
        if (!self->attempts_[i].running) return;
        self->on_child(
            i, std::make_exception_ptr(boost::system::system_error(asio::error::operation_aborted)),
            Value{});
      });
    } catch (...) {
    }
  }

  /// An attempt ended, on the strand: its thread's end
  /// (`attempt_thread_entry`, or co_spawn's completion), or its factory
  /// threw, or its launch did (`start_attempt`). `waited`: whether it ever
  /// suspended. Not noexcept: the caller, resumed inline from here
  /// (`deliver`), may throw, and that leaves through the attempt's
  /// thread, out of the io_context's `run()`.
  void on_attempt_end(std::size_t i, std::exception_ptr e, Value&& v, bool waited) {
    // The first attempt answered without waiting: inside the launch, on the
    // caller's thread when the launch ran there.
    if (i == 0 && !waited && initiation_mark::inside(this)) ended_in_launch_ = true;
    on_child(i, std::move(e), std::move(v));
  }

 private:
  struct attempt {
    asio::cancellation_signal signal;
    std::int64_t started = 0;  // read only when sampling_, or for a hedge
    bool running = false;
    bool cancelled = false;  // by the hedge: a loser, or the caller's cancellation
  };

  // On the strand, from here on.

  void install(handler_type h) {
    this->store(std::move(h));
    if (done_) {
      if (running_ == 0) this->deliver();
      return;
    }
#if !defined(LEVEE_OWN_FRAMES)
    // co_spawn posts the completion of an attempt that did not wait: no
    // timer for one that answered.
    if (answered_) return;
#endif
    if (max_attempts_ > 1) arm_timer();
  }

  void arm_timer() {
    if (done_ || no_more_ || started_ >= max_attempts_) return;
    if (delay_ns_ == std::numeric_limits<std::int64_t>::max()) return;  // never
    // On the strand, in a handler: what throws here (the timer's service or
    // wait op out of memory) must not leave the io_context's run(). The call
    // goes on without hedges.
    try {
      const auto now = Clock::now();
      // The call's start, for the events' `after`, when the first
      // attempt's was not read (a fixed delay): the delay starts here.
      if (!sampling_ && started_ == 1 && !timer_)
        attempts_[0].started =
            std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
      if (!timer_) timer_.emplace(child_ex_);
      timer_->expires_at(saturating_add(now, std::chrono::nanoseconds(delay_ns_)));
      timer_->async_wait(
          [self = this->shared_from_this()](boost::system::error_code ec) { self->on_timer(ec); });
    } catch (...) {
      no_more_ = true;
    }
  }

  // The attempt's thread is launched inline and may end inside
  // `run_attempt` (it answered without waiting): nothing here touches the
  // attempt after it.
  void start_attempt() {
    const std::size_t i = started_++;
    attempt& a = attempts_[i];
    a.running = true;
    // The clock is read for the percentile's samples, and for a hedge (the
    // events' `after` is from the first attempt's start, `arm_timer`).
    if (sampling_ || i > 0) a.started = hedge_now<Clock>();
    ++running_;
    state_->count(&hedge_state::attempts);
    using awaitable = std::invoke_result_t<Factory&>;
    std::optional<awaitable> aw;
    try {
      aw.emplace(factory_());
    } catch (...) {  // the factory threw: a failed attempt that did not wait
      on_attempt_end(i, std::current_exception(), Value{}, false);
      return;
    }
    try {
      run_attempt(i, std::move(*aw));
    } catch (...) {
      // Ended: what threw ran after its end (the caller, resumed inline).
      if (!a.running) throw;
      // The attempt's thread threw before it ended (an operation's
      // initiation inside it): Asio posts the destruction of its frames to
      // the strand, and the attempt's failure is reported behind it, so the
      // caller resumes after them (as when co_spawn's initiation threw).
      // Unless the thread's destruction reported it first (`on_attempt_lost`).
      asio::post(child_ex_, [self = this->shared_from_this(), i, e = std::current_exception()] {
        if (self->attempts_[i].running) self->on_attempt_end(i, e, Value{}, true);
      });
    }
  }

  template <class Awaitable>
  void run_attempt(std::size_t i, Awaitable aw) {
    asio::cancellation_slot slot = attempts_[i].signal.slot();
#if defined(LEVEE_OWN_FRAMES)
    // As co_spawn's initiation: the attempt's cancellation state hangs off
    // the attempt's signal, which is emitted on this strand only.
    launch_attempt(this->shared_from_this(), i, std::move(aw), child_ex_, slot);
#else
    asio::co_spawn(child_ex_, hedge_attempt(std::move(aw), i == 0 ? &answered_ : nullptr),
                   asio::bind_cancellation_slot(
                       slot, [self = this->shared_from_this(), i](std::exception_ptr e, Value v) {
                         self->on_attempt_end(i, std::move(e), std::move(v), true);
                       }));
#endif
  }

  void on_timer(boost::system::error_code ec) {
    if (ec || done_ || no_more_ || started_ >= max_attempts_) return;
    if (!state_->try_hedge(hedge_now<Clock>())) {
      no_more_ = true;  // the budget is spent: this call hedges no more
      tell(hedge_event_kind::budget_refused, started_);
      return;
    }
    tell(hedge_event_kind::hedged, started_);
    start_attempt();  // may end the call inside (arm_timer checks)
    arm_timer();
  }

  void cancel_timer() {
    if (timer_) timer_->cancel();
  }

  // Posts an event to the listeners that want `k` (nothing while none does:
  // one relaxed load).
  void tell(hedge_event_kind k, std::size_t attempt_index) {
    if (!state_->events.wants(k)) return;
    hedge_event e;
    e.kind = k;
    e.attempt = static_cast<unsigned>(attempt_index);
    e.after = std::chrono::nanoseconds(hedge_now<Clock>() - attempts_[0].started);
    e.when = std::chrono::system_clock::now();
    state_->events.emit(e);
  }

  void on_caller_cancel(asio::cancellation_type type) {
    if (done_ && running_ == 0) return;
    no_more_ = true;
    cancel_timer();
    for (std::size_t i = 0; i < started_; ++i) {
      if (!attempts_[i].running) continue;
      attempts_[i].cancelled = true;
      attempts_[i].signal.emit(type);
    }
  }

  void on_child(std::size_t i, std::exception_ptr e, Value&& v) {
    attempt& a = attempts_[i];
    a.running = false;
    --running_;
    if (!done_) {
      bool rejected = false, deadline = false;
      const outcome o = hedge_classify(*judge_, e, v, rejected, deadline);
      // The clock: for the percentile's samples only (a fixed delay reads
      // none here).
      const std::int64_t now = sampling_ ? hedge_now<Clock>() : 0;
      // An attempt the caller's deadline ended is, like a loser, a lower
      // bound of the latency: a sample only when at least the delay (one
      // whose deadline had passed as it began would pull the percentile
      // toward 0).
      if (sampling_ && !rejected && !a.cancelled && (!deadline || now - a.started >= delay_ns_))
        state_->sample(now, now - a.started);
      if (rejected) state_->count(&hedge_state::rejections);
      result_e_ = std::move(e);
      result_v_ = std::move(v);
      if (o == outcome::success) {
        if (i > 0) {
          state_->count(&hedge_state::hedge_wins);
          tell(hedge_event_kind::hedge_won, i);
        }
        win(now);
      } else if (rejected) {
        no_more_ = true;  // the dependency's guard said no: do not hedge into it
        cancel_timer();
      }
      if (running_ == 0 && !done_) {  // nobody else to wait for
        done_ = true;
        cancel_timer();
      }
    }
    if (done_ && running_ == 0) this->deliver();
  }

  void win(std::int64_t now) {
    done_ = true;
    cancel_timer();
    for (std::size_t j = 0; j < started_; ++j) {
      attempt& l = attempts_[j];
      if (!l.running || l.cancelled) continue;
      l.cancelled = true;
      // A loser's age is a lower bound of its latency. At least the delay
      // (the estimate when the call began), it lies at or above the
      // estimate and can only raise it: recorded. A younger loser (a hedge
      // started just before the other attempt answered) says nothing about
      // the tail and would pull the percentile down: not recorded.
      if (sampling_ && now - l.started >= delay_ns_) state_->sample(now, now - l.started);
      state_->count(&hedge_state::cancelled);
      l.signal.emit(asio::cancellation_type::all);
    }
  }

  // The caller's resumption's arguments (caller_side::deliver, which
  // delivers once: a loser whose cancellation completes inline, its
  // operation's slot handler calling its handler at once, ends inside `win`,
  // and its `on_child` delivers before the winner's `on_child` gets there).
  std::tuple<std::exception_ptr, Value> take_result() {
    return {std::move(result_e_), std::move(result_v_)};
  }

  strand_lease<Executor> lease_;  // declared before child_ex_: it makes it
  Executor child_ex_;
  std::optional<timer_type> timer_;  // made when first armed
  Factory factory_;
  std::shared_ptr<hedge_state> state_;
  std::int64_t delay_ns_;
  // The call's classifier, kept here: the `hedged` frame that gave it can go
  // while attempts run (an allocation that throws in the caller's wait's
  // initiation, after it took this op). Empty: the options'.
  classifier own_judge_;
  const classifier* judge_;  // own_judge_ or the options': read only until done_
  std::size_t max_attempts_;
  bool sampling_;                      // a percentile delay: latencies are sampled
  std::array<attempt, 8> attempts_{};  // the rest: on the strand only
  std::size_t started_ = 0;
  std::size_t running_ = 0;
  bool done_ = false;             // a result is chosen: no attempt starts
  bool no_more_ = false;          // no hedge starts (budget, rejection, caller's cancellation)
  bool ended_in_launch_ = false;  // see `launch`
#if !defined(LEVEE_OWN_FRAMES)
  bool answered_ = false;  // the first attempt's awaitable returned (hedge_attempt)
#endif
  std::exception_ptr result_e_;
  Value result_v_{};
};

}  // namespace levee::detail
