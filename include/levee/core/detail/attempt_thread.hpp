// levee: a call's attempt run as an Asio coroutine thread launched in place,
// whose end is handed to its operation with whether it ever waited: a hedge's
// attempts (hedge/detail/hedge_op.hpp) and a race's call
// (timeout/detail/race_launch.hpp).
#pragma once

#include <levee/core/detail/own_frame.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/cancellation_state.hpp>

#include <cstddef>
#include <exception>
#include <memory>
#include <type_traits>
#include <utility>

namespace levee::detail {

namespace asio = boost::asio;

#if defined(LEVEE_OWN_FRAMES)
/// An attempt's thread of execution: the attempt's awaitable, then its end
/// handed to the op (`op->on_attempt_end(i, error, value, waited)`), with
/// whether the thread ever waited (Asio's own flag: false when the attempt
/// answered without suspending). `Op::value_type` is `bool` for a `void`
/// attempt (true once it returned), else `std::optional<T>`. A thread
/// destroyed before its end calls `op->on_attempt_lost(i)` (noexcept) from
/// its frame's destruction instead.
///
/// `launch_attempt` launches it as `co_spawn`'s initiation launches
/// co_spawn's entry point, minus three things: co_spawn's initial dispatch
/// to the executor (the launch is on the call's strand already), its work
/// guards (the attempt's own operations keep the context's work, and the
/// op keeps the caller's while the caller waits), and, the point of it, its
/// post of a completion that did not wait: an attempt that answers at once
/// ends the call inside the launch, without a pass of the scheduler
/// (bench/README.md, "The hedge without a pass"). What escapes the op's
/// `on_attempt_end` (the caller, resumed inline from there, threw) leaves
/// through Asio's launch or resumption, out of the io_context's `run()`, as
/// from co_spawn's completion handler.
///
/// Asio's detail, as `own_frame` is: Boost 1.81 only; with other versions
/// the ops spawn their attempts with `co_spawn`.
template <class Executor, class Op, class T>
asio::awaitable<asio::detail::awaitable_thread_entry_point, Executor> attempt_thread_entry(
    own_frame_t, std::shared_ptr<Op> op, std::size_t i, asio::awaitable<T, Executor> aw) {
  // A thread destroyed before its end (`Op::on_attempt_lost`): Asio drops a
  // coroutine thread whose completion it could not hand on (an allocation
  // failing as a timer's completion is dispatched: the exception leaves
  // through run(), and the thread's frames are destroyed on its executor),
  // and a context destroyed with the attempt in flight destroys it too.
  struct lost_guard {
    Op* op;
    std::size_t i;
    bool ended = false;
    ~lost_guard() {
      if (!ended) op->on_attempt_lost(i);
    }
  } guard{op.get(), i};
  (co_await asio::detail::awaitable_thread_has_context_switched{}) = false;
  std::exception_ptr e;
  typename Op::value_type v{};
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(aw);
      v = true;
    } else {
      v.emplace(co_await std::move(aw));
    }
  } catch (...) {
    e = std::current_exception();
  }
  const bool waited = co_await asio::detail::awaitable_thread_has_context_switched{};
  guard.ended = true;
  op->on_attempt_end(i, std::move(e), std::move(v), waited);
}
// The frame's promise is Asio's at the same address (core/detail/own_frame.hpp).
static_assert(
    sizeof(own_frame_promise<asio::detail::awaitable_thread_entry_point, asio::any_io_executor>) ==
    sizeof(asio::detail::awaitable_frame<asio::detail::awaitable_thread_entry_point,
                                         asio::any_io_executor>));
static_assert(
    alignof(own_frame_promise<asio::detail::awaitable_thread_entry_point, asio::any_io_executor>) ==
    alignof(asio::detail::awaitable_frame<asio::detail::awaitable_thread_entry_point,
                                          asio::any_io_executor>));

/// Launches attempt `i` of `op` on `ex` (a strand the caller is inside),
/// its cancellation state hanging off `slot` (a signal the op emits on that
/// strand only). The attempt runs inline up to its first wait, and may end
/// inside this call.
template <class Executor, class Op, class T>
void launch_attempt(std::shared_ptr<Op> op, std::size_t i, asio::awaitable<T, Executor> aw,
                    const Executor& ex, asio::cancellation_slot slot) {
  asio::detail::awaitable_thread<Executor>(
      attempt_thread_entry(own_frame, std::move(op), i, std::move(aw)), ex, slot,
      asio::cancellation_state(slot))
      .launch();
}
#endif

}  // namespace levee::detail
