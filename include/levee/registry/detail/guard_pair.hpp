// levee: one call under a breaker and, inside it, an adaptive limit, in one
// coroutine frame, with one clock read when the call starts and one when it
// ends, shared by the breaker (slow-call detection, its time window) and the
// limit (the round-trip sample). The behaviour is that of
// `co_await breaker(limit(call()))`: a call the limit refuses is, for the
// breaker, an ignored call (it never reached the downstream).
#pragma once

#include <levee/breaker/detail/breaker_call.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/limit/adaptive_limit.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <memory>
#include <tuple>
#include <utility>

namespace levee::detail {

/// Reaches the shared state behind the public types (friend of both).
struct guard_access {
  template <class Breaker>
  static auto& breaker(Breaker& b) noexcept {
    return *b.impl_;
  }
  template <class Limit>
  static const std::shared_ptr<adaptive_limit_state>& limit(Limit& l) noexcept {
    return l.state_;
  }
};

/// An admitted slot of the limit: freed without a sample unless `finish`ed.
class limit_slot {
 public:
  limit_slot(std::shared_ptr<adaptive_limit_state> s, std::size_t started_with) noexcept
      : state_(std::move(s)), started_with_(started_with) {}
  limit_slot(const limit_slot&) = delete;
  limit_slot& operator=(const limit_slot&) = delete;
  ~limit_slot() {
    if (state_) state_->leave(false, 0, 0, 0, false);  // abandoned or cancelled: no sample
  }
  /// The call ended at `end` (ns on the limit's clock) after `rtt`.
  void finish(const call_result& r, nanos end, nanos rtt) noexcept {
    if (!state_) return;  // finished already (a move of the result threw after)
    // A classifier that throws counts the call as a failure.
    const outcome o = state_->classify(r);
    const auto ns = static_cast<double>(rtt.count());
    state_->leave(o != outcome::ignored, end.count(), ns > 1 ? ns : 1, started_with_,
                  o == outcome::failure);
    state_.reset();
  }

 private:
  std::shared_ptr<adaptive_limit_state> state_;
  std::size_t started_with_;
};

template <class Clock, class Impl, class T, class Executor>
boost::asio::awaitable<T, Executor> guarded_pair_call(Impl& b,
                                                      std::shared_ptr<adaptive_limit_state> limit,
                                                      boost::asio::awaitable<T, Executor> aw) {
  namespace asio = boost::asio;
  refuse_probe_race<Executor>(b);
  const permit p = b.core().try_acquire();
  if (!p) co_return rejected_result<T>(b);
  call_scope<Impl> scope(b, p, call_scope<Impl>::no_clock);
  // The one read at admission. The breaker measures from here, as the outer
  // layer would, so a wait in the limit's queue counts towards a slow call;
  // the limit measures from when it admitted the call, which is the same
  // instant unless the call waited (then one more read, on that slow path).
  const auto start = Clock::now();
  auto limit_start = start;
  boost::system::error_code ec;
  std::size_t started_with = 0;
  switch (limit->try_enter(started_with)) {
    case adaptive_limit_state::entry::granted:
      break;
    case adaptive_limit_state::entry::full:
      ec = error::limit_exceeded;
      break;
    case adaptive_limit_state::entry::queue: {
      const Executor ex = co_await asio::this_coro::executor;
      std::tie(ec) = co_await async_wait_for_slot<Clock>(
          limit, ex, limit->options().max_wait, asio::as_tuple(asio::use_awaitable_t<Executor>{}));
      started_with = limit->in_flight();
      limit_start = Clock::now();
      break;
    }
  }
  if (ec) {
    scope.finish(outcome::ignored);  // the downstream was not called
    co_return error_result<T>(ec);
  }
  limit_slot slot(std::move(limit), started_with);
  const auto finish = [&](const call_result& r, outcome o) {
    const auto end = Clock::now();  // the one read at completion
    const auto at = std::chrono::duration_cast<nanos>(end.time_since_epoch());
    slot.finish(r, at, std::chrono::duration_cast<nanos>(end - limit_start));
    scope.finish_measured(o, std::chrono::duration_cast<nanos>(end - start), at, &r);
  };
  try {
    if constexpr (std::is_void_v<T>) {
      co_await probe_bounded(b, scope, p, std::move(aw));
      const call_result r;
      finish(r, b.classify(r));
    } else {
      T value = co_await probe_bounded(b, scope, p, std::move(aw));
      const call_result r = make_value_result(value);
      finish(r, b.classify_value(value));
      co_return std::move(value);
    }
  } catch (const boost::system::system_error& e) {
    const boost::system::error_code code = e.code();
    const call_result r(std::current_exception(), &code);
    finish(r, b.classify(r));
    throw;
  } catch (...) {
    const call_result r(std::current_exception(), nullptr);
    finish(r, b.classify(r));
    throw;
  }
}

}  // namespace levee::detail
