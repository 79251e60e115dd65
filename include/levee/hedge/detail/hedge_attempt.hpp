// levee: a hedged call's attempt: how it ended, and its thread of
// execution.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/error.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/version.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <type_traits>

namespace levee::detail {

namespace asio = boost::asio;

template <class Clock>
std::int64_t hedge_now() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

/// How an attempt ended, as the options' classifier sees it (one that
/// throws: a failure), and whether it was a levee rejection.
template <class Value>
outcome hedge_classify(const classifier& c, const std::exception_ptr& e, const Value& v,
                       bool& rejected, bool& deadline) noexcept {
  auto judge = [&](const call_result& r) {
    rejected = r.error() && is_rejection(*r.error());
    deadline = r.error() && *r.error() == error::deadline_exceeded;
    if (!c) return default_classify(r);
    try {
      return c(r);
    } catch (...) {
      return outcome::failure;
    }
  };
  if (e) {
    boost::system::error_code code;
    const bool has_code = system_error_code(e, code);
    return judge(call_result(e, has_code ? &code : nullptr));
  }
  if constexpr (std::is_same_v<Value, bool>) {
    return judge(call_result());
  } else {
    return judge(make_value_result(*v));
  }
}

/// An attempt's thread of execution: the attempt's awaitable, then its end
/// handed to the op, with whether the thread ever waited (Asio's own flag:
/// false when the attempt answered without suspending). Launched by
/// `hedge_op::run_attempt` as `co_spawn` launches its entry point, minus
/// co_spawn's post of a completion that did not wait: one pass of the
/// scheduler less for an attempt that answers at once, which the op ends
/// inside the launch (bench/README.md, "The hedge without a pass").
/// Asio's detail, as `own_frame` is: Boost 1.81 only; other versions
/// spawn the attempt with `co_spawn`.
#if defined(LEVEE_OWN_FRAMES)
template <class Executor, class Op, class T>
asio::awaitable<asio::detail::awaitable_thread_entry_point, Executor> hedge_attempt_entry(
    own_frame_t, std::shared_ptr<Op> op, std::size_t i, asio::awaitable<T, Executor> aw) {
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
  op->on_attempt_end(i, std::move(e), std::move(v), waited);
}
#else
template <class T, class Executor>
asio::awaitable<std::optional<T>, Executor> hedge_attempt(asio::awaitable<T, Executor> aw) {
  co_return std::optional<T>(co_await std::move(aw));
}
template <class Executor>
asio::awaitable<bool, Executor> hedge_attempt(asio::awaitable<void, Executor> aw) {
  co_await std::move(aw);
  co_return true;
}
#endif

}  // namespace levee::detail
