// levee: an upstream, a set of replicas behind one name: load balancing,
// outlier ejection, and retries that go elsewhere (docs/upstream.md).
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/timeout/detail/spawn.hpp>
#include <levee/upstream/detail/upstream_state.hpp>
#include <levee/upstream/observe.hpp>
#include <levee/upstream/options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace levee {

namespace http {
template <class Clock, class WaitTraits>
class basic_name_watch;
}  // namespace http

/// The endpoints picked by the concurrent calls of one logical request (a
/// hedge's attempts), shared between them: see `basic_upstream::operator()(fn,
/// tried)`. Thread-safe.
using upstream_tried = detail::shared_tried;

/// A set of endpoints behind one name (docs/upstream.md).
///
/// - Picking: power of two choices on outstanding calls weighed by each
///   endpoint's latency estimate (`upstream_options::latency_decay`), among
///   the endpoints in service; an ejected endpoint is skipped until its ejection
///   time is over, then gets one probe whose outcome returns it or ejects it
///   again for longer. Below `panic_threshold` endpoints in service, ejection
///   is ignored.
/// - Health: an endpoint is ejected after `consecutive_failures` failures in a
///   row, as `upstream_options::classify` sees them; each endpoint also has a
///   breaker of its own (`endpoint_breaker`), and the upstream as a whole has
///   one (`upstream_breaker`) so that when every endpoint fails, calls fail
///   fast.
/// - Retries go elsewhere: a failed attempt that `retryable` accepts is
///   tried again at once on an endpoint this call has not tried, while one is
///   left, up to `max_attempts` and within `budget`. A rejection is never
///   retried; an endpoint whose breaker refused is passed over without using
///   an attempt.
///
/// `Clock` times ejections and the breakers (`basic_upstream<manual_clock>`
/// in tests). Thread safety: an upstream may be shared by coroutines on any
/// threads; every member function is thread-safe except construction,
/// destruction and move. Lifetime: its state lives until the last call in
/// flight ends; a call must not be started after the upstream is gone.
/// Pending work: none of its own (ejection ends lazily, at the next pick);
/// an open breaker's timer while it is open; a name watch's lookup once its
/// answer is due and a call came (`levee::http::basic_name_watch`).
template <class Clock = std::chrono::steady_clock,
          class WaitTraits = detail::wait_traits_of_t<Clock>>
class basic_upstream {
  using state_type = detail::upstream_state<Clock, WaitTraits>;

 public:
  using clock_type = Clock;                            ///< the breakers' clock
  using executor_type = boost::asio::any_io_executor;  ///< where timers and listeners run
  using breaker_type =
      basic_circuit_breaker<Clock, WaitTraits>;  ///< each endpoint's, and the whole's

  /// The endpoints are `addresses`, in order (URLs, origins or "host:port":
  /// the upstream does not read them; the call does). The breakers' timers
  /// run on `ex`. Throws `std::invalid_argument` naming the member when
  /// `options` is invalid, or when `addresses` is empty.
  /// \param ex The executor of the breakers' timers and the listeners.
  /// \param addresses The endpoints, at least one.
  /// \param options The options.
  /// \param name The upstream's name (metrics, events), "" for none.
  /// \throws std::invalid_argument naming what is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type> basic_upstream(
      const Executor& ex, const std::vector<std::string>& addresses, upstream_options options = {},
      std::string name = {})
      : state_(make_state(executor_type(ex), addresses, std::move(options), std::move(name))) {}

  /// As above, on `ctx`'s executor.
  /// \param ctx The execution context (an `io_context`, a `thread_pool`).
  /// \param addresses The endpoints, at least one.
  /// \param options The options.
  /// \param name The upstream's name, "" for none.
  /// \throws std::invalid_argument naming what is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> basic_upstream(
      ExecutionContext& ctx, const std::vector<std::string>& addresses,
      upstream_options options = {}, std::string name = {})
      : basic_upstream(ctx.get_executor(), addresses, std::move(options), std::move(name)) {}

  /// As above, each endpoint's breaker taken from `breakers` (a
  /// `basic_breaker_registry<Clock, WaitTraits>`, or anything with the same
  /// `get`) under the endpoint's address: the registry's options and
  /// classifier apply to it (`endpoint_breaker` does not), it is in the
  /// registry's metrics, events and exposition, a fleet link attached to
  /// the registry shares its openings, and other callers of that key share
  /// it. The upstream holds the breakers of its endpoints, so the registry
  /// does not evict them; one that an `update` removes is the registry's
  /// alone again. `breakers` is borrowed: it must outlive the upstream
  /// (docs/upstream.md, "Composing").
  /// \param ex The executor of the upstream's breaker and the listeners.
  /// \param addresses The endpoints, at least one.
  /// \param breakers The registry the endpoints' breakers come from; borrowed.
  /// \param options The options.
  /// \param name The upstream's name, "" for none.
  /// \throws std::invalid_argument naming what is invalid.
  template <class Executor, class Registry>
  requires std::is_convertible_v<const Executor&, executor_type> &&
      std::is_convertible_v<decltype(std::declval<Registry&>().get(std::string_view())),
                            std::shared_ptr<breaker_type>>
      basic_upstream(const Executor& ex, const std::vector<std::string>& addresses,
                     Registry& breakers, upstream_options options = {}, std::string name = {})
      : state_(make_state(executor_type(ex), addresses, std::move(options), std::move(name),
                          [r = &breakers](const std::string& address) {
                            return std::shared_ptr<breaker_type>(r->get(address));
                          })) {}

  /// As above, on `ctx`'s executor.
  /// \param ctx The execution context.
  /// \param addresses The endpoints, at least one.
  /// \param breakers The registry the endpoints' breakers come from; borrowed.
  /// \param options The options.
  /// \param name The upstream's name, "" for none.
  /// \throws std::invalid_argument naming what is invalid.
  template <class ExecutionContext, class Registry>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&> &&
      std::is_convertible_v<decltype(std::declval<Registry&>().get(std::string_view())),
                            std::shared_ptr<breaker_type>>
      basic_upstream(ExecutionContext& ctx, const std::vector<std::string>& addresses,
                     Registry& breakers, upstream_options options = {}, std::string name = {})
      : basic_upstream(ctx.get_executor(), addresses, breakers, std::move(options),
                       std::move(name)) {}

  /// Lets go of the registry the endpoints' breakers came from, if any: an
  /// `update` after this (a name watch's, or one a call in flight started)
  /// makes breakers of its own. Calls in flight keep the shared state.
  ~basic_upstream() {
    if (!state_) return;
    std::lock_guard u(state_->update_lock);
    state_->source = nullptr;
  }
  /// Moves the upstream (calls in flight keep its shared state).
  basic_upstream(basic_upstream&&) noexcept = default;
  /// Moves the upstream (calls in flight keep its shared state).
  /// \return `*this`.
  basic_upstream& operator=(basic_upstream&&) noexcept = default;

  /// \return the number of endpoints.
  std::size_t size() const { return state_->current()->endpoints.size(); }
  /// \param i An endpoint's index, below `size()`.
  /// \return that endpoint (its index and address).
  /// \throws std::out_of_range when `i >= size()`.
  upstream_endpoint endpoint(std::size_t i) const {
    return state_->current()->endpoints.at(i).info;
  }
  /// The endpoints, all from one generation (an `update` running meanwhile
  /// is either wholly in it or wholly out).
  /// \return them, in order.
  std::vector<upstream_endpoint> endpoints() const {
    const auto gen = state_->current();
    std::vector<upstream_endpoint> out;
    out.reserve(gen->endpoints.size());
    for (const auto& e : gen->endpoints) out.push_back(e.info);
    return out;
  }
  /// \return the upstream's name, "" when unnamed.
  std::string_view name() const noexcept { return state_->name; }
  /// \return the executor of the breakers' timers and the listeners.
  executor_type get_executor() const noexcept { return state_->executor; }
  /// The options as validated (with `classify` and `retryable` filled in).
  /// \return them.
  const upstream_options& options() const noexcept { return state_->options; }

  /// Endpoint `i`'s own breaker (for its metrics, events and manual control);
  /// valid while the endpoint is in the upstream (`update` may remove it).
  /// \param i An endpoint's index, below `size()`.
  /// \return its breaker.
  /// \throws std::out_of_range when `i >= size()`.
  breaker_type& endpoint_breaker(std::size_t i) {
    return *state_->current()->endpoints.at(i).breaker;
  }
  /// The breaker of the upstream as a whole.
  /// \return it.
  breaker_type& breaker() noexcept { return state_->whole; }

  /// Tells the upstream how endpoint `i` answered an active health check
  /// (`levee::http::basic_health_check` calls it; any other check may). A
  /// passing check returns the endpoint to service if it is ejected (not
  /// while its probe is in flight: the probe decides); a failing one ejects
  /// it if it is in service, within the maximum ejected share. Either is
  /// an event (cause `health_check`). Thread-safe.
  /// \param i An endpoint's index, below `size()`.
  /// \param healthy Whether it passed.
  /// \throws std::out_of_range when `i >= size()`.
  void report_health(std::size_t i, bool healthy) {
    const auto gen = state_->current();
    if (i >= gen->endpoints.size()) throw std::out_of_range("levee::upstream: no such endpoint");
    state_->note(*gen, i, gen->core.health(i, healthy, state_type::now()));
  }

  /// As `report_health(i, healthy)` for the endpoint whose address is
  /// `address` now, found and reported in one generation, so an `update`
  /// meanwhile cannot send the verdict to another endpoint.
  /// \param address The endpoint's address, as given to the upstream.
  /// \param healthy Whether it passed.
  /// \return false when no endpoint has that address (the verdict is dropped).
  bool report_health(std::string_view address, bool healthy) {
    const auto gen = state_->current();
    for (std::size_t i = 0; i < gen->endpoints.size(); ++i) {
      if (gen->endpoints[i].info.address != address) continue;
      state_->note(*gen, i, gen->core.health(i, healthy, state_type::now()));
      return true;
    }
    return false;
  }

  /// Replaces the endpoints (`levee::http::basic_name_watch` calls it with
  /// the addresses a name resolves to). An endpoint that stays keeps its
  /// breaker, its ejection and its level; a new one starts in service; a
  /// removed one is no longer picked, and the calls in flight on it end
  /// normally (each call keeps the endpoints it started with, retries
  /// included). Indexes follow the new list. Thread-safe.
  /// \param addresses The endpoints, at least one.
  /// \return whether the list changed (the same list in the same order: no change).
  /// \throws std::invalid_argument when `addresses` is empty.
  bool update(const std::vector<std::string>& addresses) {
    if (addresses.empty())
      throw std::invalid_argument("levee::upstream: addresses must not be empty");
    return state_->update(addresses);
  }

  /// Ejections, returns, outstanding calls and breakers, per endpoint.
  /// \return a snapshot.
  upstream_metrics metrics() const { return state_->metrics(); }

  /// Adds a listener for ejections and returns, invoked by `asio::post` on
  /// the upstream's executor, outside every lock.
  /// \param fn The listener.
  /// \return an id for `unlisten`.
  std::uint64_t listen(std::function<void(const upstream_event&)> fn) {
    std::lock_guard g(state_->listeners_lock);
    const auto id = state_->next_listener++;
    state_->listeners.emplace_back(id, std::move(fn));
    return id;
  }
  /// Removes a listener; events already posted to it are still delivered.
  /// \param id What `listen` returned; an unknown id does nothing.
  void unlisten(std::uint64_t id) {
    std::lock_guard g(state_->listeners_lock);
    std::erase_if(state_->listeners, [id](const auto& l) { return l.first == id; });
  }

  /// One call to the upstream: `co_await up([&](const upstream_endpoint& e) {
  /// return http_get(client, e.address + "/path"); })`.
  ///
  /// `fn` is called once per attempt with the chosen endpoint and returns a
  /// fresh `asio::awaitable<T, Executor>` (`T` not void). The call runs under
  /// the upstream's breaker; each attempt under its endpoint's breaker.
  ///
  /// Result: the last attempt's result, returned, or its exception
  /// rethrown. The shape of `T` decides the form, as everywhere in levee: for
  /// `std::tuple<error_code, U...>` a rejection by the upstream's breaker is
  /// `{error::circuit_open, U{}...}` and nothing is thrown; otherwise it
  /// throws `circuit_open_error`. When every endpoint's breaker refused, the
  /// result is that refusal, in the same shape.
  ///
  /// Cancellation: the awaiting coroutine's cancellation reaches the running
  /// attempt (a cancelled attempt is not retried). Executor: the attempts
  /// run on the awaiting coroutine's executor. Lifetime: `fn` is moved in;
  /// what it captures by reference must outlive the call. Thread safety: any
  /// thread, concurrently.
  ///
  /// \param fn Called per attempt with the endpoint; returns the attempt's awaitable.
  /// \return the call, an awaitable of `fn`'s result type.
  template <class Fn, class Awaitable = std::invoke_result_t<Fn&, const upstream_endpoint&>,
            class Traits = detail::awaitable_traits<Awaitable>>
  requires Traits::is_awaitable Awaitable operator()(Fn fn) {
    using T = typename Traits::value_type;
    static_assert(!std::is_void_v<T>, "levee::upstream: the call must return a value");
    return state_->whole(
        detail::upstream_attempts<T, typename Traits::executor_type>(state_, std::move(fn)));
  }

  /// As `operator()(fn)`, for one of several concurrent calls of one
  /// logical request (a hedge's attempts: `levee::hedged_call` in
  /// levee/hedge/upstream.hpp): the endpoints the others picked are
  /// avoided, as a retry avoids those its call tried, while another one is
  /// left.
  /// \param fn As for `operator()(fn)`.
  /// \param tried Shared by the concurrent calls; borrowed: it must outlive them.
  /// \return the call, an awaitable of `fn`'s result type.
  template <class Fn, class Awaitable = std::invoke_result_t<Fn&, const upstream_endpoint&>,
            class Traits = detail::awaitable_traits<Awaitable>>
  requires Traits::is_awaitable Awaitable operator()(Fn fn, upstream_tried& tried) {
    using T = typename Traits::value_type;
    static_assert(!std::is_void_v<T>, "levee::upstream: the call must return a value");
    return state_->whole(detail::upstream_attempts<T, typename Traits::executor_type>(
        state_, std::move(fn), &tried));
  }

  /// The completion-token form: runs `(*this)(fn)` as a new coroutine on
  /// the upstream's executor, as `co_spawn` does. Completion signature:
  /// `void(std::exception_ptr, T)`, the exception being what the coroutine
  /// form would throw (with a tuple `T`, levee's own errors are in the
  /// tuple). Cancellation: the handler's slot reaches the running attempt.
  /// \param fn As for `operator()`.
  /// \param token The completion token.
  /// \return what the token's `async_result` makes of the operation.
  template <class Fn, class CompletionToken>
  auto async_call(Fn fn, CompletionToken&& token) {
    return detail::spawn_carrying_deadline(state_->executor, (*this)(std::move(fn)),
                                           std::forward<CompletionToken>(token));
  }

 private:
  template <class, class>
  friend class http::basic_name_watch;

  static std::shared_ptr<state_type> make_state(executor_type ex,
                                                const std::vector<std::string>& addresses,
                                                upstream_options options, std::string name,
                                                typename state_type::breaker_source source = {}) {
    if (addresses.empty())
      throw std::invalid_argument("levee::upstream: addresses must not be empty");
    validate(options);
    return std::make_shared<state_type>(std::move(ex), addresses, std::move(options),
                                        std::move(name), std::move(source));
  }

  std::shared_ptr<state_type> state_;
};

/// The steady_clock upstream.
using upstream = basic_upstream<>;

}  // namespace levee
