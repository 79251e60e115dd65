// levee: the race between a call and a timer (with_timeout, with_deadline,
// a pipeline's, a breaker's probe deadline), its call launched ahead of the
// caller's wait: a call that answers at once costs no timer and no pass of
// the scheduler.
#pragma once

#include <levee/core/detail/attempt_thread.hpp>
#include <levee/core/detail/caller_side.hpp>
#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/initiation_mark.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/timeout/detail/race.hpp>
#include <levee/timeout/detail/strand_pool.hpp>

#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/system_error.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <tuple>

namespace levee::detail {

namespace asio = boost::asio;

#if defined(LEVEE_OWN_FRAMES)
/// One race between a call and a timer, as `race_op` (race.hpp: why a
/// strand, why not `parallel_group`), in two steps from `race_timer`'s
/// coroutine (timeout/impl/timeout.hpp), as a hedged call's
/// (hedge/detail/hedge_op.hpp):
///
/// - `launch` starts the call on the race's strand (a strand from the
///   context's pool, `strand_lease`, or the caller's own when it is serial
///   already), on the caller's thread when that strand can run there at
///   once, as an Asio coroutine thread that hands its end to the race with
///   whether it ever waited (core/detail/attempt_thread.hpp). A call that
///   answers there without waiting ends the race inside the launch: `launch`
///   returns true, the result is in `failure()` and `value()`, no timer was
///   made, and the caller goes on without suspending. A call that waits
///   gets its timer, armed there, set `limit` from the race's start.
/// - Otherwise the caller awaits `await`, whose initiation hooks the
///   caller's cancellation slot, keeps the caller's executor's work, and
///   hands the race its handler on the strand, which resumes the caller once
///   the call has finished (a timed-out call has been cancelled and has
///   returned).
///
/// Ownership: the race is shared by the `race_timer` frame, the call's
/// thread, the timer's handler and the posted steps; the caller's slot holds
/// a weak_ptr.
template <class Clock, class Executor, class Value, class OnTimeout>
class race_launch_op
    : public std::enable_shared_from_this<race_launch_op<Clock, Executor, Value, OnTimeout>>,
      public caller_side<race_launch_op<Clock, Executor, Value, OnTimeout>, Executor,
                         void(std::exception_ptr, Value, bool)> {
  using caller = caller_side<race_launch_op, Executor, void(std::exception_ptr, Value, bool)>;
  friend caller;

 public:
  using value_type = Value;
  using typename caller::handler_type;
  using timer_type = asio::basic_waitable_timer<Clock, wait_traits_of_t<Clock>, Executor>;

  /// A race of a call on `caller_ex`'s serial executor (with `code ==
  /// error::deadline_exceeded`, carrying the deadline) against `limit` from
  /// now on `Clock`.
  race_launch_op(const Executor& caller_ex, std::chrono::nanoseconds limit, error code,
                 OnTimeout on_timeout)
      : race_launch_op(caller_ex, limit, code, std::move(on_timeout), Clock::now()) {}

  /// Starts the call. \return true when the race ended inside (see the class).
  template <class T>
  bool launch(asio::awaitable<T, Executor> aw) {
    // Its own mark (`await`'s is `this`): only a call that ends inside the
    // launch ends the race there.
    const initiation_mark here(&ended_in_launch_);
    asio::dispatch(child_ex_, [self = this->shared_from_this(), aw = std::move(aw)]() mutable {
      self->start(std::move(aw));
    });
    return ended_in_launch_;  // written only by this thread, inside the dispatch
  }

  /// The result, after `launch` returned true.
  std::exception_ptr& failure() noexcept { return result_e_; }
  Value& value() noexcept { return result_v_; }

  /// The call's thread was destroyed before it ended (as a hedge's attempt,
  /// `hedge_op::on_attempt_lost`): its slot is cleared, so that the timer
  /// emits nothing into its frames, and it ends with
  /// `asio::error::operation_aborted`, from a handler of its own.
  void on_attempt_lost(std::size_t) noexcept {
    signal_.slot().clear();
    if (finished_) return;
    try {
      asio::post(child_ex_, [self = this->shared_from_this()] {
        if (self->finished_) return;  // its end was reported meanwhile (`start`)
        self->on_attempt_end(
            0, std::make_exception_ptr(boost::system::system_error(asio::error::operation_aborted)),
            Value{}, true);
      });
    } catch (...) {
    }
  }

  /// The call ended, on the strand (`attempt_thread_entry`, or `start` when
  /// its launch threw). `waited`: whether it ever suspended. Not noexcept:
  /// the caller, resumed inline from here (`deliver`), may throw, and that
  /// leaves through the call's thread, out of the io_context's `run()`.
  void on_attempt_end(std::size_t, std::exception_ptr e, Value&& v, bool waited) {
    // The timer could not be armed (`start`): the call was cancelled, and
    // the caller gets that failure.
    if (arm_failure_) {
      result_e_ = std::move(arm_failure_);
    } else {
      result_e_ = std::move(e);
      result_v_ = std::move(v);
    }
    finished_ = true;
    // Answered without waiting, inside the launch, on the caller's thread
    // when the launch ran there: no timer was made.
    if (!waited && initiation_mark::inside(&ended_in_launch_)) {
      ended_in_launch_ = true;
      return;
    }
    if (timer_) timer_->cancel();
    this->deliver();
  }

 private:
  // One clock read for the timer's expiry and the deadline carried.
  race_launch_op(const Executor& caller_ex, std::chrono::nanoseconds limit, error code,
                 OnTimeout on_timeout, typename Clock::time_point now)
      : caller(caller_ex),
        lease_(caller_ex),
        child_ex_(code == error::deadline_exceeded
                      ? carry_mark(
                            lease_.get(),
                            deadline_mark{
                                saturating_add(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                                   now.time_since_epoch()),
                                               limit),
                                &clock_now_ns<Clock>})
                      : lease_.get()),
        expiry_(saturating_add(now, limit)),
        on_timeout_(std::move(on_timeout)) {}

  // On the strand, from here on.

  template <class T>
  void start(asio::awaitable<T, Executor> aw) {
    try {
      launch_attempt(this->shared_from_this(), 0, std::move(aw), child_ex_, signal_.slot());
    } catch (...) {
      if (finished_) throw;  // what threw ran after the call's end
      // The call's thread threw before it ended (an operation's initiation
      // inside it): Asio posts the destruction of its frames to the strand,
      // and the call's failure is reported behind it, so the caller resumes
      // after them (as when co_spawn's initiation threw).
      // Unless the thread's destruction reported it first (`on_attempt_lost`).
      asio::post(child_ex_, [self = this->shared_from_this(), e = std::current_exception()] {
        if (!self->finished_) self->on_attempt_end(0, e, Value{}, true);
      });
      return;
    }
    if (finished_) return;  // answered (inside the launch, or through inline dispatches)
    // What throws here (the timer's service or its wait out of memory) must
    // leave neither the strand's handler nor an unbounded call: the call is
    // cancelled, and the caller gets the failure once it has returned.
    try {
      timer_.emplace(child_ex_);
      timer_->expires_at(expiry_);
      timer_->async_wait(
          [self = this->shared_from_this()](boost::system::error_code ec) { self->on_timer(ec); });
    } catch (...) {
      arm_failure_ = std::current_exception();
      signal_.emit(asio::cancellation_type::terminal);
    }
  }

  void install(handler_type h) {
    this->store(std::move(h));
    if (hook_due_) {  // the timer won before the caller waited (`on_timer`)
      hook_due_ = false;
      on_timeout_();
    }
    if (finished_) this->deliver();
  }

  // The hook (`on_timeout_`) may point into the caller's frames (a breaker's
  // probe records its failure in its call's scope), which are alive only
  // once the caller waits: the op then holds the handler that holds them.
  // Before that (the timer won before the wait reached the strand, or the
  // wait never started: its initiation threw after the launch, and Asio
  // destroyed the caller's frames), the hook waits for `install`, and runs
  // there, before the caller resumes; the call is cancelled at its limit
  // either way.
  void on_timer(boost::system::error_code ec) {
    if (ec || finished_ || caller_cancelled_) return;
    timed_out_ = true;
    if (this->waiting())
      on_timeout_();
    else
      hook_due_ = true;
    signal_.emit(asio::cancellation_type::all);
  }

  void on_caller_cancel(asio::cancellation_type type) {
    if (finished_) return;
    caller_cancelled_ = true;
    if (timer_) timer_->cancel();
    signal_.emit(type);
  }

  // The caller's resumption's arguments (caller_side::deliver).
  std::tuple<std::exception_ptr, Value, bool> take_result() {
    return {std::move(result_e_), std::move(result_v_), timed_out_};
  }

  strand_lease<Executor> lease_;  // declared before child_ex_: it makes it
  Executor child_ex_;
  typename Clock::time_point expiry_;
  [[no_unique_address]] OnTimeout on_timeout_;
  std::optional<timer_type> timer_;  // made when the call waits
  asio::cancellation_signal signal_;
  bool finished_ = false;  // the rest: on the strand only
  bool timed_out_ = false;
  bool caller_cancelled_ = false;
  bool ended_in_launch_ = false;    // see `launch`
  bool hook_due_ = false;           // see `on_timer`
  std::exception_ptr arm_failure_;  // see `start`
  std::exception_ptr result_e_;
  Value result_v_{};
};
#endif

}  // namespace levee::detail
