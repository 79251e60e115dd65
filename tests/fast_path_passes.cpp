// A call that its callee answers at once, through a hedge, with_timeout or with_deadline,
// resumes its caller in as few passes of the io_context's scheduler as it
// needs (and run_on, the HTTP client's step, in the passes it keeps). Each pass is a handler the
// io_context runs (io_context::poll counts them) and, on an io_context with a reactor, an
// epoll_wait of its own: most of a hedged call's time before this count fell (bench/README.md, "The
// caller resumed without a post").
//
// The count per call is the slope between 1,000 and 2,000 calls, made one
// after another in one coroutine on one thread: exact and deterministic.
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/run_on.hpp>
#include <levee/hedge/hedge.hpp>
#include <levee/timeout/timeout.hpp>

#include "support.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <cstdint>
#include <deque>
#include <memory>
#include <optional>

using namespace levee_test;

namespace {

asio::awaitable<int> answer(int x) {
  co_return x + 1;
}

// The handlers an io_context ran for `n` calls of `call(x)` (an awaitable
// of x + 1, `call` being `make(ioc)`), one after another in one coroutine.
template <class Make>
std::size_t handlers_for(int n, Make& make) {
  virtual_time vt;
  asio::io_context ioc(1);
  auto call = make(ioc);
  int x = 0;
  auto body = [&]() -> asio::awaitable<int> {
    for (int i = 0; i < n; ++i) x = co_await call(x);
    co_return x;
  };
  auto p = spawn(ioc, body());
  const std::size_t ran = ioc.poll();
  REQUIRE(p->done);
  CHECK(x == n);
  CHECK(ioc.poll() == 0);  // nothing left behind
  return ran;
}

template <class Make>
std::size_t handlers_per_call(Make make) {
  const std::size_t small = handlers_for(1000, make);
  const std::size_t large = handlers_for(2000, make);
  REQUIRE(large >= small);
  REQUIRE((large - small) % 1000 == 0);
  return (large - small) / 1000;
}

}  // namespace

// An attempt that answers without waiting ends the call inside its launch,
// and the caller goes on without suspending: no handler at all. Two passes
// before 2026-12-05 (the attempt's completion, which co_spawn posted, and
// the caller's resumption, posted), then one (the resumption dispatched),
// seen failing this test (bench/README.md, "The hedge without a pass").
TEST_CASE("passes: a hedged call answered at once resumes its caller without a pass") {
  const std::size_t per_call = handlers_per_call([](asio::io_context& ioc) {
    auto h = std::make_shared<levee::basic_hedge<vclock>>(
        ioc, levee::hedge_options{.delay = std::chrono::milliseconds(50)});
    return [h](int x) { return (*h)([x] { return answer(x); }); };
  });
#if defined(LEVEE_OWN_FRAMES)
  CHECK(per_call == 0);
#else  // another Boost: the attempt under co_spawn, which posts its completion
  CHECK(per_call == 1);
#endif
}

// with_timeout and with_deadline: a call that answers without waiting ends
// the race inside its launch, and the caller goes on without suspending: no
// timer and no handler at all. Four passes before 2026-12-05 (the launch on
// the call's strand, posted; the call's completion, posted by co_spawn; the
// timer's cancelled wait; the caller's resumption, posted), then three (the
// resumption dispatched), seen failing this test (bench/README.md, "The race
// without a pass").
TEST_CASE("passes: a call inside with_timeout or with_deadline that answers at once costs none") {
  const std::size_t timeout = handlers_per_call([](asio::io_context&) {
    return [](int x) {
      return levee::with_timeout<vclock>(std::chrono::milliseconds(100), answer(x));
    };
  });
  const std::size_t deadline = handlers_per_call([](asio::io_context&) {
    return [](int x) {
      return levee::with_deadline<vclock>(std::chrono::milliseconds(100), answer(x));
    };
  });
#if defined(LEVEE_OWN_FRAMES)
  CHECK(timeout == 0);
  CHECK(deadline == 0);
#else  // another Boost: race_op, the call under co_spawn (timeout/detail/race.hpp)
  CHECK(timeout == 3);
  CHECK(deadline == 3);
#endif
}

// run_on (the HTTP client's step on a connection's strand) keeps its post:
// the connection's strand goes to the next request from the pool, and a
// caller resumed inside its invoker would hold that request's I/O. The
// spawn on the strand (posted), the call's completion (posted by
// co_spawn), the caller's resumption (posted).
TEST_CASE("passes: run_on resumes its caller from a post, off the connection's strand") {
  const std::size_t per_call = handlers_per_call([](asio::io_context& ioc) {
    // A strand per call, as the client's connections have one each; run_on
    // holds it by reference, as the client holds its connections'.
    auto strands = std::make_shared<std::deque<asio::any_io_executor>>();
    return [&ioc, strands](int x) {
      strands->emplace_back(asio::make_strand(ioc));
      return levee::detail::run_on(strands->back(), answer(x));
    };
  });
  CHECK(per_call == 3);
}

namespace {

// The address of a frame on the thread's stack, below the coroutine that
// calls it: how deep in the stack that coroutine was resumed.
[[gnu::noinline]] std::uintptr_t stack_depth_marker() {
  return reinterpret_cast<std::uintptr_t>(__builtin_frame_address(0));
}

// An attempt that completes inline, but through an inline dispatch: Asio
// counts it as having switched context, so the call does not end inside
// its launch; it has ended when the caller waits, and the hedge's
// `install` hands the result over inside the caller's initiation.
asio::awaitable<int> answer_after_dispatch(int x) {
  co_await asio::dispatch(asio::use_awaitable);
  co_return x + 1;
}

}  // namespace

// Such a call's caller must not be resumed inside its own initiation: the
// next call would run one level deeper, and a loop of them would grow the
// stack without bound. Seen failing with the initiation check switched off
// (the caller's stack went deeper by the same amount on every call).
TEST_CASE("passes: a hedged call completed inside its initiation resumes its caller from a post") {
  virtual_time vt;
  asio::io_context ioc(1);
  levee::basic_hedge<vclock> h(ioc, {.delay = std::chrono::milliseconds(50)});
  std::uintptr_t lowest = UINTPTR_MAX, highest = 0;
  int x = 0;
  auto body = [&]() -> asio::awaitable<int> {
    for (int i = 0; i < 2000; ++i) {
      x = co_await h([x] { return answer_after_dispatch(x); });
      const std::uintptr_t depth = stack_depth_marker();
      lowest = std::min(lowest, depth);
      highest = std::max(highest, depth);
    }
    co_return x;
  };
  auto p = spawn(ioc, body());
  ioc.poll();
  REQUIRE(p->done);
  CHECK(x == 2000);
  INFO("stack depth spread: " << highest - lowest << " bytes");
  CHECK(highest - lowest < 16 * 1024);
}

namespace {

// An operation that never completes by itself, and completes at once,
// inside the emit, when it is cancelled: its slot handler calls its
// handler (Asio's own operations post theirs).
struct completes_inline_when_cancelled {
  template <class Handler>
  void operator()(Handler h) const {
    auto slot = asio::get_associated_cancellation_slot(h);
    if (!slot.is_connected()) return;  // never completes: dropped with the io_context
    auto held = std::make_shared<std::optional<Handler>>(std::move(h));
    slot.assign([held](asio::cancellation_type) {
      if (!*held) return;
      Handler now = std::move(**held);
      held->reset();
      // Completing clears the slot, which destroys this lambda: nothing of
      // it is touched after.
      std::move(now)(boost::system::error_code(asio::error::operation_aborted));
    });
  }
};

asio::awaitable<int> stuck_until_cancelled() {
  auto token = asio::as_tuple(asio::use_awaitable);
  auto [ec] = co_await asio::async_initiate<decltype(token), void(boost::system::error_code)>(
      completes_inline_when_cancelled{}, token);
  co_return ec ? -1 : 0;
}

}  // namespace

// The hedge wins, and cancelling the first attempt ends it inside the win:
// that attempt's completion, nested in the winner's, finds the call decided
// and nothing running, and resumes the caller; the winner's must not resume
// it again. Before the hedge delivered once only, the caller's handler ran
// a second time, moved from (seen failing: a crash under ASan).
TEST_CASE("hedge: a loser whose cancellation completes inline resumes the caller once") {
  virtual_time vt;
  asio::io_context ioc(1);
  levee::basic_hedge<vclock> h(ioc, {.delay = std::chrono::milliseconds(50)});
  int made = 0;
  auto r = spawn(ioc, h([&made]() -> asio::awaitable<int> {
                   if (made++ == 0) return stuck_until_cancelled();
                   return answer(41);
                 }));
  settle(ioc);
  CHECK_FALSE(r->done);
  elapse(ioc, std::chrono::milliseconds(50));
  REQUIRE(r->done);
  CHECK_FALSE(r->error);
  CHECK(r->value == 42);
  const auto m = h.metrics();
  CHECK(m.hedges == 1);
  CHECK(m.hedge_wins == 1);
  CHECK(m.cancelled == 1);
  CHECK(ioc.poll() == 0);
}
