/// \file
/// Hedged requests: another attempt when the first is slow, the first
/// success wins, under a budget (docs/hedging.md).
#pragma once

#include <levee/core/detail/block_cache.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/listenable.hpp>
#include <levee/hedge/detail/hedge_op.hpp>
#include <levee/hedge/detail/hedge_state.hpp>
#include <levee/hedge/options.hpp>
#include <levee/timeout/detail/race.hpp>
#include <levee/timeout/detail/spawn.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <tuple>
#include <type_traits>

namespace levee {

namespace detail {

/// An attempt factory's awaitable: what it returns, when that is an
/// `asio::awaitable`; else the async operation it returns (such as
/// `timer.async_wait(asio::deferred)`), awaited as a `std::tuple` of its
/// completion's arguments (`asio::as_tuple`).
template <class Factory, class R = std::invoke_result_t<Factory&>,
          bool = awaitable_traits<R>::is_awaitable>
struct hedge_factory {
  using awaitable = R;
  static R make(Factory& f) { return f(); }
};
template <class Signature>
struct signature_tuple;
template <class... Args>
struct signature_tuple<void(Args...)> {
  using type = std::tuple<std::decay_t<Args>...>;
};
template <class Factory, class R>
struct hedge_factory<Factory, R, false> {
  using value_type =
      typename signature_tuple<boost::asio::completion_signature_of_t<std::decay_t<R>>>::type;
  using awaitable = boost::asio::awaitable<value_type>;
  static awaitable make(Factory& f) { return run(f()); }
  // deferred, not use_awaitable: an async operation is awaited without a
  // coroutine frame of its own (use_awaitable's initiation is one).
  static awaitable run(R op) {
    co_return co_await std::move(op)(boost::asio::as_tuple(boost::asio::deferred));
  }
};

/// The factory as `hedge_op` calls it: `asio::awaitable`s only.
template <class Factory>
struct hedge_attempts {
  Factory f;
  typename hedge_factory<Factory>::awaitable operator()() {
    return hedge_factory<Factory>::make(f);
  }
};

/// Whether a hedged call can keep its state to one thread when its attempts'
/// awaitables are on `Executor`: a strand is used as it is; a type that can
/// hold a strand (`any_io_executor`) gets one of the caller's executor. A
/// concrete executor that is neither (`io_context::executor_type`,
/// `thread_pool::executor_type`) runs the attempts' handlers on any thread of
/// its context: the call's state and the cancellation emitted into a loser
/// would race (docs/hedging.md, "Executors").
template <class Executor>
inline constexpr bool hedge_can_serialize = can_serialize<Executor>;  // timeout/detail/race.hpp

template <class Clock, class T, class Executor, class Factory>
boost::asio::awaitable<T, Executor> hedged(std::shared_ptr<hedge_state> s, Factory factory,
                                           hedge_call call) {
  namespace asio = boost::asio;
  const hedge_options& o = s->options();
  const bool idempotent = call.idempotent;
  if (!idempotent || o.max_attempts == 1) {  // one attempt, the call's own frame
    s->count(&hedge_state::calls);
    s->count(&hedge_state::attempts);
    if (!idempotent) s->count(&hedge_state::not_idempotent);
    co_return co_await factory();
  }
  if constexpr (!hedge_can_serialize<Executor>) {
    throw unserialisable_executor(
        "levee::basic_hedge: the attempts' awaitables are on a concrete executor that is not a "
        "strand and cannot hold one (such as asio::io_context::executor_type): a hedged call "
        "could not keep its state to one thread; use asio::awaitable<T> (any_io_executor) or "
        "asio::awaitable<T, asio::strand<...>>");
  }
  using value_type = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;
  const std::int64_t delay = s->begin_call(hedge_budget_now<Clock>(o.window));
  const Executor ex = co_await asio::this_coro::executor;
  using op_type = hedge_op<Clock, Executor, value_type, Factory>;
  // The call's state from levee's per-thread block cache: in Asio's
  // recycling allocator (two blocks per purpose) the strand's own
  // operations pushed it out on every call.
  auto op = std::allocate_shared<op_type>(cached_allocator<op_type>(), ex, std::move(factory),
                                          std::move(s), delay, std::move(call.classifier));
  // The caller's cancellation state, read before the launch (a pointer
  // copied, nothing waited for): see below.
  const asio::cancellation_state caller = co_await asio::this_coro::cancellation_state;
  const asio::cancellation_type before = caller.cancelled();
  if (op->launch()) {  // answered without waiting: no suspension (hedge_op)
    std::exception_ptr failure = std::move(op->failure());
    value_type value = std::move(op->value());
    op.reset();
    if (failure) std::rethrow_exception(failure);
    if constexpr (std::is_void_v<T>)
      co_return;
    else
      co_return std::move(*value);
  }
  // A cancellation that reached the caller during the launch (emitted on
  // the caller's thread: by the attempt's synchronous part, say) found no
  // slot of the call's, which is hooked only as the caller waits: it is
  // passed on to the attempts now, whether or not Asio's check throws at
  // the wait (`throw_if_cancelled(false)`: it does not).
  const asio::cancellation_type during =
      before == asio::cancellation_type::none ? caller.cancelled() : asio::cancellation_type::none;
  if (during != asio::cancellation_type::none) op->cancel(during);
  // deferred, not use_awaitable: the operation is awaited without a
  // coroutine frame for its initiation (use_awaitable's is one). The op
  // leaves this frame as it suspends: the op holds the handler, which holds
  // this frame (a context destroyed with the call in flight frees both).
  auto token = asio::as_tuple(asio::deferred);
  auto wait = [&] {
    return asio::async_initiate<decltype(token), void(std::exception_ptr, value_type)>(
        [&op](auto handler) {
          const std::shared_ptr<op_type> self = std::move(op);
          self->await(std::move(handler));
        },
        token);
  };
  std::optional<std::tuple<std::exception_ptr, value_type>> result;
  std::exception_ptr thrown;
  try {
    result.emplace(co_await wait());
  } catch (...) {
    thrown = std::current_exception();
  }
  if (thrown) {
    // Asio's cancellation check threw at the co_await, before the
    // initiation ran (a cancellation emitted into the caller during the
    // launch, passed on above): the attempt runs, and may use this frame
    // and the caller's. It is waited for, the check off meanwhile (it was
    // on: it threw), and then the caller sees the cancellation.
    if (op) {
      if (during == asio::cancellation_type::none) op->cancel(asio::cancellation_type::terminal);
      co_await asio::this_coro::throw_if_cancelled(false);
      (void)co_await wait();
      co_await asio::this_coro::throw_if_cancelled(true);
    }
    std::rethrow_exception(thrown);
  }
  auto& [failure, value] = *result;
  if (failure) std::rethrow_exception(failure);
  if constexpr (!std::is_void_v<T>) co_return std::move(*value);
}

}  // namespace detail

/// A hedge: `co_await hedge([&] { return http_get(client, url); })` starts an
/// attempt, and when it has not answered within the delay, another one (up
/// to `max_attempts`), within the budget. The first success wins; the other
/// attempts are cancelled (per attempt, through their cancellation slots).
/// Rules (docs/hedging.md):
///
/// - Delay: fixed, or a percentile of recent attempt latency
///   (`hedge_options::percentile`).
/// - Budget: extra attempts at most `max_extra_ratio` of the calls over the
///   window, plus `min_extra`; when it is spent, the hedge is not started
///   (`budget_refusals`).
/// - Failures: an attempt that fails (any outcome but `success`) while
///   another runs does not end the call: the call waits for the others. One
///   that fails with no other running ends it with that failure (a hedge does
///   not retry: put a retry around or inside it). When every attempt failed,
///   the last one's result is the call's.
/// - Rejections (`condition::rejected`, such as a breaker's `circuit_open`):
///   never hedged; no further attempt starts, and the rejection is returned
///   when no other attempt runs.
/// - Not idempotent (`hedge_options::idempotent`, `hedge_call`): one
///   attempt, never hedged.
///
/// Thread safety: shared freely between threads of a multi-threaded
/// `io_context`. Hot path: a short spinlock at the start of a call (the
/// budget's count), two to take the call's strand from its context's pool
/// and give it back (the pool found without Asio's service registry mutex
/// once a thread has asked for it), one per hedge started and one per
/// attempt's latency sample (percentile delay only), never across the call. A call answered
/// before the delay calls no operator new once warm (its state from levee's
/// per-thread block cache); Asio's own coroutine frames still reach
/// `aligned_alloc` when its two cached blocks per thread are taken
/// (docs/hedging.md, "Allocations").
///
/// Events (`listen`, from `listenable`): `hedge_event_kind` bits,
/// `all_hedge_events`. While nobody listens the call path pays one relaxed
/// load when a hedge is due or wins; a listener costs a post per event.
///
/// Idle: no pending work. The delay timer lives in the call, is made only
/// when an attempt did not answer at once, and is cancelled as soon as the
/// call is decided.
///
/// `Clock` times the delay, the latency and the windows (`manual_clock` in
/// tests). `hedge` is the steady_clock hedge.
template <class Clock = std::chrono::steady_clock>
class basic_hedge : public listenable<basic_hedge<Clock>, hedge_event> {
 public:
  using clock_type = Clock;                            ///< the delays' clock
  using executor_type = boost::asio::any_io_executor;  ///< the token form's

  /// A hedge on `ex`.
  /// \param ex The executor of the token form's calls.
  /// \param options Its settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, boost::asio::any_io_executor>
  explicit basic_hedge(const Executor& ex, hedge_options options = {})
      : executor_(ex), state_(std::make_shared<detail::hedge_state>(options)) {}

  /// A hedge on `ctx.get_executor()`.
  /// \param ctx An execution context, such as an `io_context`.
  /// \param options Its settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_hedge(ExecutionContext& ctx, hedge_options options = {})
      : basic_hedge(ctx.get_executor(), std::move(options)) {}

  /// \return the executor given at construction.
  executor_type get_executor() const noexcept { return executor_; }
  /// \return the options, as validated.
  const hedge_options& options() const noexcept { return state_->options(); }
  /// \return the counters and the current delay.
  hedge_metrics metrics() const noexcept { return state_->metrics(detail::hedge_now<Clock>()); }

  /// A hedged call. `factory` is called once per attempt (on a strand of the
  /// awaiting coroutine's executor) and returns a fresh
  /// `asio::awaitable<T, Executor>`, or an async operation (such as
  /// `sock.async_read_some(buf, asio::deferred)`), awaited as a tuple of its
  /// completion's arguments.
  ///
  /// Result: the winning attempt's (or the last failed one's) result,
  /// returned, or its exception rethrown; the shape of `T` decides the
  /// form, as everywhere in levee.
  ///
  /// Cancellation: the awaiting coroutine's cancellation reaches every
  /// running attempt, and no attempt starts after it.
  ///
  /// Executor: the attempts run on a strand of the awaiting coroutine's
  /// executor (its own, inside `with_deadline`, whose deadline they carry),
  /// or on that executor when it is a concrete strand. A concrete executor
  /// that is not a strand and cannot hold one (`asio::awaitable<T,
  /// asio::io_context::executor_type>`) is refused: the call throws
  /// `std::invalid_argument` before any attempt starts, unless it is one
  /// attempt (not idempotent, or `max_attempts = 1`).
  ///
  /// Lifetime: `factory` is moved in; what it captures by reference must
  /// outlive the call. The call returns only once every attempt has ended.
  ///
  /// \param factory Makes each attempt.
  /// \return an awaitable of the attempts' result.
  template <class Factory, class Awaitable = typename detail::hedge_factory<Factory>::awaitable,
            class Traits = detail::awaitable_traits<Awaitable>>
  Awaitable operator()(Factory factory) {
    return (*this)(std::move(factory), hedge_call{options().idempotent});
  }
  /// As above, with this call's own idempotency (not idempotent, it is
  /// sent once, never hedged) and, when it has one, its own classifier.
  /// \param factory Makes each attempt.
  /// \param call Whether this call is idempotent, how to classify its answers.
  /// \return an awaitable of the attempts' result.
  template <class Factory, class Awaitable = typename detail::hedge_factory<Factory>::awaitable,
            class Traits = detail::awaitable_traits<Awaitable>>
  Awaitable operator()(Factory factory, hedge_call call) {
    return detail::hedged<Clock, typename Traits::value_type, typename Traits::executor_type>(
        state_, detail::hedge_attempts<Factory>{std::move(factory)}, std::move(call));
  }

  /// The completion-token form: runs `(*this)(factory, call)` as a new
  /// coroutine on the hedge's executor, as `co_spawn` does.
  ///
  /// Completion signature: `void(std::exception_ptr, T)` (`void(std::exception_ptr)`
  /// for `void`), the exception being what the coroutine form would throw.
  /// `T` must be default-constructible.
  ///
  /// Cancellation: the handler's slot reaches every running attempt
  /// (terminal, as `co_spawn` forwards it).
  ///
  /// \param factory Makes each attempt.
  /// \param token The completion token.
  /// \return what the token's `async_result` makes of the operation.
  ///
  /// Attempts on a concrete executor type (`asio::awaitable<T,
  /// asio::strand<asio::io_context::executor_type>>`): the hedge's executor
  /// must hold one of that type (`std::invalid_argument` otherwise).
  template <class Factory, class CompletionToken>
  auto async_execute(Factory factory, CompletionToken&& token) {
    return async_execute(std::move(factory), hedge_call{options().idempotent},
                         std::forward<CompletionToken>(token));
  }
  /// As above, with this call's own idempotency.
  /// \param factory Makes each attempt.
  /// \param call Whether this call is idempotent.
  /// \param token The completion token.
  /// \return what the token's `async_result` makes of the operation.
  template <class Factory, class CompletionToken>
  auto async_execute(Factory factory, hedge_call call, CompletionToken&& token) {
    using attempt_executor = typename detail::awaitable_traits<
        typename detail::hedge_factory<Factory>::awaitable>::executor_type;
    if constexpr (std::is_same_v<attempt_executor, executor_type>) {
      // Inside a caller's with_deadline, the call carries its deadline.
      return detail::spawn_carrying_deadline(executor_,
                                             (*this)(std::move(factory), std::move(call)),
                                             std::forward<CompletionToken>(token));
    } else {
      const auto* ex = executor_.template target<attempt_executor>();
      if (!ex)
        throw std::invalid_argument(
            "levee::basic_hedge::async_execute: the attempts' executor type is not the "
            "hedge's executor's");
      return boost::asio::co_spawn(*ex, (*this)(std::move(factory), std::move(call)),
                                   std::forward<CompletionToken>(token));
    }
  }

 private:
  friend class listenable<basic_hedge<Clock>, hedge_event>;
  detail::event_hub<hedge_event>& listeners() const noexcept { return state_->events; }

  executor_type executor_;
  std::shared_ptr<detail::hedge_state> state_;
};

/// The steady_clock hedge.
using hedge = basic_hedge<>;

}  // namespace levee
