// levee: with_timeout's and with_deadline's template bodies (included by
// levee/timeout.hpp).
#pragma once

#include <levee/core/detail/block_cache.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/timeout/deadline.hpp>
#include <levee/timeout/detail/race.hpp>
#include <levee/timeout/detail/race_launch.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace levee {
namespace detail {

/// Runs `aw` against a timer of `Clock` set `limit` from now. When the timer
/// wins, `on_timeout()` runs (on the race's strand, before the call is
/// cancelled; with Boost 1.81, when the caller was not yet waiting as the
/// timer fired, as the caller's wait reaches the strand instead, after the
/// cancellation and before the caller resumes: race_launch.hpp), the call
/// has been cancelled (and has finished: the race waits for it) and `code`
/// is reported; otherwise the call's own result goes out
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
#if defined(LEVEE_OWN_FRAMES)
  // The call is launched ahead of the wait (race_launch.hpp): one that
  // answers at once costs no timer and no pass of the scheduler.
  using op_type = race_launch_op<Clock, Executor, value_type, OnTimeout>;
  auto op = std::allocate_shared<op_type>(cached_allocator<op_type>(), ex, limit, code,
                                          std::move(on_timeout));
  // The caller's cancellation state, read before the launch (a pointer
  // copied, nothing waited for): see below.
  const asio::cancellation_state caller = co_await asio::this_coro::cancellation_state;
  const asio::cancellation_type before = caller.cancelled();
  std::optional<std::tuple<std::exception_ptr, value_type, bool>> result;
  if (op->launch(std::move(aw))) {  // answered without waiting: no suspension
    result.emplace(std::move(op->failure()), std::move(op->value()), false);
    op.reset();
  } else {
    // A cancellation that reached the caller during the launch (emitted on
    // the caller's thread: by the call's synchronous part, say) found no
    // slot of the race's, which is hooked only as the caller waits: it is
    // passed on to the call now, whether or not Asio's check throws at the
    // wait.
    const asio::cancellation_type during = before == asio::cancellation_type::none
                                               ? caller.cancelled()
                                               : asio::cancellation_type::none;
    if (during != asio::cancellation_type::none) op->cancel(during);
    // deferred, not use_awaitable: awaited without a coroutine frame for
    // its initiation. The op leaves this frame as it suspends: the op holds
    // the handler, which holds this frame (a context destroyed with the
    // call in flight frees both).
    auto token = asio::as_tuple(asio::deferred);
    auto wait = [&] {
      return asio::async_initiate<decltype(token), void(std::exception_ptr, value_type, bool)>(
          [&op](auto handler) {
            const std::shared_ptr<op_type> self = std::move(op);
            self->await(std::move(handler));
          },
          token);
    };
    std::exception_ptr thrown;
    try {
      result.emplace(co_await wait());
    } catch (...) {
      thrown = std::current_exception();
    }
    if (thrown) {
      // Asio's cancellation check threw at the co_await, before the
      // initiation ran (a cancellation emitted into the caller during the
      // launch, passed on above): the call runs, and may use this frame and
      // the caller's. It is waited for, the check off meanwhile, and then
      // the caller sees the cancellation.
      if (op) {
        if (during == asio::cancellation_type::none) op->cancel(asio::cancellation_type::terminal);
        co_await asio::this_coro::throw_if_cancelled(false);
        (void)co_await wait();
        co_await asio::this_coro::throw_if_cancelled(true);
      }
      std::rethrow_exception(thrown);
    }
  }
  auto& [failure, value, timed_out] = *result;
#else
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
#endif
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
