// levee: with_timeout's and with_deadline's template bodies (included by
// levee/timeout.hpp).
#pragma once

#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/timeout/deadline.hpp>
#include <levee/timeout/detail/race.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>
#include <utility>

namespace levee {
namespace detail {

/// Runs `aw` against a timer of `Clock` set `limit` from now. When the timer
/// wins, `on_timeout()` runs (on the race's strand, before the call is
/// cancelled), the call has been cancelled (and has finished: the race waits
/// for it) and `code` is reported; otherwise the call's own result goes out
/// unchanged. With `code == error::deadline_exceeded`, the call's executor
/// carries the deadline (`carry_deadline`).
template <class Clock, class T, class Executor, class OnTimeout = no_timeout_hook>
asio::awaitable<T, Executor> race_timer(std::chrono::nanoseconds limit,
                                        asio::awaitable<T, Executor> aw, error code,
                                        OnTimeout on_timeout = {}) {
  if (limit == std::chrono::nanoseconds::max()) co_return co_await std::move(aw);  // forever
  // Refused before `aw` starts: it could not be kept to one thread (race.hpp).
  if constexpr (!can_serialize<Executor>)
    refuse_unserialisable(code == error::timeout ? "levee::with_timeout" : "levee::with_deadline");
  using value_type = std::conditional_t<std::is_void_v<T>, bool, std::optional<T>>;
  const Executor ex = co_await asio::this_coro::executor;
  Executor child_ex = serial_executor(ex);
  // A deadline (with_deadline, a pipeline's) travels with the call's executor,
  // where levee's HTTP client reads it (timeout/deadline.hpp).
  if (code == error::deadline_exceeded) child_ex = carry_deadline<Clock>(child_ex, limit);
  auto token = asio::as_tuple(asio::use_awaitable_t<Executor>{});
  auto [failure, value, timed_out] =
      co_await asio::async_initiate<decltype(token), void(std::exception_ptr, value_type, bool)>(
          [&ex, &child_ex, limit, &on_timeout](auto handler, asio::awaitable<T, Executor> call) {
            using op_type =
                race_op<Clock, Executor, value_type, std::decay_t<decltype(handler)>, OnTimeout>;
            auto op =
                std::make_shared<op_type>(std::move(handler), ex, child_ex, std::move(on_timeout));
            op->start(std::move(call), limit);
          },
          token, std::move(aw));
  if (timed_out) {
    if constexpr (is_error_tuple_v<T>) {
      co_return error_tuple<T>::make(make_error_code(code));
    } else {
      throw_error(code);
    }
  }
  // The call finished first, or the caller cancelled it: its own result (its
  // cancellation, in the second case) goes out unchanged.
  if (failure) std::rethrow_exception(failure);
  if constexpr (!std::is_void_v<T>) co_return std::move(*value);
}

}  // namespace detail

template <class Clock, class T, class Executor, class Rep, class Period>
boost::asio::awaitable<T, Executor> with_timeout(std::chrono::duration<Rep, Period> limit,
                                                 boost::asio::awaitable<T, Executor> aw) {
  return detail::race_timer<Clock>(detail::saturating_ns(limit), std::move(aw), error::timeout);
}

template <class Clock, class T, class Executor, class Rep, class Period>
boost::asio::awaitable<T, Executor> with_deadline(std::chrono::duration<Rep, Period> limit,
                                                  boost::asio::awaitable<T, Executor> aw) {
  return detail::race_timer<Clock>(detail::saturating_ns(limit), std::move(aw),
                                   error::deadline_exceeded);
}

}  // namespace levee
