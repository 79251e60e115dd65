/// \file
/// Per-attempt timeouts and total deadlines, on per-operation cancellation.
#pragma once

#include <levee/core/error.hpp>

#include <boost/asio/awaitable.hpp>

#include <chrono>

namespace levee {

/// Runs one attempt with a time limit: `co_await with_timeout(200ms, http_get(...))`.
///
/// If `aw` has not finished after `limit`, it is cancelled (per-operation
/// cancellation, type `all`) and, once it has finished, the timeout is
/// reported. Inside a breaker (`breaker(with_timeout(d, call))`, the
/// recommended order) a timed-out attempt counts as a failure.
///
/// Signature: `asio::awaitable<T, Executor> with_timeout<Clock>(duration,
/// asio::awaitable<T, Executor>)`. The shape of `T` decides the form: a
/// timeout throws `boost::system::system_error` with `error::timeout`, or,
/// when `T` is `std::tuple<error_code, U...>`, returns `{error::timeout,
/// U{}...}`. Otherwise `aw`'s result is returned and its exception
/// rethrown, unchanged.
///
/// Cancellation: the awaiting coroutine's cancellation passes into `aw` and
/// comes back as `aw` reports it (usually `operation_aborted`, which a
/// breaker ignores); the timer is then stopped. One emitted into the caller
/// while `aw` runs its first steps inside the race (by `aw` itself, say)
/// reaches `aw` too, which is waited for; the caller then sees Asio's own
/// `operation_aborted` thrown at its wait unless it turned Asio's check off
/// (`this_coro::throw_if_cancelled(false)`), when it gets `aw`'s result.
///
/// Executor: `aw` runs on a strand of the awaiting coroutine's executor (its
/// `this_coro::executor` is that strand), so that the timer's cancellation
/// never races with it; the awaiting coroutine resumes on its own executor.
/// A concrete strand (`asio::strand<io_context::executor_type>`) is used as
/// it is. A concrete executor that is not a strand and cannot hold one
/// (`io_context::executor_type`, `thread_pool::executor_type`) is refused:
/// the result throws `std::invalid_argument` before `aw` starts (its
/// completion and the timer's cancellation could meet on two threads;
/// docs/layers.md, "Timeouts"), unless `limit` is `nanoseconds::max()`
/// (nothing to race). Not built on `parallel_group` nor `operator||` (Asio
/// 1.81 issues 1348, 1630, 900).
///
/// Lifetime: `aw` is moved in; nothing is borrowed.
///
/// Thread safety: safe on a multi-threaded `io_context` without strands.
///
/// `limit` saturates: `nanoseconds::max()` (or any longer duration) is no limit
/// at all, and a negative one times out at once any call that waits. The
/// limit bounds waiting: `aw` starts inside the race and runs up to its first
/// wait before the caller suspends, and an `aw` that answers without waiting
/// is returned as it is, whatever the limit (Boost 1.81; docs/layers.md,
/// "Timeouts"). `Clock` is the timer's clock (`with_timeout<manual_clock>(...)`
/// in tests).
///
/// \param limit The attempt's time limit.
/// \param aw The attempt.
/// \return an awaitable with `aw`'s result, or the timeout in `T`'s shape.
/// \throws std::invalid_argument (when awaited) for an `Executor` that
/// cannot be serialised (above).
template <class Clock = std::chrono::steady_clock, class T, class Executor, class Rep, class Period>
boost::asio::awaitable<T, Executor> with_timeout(std::chrono::duration<Rep, Period> limit,
                                                 boost::asio::awaitable<T, Executor> aw);

/// Bounds a whole operation, retries included:
/// `co_await with_deadline(2s, retry(policy, [&] { return breaker(call()); }))`.
///
/// As `with_timeout` in every section (signature, cancellation, executor,
/// lifetime, thread safety), but reports `error::deadline_exceeded`, which
/// retry policies never retry. Place it outside the retry (README's composition
/// order); the per-attempt limit is `with_timeout`.
///
/// \param limit The whole operation's time limit.
/// \param aw The whole operation.
/// \return an awaitable with `aw`'s result, or `error::deadline_exceeded` in
/// `T`'s shape.
/// \throws std::invalid_argument (when awaited) for an `Executor` that
/// cannot be serialised (as `with_timeout`).
template <class Clock = std::chrono::steady_clock, class T, class Executor, class Rep, class Period>
boost::asio::awaitable<T, Executor> with_deadline(std::chrono::duration<Rep, Period> limit,
                                                  boost::asio::awaitable<T, Executor> aw);

}  // namespace levee

#include <levee/timeout/impl/timeout.hpp>
