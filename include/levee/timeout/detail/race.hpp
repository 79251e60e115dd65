// levee: the race between a call and a timer behind with_timeout and
// with_deadline: the strand it runs on and the operation's state.
#pragma once

#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/core/detail/unserialisable.hpp>
#include <levee/timeout/deadline.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace levee::detail {

namespace asio = boost::asio;

// The call as an awaitable of something co_spawn can default-construct.
template <class T, class Executor>
asio::awaitable<std::optional<T>, Executor> as_optional(own_frame_t,
                                                        asio::awaitable<T, Executor> aw) {
  co_return co_await std::move(aw);
}
template <class Executor>
asio::awaitable<bool, Executor> as_optional(own_frame_t, asio::awaitable<void, Executor> aw) {
  co_await std::move(aw);
  co_return true;
}

template <class E>
struct is_asio_strand : std::false_type {};
template <class E>
struct is_asio_strand<asio::strand<E>> : std::true_type {};

/// Whether a call on `Executor` (its awaitable's executor type) can be kept
/// to one thread at a time while a timer or another attempt races it: a
/// strand is used as it is; a type that can hold a strand (`any_io_executor`)
/// gets one (`serial_executor`). A concrete executor that is neither
/// (`io_context::executor_type`, `thread_pool::executor_type`) runs the
/// call's handlers on any thread of its context, and its awaitable cannot be
/// moved to a strand: a cancellation emitted into it (Asio's cancellation
/// slots are not thread-safe) could meet its completion on another thread.
/// with_timeout, with_deadline, a pipeline's timeout and deadline, a
/// breaker's explicit probe deadline and a hedge refuse such calls
/// (docs/layers.md, "Timeouts"; docs/hedging.md, "Executors").
template <class Executor>
inline constexpr bool can_serialize =
    std::disjunction_v<is_asio_strand<Executor>,
                       std::is_constructible<Executor, asio::strand<Executor>>>;

/// Throws the refusal of a race (`who`: the layer refusing) whose call is on
/// an executor that `can_serialize` rejects.
[[noreturn]] inline void refuse_unserialisable(const std::string& who) {
  throw unserialisable_executor(
      who +
      ": the call's awaitable is on a concrete executor that is not a strand and cannot hold "
      "one (such as asio::io_context::executor_type): on a context run by several threads the "
      "timer's cancellation could meet the call's completion on another thread; use "
      "asio::awaitable<T> (any_io_executor) or asio::awaitable<T, asio::strand<...>>");
}

/// An executor of type `Executor` on which the race's call, its timer and
/// every cancellation emitted into the call are serialised: `ex` itself when it
/// is already a strand, else a new strand of `ex` when `Executor` can hold one
/// (`any_io_executor` can), else `ex` (a concrete executor type that cannot
/// hold a strand, which `can_serialize` rejects: the races and the hedge
/// refuse such calls before they get here; the token forms call this with
/// `any_io_executor`).
/// A `deadline_executor` (a with_deadline's call) is already a strand: kept.
///
/// A type-erased executor gets the strand of its target (an `io_context` or
/// `thread_pool` executor), which it stores inline: a strand of the erased
/// executor would be stored behind a reference count whose release
/// ThreadSanitizer misreads (an acquire fence) as a race.
template <class Executor>
Executor serial_executor(const Executor& ex) {
  // A concrete strand (`asio::strand<io_context::executor_type>`): serial
  // already. (Its converting constructor would accept a strand of it, and
  // then fail to compile.)
  if constexpr (is_asio_strand<Executor>::value) {
    return ex;
  } else {
    if constexpr (requires { ex.template target<asio::io_context::executor_type>(); }) {
      using io_strand = asio::strand<asio::io_context::executor_type>;
      using pool_strand = asio::strand<asio::thread_pool::executor_type>;
      if (ex.template target<io_strand>() || ex.template target<pool_strand>()) return ex;
      // A with_deadline's executor: a strand that carries a deadline.
      if constexpr (std::is_same_v<Executor, asio::any_io_executor>) {
        if (find_deadline(ex)) return ex;
      }
      if (const auto* io = ex.template target<asio::io_context::executor_type>()) {
        return Executor(asio::make_strand(*io));
      }
      if (const auto* pool = ex.template target<asio::thread_pool::executor_type>()) {
        return Executor(asio::make_strand(*pool));
      }
    }
    if constexpr (std::is_constructible_v<Executor, asio::strand<Executor>>) {
      return Executor(asio::make_strand(ex));
    } else {
      return ex;  // cannot be serialised (`can_serialize`): refused by the races
    }
  }
}

/// What a race does when its timer wins, before it cancels the call: nothing
/// (with_timeout, with_deadline); a breaker's probe records its failure there.
struct no_timeout_hook {
  void operator()() const noexcept {}
};

/// One race between a call and a timer (with_timeout, with_deadline, a
/// breaker's probe deadline).
///
/// Why not `parallel_group` or `operator||`: in Asio 1.81 their launch races
/// with completions on other threads of a multi-threaded io_context (Asio
/// issues 1348 and 1630), and `operator||` waits for the timer when the call
/// throws (issue 900). Here the call runs as a child coroutine on
/// `serial_executor` (a strand of the caller's executor), and everything that
/// touches it runs there too: the timer's handler, the cancellation emitted
/// into the child (a child clears its cancellation slot on its own executor,
/// so an emit from elsewhere would race with it), and the child's completion,
/// which decides the winner. The caller's own cancellation is posted to that
/// strand. The caller is resumed, on its own executor, only once the child
/// has finished: a timed-out call has been cancelled and has returned.
///
/// Ownership: the state is shared by the child's completion handler, the
/// timer's handler and the posted steps; the caller's slot holds only a
/// weak_ptr. If the io_context is destroyed with the race pending, dropping
/// those handlers destroys the state and, with it, the caller's frame.
template <class Clock, class Executor, class Value, class Handler,
          class OnTimeout = no_timeout_hook>
class race_op
    : public std::enable_shared_from_this<race_op<Clock, Executor, Value, Handler, OnTimeout>> {
 public:
  using handler_executor = asio::associated_executor_t<Handler, Executor>;
  using timer_type = asio::basic_waitable_timer<Clock, wait_traits_of_t<Clock>, Executor>;

  race_op(Handler&& h, const Executor& caller_ex, const Executor& child_ex,
          OnTimeout on_timeout = {})
      : on_timeout_(std::move(on_timeout)),
        handler_(std::move(h)),
        work_(asio::get_associated_executor(handler_, caller_ex)),
        caller_slot_(asio::get_associated_cancellation_slot(handler_)),
        child_ex_(child_ex),
        timer_(child_ex) {}

  template <class T>
  void start(asio::awaitable<T, Executor> aw, std::chrono::nanoseconds limit) {
    // The caller's slot first: its emit can only come after this initiation
    // returns, so its post reaches the strand after `launch`'s.
    if (caller_slot_.is_connected()) {
      caller_slot_.assign([weak = this->weak_from_this()](asio::cancellation_type type) {
        if (auto self = weak.lock()) {
          asio::post(self->child_ex_, [self, type] { self->on_caller_cancel(type); });
        }
      });
    }
    asio::post(child_ex_, [self = this->shared_from_this(), aw = std::move(aw), limit]() mutable {
      self->launch(std::move(aw), limit);
    });
  }

 private:
  // On the strand, from here on.
  template <class T>
  void launch(asio::awaitable<T, Executor> aw, std::chrono::nanoseconds limit) {
    timer_.expires_at(saturating_add(Clock::now(), limit));
    timer_.async_wait(
        [self = this->shared_from_this()](boost::system::error_code ec) { self->on_timer(ec); });
    asio::co_spawn(
        child_ex_, as_optional(own_frame, std::move(aw)),
        asio::bind_cancellation_slot(
            child_signal_.slot(), [self = this->shared_from_this()](std::exception_ptr e, Value v) {
              self->on_child(std::move(e), std::move(v));
            }));
  }

  void on_timer(boost::system::error_code ec) {
    if (ec || finished_ || caller_cancelled_) return;
    timed_out_ = true;
    on_timeout_();
    child_signal_.emit(asio::cancellation_type::all);
  }

  void on_caller_cancel(asio::cancellation_type type) {
    if (finished_) return;
    caller_cancelled_ = true;
    timer_.cancel();
    child_signal_.emit(type);
  }

  // The caller's resumption, on its executor, dispatched as Asio's own
  // operations complete: this runs in a handler of its own (`launch` is
  // posted, and the child's completion comes from `co_spawn`, posted when
  // the child did not wait), never inside the caller's initiation, so a
  // caller resumed inline here runs one level down and its next call's
  // initiation unwinds it. One pass of the scheduler less than a post.
  void on_child(std::exception_ptr e, Value v) {
    finished_ = true;
    timer_.cancel();
    asio::dispatch(work_.get_executor(), [self = this->shared_from_this(), e = std::move(e),
                                          v = std::move(v), timed_out = timed_out_]() mutable {
      if (self->caller_slot_.is_connected()) self->caller_slot_.clear();
      Handler h = std::move(self->handler_);
      self->work_.reset();
      self.reset();
      std::move(h)(std::move(e), std::move(v), timed_out);
    });
  }

  [[no_unique_address]] OnTimeout on_timeout_;
  Handler handler_;
  asio::executor_work_guard<handler_executor> work_;
  asio::cancellation_slot caller_slot_;
  Executor child_ex_;
  timer_type timer_;
  asio::cancellation_signal child_signal_;
  bool finished_ = false;  // the rest: on the strand only
  bool timed_out_ = false;
  bool caller_cancelled_ = false;
};

}  // namespace levee::detail
