/// \file
/// One object per dependency: every layer of levee, composed in the documented order.
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/hedge/hedge.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/limit/bulkhead.hpp>
#include <levee/limit/throttle.hpp>
#include <levee/pipeline/fallback.hpp>
#include <levee/pipeline/options.hpp>
#include <levee/registry/registry.hpp>
#include <levee/retry/retry.hpp>
#include <levee/timeout/detail/spawn.hpp>
#include <levee/timeout/timeout.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

namespace levee {

namespace detail {
template <class Op, class Executor>
struct pipeline_attempt;  // pipeline/impl/pipeline.hpp
}  // namespace detail

/// Every layer for one dependency, in levee's order (README, "Composing
/// levee"), outermost first: fallback, total deadline, retry under its
/// budget, hedge, throttle, circuit breaker, bulkhead or adaptive limit,
/// per-attempt timeout, the call. Polly v8's `ResiliencePipeline`
/// and Resilience4j's `Decorators`, Asio-shaped:
///
///     levee::pipeline<std::tuple<error_code, http::response>> api(ioc, {
///         .name = "api", .rules = levee::http::rules(),
///         .fallback = {{.value = ...}}, .deadline = 2s, .retry = {{...}},
///         .breaker = {{}}, .limit = {{}}, .timeout = 250ms});
///     auto [ec, res] = co_await api(levee::http::async_get(client, url,
///                                   asio::as_tuple(asio::deferred)));
///
/// One `call_rules` (`pipeline_options::rules`) serves every layer, so no
/// layer is blind to a 503. Each layer can be left out. The pipeline holds
/// its own breaker, bulkhead or limit and retry policy, or uses a registry's
/// breaker (and limit) for a key.
///
/// `Clock` times every layer (`basic_pipeline<T, manual_clock>` in tests).
///
/// Thread safety: one pipeline may serve calls on any threads at once
/// (its counters are relaxed atomics). Lifetime: a pipeline must outlive
/// the calls it runs (it is borrowed by them, as a retry policy is).
/// \tparam T The result type of its calls: `std::tuple<error_code, U...>`
/// (the tuple form, `asio::as_tuple`) or a value whose errors are thrown.
template <class T, class Clock = std::chrono::steady_clock>
class basic_pipeline {
  static_assert(!std::is_void_v<T>, "levee::pipeline: calls return a value (or a tuple)");

 public:
  /// The registry type whose breakers (and limits) it can use.
  using registry_type = basic_breaker_registry<Clock>;
  /// The type of its executor, which its breaker, bulkhead and limit get.
  using executor_type = boost::asio::any_io_executor;

  /// A pipeline with its own layers.
  /// \param ex The executor of its breaker's, bulkhead's and limit's timers.
  /// \param options Its layers; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type> basic_pipeline(
      const Executor& ex, pipeline_options<T> options)
      : basic_pipeline(executor_type(ex), detail::checked(std::move(options)), nullptr, {}) {}

  /// The same on a context's executor.
  /// \param ctx The execution context (an `io_context`).
  /// \param options Its layers; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> basic_pipeline(
      ExecutionContext& ctx, pipeline_options<T> options)
      : basic_pipeline(ctx.get_executor(), std::move(options)) {}

  /// A pipeline whose breaker (and limit, with `registry_options::limits`) is
  /// `registry`'s for `key`, looked up at each attempt (so that the
  /// registry's overrides and evictions apply).
  /// \param ex The executor of its bulkhead's and limit's timers.
  /// \param options Its layers; `breaker` must be empty, and `limit` too when
  /// the registry has limits; with `rules.classify` set, the registry's
  /// breakers must have a classifier (`registry_options::defaults`).
  /// \param registry The registry; borrowed, it must outlive the pipeline.
  /// \param key The key of the breaker (a host, "host:port").
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type> basic_pipeline(
      const Executor& ex, pipeline_options<T> options, registry_type& registry, std::string key)
      : basic_pipeline(executor_type(ex), checked_for(std::move(options), registry), &registry,
                       std::move(key)) {}

  basic_pipeline(const basic_pipeline&) = delete;
  basic_pipeline& operator=(const basic_pipeline&) = delete;

  /// Runs `op` through every layer: `co_await pipe(op)`.
  ///
  /// `op` is one of:
  /// - a deferred async operation (`async_get(client, url,
  ///   asio::as_tuple(asio::deferred))`): each attempt starts a copy of it;
  /// - a factory: a callable that returns, for each attempt, a fresh
  ///   `asio::awaitable<T, Executor>` or a deferred async operation.
  ///
  /// Result, the two forms, decided by `T` as in every layer: in the tuple
  /// form levee's errors (`circuit_open`, `limit_exceeded`, `bulkhead_full`,
  /// `timeout`, `deadline_exceeded`) come in the tuple, and the last
  /// attempt's tuple (or the fallback's answer) is returned; otherwise they
  /// are thrown as `system_error` (`circuit_open_error` for a rejection), and
  /// the last attempt's exception is rethrown unless the fallback answers.
  ///
  /// Cancellation: the awaiting coroutine's cancellation reaches the running
  /// attempt or the retry's wait, and comes back as `operation_aborted`
  /// (never retried, never answered by the fallback).
  ///
  /// Executor: the attempts run on the awaiting coroutine's executor (an
  /// attempt with a timeout: on a strand of it, as `with_timeout` does).
  /// With a `timeout` or a `deadline`, attempts on a concrete executor that
  /// is not a strand (`io_context::executor_type`) are refused, as by
  /// `with_timeout`: `std::invalid_argument`, before any attempt.
  ///
  /// Lifetime: the pipeline is borrowed; `op` is moved in.
  ///
  /// \param op The operation or its factory.
  /// \return an `asio::awaitable<T, Executor>` (the factory's awaitable's
  /// executor, else `any_io_executor`).
  template <class Op>
  auto operator()(Op op) {
    using executor = typename detail::pipeline_attempt<Op, executor_type>::executor_type;
    using value = typename detail::pipeline_attempt<Op, executor_type>::value_type;
    static_assert(std::is_same_v<value, T>,
                  "levee::pipeline<T>: the operation's result must be T (asio::as_tuple(...) for "
                  "the tuple form)");
    if (options_.deadline == std::chrono::nanoseconds::zero())
      return attempts<executor>(detail::own_frame,
                                std::move(op));  // the fallback, if any, answers there
    return outer<executor>(detail::own_frame, std::move(op));
  }

  /// The completion-token form: runs `(*this)(std::move(op))` as a new
  /// coroutine on the pipeline's executor, as `co_spawn` does.
  ///
  /// Completion signature: `void(std::exception_ptr, T)`, `co_spawn`'s.
  /// Cancellation: the handler's cancellation slot reaches the running attempt
  /// or the retry's wait. Executor: the handler's associated executor.
  /// \param op The operation or its factory, as for `operator()`.
  /// \param token The completion token.
  /// \return what `token` makes of the operation (as `asio::async_initiate`).
  template <class Op, BOOST_ASIO_COMPLETION_TOKEN_FOR(void(std::exception_ptr, T)) CompletionToken>
  auto async_call(Op op, CompletionToken&& token) {
    return detail::spawn_carrying_deadline(executor_, (*this)(std::move(op)),
                                           std::forward<CompletionToken>(token));
  }

  /// The options it was built from, with the rules filled into each layer.
  /// \return them.
  const pipeline_options<T>& options() const noexcept { return options_; }

  /// The pipeline's executor.
  /// \return it.
  executor_type get_executor() const noexcept { return executor_; }

  /// Its breaker: its own, or the registry's for its key (created if absent).
  /// \return it, or null without a breaker.
  std::shared_ptr<basic_circuit_breaker<Clock>> breaker() const {
    return registry_ ? registry_->get(key_) : own_.breaker;
  }

  /// Its retry policy.
  /// \return it, or null without retries.
  basic_retry_policy<Clock>* retry() noexcept { return retry_ ? &*retry_ : nullptr; }

  /// Its hedge.
  /// \return it, or null without a hedge.
  basic_hedge<Clock>* hedge() noexcept { return hedge_ ? &*hedge_ : nullptr; }

  /// Every layer's metrics, in one place.
  /// \return them, named after the pipeline.
  pipeline_metrics metrics() const;

 private:
  basic_pipeline(executor_type ex, pipeline_options<T> options, registry_type* registry,
                 std::string key);
  static pipeline_options<T> checked_for(pipeline_options<T> options, registry_type& registry);

  template <class Executor, class Op>
  boost::asio::awaitable<T, Executor> attempts(detail::own_frame_t, Op op);
  template <class Executor, class Op>
  boost::asio::awaitable<T, Executor> outer(detail::own_frame_t, Op op);
  /// Refuses, before anything starts, a call whose attempts are on an
  /// executor that cannot be serialised (`io_context::executor_type`) when
  /// the pipeline races them against a timer (a timeout or a deadline): as
  /// `with_timeout` does, and before the retry or the fallback could see it.
  template <class Executor>
  void refuse_races() const {
    if constexpr (!detail::can_serialize<Executor>) {
      using nanos = std::chrono::nanoseconds;
      const auto races = [](nanos limit) {
        return limit != nanos::zero() && limit != nanos::max();
      };
      if (races(options_.timeout))
        detail::refuse_unserialisable("levee::pipeline with pipeline_options::timeout");
      if (races(options_.deadline))
        detail::refuse_unserialisable("levee::pipeline with pipeline_options::deadline");
    }
  }
  template <class Executor, class Op>
  boost::asio::awaitable<T, Executor> hedged_attempt(detail::own_frame_t, Op& op);
  template <class Executor>
  boost::asio::awaitable<T, Executor> layered(boost::asio::awaitable<T, Executor> aw,
                                              typename registry_type::guard_set& held);

  struct count {  // a race_timer hook: counts a timeout
    std::atomic<std::uint64_t>* n;
    void operator()() const noexcept { n->fetch_add(1, std::memory_order_relaxed); }
  };

  executor_type executor_;
  pipeline_options<T> options_;
  registry_type* registry_;
  std::string key_;
  typename registry_type::guard_set own_;  // its own breaker and limit (null without)
  std::optional<basic_bulkhead<Clock>> bulkhead_;
  std::optional<basic_retry_policy<Clock>> retry_;
  std::optional<basic_hedge<Clock>> hedge_;
  std::optional<basic_throttle<Clock>> throttle_;
  std::optional<levee::fallback<T>> fallback_;
  std::atomic<std::uint64_t> calls_{0};
  std::atomic<std::uint64_t> timeouts_{0};
  std::atomic<std::uint64_t> deadlines_{0};
};

/// The steady_clock pipeline.
template <class T>
using pipeline = basic_pipeline<T>;

}  // namespace levee

#include <levee/pipeline/impl/pipeline.hpp>
