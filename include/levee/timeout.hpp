// levee: per-attempt timeouts and total deadlines, on per-operation cancellation.
#pragma once

#include <levee/detail/clock_traits.hpp>
#include <levee/detail/result_shape.hpp>
#include <levee/error.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <optional>
#include <type_traits>

namespace levee {
namespace detail {

namespace asio = boost::asio;

// The call as an awaitable of something co_spawn can default-construct.
template <class T, class Executor>
asio::awaitable<std::optional<T>, Executor> as_optional(asio::awaitable<T, Executor> aw) {
  co_return co_await std::move(aw);
}
template <class Executor>
asio::awaitable<bool, Executor> as_optional(asio::awaitable<void, Executor> aw) {
  co_await std::move(aw);
  co_return true;
}

// Runs `aw` against a timer of `Clock` in a parallel_group that waits for the
// first to finish and cancels the other. When the timer wins, the call has been
// cancelled (and has finished: the group waits for it) and `code` is reported.
template <class Clock, class T, class Executor>
asio::awaitable<T, Executor> race_timer(std::chrono::nanoseconds limit,
                                        asio::awaitable<T, Executor> aw, error code) {
  const Executor ex = co_await asio::this_coro::executor;
  asio::basic_waitable_timer<Clock, wait_traits_of_t<Clock>, Executor> timer(
      ex, std::chrono::ceil<typename Clock::duration>(limit));
  auto [order, failure, value, timer_ec] =
      co_await asio::experimental::make_parallel_group(
          asio::co_spawn(ex, as_optional(std::move(aw)), asio::deferred),
          timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable_t<Executor>{});
  if (order[0] == 1 && !timer_ec) {
    if constexpr (is_error_tuple_v<T>) {
      co_return error_tuple<T>::make(make_error_code(code));
    } else {
      throw_error(code);
    }
  }
  // The call finished first, or the caller cancelled both: the call's own
  // result (its cancellation, in the second case) goes out unchanged.
  if (failure) std::rethrow_exception(failure);
  if constexpr (!std::is_void_v<T>) co_return std::move(*value);
}

}  // namespace detail

/// Runs one attempt with a time limit: `co_await with_timeout(200ms, http_get(...))`.
///
/// If `aw` has not finished after `limit`, it is cancelled (per-operation
/// cancellation, type `all`), and once it has finished the await throws
/// `boost::system::system_error` with `error::timeout`, or, when `aw` yields
/// `std::tuple<error_code, U...>`, returns `{error::timeout, U{}...}`.
/// Otherwise its result is returned and its exception rethrown, unchanged.
///
/// Inside a breaker (`breaker(with_timeout(d, call))`, the recommended order) a
/// timed-out attempt counts as a failure. The caller's own cancellation passes
/// into `aw` and comes back as `aw` reports it (usually `operation_aborted`,
/// which a breaker ignores).
///
/// Built on `parallel_group` with `wait_for_one`, not on `operator||` (which
/// waits for the timer when the other branch throws). `Clock` is the timer's
/// clock (`with_timeout<manual_clock>(...)` in tests).
template <class Clock = std::chrono::steady_clock, class T, class Executor, class Rep, class Period>
boost::asio::awaitable<T, Executor> with_timeout(std::chrono::duration<Rep, Period> limit,
                                                 boost::asio::awaitable<T, Executor> aw) {
  return detail::race_timer<Clock>(std::chrono::ceil<std::chrono::nanoseconds>(limit),
                                   std::move(aw), error::timeout);
}

/// Bounds a whole operation, retries included:
/// `co_await with_deadline(2s, retry(policy, [&] { return breaker(call()); }))`.
///
/// As `with_timeout`, but reports `error::deadline_exceeded`, which retry
/// policies never retry. Place it outside the retry (DESIGN.md's composition
/// order); the per-attempt limit is `with_timeout`.
template <class Clock = std::chrono::steady_clock, class T, class Executor, class Rep, class Period>
boost::asio::awaitable<T, Executor> with_deadline(std::chrono::duration<Rep, Period> limit,
                                                  boost::asio::awaitable<T, Executor> aw) {
  return detail::race_timer<Clock>(std::chrono::ceil<std::chrono::nanoseconds>(limit),
                                   std::move(aw), error::deadline_exceeded);
}

}  // namespace levee
