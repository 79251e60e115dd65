/// \file
/// Client-side adaptive throttling: graded shedding beside the breaker
/// (docs/shedding.md).
#pragma once

#include <levee/breaker/detail/breaker_call.hpp>
#include <levee/breaker/detail/window_clock.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/error.hpp>
#include <levee/core/listenable.hpp>
#include <levee/limit/detail/throttle_call.hpp>
#include <levee/limit/detail/throttle_window.hpp>
#include <levee/limit/throttle_options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/post.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>

namespace levee {

/// Client-side adaptive throttling (see `throttle_options` for the rule): a
/// layer beside the circuit breaker, not instead of it. The breaker refuses
/// every call once the failure rate crosses its threshold; the throttle sheds
/// a share of calls that grows as the success rate falls, so a dependency at
/// half its capacity still gets the calls it can serve.
///
/// Put it outside the breaker (`throttle(breaker(call()))`): a call the
/// breaker rejects is `ignored` by `default_classify`, so it counts neither
/// as a request nor as an accept.
///
/// Thread safety: shared freely between threads of a multi-threaded
/// `io_context`, without strands. The hot path reads the clock once to
/// admit, and takes no lock while the rejection probability is 0 (otherwise
/// one short spinlock); when the call ends, one clock read and the spinlock,
/// or in the awaitable form, for an accept that cannot move the probability,
/// one atomic add and no lock (the coarse clock for `steady_clock` on Linux,
/// as the breaker's time window; docs/shedding.md, "Cost, threads, idle").
///
/// Events (`listen`, from `listenable`): rejections (`throttle_event_kind`
/// bits, `all_throttle_events`). While nobody listens a rejection costs one
/// relaxed load; a listener costs a post per rejection.
///
/// Idle: the throttle has no timer and no pending work.
///
/// Lifetime: as with a breaker, the throttle may be destroyed while calls it
/// guards are in flight; they finish safely, and its window goes with the
/// last of them (and of the throttle's copies, which share it). A call must
/// be *started* (its awaitable first awaited) before the last copy is
/// destroyed, not after it nor concurrently with it: `co_spawn(ex, t(call()),
/// detached)` followed by the end of `t` before `ex` runs the call is an error.
///
/// `Clock` places requests and accepts in the window (`manual_clock` in
/// tests). `throttle` is the steady_clock throttle.
template <class Clock = std::chrono::steady_clock>
class basic_throttle : public listenable<basic_throttle<Clock>, throttle_event> {
 public:
  /// The type of `get_executor()`.
  using executor_type = boost::asio::any_io_executor;

  /// A throttle on `ex`.
  /// \param ex Its executor: that of a token-form rejection's handler when
  /// the handler has none of its own.
  /// \param options Its settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, boost::asio::any_io_executor>
  explicit basic_throttle(const Executor& ex, throttle_options options = {})
      : executor_(ex),
        window_(new detail::throttle_window(options), &detail::throttle_window::orphan) {}

  /// A throttle on `ctx.get_executor()`.
  /// \param ctx An execution context, such as an `io_context`.
  /// \param options Its settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_throttle(ExecutionContext& ctx, throttle_options options = {})
      : basic_throttle(ctx.get_executor(), std::move(options)) {}

  /// The throttle's executor.
  /// \return the executor given at construction.
  executor_type get_executor() const noexcept { return executor_; }
  /// The options it was constructed with.
  /// \return them, as validated.
  const throttle_options& options() const noexcept { return window_->options(); }

  /// The window and counters now.
  /// \return a snapshot.
  throttle_metrics metrics() const noexcept { return window_->metrics(now()); }

  /// Guards `aw`: `co_await throttle(call())`. The call is counted as a
  /// request, then let through or rejected with `error::throttled` (never
  /// started) in the shape of `T`: a thrown `boost::system::system_error`, or
  /// `{ec, U{}...}` when `T` is `std::tuple<error_code, U...>`. When it ran,
  /// its result is returned unchanged and the classifier decides whether it
  /// was an accept.
  ///
  /// Cancellation: reaches `aw` unchanged (a cancelled call is no accept).
  ///
  /// Executor: `aw` runs on the awaiting coroutine's executor.
  ///
  /// Thread safety: any thread, concurrently with other calls.
  ///
  /// \param aw The call to guard.
  /// \return an awaitable with the same result as `aw`.
  template <class T, class Executor>
  boost::asio::awaitable<T, Executor> operator()(boost::asio::awaitable<T, Executor> aw) {
    return call(detail::own_frame, window_.get(), std::move(aw));
  }

  /// Runs the async operation `op` under the throttle and completes through
  /// `token`. `op` takes a completion token and starts the operation (such
  /// as `timer.async_wait(asio::deferred)`); its completion signature starts
  /// with an error_code, an exception_ptr, or is `void(std::tuple<error_code,
  /// T...>)` (`asio::as_tuple`).
  ///
  /// Completion signature: that of `op`. On rejection the handler receives
  /// `error::throttled` (in the exception_ptr form, a `system_error` holding
  /// it) and value-initialised values, never from inside `async_execute`
  /// (an `op` that completes inside its own initiation completes there, as
  /// it would unguarded).
  ///
  /// Per-operation cancellation: forwarded to `op`, all types (terminal,
  /// partial, total).
  ///
  /// Executor: the handler's associated executor, else the throttle's.
  ///
  /// Thread safety: any thread, concurrently.
  ///
  /// \param op The operation, moved (or copied) in.
  /// \param token The completion token.
  /// \return what `token` makes of the operation (as `asio::async_initiate`).
  template <class Op, BOOST_ASIO_COMPLETION_TOKEN_FOR(
                          boost::asio::completion_signature_of_t<std::decay_t<Op>>) CompletionToken>
  auto async_execute(Op&& op, CompletionToken&& token) {
    using signature = boost::asio::completion_signature_of_t<std::decay_t<Op>>;
    return boost::asio::async_compose<CompletionToken, signature>(
        execute_op<std::decay_t<Op>, signature>(window_, std::forward<Op>(op)), token, executor_);
  }

  /// For a caller that guards a call by hand: decides a request. A
  /// rejection is counted now; a request let through is counted by `record`.
  /// \return true to let the call through (then report its end with
  /// `record`); false: reject it (`throttled`).
  bool try_acquire() noexcept { return window_->request(now()); }

  /// Reports the end of a call `try_acquire` let through.
  /// \param o `success`: a request and an accept; `failure`: a request;
  /// `ignored`: nothing (as if the call had never been offered).
  void record(outcome o) noexcept { window_->finish(now(), o); }

 private:
  static std::int64_t now() noexcept { return detail::window_now<Clock>().count(); }

  template <class T, class Executor>
  static boost::asio::awaitable<T, Executor> call(detail::own_frame_t, detail::throttle_window* w,
                                                  boost::asio::awaitable<T, Executor> aw) {
    if (!w->request_frame(now())) co_return detail::error_result<T>(error::throttled);
    detail::throttle_frame_ticket<Clock> t(w);
    try {
      if constexpr (std::is_void_v<T>) {
        co_await std::move(aw);
        t.finish(call_result());
      } else {
        T value = co_await std::move(aw);
        t.finish(detail::make_value_result(value));
        co_return std::move(value);
      }
    } catch (const boost::system::system_error& e) {
      const boost::system::error_code code = e.code();
      t.finish(call_result(std::current_exception(), &code));
      throw;
    } catch (...) {
      t.finish(call_result(std::current_exception(), nullptr));
      throw;
    }
  }

  template <class Op, class Signature>
  class execute_op;
  template <class Op, class R, class... Args>
  class execute_op<Op, R(Args...)> {
    using rejection = detail::throttle_rejection<std::decay_t<Args>...>;
    static_assert(rejection::supported,
                  "levee::basic_throttle::async_execute: the operation's completion signature "
                  "must start with an error_code, an exception_ptr or a std::tuple<error_code, "
                  "...>, and its other arguments must be default-constructible");

   public:
    execute_op(std::shared_ptr<detail::throttle_window> w, Op op)  // an lvalue is copied
        : window_(std::move(w)), op_(std::move(op)) {}

    template <class Self>
    void operator()(Self& self) {
      if (rejected_) return rejection::complete(self, error::throttled);
      // async_compose lets only terminal cancellation through by default.
      self.reset_cancellation_state(boost::asio::enable_total_cancellation());
      if (!window_->request(now())) {
        rejected_ = true;
        return boost::asio::post(std::move(self));  // never inside the initiation
      }
      ticket_.emplace(std::move(window_));
      Op op = std::move(op_);
      std::move(op)(std::move(self));
    }

    template <class Self, class... As>
    void operator()(Self& self, As&&... args) {
      const std::tuple<const std::decay_t<As>&...> view(args...);
      boost::system::error_code thrown;
      ticket_->finish(detail::make_arguments_result(view, thrown));
      self.complete(std::forward<As>(args)...);
    }

   private:
    std::shared_ptr<detail::throttle_window> window_;
    Op op_;
    std::optional<detail::throttle_ticket<Clock>> ticket_;
    bool rejected_ = false;
  };

  friend class listenable<basic_throttle<Clock>, throttle_event>;
  detail::event_hub<throttle_event>& listeners() const noexcept { return window_->events(); }

  executor_type executor_;
  std::shared_ptr<detail::throttle_window> window_;
};

/// The steady_clock throttle.
using throttle = basic_throttle<>;

}  // namespace levee
