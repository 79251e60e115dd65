// levee: a hedged call's attempt: how it ended, and its thread of
// execution.
#pragma once

#include <levee/breaker/detail/window_clock.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/error.hpp>

#include <boost/asio/any_io_executor.hpp>
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

/// The time a call is counted at in the budget's window: the coarse clock
/// (breaker/detail/window_clock.hpp, a few ns against 25 to 35) when the
/// window is at or above its line (400 ms on a 250 Hz kernel; the default
/// window is 10 s), as the breaker's time window does: a call near a
/// window's boundary may count in the window before. Latency samples and
/// hedges read `hedge_now`.
template <class Clock>
std::int64_t hedge_budget_now(std::chrono::nanoseconds window) noexcept {
  if (coarse_enough<Clock>(window)) return window_now<Clock>().count();
  return hedge_now<Clock>();
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

#if !defined(LEVEE_OWN_FRAMES)
// Sets `*answered` on the call's strand when the attempt's awaitable
// returned (co_spawn posts the completion of one that did not wait): the op
// then arms no timer.
template <class T, class Executor>
asio::awaitable<std::optional<T>, Executor> hedge_attempt(asio::awaitable<T, Executor> aw,
                                                          bool* answered) {
  std::optional<T> v(co_await std::move(aw));
  if (answered) *answered = true;
  co_return v;
}
template <class Executor>
asio::awaitable<bool, Executor> hedge_attempt(asio::awaitable<void, Executor> aw, bool* answered) {
  co_await std::move(aw);
  if (answered) *answered = true;
  co_return true;
}
#endif

}  // namespace levee::detail
