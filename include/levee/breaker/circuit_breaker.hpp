/// \file
/// The circuit breaker for Asio coroutines and completion tokens.
//
// `basic_circuit_breaker` and its documentation. The machinery is in
// detail/: the sans-I/O core (breaker_core.hpp, with its windows in
// time_window.hpp and count_window.hpp), the Asio shell (breaker_shell.hpp),
// one call's path (breaker_call.hpp), and the telemetry compiled once
// (breaker_telemetry.hpp, breaker/impl/breaker_telemetry.ipp and breaker_listeners.ipp).
#pragma once

#include <levee/breaker/detail/breaker_call.hpp>
#include <levee/breaker/detail/breaker_shell.hpp>
#include <levee/breaker/observe.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/error.hpp>
#include <levee/core/vocabulary.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/execution_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

namespace levee {

namespace detail {
struct guard_access;
struct fleet_access;  // breaker/detail/fleet_hook.hpp
}  // namespace detail

/// What `breaker(aw)` returns: for an `asio::awaitable<T, Executor>`, an
/// `asio::awaitable<T, Executor>` that runs `aw` under the breaker when it is
/// awaited (and never runs it when the breaker rejects the call).
template <class Awaitable>
using breaker_guarded = typename detail::guarded_type<std::remove_cvref_t<Awaitable>>::type;

/// A circuit breaker (README, docs/design.md) for Asio coroutines and completion tokens.
///
/// `Clock` drives the OPEN -> HALF_OPEN timer and, with slow-call detection,
/// call durations; `WaitTraits` are its Asio wait traits (by default the
/// clock's own `wait_traits` if it has some, as `manual_clock` does, else
/// `asio::wait_traits<Clock>`). Tests use `basic_circuit_breaker<manual_clock>`.
/// `circuit_breaker` is the steady_clock breaker.
///
/// Executor: the timer runs on the executor given at construction; guarded
/// calls run on their caller's executor.
///
/// Thread safety: a breaker may be shared by coroutines on any number of
/// threads (of one `io_context` or of several); every member function is
/// thread-safe except construction, destruction and move.
///
/// Lifetime: as with an Asio I/O object, the breaker may be destroyed while
/// calls it guards are in flight (for example by `~io_context` at shutdown,
/// when the io_context was declared first) or while its timer is pending: the
/// timers are cancelled, and its shared state lives on until the last call
/// ends. A guarded operation must not be *started* after the breaker is gone.
template <class Clock = std::chrono::steady_clock,
          class WaitTraits = detail::wait_traits_of_t<Clock>>
class basic_circuit_breaker {
  using impl_type = detail::breaker_impl<Clock, WaitTraits>;

 public:
  /// The clock of its timer and of its durations.
  using clock_type = Clock;
  /// The type of `get_executor()`.
  using executor_type = boost::asio::any_io_executor;

  /// A breaker whose open timer runs on `ex` (anything `any_io_executor`
  /// accepts: `io_context::get_executor()`, a strand, ...).
  ///
  /// \param ex The executor of its timers, and of its listeners by default.
  /// \param options How it decides; validated (`validate`).
  /// \param name Its name, in its events, its metrics and the
  /// `circuit_open_error` it throws ("": unnamed).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type>
  explicit basic_circuit_breaker(const Executor& ex, breaker_options options = {},
                                 std::string name = {})
      : impl_(std::make_shared<impl_type>(executor_type(ex), std::move(options), std::move(name))) {
  }

  /// A breaker whose open timer runs on `ctx.get_executor()`.
  /// \param ctx An execution context, such as an `io_context`.
  /// \param options How it decides; validated (`validate`).
  /// \param name Its name ("": unnamed).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_circuit_breaker(ExecutionContext& ctx, breaker_options options = {},
                                 std::string name = {})
      : basic_circuit_breaker(ctx.get_executor(), std::move(options), std::move(name)) {}

  /// Moves the breaker, its state, calls in flight and listeners included;
  /// the moved-from object may only be destroyed or assigned to.
  basic_circuit_breaker(basic_circuit_breaker&&) noexcept = default;
  /// Lets go of this breaker's state, as the destructor does, and takes
  /// `other`'s; `other` may then only be destroyed or assigned to.
  /// \param other The breaker to take.
  /// \return `*this`.
  basic_circuit_breaker& operator=(basic_circuit_breaker&& other) noexcept {
    if (this != &other) {
      if (impl_) impl_type::detach(std::move(impl_));
      impl_ = std::move(other.impl_);
    }
    return *this;
  }

  /// Safe with calls in flight and with the timer pending, as for an Asio I/O
  /// object: the timers are cancelled, and the calls in flight finish as usual
  /// (their outcomes are counted, no timer is armed any more); the breaker's
  /// shared state goes with the last of them.
  ~basic_circuit_breaker() {
    if (impl_) impl_type::detach(std::move(impl_));
  }

  /// The current state.
  /// \return the state now; it may change as soon as it is read.
  circuit_state state() const noexcept { return impl_->core().state(); }

  /// The options in force: the constructor's, or the last `reconfigure`'s.
  /// \return them, as validated; the reference stays valid as long as the
  /// breaker (a reconfiguration publishes new options and keeps these).
  const breaker_options& options() const noexcept { return impl_->options(); }

  /// Applies new options to the running breaker without losing what it
  /// knows (docs/reconfigure.md). Thread-safe against calls in flight on any
  /// thread and against other member functions.
  ///
  /// Kept: the state, the open streak, the probes in flight, the counters,
  /// the listeners, the p99 estimate, and the window unless it changes.
  /// At once, the window kept: the thresholds, `minimum_calls`,
  /// `consecutive_failures`, slow-call detection, the open duration and its
  /// backoff and jitter, `half_open_probes`, `successes_to_close`,
  /// `probe_timeout`, `recovery_window` and the classifier. If the breaker is
  /// CLOSED and the window it kept is over a new threshold, it opens now
  /// (reason `failure_rate` or `slow_call_rate`). A new `window_type`,
  /// `window`, `window_buckets` or (count window) `window_calls` starts an
  /// empty window. An OPEN breaker's timer is re-armed for the new open
  /// duration, counted from when it opened (already past: HALF_OPEN at once,
  /// through the timer). A HALF_OPEN round keeps its `max_half_open_duration`
  /// deadline and its probes their `probe_timeout`.
  ///
  /// Calls in flight: a call admitted under the old options is never
  /// cancelled nor re-admitted, keeps its permit (a probe stays a probe of
  /// its round, with its deadline), and when it completes it is classified by
  /// the classifier in force then, is slow by the `slow_call_duration` in
  /// force then (never if slow-call detection was off when it started), and
  /// is recorded in the window that exists then, against the thresholds in
  /// force then.
  ///
  /// Telemetry: a `reconfigured` event, and `breaker_metrics::reconfigurations`
  /// (`levee_reconfigurations_total`) goes up. Cost: the calls' path is
  /// unchanged; each reconfiguration keeps the options it replaced (a few
  /// hundred bytes) until the breaker is destroyed.
  ///
  /// \param options The new options; validated as by the constructor.
  /// \throws std::invalid_argument naming the member when `options` is
  /// invalid; the breaker then keeps its options and everything else.
  /// std::bad_alloc if memory runs out, with the same guarantee.
  void reconfigure(const breaker_options& options) { impl_->reconfigure(options); }

  /// The executor the open timer runs on.
  /// \return the executor given at construction.
  executor_type get_executor() const noexcept { return impl_->get_executor(); }

  /// The probes running now.
  /// \return the calls admitted as probes and not finished (HALF_OPEN); 0 in
  /// other states.
  std::size_t probes_in_flight() const noexcept { return impl_->core().probes_in_flight(); }

  /// Cumulative outcome and rejection counts.
  /// \return the counts since construction, every state included.
  breaker_counters counters() const noexcept { return impl_->core().counters(); }

  /// The sliding window's totals.
  /// \return the calls, failures and slow calls in the CLOSED window now.
  window_totals window() const noexcept {
    return impl_->core().window(detail::window_now<Clock>());
  }

  /// The breaker's name.
  /// \return the name given at construction (a registry uses its key), ""
  /// if none; valid as long as the breaker's state.
  std::string_view name() const noexcept { return impl_->name(); }

  /// When to retry, as Polly's `BrokenCircuitException.RetryAfter`: the time
  /// until the breaker is due to admit a call, measured on its clock. 0 when
  /// it admits calls now (CLOSED, DISABLED, METRICS_ONLY, HALF_OPEN with a
  /// free probe slot); in OPEN, the time until its timer makes it HALF_OPEN
  /// (`nanoseconds::max()` with an `open_duration` of "for ever"); in
  /// HALF_OPEN with every slot taken, the time until the round's
  /// `max_half_open_duration` runs out (when it is settled at the latest; 0
  /// with no limit, as nothing better is known); in
  /// FORCED_OPEN, `nanoseconds::max()`. For the error_code forms: a rejected
  /// call's exception (`circuit_open_error`) carries the same value, computed
  /// when it was rejected. Thread-safe; reads the clock and takes a short lock.
  ///
  /// \return that time, measured on `Clock`.
  std::chrono::nanoseconds retry_after() const noexcept { return impl_->retry_after(); }

  // ---- observability -------------------------------------------------------

  /// A snapshot of the metrics: calls by outcome, rejections, the window's
  /// rates, the state, the time spent in each state, transitions per pair of
  /// states, the open streak and the stuck-open signal. Thread-safe.
  /// \return the snapshot, taken now.
  breaker_metrics metrics() const noexcept { return impl_->metrics(); }

  /// Adds a listener for the events in `mask` (`all_events`,
  /// `transition_events`, `call_events`, or `event_kind` bits), invoked on
  /// `ex` (by default the breaker's executor) by `asio::post`: outside the
  /// breaker and its locks, in the order the events happened for a given
  /// listener and executor when that executor runs handlers in order.
  ///
  /// Cost: one relaxed load for kinds nobody asked for; otherwise a batched
  /// post, up to 64 events a post (docs/observability.md, "Events").
  ///
  /// \param mask The event kinds it wants.
  /// \param fn The listener (see \ref event_listener).
  /// \return an id for `unlisten`.
  std::uint64_t listen(event_mask mask, event_listener fn) {
    return impl_->telemetry().listen(mask, std::move(fn), get_executor());
  }
  /// As `listen(mask, fn)`, the listener invoked on `ex`.
  /// \param mask The event kinds it wants.
  /// \param fn The listener (see \ref event_listener).
  /// \param ex Where it runs: anything `any_io_executor` accepts.
  /// \return an id for `unlisten`.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type> std::uint64_t listen(
      event_mask mask, event_listener fn, const Executor& ex) {
    return impl_->telemetry().listen(mask, std::move(fn), executor_type(ex));
  }

  /// Removes a listener; events already posted to it are still delivered.
  /// \param id What `listen` returned; an unknown id does nothing.
  void unlisten(std::uint64_t id) { impl_->telemetry().unlisten(id); }

  // ---- manual control ------------------------------------------------------
  // Each is a transition with reason `manual`, visible in the events and the
  // metrics; calls in flight finish as usual and change no decision. Asking
  // for the state the breaker is already in does nothing (no transition, no
  // event; METRICS_ONLY keeps its window), except that `reset` in CLOSED
  // still clears the window.

  /// FORCED_OPEN: every call is rejected, until `reset`, `disable` or
  /// `metrics_only`. No timer: it stays open until told otherwise.
  void force_open() noexcept { impl_->apply(impl_->core().set_state(circuit_state::forced_open)); }

  /// DISABLED ("force closed"): every call runs; outcomes are counted by
  /// outcome but kept out of the window (the rates stay at 0); the breaker
  /// never opens.
  void disable() noexcept { impl_->apply(impl_->core().set_state(circuit_state::disabled)); }

  /// METRICS_ONLY: every call runs; outcomes go into the window and the
  /// metrics (rates included); the breaker never opens.
  void metrics_only() noexcept {
    impl_->apply(impl_->core().set_state(circuit_state::metrics_only));
  }

  /// CLOSED with a fresh window and a zero open streak, from any state.
  void reset() noexcept { impl_->apply(impl_->core().set_state(circuit_state::closed)); }

  /// Guards `aw`: `co_await breaker(http_get(...))`.
  ///
  /// `aw` is an `asio::awaitable<T, Executor>` (or an async operation such as
  /// `timer.async_wait(asio::deferred)`, guarded as by `async_execute` with
  /// `asio::use_awaitable`). Nothing happens until the result is awaited.
  ///
  /// Result: if the breaker admits the call, `aw` runs; its result is
  /// returned and its exception rethrown, unchanged, after the outcome is
  /// recorded. If it rejects the call, `aw` is destroyed without running.
  /// The two forms follow levee's one rule, the shape of the result: when
  /// `T` is `std::tuple<error_code, U...>` (what `asio::as_tuple` makes), the
  /// await returns `{error::circuit_open, U{}...}` and throws nothing (then
  /// ask `retry_after()`); otherwise it throws `circuit_open_error` (a
  /// `boost::system::system_error` with `error::circuit_open`, plus
  /// `retry_after()` and the breaker's name).
  ///
  /// Cancellation: the awaiting coroutine's cancellation reaches `aw`; a
  /// cancelled call is classified `ignored` by default and frees its probe
  /// slot.
  ///
  /// Probes: a call admitted in HALF_OPEN has a deadline of its own
  /// (`breaker_options::probe_timeout`). Past it, the probe counts as failed
  /// at once (the breaker reopens), `aw` is cancelled (type `all`) and, once
  /// it has returned, the await reports `error::timeout` (thrown, or in the
  /// tuple). CLOSED calls have no such deadline.
  ///
  /// Executor: `aw` runs on the awaiting coroutine's executor (a probe with a
  /// deadline: on a strand of it, as with `with_timeout`); the breaker posts
  /// nothing on a CLOSED call's path. An `aw` on a concrete executor that is
  /// not a strand (`asio::awaitable<T, asio::io_context::executor_type>`)
  /// cannot be raced against a probe deadline: with a `probe_timeout` > 0
  /// and not `max()` every such call (CLOSED ones too) throws
  /// `std::invalid_argument` before it takes a permit; with the automatic one
  /// its probes have no deadline (docs/breaker.md, "A probe's deadline").
  ///
  /// Lifetime: `aw` is moved into the result; the breaker may be destroyed
  /// while the call is in flight (its state lives until the call ends), but
  /// the result must not be awaited after the breaker is gone.
  ///
  /// Thread safety: may be called and awaited on any thread, concurrently.
  ///
  /// \param aw The call to guard, as an rvalue: an `asio::awaitable`, or an
  /// async operation that takes a completion token.
  /// \return an `asio::awaitable<T, Executor>` (`breaker_guarded`) with the
  /// same result as `aw`.
  template <class Awaitable>
  breaker_guarded<Awaitable> operator()(Awaitable&& aw) {
    static_assert(!std::is_lvalue_reference_v<Awaitable>,
                  "levee: pass the awaitable as an rvalue: breaker(http_get(...)) or "
                  "breaker(std::move(aw)); an awaitable runs once");
    if constexpr (is_awaitable<std::remove_cvref_t<Awaitable>>::value) {
      return detail::guarded_call(detail::own_frame, *impl_, std::move(aw));
    } else {
      return async_execute(std::move(aw), boost::asio::use_awaitable);
    }
  }

  /// Runs the async operation `op` under the breaker and completes through
  /// `token` (a callback, `asio::deferred`, `asio::use_future`,
  /// `asio::use_awaitable`, ...).
  ///
  /// `op` is an async operation: an object that takes a completion token and
  /// starts the operation, such as `timer.async_wait(asio::deferred)` or a
  /// deferred composition. Its completion signature must carry errors first:
  /// `void(error_code, T...)`, `void(exception_ptr, T...)` or
  /// `void(std::tuple<error_code, T...>)` (`asio::as_tuple`).
  ///
  /// Completion signature: that of `op`. On rejection the handler receives
  /// `error::circuit_open` (in the exception_ptr form, an exception_ptr
  /// holding a `circuit_open_error`) and value-initialised values: the shape
  /// of the result decides, as for `operator()`.
  ///
  /// Per-operation cancellation: forwarded to `op` (all types). A probe
  /// (HALF_OPEN) past its deadline (`breaker_options::probe_timeout`) fails at
  /// once and `op` is cancelled (type `all`); the handler then receives
  /// `error::timeout` (in the exception_ptr form, a `system_error` holding it)
  /// and value-initialised values. Such a probe's `op` is started from a
  /// coroutine on a strand of the handler's executor.
  ///
  /// Executor: the handler's associated executor, else the breaker's; the
  /// handler is never invoked from inside `async_execute`.
  ///
  /// Lifetime: `op` is moved (or copied) into the operation; the breaker may
  /// be destroyed while it runs.
  ///
  /// Thread safety: may be called on any thread, concurrently.
  ///
  /// \param op The operation, moved (or copied) in.
  /// \param token The completion token.
  /// \return what `token` makes of the operation (as `asio::async_initiate`):
  /// nothing for a callback, an awaitable for `use_awaitable`, ...
  template <class Op, BOOST_ASIO_COMPLETION_TOKEN_FOR(
                          boost::asio::completion_signature_of_t<std::decay_t<Op>>) CompletionToken>
  auto async_execute(Op&& op, CompletionToken&& token) {
    using signature = boost::asio::completion_signature_of_t<std::decay_t<Op>>;
    static_assert(supported_signature<signature>::value,
                  "levee::async_execute: the operation's completion signature must start with an "
                  "error_code, an exception_ptr or a std::tuple<error_code, ...>, and its other "
                  "arguments must be default-constructible");
    return boost::asio::async_compose<CompletionToken, signature>(
        detail::execute_op<impl_type, std::decay_t<Op>, signature>(*impl_, std::forward<Op>(op)),
        token, impl_->get_executor());
  }

 private:
  template <class T>
  struct is_awaitable : std::false_type {};
  template <class T, class E>
  struct is_awaitable<boost::asio::awaitable<T, E>> : std::true_type {};

  template <class Signature>
  struct supported_signature : std::false_type {};
  template <class R, class... Args>
  struct supported_signature<R(Args...)>
      : std::bool_constant<detail::error_arguments<std::decay_t<Args>...>::supported> {};

  friend struct detail::guard_access;
  friend struct detail::fleet_access;  // the fleet link's hook
  std::shared_ptr<impl_type> impl_;
};

/// The steady_clock circuit breaker.
using circuit_breaker = basic_circuit_breaker<>;

}  // namespace levee
