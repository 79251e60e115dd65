// levee: one call under a breaker and, inside it, an adaptive limit, in one
// coroutine frame. A call the limit times has one clock read when it starts
// and one when it ends, shared by the breaker (slow-call detection, its time
// window) and the limit (the round-trip sample); any other is timed by the
// breaker alone, as it would be without the limit. The behaviour is that of
// `co_await breaker(limit(call()))`: a call the limit refuses is, for the
// breaker, an ignored call (it never reached the downstream).
#pragma once

#include <levee/breaker/detail/breaker_call.hpp>
#include <levee/core/detail/own_frame.hpp>
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
  static adaptive_limit_state* limit(Limit& l) noexcept {
    return l.state_.get();
  }
};

/// An admitted slot of the limit, its frame counted in: freed without a
/// sample unless `finish`ed, and the frame counted out either way
/// (limit/detail/adaptive_limit_state.hpp).
class limit_slot {
 public:
  using timing = adaptive_limit_state::timing;
  limit_slot(adaptive_limit_state* s, std::size_t started_with, timing t) noexcept
      : state_(s), started_with_(started_with), timing_(t) {}
  limit_slot(const limit_slot&) = delete;
  limit_slot& operator=(const limit_slot&) = delete;
  ~limit_slot() {
    if (state_) state_->leave_frame(false, 0, 0, 0, false);  // abandoned or cancelled: no sample
  }
  /// The call ended at `end` (ns on the limit's clock) after `rtt`; both are
  /// read only for a call the limit times.
  void finish(const call_result& r, nanos end = nanos::zero(), nanos rtt = nanos::zero()) noexcept {
    if (!state_) return;  // finished already (a move of the result threw after)
    // A classifier that throws counts the call as a failure.
    const outcome o = state_->classify(r);
    const auto ns = static_cast<double>(rtt.count());
    std::exchange(state_, nullptr)
        ->leave_frame(o != outcome::ignored, end.count(), ns > 1 ? ns : 1, started_with_,
                      o == outcome::failure, timing_);
  }

 private:
  adaptive_limit_state* state_;
  std::size_t started_with_;
  timing timing_;
};

template <class Clock, class Impl, class T, class Executor>
boost::asio::awaitable<T, Executor> guarded_pair_call(own_frame_t, Impl& b,
                                                      adaptive_limit_state* limit,
                                                      boost::asio::awaitable<T, Executor> aw) {
  namespace asio = boost::asio;
  using entry = adaptive_limit_state::entry;
  using timing = adaptive_limit_state::timing;
  refuse_probe_race<Executor>(b);
  const permit p = b.core().try_acquire();
  if (!p) co_return rejected_result<T>(b);
  std::size_t started_with = 0;
  auto how = timing::every;
  const entry admitted = limit->try_enter(started_with, how);
  // A call the limit times (every call that waits in its queue too) reads
  // the clock once here and once when it ends, both reads shared by the
  // breaker (slow-call detection, its time window) and the limit. The
  // breaker measures from here, as the outer layer would, so a wait in the
  // limit's queue counts towards a slow call; the limit measures from when it
  // admitted the call, the same instant unless the call waited (then one
  // more read, on that slow path). A call the limit does not time is left to
  // the breaker, which times it as it would alone (`call_scope`).
  const bool timed =
      admitted == entry::queue || (admitted == entry::granted && how != timing::none);
  call_scope<Impl> scope =
      timed ? call_scope<Impl>(b, p, call_scope<Impl>::no_clock) : call_scope<Impl>(b, p);
  const auto start = timed ? Clock::now() : typename Clock::time_point();
  auto limit_start = start;
  boost::system::error_code ec;
  switch (admitted) {
    case entry::granted:
      break;
    case entry::full:
      ec = error::limit_exceeded;
      break;
    case entry::queue: {
      // The wait holds an owner (the limit may go meanwhile); the frame is
      // counted in once it has a slot.
      auto owner = limit->shared_from_this();
      const Executor ex = co_await asio::this_coro::executor;
      std::tie(ec) = co_await async_wait_for_slot<Clock>(
          owner, ex, owner->options().max_wait, asio::as_tuple(asio::use_awaitable_t<Executor>{}));
      if (!ec) how = owner->frame_in(started_with);
      limit_start = Clock::now();
      break;
    }
  }
  if (ec) {
    scope.finish(outcome::ignored);  // the downstream was not called
    co_return error_result<T>(ec);
  }
  limit_slot slot(limit, started_with, how);
  const auto finish = [&](const call_result& r, outcome o) {
    if (!timed) {
      slot.finish(r);
      scope.finish(o, &r);
      return;
    }
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

// The guard set's call, its frame from levee's block cache (own_frame.hpp).
template <class Clock, class Impl, class T, class Executor>
boost::asio::awaitable<T, Executor> guarded_pair_call(Impl& b, adaptive_limit_state* limit,
                                                      boost::asio::awaitable<T, Executor> aw) {
  return guarded_pair_call<Clock>(own_frame, b, limit, std::move(aw));
}

}  // namespace levee::detail
