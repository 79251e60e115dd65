/// \file
/// A token-bucket rate limiter, for dependencies with a quota
/// (docs/rate_limit.md).
#pragma once

#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/core/error.hpp>
#include <levee/core/listenable.hpp>
#include <levee/limit/detail/rate_bucket.hpp>
#include <levee/limit/detail/rate_wait.hpp>
#include <levee/limit/detail/throttle_call.hpp>
#include <levee/limit/rate_limiter_options.hpp>
#include <levee/timeout/deadline.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prepend.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>

namespace levee {

/// A token-bucket rate limiter (see `rate_limiter_options` for the bucket):
/// at most `burst` calls at once after a quiet spell, then `rate` per
/// `period`. A call that finds the bucket empty waits for its token when the
/// token comes within its allowed wait (`max_wait`, and the caller's time
/// left when given), else it is rejected at once with `error::rate_limited`
/// (condition `rejected`), never started.
///
/// The wait is bounded by the caller's deadline: inside `with_deadline` (or
/// a pipeline's deadline) the awaitable form reads the time left from the
/// call's executor, and a caller that passes its time left
/// (`limiter(time_left, call())`, `async_execute(time_left, op, token)`)
/// gives it; either way a call whose token would come later is rejected at
/// once, instead of waiting in vain. Any cancellation outside ends a wait at
/// once, and the token goes back unless a later call reserved one after it.
///
/// Thread safety: shared freely between threads of a multi-threaded
/// `io_context`, without strands. The hot path is one compare-and-swap on
/// the bucket's time (GCRA, see `detail::rate_bucket`), one clock read (the
/// coarse clock for `steady_clock` on Linux when a full bucket's refill is
/// at least 100 of its ticks, docs/rate_limit.md) and a relaxed counter: no
/// lock, no allocation beyond the guarded coroutine's frame. A call that
/// waits has one timer, on its own executor.
///
/// Events (`listen`, from `listenable`): `rate_limiter_event_kind` bits,
/// `all_rate_limiter_events`. While nobody listens the fast path pays
/// nothing (one relaxed load on a rejection or at a wait's end); a listener
/// costs a post per event it wants.
///
/// Idle: no timer and no pending work (a waiter's timer exists while it waits).
///
/// Copies share one bucket. Lifetime: the limiter may be destroyed while calls
/// it admitted run or wait (a waiting call shares the bucket). A call of the
/// awaitable form must be *started* (its awaitable first awaited) before the
/// last copy is destroyed, not after it nor concurrently with it: its frame
/// holds the bucket by address until it has its token (since 2026-12-07; a
/// `shared_ptr` copied into each frame before). The token form holds a share.
///
/// `Clock` times the bucket and the waits (`manual_clock` in tests).
/// `rate_limiter` is the steady_clock limiter.
template <class Clock = std::chrono::steady_clock>
class basic_rate_limiter : public listenable<basic_rate_limiter<Clock>, rate_limiter_event> {
 public:
  /// The type of `get_executor()`.
  using executor_type = boost::asio::any_io_executor;

  /// A limiter on `ex`.
  /// \param ex Its executor: that of the token form's timer and, when the
  /// handler has none of its own, of its handler.
  /// \param options Its bucket; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, boost::asio::any_io_executor>
  explicit basic_rate_limiter(const Executor& ex, rate_limiter_options options = {})
      : executor_(ex), bucket_(std::make_shared<detail::rate_bucket>(detail::checked(options))) {}

  /// A limiter on `ctx.get_executor()`.
  /// \param ctx An execution context, such as an `io_context`.
  /// \param options Its bucket; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_rate_limiter(ExecutionContext& ctx, rate_limiter_options options = {})
      : basic_rate_limiter(ctx.get_executor(), options) {}

  /// The limiter's executor.
  /// \return the executor given at construction.
  executor_type get_executor() const noexcept { return executor_; }
  /// The options in force: the constructor's, or the last `reconfigure`'s.
  /// \return them, as validated; the reference stays valid as long as the
  /// bucket (a reconfiguration keeps the options it replaced).
  const rate_limiter_options& options() const noexcept { return bucket_->options(); }

  /// Applies new options to the running limiter (docs/reconfigure.md),
  /// thread-safe against calls on any thread. The new rate and burst apply
  /// to the next call: the tokens taken ahead of the refill stay owed, as
  /// tokens (a higher rate pays them back sooner), a smaller `burst` holds
  /// fewer at once from now on, and a call already waiting keeps the time
  /// of its token. A new `max_wait` applies to calls that start after.
  /// `metrics().reconfigurations` goes up.
  /// \param options The new options; validated as by the constructor.
  /// \throws std::invalid_argument naming the member when `options` is
  /// invalid; nothing changes then.
  void reconfigure(const rate_limiter_options& options) {
    bucket_->reconfigure(detail::checked(options), now());
  }

  /// The bucket and counters now.
  /// \return a snapshot.
  rate_limiter_metrics metrics() const noexcept { return bucket_->metrics(now()); }

  /// Guards `aw`: `co_await limiter(call())`. The call takes a token and
  /// runs, waits for its token (at most `max_wait`), or is rejected with
  /// `error::rate_limited` (never started) in the shape of `T`: a thrown
  /// `boost::system::system_error`, or `{ec, U{}...}` when `T` is
  /// `std::tuple<error_code, U...>`. When it ran, its result is returned
  /// unchanged.
  ///
  /// Cancellation: the awaiting coroutine's cancellation ends a wait with
  /// `operation_aborted` (in the same shape) and gives its token back (when
  /// no later call reserved one: then it is lost, never exceeding the
  /// rate); once the call runs, it reaches `aw` unchanged.
  ///
  /// Executor: the wait's timer and `aw` run on the awaiting coroutine's
  /// executor.
  ///
  /// Thread safety: any thread, concurrently with other calls.
  ///
  /// \param aw The call to guard.
  /// \return an awaitable with the same result as `aw`.
  template <class T, class Executor>
  boost::asio::awaitable<T, Executor> operator()(boost::asio::awaitable<T, Executor> aw) {
    return call(detail::own_frame, bucket_.get(), limit(std::chrono::nanoseconds::max()),
                std::move(aw));
  }

  /// As `operator()(aw)`, for a caller with `time_left` before its deadline:
  /// the call waits at most `min(max_wait, time_left)`, and is rejected at
  /// once when its token would come later.
  /// \param time_left The caller's time left (saturated to nanoseconds;
  /// negative: as zero).
  /// \param aw The call to guard.
  /// \return an awaitable with the same result as `aw`.
  template <class Rep, class Period, class T, class Executor>
  boost::asio::awaitable<T, Executor> operator()(std::chrono::duration<Rep, Period> time_left,
                                                 boost::asio::awaitable<T, Executor> aw) {
    return call(detail::own_frame, bucket_.get(), limit(detail::saturating_ns(time_left)),
                std::move(aw));
  }

  /// Runs the async operation `op` under the limiter and completes through
  /// `token`. `op` takes a completion token and starts the operation (such
  /// as `timer.async_wait(asio::deferred)`); its completion signature starts
  /// with an error_code, an exception_ptr, or is `void(std::tuple<error_code,
  /// T...>)` (`asio::as_tuple`). The call waits at most `max_wait`.
  ///
  /// Completion signature: that of `op`. On rejection the handler receives
  /// `error::rate_limited` (a cancelled wait: `operation_aborted`; in the
  /// exception_ptr form, a `system_error` holding it) and value-initialised
  /// values, never from inside `async_execute`.
  ///
  /// Per-operation cancellation: all types (terminal, partial, total) end a
  /// wait (its token given back as by the coroutine form), and are
  /// forwarded to `op` once it runs.
  ///
  /// Executor: the handler's associated executor, else the limiter's; the
  /// wait's timer runs on the limiter's.
  ///
  /// Thread safety: any thread, concurrently.
  ///
  /// \param op The operation, moved (or copied) in.
  /// \param token The completion token.
  /// \return what `token` makes of the operation (as `asio::async_initiate`).
  template <class Op, BOOST_ASIO_COMPLETION_TOKEN_FOR(
                          boost::asio::completion_signature_of_t<std::decay_t<Op>>) CompletionToken>
  auto async_execute(Op&& op, CompletionToken&& token) {
    return async_execute(std::chrono::nanoseconds::max(), std::forward<Op>(op),
                         std::forward<CompletionToken>(token));
  }

  /// As `async_execute(op, token)`, waiting at most `min(max_wait, time_left)`.
  /// \param time_left The caller's time left before its deadline.
  /// \param op The operation, moved (or copied) in.
  /// \param token The completion token.
  /// \return what `token` makes of the operation (as `asio::async_initiate`).
  template <class Rep, class Period, class Op,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(
                boost::asio::completion_signature_of_t<std::decay_t<Op>>) CompletionToken>
  auto async_execute(std::chrono::duration<Rep, Period> time_left, Op&& op,
                     CompletionToken&& token) {
    using signature = boost::asio::completion_signature_of_t<std::decay_t<Op>>;
    return boost::asio::async_compose<CompletionToken, signature>(
        execute_op<std::decay_t<Op>, signature>(
            bucket_, executor_, limit(detail::saturating_ns(time_left)), std::forward<Op>(op)),
        token, executor_);
  }

  /// For a caller that guards a call by hand: takes a token if the bucket
  /// has one now, never waits.
  /// \return true: the call may run; false: rejected (counted as such).
  bool try_acquire() noexcept {
    std::int64_t t0 = 0;
    const detail::rate_decision d = detail::rate_take<Clock>(*bucket_, 0, t0);
    if (d.what == kind::reject) detail::rate_rejected(*bucket_, d, 0, false);
    return d.what == kind::admit;
  }

 private:
  using kind = detail::rate_decision::kind;
  template <class Executor>
  using timer_type =
      boost::asio::basic_waitable_timer<Clock, detail::wait_traits_of_t<Clock>, Executor>;

  static std::int64_t now() noexcept { return detail::rate_now<Clock>(); }

  // The wait a call may make: min(max_wait, time_left), >= 0.
  std::int64_t limit(std::chrono::nanoseconds time_left) const noexcept {
    const auto w = std::min(options().max_wait, time_left);
    return w > std::chrono::nanoseconds::zero() ? w.count() : 0;
  }

  template <class T, class Executor>
  static boost::asio::awaitable<T, Executor> call(detail::own_frame_t, detail::rate_bucket* b,
                                                  std::int64_t max_wait,
                                                  boost::asio::awaitable<T, Executor> aw) {
    namespace asio = boost::asio;
    // `b` by address, not a `shared_ptr` copied into the frame (two locked
    // instructions a call): the frame reads it only in its first, synchronous
    // step, which runs while a copy of the limiter lives (a call is started
    // before the last copy goes: the class comment), and a waiting call takes
    // a share of it for the wait.
    // A token goes only to a call that starts: a caller already cancelled
    // (co_await would throw) takes none, and one cancelled while its wait's
    // completion was on its way gives its token back.
    auto cancelled = [](const asio::cancellation_state& cs) {
      return cs.cancelled() != asio::cancellation_type::none;
    };
    if (cancelled(co_await asio::this_coro::cancellation_state))
      co_return detail::error_result<T>(asio::error::operation_aborted);
    // Inside a with_deadline (or a pipeline's deadline), the call's executor
    // carries the deadline (timeout/deadline.hpp): a wait never outlasts it.
    if constexpr (std::is_convertible_v<Executor, asio::any_io_executor>) {
      if (max_wait > 0) {
        const asio::any_io_executor ex = co_await asio::this_coro::executor;
        if (const auto left = remaining_deadline(ex))
          max_wait = std::min<std::int64_t>(max_wait, std::max<std::int64_t>(0, left->count()));
      }
    }
    std::int64_t t0 = 0;
    const detail::rate_decision d = detail::rate_take<Clock>(*b, max_wait, t0);
    if (d.what == kind::reject) {
      detail::rate_rejected(*b, d, max_wait, true);
      co_return detail::error_result<T>(error::rate_limited);
    }
    if (d.what == kind::wait) {
      // A waiting call shares the bucket: the limiter may go while it waits.
      detail::rate_wait w(b->shared_from_this(), d, t0, &now);  // ends the wait however it ends
      timer_type<Executor> t(co_await asio::this_coro::executor,
                             detail::rate_time_point<Clock>(d.at));
      auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable_t<Executor>{}));
      if (!ec && cancelled(co_await asio::this_coro::cancellation_state))
        ec = asio::error::operation_aborted;
      if (ec) co_return detail::error_result<T>(ec);
      w.grant();
    }
    co_return co_await std::move(aw);
  }

  struct timer_done {};

  template <class Op, class Signature>
  class execute_op;
  template <class Op, class R, class... Args>
  class execute_op<Op, R(Args...)> {
    using rejection = detail::throttle_rejection<std::decay_t<Args>...>;
    static_assert(rejection::supported,
                  "levee::basic_rate_limiter::async_execute: the operation's completion "
                  "signature must start with an error_code, an exception_ptr or a "
                  "std::tuple<error_code, ...>, and its other arguments must be "
                  "default-constructible");

   public:
    execute_op(std::shared_ptr<detail::rate_bucket> b, executor_type ex, std::int64_t max_wait,
               Op op)  // an lvalue is copied
        : bucket_(std::move(b)), ex_(std::move(ex)), max_wait_(max_wait), op_(std::move(op)) {}

    template <class Self>
    void operator()(Self& self) {
      if (rejected_) return rejection::complete(self, error::rate_limited);
      // async_compose lets only terminal cancellation through by default.
      self.reset_cancellation_state(boost::asio::enable_total_cancellation());
      // Inside a with_deadline, the handler's executor carries the deadline
      // (timeout/deadline.hpp): a wait never outlasts it.
      if (max_wait_ > 0) {
        const boost::asio::any_io_executor hex = boost::asio::get_associated_executor(self, ex_);
        if (const auto left = remaining_deadline(hex))
          max_wait_ = std::min<std::int64_t>(max_wait_, std::max<std::int64_t>(0, left->count()));
      }
      std::int64_t t0 = 0;
      const detail::rate_decision d = detail::rate_take<Clock>(*bucket_, max_wait_, t0);
      if (d.what == kind::reject) {
        detail::rate_rejected(*bucket_, d, max_wait_, true);
        rejected_ = true;
        return boost::asio::post(std::move(self));  // never inside the initiation
      }
      if (d.what == kind::admit) return start(self);
      wait_.emplace(std::move(bucket_), d, t0, &now);
      // On the heap: `self` (and this object) moves into the timer's handler.
      timer_ =
          std::make_unique<timer_type<executor_type>>(ex_, detail::rate_time_point<Clock>(d.at));
      auto& t = *timer_;
      t.async_wait(boost::asio::prepend(std::move(self), timer_done{}));
    }

    template <class Self>
    void operator()(Self& self, timer_done, boost::system::error_code ec) {
      timer_.reset();
      // Cancelled while the timer's completion was on its way: no call starts.
      if (!ec && self.cancelled() != boost::asio::cancellation_type::none)
        ec = boost::asio::error::operation_aborted;
      if (ec) {
        wait_.reset();  // the token goes back
        return rejection::complete(self, ec);
      }
      wait_->grant();
      start(self);
    }

    template <class Self, class... As>
    void operator()(Self& self, As&&... args) {
      self.complete(std::forward<As>(args)...);
    }

   private:
    template <class Self>
    void start(Self& self) {
      Op op = std::move(op_);
      std::move(op)(std::move(self));
    }

    std::shared_ptr<detail::rate_bucket> bucket_;
    executor_type ex_;
    std::int64_t max_wait_;
    Op op_;
    std::optional<detail::rate_wait> wait_;
    std::unique_ptr<timer_type<executor_type>> timer_;
    bool rejected_ = false;
  };

  friend class listenable<basic_rate_limiter<Clock>, rate_limiter_event>;
  detail::event_hub<rate_limiter_event>& listeners() const noexcept { return bucket_->events(); }

  executor_type executor_;
  std::shared_ptr<detail::rate_bucket> bucket_;
};

/// The steady_clock rate limiter.
using rate_limiter = basic_rate_limiter<>;

}  // namespace levee
