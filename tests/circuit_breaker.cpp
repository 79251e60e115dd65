// The Asio shell: guarded coroutines, the open timer, the token form.
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/registry/detail/guard_pair.hpp>

#include "support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_future.hpp>

#include <time.h>
#include <cstdint>
#include <future>
#include <vector>

using namespace levee_test;
using levee::circuit_state;

namespace {

/// A reproducible "fails 60 % of the time" sequence (no library RNG, so both
/// standard libraries agree).
class failure_pattern {
 public:
  explicit failure_pattern(std::uint32_t seed) : state_(seed) {}
  bool next_fails() {
    state_ = state_ * 1664525u + 1013904223u;
    return (state_ >> 8) % 100 < 60;
  }

 private:
  std::uint32_t state_;
};

levee::breaker_options seed_options() {
  // The seed's test configuration: 50 %, a 10 s window, a 5 s open timeout.
  return {.failure_rate_threshold = 0.5, .window = 10s, .open_duration = 5s};
}

}  // namespace

TEST_CASE(
    "seed test 1: a service failing 60 % of the time opens the breaker - later calls fail fast") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, seed_options());
  fake_service api;
  failure_pattern pattern(7);

  // The expected opening point, computed from the rule itself: the first call
  // after which the window holds >= 10 calls and >= 50 % of them failed.
  std::vector<bool> fails;
  int expected_open_after = -1;
  {
    failure_pattern copy(7);
    int failures = 0;
    for (int i = 0; i < 20; ++i) {
      fails.push_back(copy.next_fails());
      failures += fails.back();
      if (i + 1 >= 10 && failures * 2 >= i + 1) {
        expected_open_after = i;
        break;
      }
    }
  }
  REQUIRE(expected_open_after >= 9);

  int opened_after = -1;
  for (int i = 0; i < 20; ++i) {
    const bool fail = pattern.next_fails();
    auto r = run(ioc, cb(api.call(!fail)));
    REQUIRE(r->done);
    if (r->thrown_code() == levee::error::circuit_open) {
      // fast-failed: the service was not called for this request
      CHECK(api.started == opened_after + 1);
      CHECK(cb.state() == circuit_state::open);
      break;
    }
    if (fail) {
      CHECK_THROWS_AS(std::rethrow_exception(r->error), service_error);  // rethrown unchanged
    } else {
      CHECK(r->value == 42);
    }
    if (cb.state() == circuit_state::open && opened_after < 0) opened_after = i;
    elapse(ioc, 500ms);  // 500 ms between requests
  }
  CHECK(opened_after == expected_open_after);
  CHECK(cb.counters().rejected == 1);
}

TEST_CASE("seed test 2: after the timeout, two successful probes close it") {
  virtual_time vt;
  asio::io_context ioc;
  auto options = seed_options();
  options.successes_to_close = 2;
  options.minimum_calls = 4;
  breaker cb(ioc, options);
  fake_service api;
  for (int i = 0; i < 4; ++i) run(ioc, cb(api.call(false)));
  REQUIRE(cb.state() == circuit_state::open);

  elapse(ioc, 6s);                                // "Waiting 5 seconds for timeout..."
  CHECK(cb.state() == circuit_state::half_open);  // the timer did it, no call needed

  auto first = run(ioc, cb(api.call(true)));
  CHECK(first->value == 42);
  CHECK(cb.state() == circuit_state::half_open);  // one success of two
  auto second = run(ioc, cb(api.call(true)));
  CHECK(second->value == 42);
  CHECK(cb.state() == circuit_state::closed);
  CHECK(api.started == 6);
}

TEST_CASE("seed test 3: a failed probe sends it back to OPEN") {
  virtual_time vt;
  asio::io_context ioc;
  auto options = seed_options();
  options.minimum_calls = 4;
  breaker cb(ioc, options);
  fake_service api;
  for (int i = 0; i < 4; ++i) run(ioc, cb(api.call(false)));
  REQUIRE(cb.state() == circuit_state::open);
  elapse(ioc, 6s);
  REQUIRE(cb.state() == circuit_state::half_open);

  auto probe = run(ioc, cb(api.call(false)));  // "Service still unhealthy"
  CHECK_THROWS_AS(std::rethrow_exception(probe->error), service_error);
  CHECK(cb.state() == circuit_state::open);

  // ... and the timer was re-armed: another 5 s makes it HALF_OPEN again.
  elapse(ioc, 4999ms);
  CHECK(cb.state() == circuit_state::open);
  elapse(ioc, 1ms);
  CHECK(cb.state() == circuit_state::half_open);
}

TEST_CASE("the timer turns OPEN into HALF_OPEN at exactly open_duration, with no call") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 30s});
  fake_service api;
  run(ioc, cb(api.call(false)));
  REQUIRE(cb.state() == circuit_state::open);
  elapse(ioc, 29s);
  CHECK(cb.state() == circuit_state::open);
  elapse(ioc, 999ms);
  CHECK(cb.state() == circuit_state::open);
  elapse(ioc, 1ms);
  CHECK(cb.state() == circuit_state::half_open);
  CHECK(api.started == 1);
}

TEST_CASE("a second call during the single probe is rejected and its operation never starts") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 1s});
  fake_service api;
  run(ioc, cb(api.call(false)));
  elapse(ioc, 1s);
  REQUIRE(cb.state() == circuit_state::half_open);

  auto probe = spawn(ioc, cb(api.call(true, 100ms)));  // a slow probe
  settle(ioc);
  CHECK(cb.probes_in_flight() == 1);
  CHECK(api.started == 2);
  auto second = run(ioc, cb(api.call(true)));
  CHECK(second->thrown_code() == levee::error::circuit_open);
  CHECK(api.started == 2);  // never started
  elapse(ioc, 100ms);
  CHECK(probe->value == 42);
  CHECK(cb.state() == circuit_state::closed);
}

TEST_CASE("a probe cancelled by a racing timeout frees its slot and is not counted") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 1s, .successes_to_close = 1});
  fake_service api;
  run(ioc, cb(api.call(false)));
  elapse(ioc, 1s);
  REQUIRE(cb.state() == circuit_state::half_open);

  // The probe races a 50 ms timer in a parallel_group; the timer wins and the
  // group cancels the probe.
  auto raced = [&]() -> asio::awaitable<int> {
    timer t(co_await asio::this_coro::executor, 50ms);
    auto [order, probe_error, value, timer_error] =
        co_await asio::experimental::make_parallel_group(
            asio::co_spawn(ioc, cb(api.call(true, 10s)), asio::deferred),
            t.async_wait(asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    (void)probe_error;
    (void)timer_error;
    co_return order[0] == 0 ? value : -1;
  };
  auto r = spawn(ioc, raced());
  settle(ioc);
  CHECK(cb.probes_in_flight() == 1);
  elapse(ioc, 50ms);
  REQUIRE(r->done);
  CHECK(r->value == -1);  // the timeout won
  CHECK(cb.probes_in_flight() == 0);
  CHECK(cb.state() == circuit_state::half_open);  // not counted as a failure
  CHECK(cb.counters().ignored == 1);

  auto next = run(ioc, cb(api.call(true)));  // the slot is free again
  CHECK(next->value == 42);
  CHECK(cb.state() == circuit_state::closed);
}

TEST_CASE("the tuple form returns rejections without throwing") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 2});
  fake_service api;
  const auto refused = make_error_code(boost::system::errc::connection_refused);
  auto a = run(ioc, cb(api.call_ec(refused)));
  CHECK(std::get<0>(*a->value) == refused);  // returned unchanged
  run(ioc, cb(api.call_ec(refused)));
  REQUIRE(cb.state() == circuit_state::open);
  auto r = run(ioc, cb(api.call_ec({})));
  REQUIRE(r->done);
  CHECK_FALSE(r->error);
  CHECK(std::get<0>(*r->value) == levee::error::circuit_open);
  CHECK(std::get<1>(*r->value) == 0);
  CHECK(api.started == 2);
}

TEST_CASE("the tuple form's error codes are classified: failure, and cancellation ignored") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 3});
  fake_service api;
  run(ioc, cb(api.call_ec(boost::asio::error::operation_aborted)));
  run(ioc, cb(api.call_ec(boost::asio::error::operation_aborted)));
  run(ioc, cb(api.call_ec(boost::asio::error::timed_out)));
  CHECK(cb.window().calls == 1);
  CHECK(cb.counters().ignored == 2);
  CHECK(cb.counters().failures == 1);
  run(ioc, cb(api.call_ec({})));
  CHECK(cb.counters().successes == 1);
}

TEST_CASE("a thrown operation_aborted is ignored, other exceptions fail") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1});
  auto aborted = []() -> asio::awaitable<int> {
    throw boost::system::system_error(boost::asio::error::operation_aborted);
    co_return 0;
  };
  auto r = run(ioc, cb(aborted()));
  CHECK(r->thrown_code() == boost::asio::error::operation_aborted);
  CHECK(cb.state() == circuit_state::closed);
  CHECK(cb.counters().ignored == 1);
}

// The token form with an exception_ptr: a system_error inside it is seen by
// its code, as a thrown one is (a cancellation is ignored, a classifier sees
// error()). Before the fix, every exception_ptr counted as a failure.
TEST_CASE("token form: an exception_ptr holding operation_aborted is ignored, not a failure") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1});
  auto aborted =
      std::make_exception_ptr(boost::system::system_error(boost::asio::error::operation_aborted));
  std::exception_ptr got;
  cb.async_execute(asio::deferred.values(aborted, 0), [&](std::exception_ptr e, int) { got = e; });
  settle(ioc);
  CHECK(got == aborted);
  CHECK(cb.state() == circuit_state::closed);
  CHECK(cb.counters().ignored == 1);
  CHECK(cb.counters().failures == 0);

  // A classifier sees the code through error().
  bool saw_code = false;
  breaker classified(ioc, {.minimum_calls = 1, .classifier = [&](const levee::call_result& r) {
                             saw_code = r.error() && *r.error() == boost::system::errc::timed_out;
                             return levee::outcome::failure;
                           }});
  auto timed_out = std::make_exception_ptr(
      boost::system::system_error(make_error_code(boost::system::errc::timed_out)));
  classified.async_execute(asio::deferred.values(timed_out, 0), [](std::exception_ptr, int) {});
  settle(ioc);
  CHECK(saw_code);
}

TEST_CASE("awaitable<void> calls are guarded too") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1});
  int ran = 0;
  auto ok = [&]() -> asio::awaitable<void> {
    ++ran;
    co_return;
  };
  auto bad = [&]() -> asio::awaitable<void> {
    ++ran;
    throw service_error("down");
    co_return;
  };
  auto wrap = [](asio::awaitable<void> aw) -> asio::awaitable<int> {
    co_await std::move(aw);
    co_return 1;
  };
  CHECK(run(ioc, wrap(cb(ok())))->value == 1);
  CHECK(cb.counters().successes == 1);
  CHECK_THROWS_AS(std::rethrow_exception(run(ioc, wrap(cb(bad())))->error), service_error);
  CHECK(cb.state() == circuit_state::open);
  auto rejected = run(ioc, wrap(cb(ok())));
  CHECK(rejected->thrown_code() == levee::error::circuit_open);
  CHECK(ran == 2);
}

TEST_CASE("a classifier decides by value, error_code or exception") {
  virtual_time vt;
  asio::io_context ioc;
  levee::breaker_options o{.failure_rate_threshold = 0.6, .minimum_calls = 2};
  o.classifier = [](const levee::call_result& r) {
    if (const int* v = r.value<int>())
      return *v < 0 ? levee::outcome::failure : levee::outcome::success;
    if (r.threw()) {
      try {
        std::rethrow_exception(r.exception());
      } catch (const std::invalid_argument&) {
        return levee::outcome::ignored;  // "the request was wrong"
      } catch (...) {
      }
    }
    return levee::default_classify(r);
  };
  breaker cb(ioc, o);
  auto value = [](int v) -> asio::awaitable<int> { co_return v; };
  auto bad_request = []() -> asio::awaitable<int> {
    throw std::invalid_argument("bad request");
    co_return 0;
  };
  run(ioc, cb(value(5)));
  run(ioc, cb(bad_request()));
  CHECK(cb.counters().ignored == 1);
  CHECK(cb.counters().successes == 1);
  run(ioc, cb(value(-1)));
  run(ioc, cb(value(-1)));
  CHECK(cb.counters().failures == 2);
  CHECK(cb.state() == circuit_state::open);  // 2 of 3 >= 60 %
}

TEST_CASE("a classifier that throws counts the call as a failure") {
  virtual_time vt;
  asio::io_context ioc;
  levee::breaker_options o{.minimum_calls = 1};
  o.classifier = [](const levee::call_result&) -> levee::outcome { throw std::logic_error("x"); };
  breaker cb(ioc, o);
  fake_service api;
  CHECK(run(ioc, cb(api.call(true)))->value == 42);  // the result is still returned
  CHECK(cb.state() == circuit_state::open);
}

TEST_CASE("destroying the breaker while its timer is pending is safe") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  {
    breaker cb(ioc, {.minimum_calls = 1, .open_duration = 1s});
    run(ioc, cb(api.call(false)));
    REQUIRE(cb.state() == circuit_state::open);
  }                 // timer pending here
  elapse(ioc, 2s);  // the cancelled wait completes; nothing may touch the breaker
  CHECK(ioc.stopped());
}

TEST_CASE("destroying the breaker after its timer completed but before the handler ran is safe") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  auto cb = std::make_unique<breaker>(
      ioc, levee::breaker_options{.minimum_calls = 1, .open_duration = 1s});
  run(ioc, (*cb)(api.call(false)));
  vclock::advance(2s);
  ioc.restart();
  ioc.run_one();  // the reactor turn that finds the due timer queues its handler...
  cb.reset();     // ...and the breaker goes before it runs
  settle(ioc);
  CHECK(ioc.stopped());
}

TEST_CASE("an idle closed breaker leaves no pending work: run() returns") {
  asio::io_context ioc;
  levee::circuit_breaker cb(ioc.get_executor());
  int calls = 0;
  auto work = [&]() -> asio::awaitable<void> {
    auto ok = [&]() -> asio::awaitable<int> {
      ++calls;
      co_return 1;
    };
    for (int i = 0; i < 100; ++i) (void)co_await cb(ok());
  };
  asio::co_spawn(ioc, work(), asio::detached);
  ioc.run();  // would hang if the breaker kept work alive
  CHECK(calls == 100);
  CHECK(cb.state() == circuit_state::closed);
}

TEST_CASE("reset out of OPEN, and recovery, leave no pending timer: run() returns") {
  // Real time, with timers of an hour: run() returns at once only if both the
  // open timer and the stuck-open timer were cancelled.
  asio::io_context ioc;
  levee::circuit_breaker cb(ioc.get_executor(),
                            {.minimum_calls = 1, .open_duration = 1h, .recovery_window = 1h});
  auto fail = []() -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
    co_return std::tuple(make_error_code(boost::system::errc::connection_reset), 0);
  };
  asio::co_spawn(ioc, cb(fail()), asio::detached);
  ioc.poll();
  REQUIRE(cb.state() == circuit_state::open);
  cb.reset();
  const auto start = std::chrono::steady_clock::now();
  ioc.restart();
  ioc.run_for(5s);  // bounded: the hour-long timers would keep it to 5 s
  CHECK(ioc.stopped());
  CHECK(std::chrono::steady_clock::now() - start < 4s);
  CHECK(cb.state() == circuit_state::closed);
}

TEST_CASE("a breaker takes a strand as its executor") {
  asio::io_context ioc;
  auto strand = asio::make_strand(ioc);
  levee::circuit_breaker cb(strand);
  CHECK(cb.get_executor() == asio::any_io_executor(strand));
}

TEST_CASE("an abandoned probe (its coroutine destroyed) gives its slot back") {
  virtual_time vt;
  asio::io_context breaker_ioc;
  breaker cb(breaker_ioc, {.minimum_calls = 1, .open_duration = 1s});
  fake_service api;
  run(breaker_ioc, cb(api.call(false)));
  elapse(breaker_ioc, 1s);
  REQUIRE(cb.state() == circuit_state::half_open);
  {
    asio::io_context caller_ioc;
    spawn(caller_ioc, cb(api.call(true, 1h)));
    settle(caller_ioc);
    CHECK(cb.probes_in_flight() == 1);
  }  // the suspended probe's frame is destroyed with its io_context
  CHECK(cb.probes_in_flight() == 0);
  CHECK(cb.state() == circuit_state::half_open);
  auto next = run(breaker_ioc, cb(api.call(true)));
  CHECK(next->value == 42);
  CHECK(cb.state() == circuit_state::closed);
}

TEST_CASE("an async operation can be guarded directly: co_await breaker(op(asio::deferred))") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1});
  auto waits = [&]() -> asio::awaitable<int> {
    timer t(co_await asio::this_coro::executor, 10ms);
    co_await cb(t.async_wait(asio::deferred));
    co_return 7;
  };
  auto r = run(ioc, waits());
  CHECK_FALSE(r->done);
  elapse(ioc, 10ms);
  CHECK(r->value == 7);
  CHECK(cb.counters().successes == 1);
}

TEST_CASE("completion-token form: a plain callback, admitted and rejected") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1});
  timer t(ioc, 10ms);
  boost::system::error_code got = levee::error::circuit_open;
  bool called = false;
  cb.async_execute(t.async_wait(asio::deferred), [&](boost::system::error_code ec) {
    called = true;
    got = ec;
  });
  elapse(ioc, 10ms);
  CHECK(called);
  CHECK_FALSE(got);
  CHECK(cb.counters().successes == 1);

  // A failing operation (a refused read, as a deferred operation) opens it.
  auto refused = asio::deferred.values(make_error_code(boost::system::errc::connection_refused));
  called = false;
  cb.async_execute(std::move(refused), [&](boost::system::error_code ec) {
    called = true;
    got = ec;
  });
  settle(ioc);
  CHECK(called);
  CHECK(got == boost::system::errc::connection_refused);
  REQUIRE(cb.state() == circuit_state::open);

  // Rejected: the handler is not called from inside async_execute.
  called = false;
  bool started = false;
  auto op = asio::deferred.values(1) | asio::deferred([&](int) {
              started = true;
              return asio::deferred.values(boost::system::error_code());
            });
  cb.async_execute(std::move(op), [&](boost::system::error_code ec) {
    called = true;
    got = ec;
  });
  CHECK_FALSE(called);
  settle(ioc);
  CHECK(called);
  CHECK(got == levee::error::circuit_open);
  CHECK_FALSE(started);
}

TEST_CASE("completion-token form: use_future and deferred") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1});
  timer t(ioc, 5ms);
  // use_future's handlers run on the system executor; binding them to the
  // io_context keeps every part of the operation on this thread, so nothing
  // outlives the io_context when the test ends.
  auto use_future = [&] { return asio::bind_executor(ioc, asio::use_future); };
  std::future<void> f = cb.async_execute(t.async_wait(asio::deferred), use_future());
  elapse(ioc, 5ms);
  CHECK_NOTHROW(f.get());

  auto failing = asio::deferred.values(make_error_code(boost::system::errc::host_unreachable), 3);
  auto d = cb.async_execute(std::move(failing), asio::deferred);  // lazy: nothing yet
  CHECK(cb.counters().failures == 0);
  int value = -1;
  boost::system::error_code got;
  std::move(d)([&](boost::system::error_code ec, int v) {
    got = ec;
    value = v;
  });
  settle(ioc);
  CHECK(got == boost::system::errc::host_unreachable);
  CHECK(value == 3);
  CHECK(cb.state() == circuit_state::open);

  std::future<int> rejected =
      cb.async_execute(asio::deferred.values(boost::system::error_code(), 9), use_future());
  settle(ioc);
  try {
    rejected.get();
    FAIL("not rejected");
  } catch (const boost::system::system_error& e) {
    CHECK(e.code() == levee::error::circuit_open);
  }
}

TEST_CASE("completion-token form: per-operation cancellation reaches the operation") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, {.minimum_calls = 1});
  timer t(ioc, 1h);
  asio::cancellation_signal signal;
  boost::system::error_code got;
  cb.async_execute(
      t.async_wait(asio::deferred),
      asio::bind_cancellation_slot(signal.slot(), [&](boost::system::error_code ec) { got = ec; }));
  settle(ioc);
  signal.emit(asio::cancellation_type::terminal);
  settle(ioc);
  CHECK(got == boost::asio::error::operation_aborted);
  CHECK(cb.counters().ignored == 1);
  CHECK(cb.state() == circuit_state::closed);
}

TEST_CASE("slow calls open the breaker through the shell, timed by its clock") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc,
             {.minimum_calls = 4, .slow_call_duration = 100ms, .slow_call_rate_threshold = 0.5});
  fake_service api;
  for (auto latency : {10ms, 150ms, 20ms}) {
    auto r = run(ioc, cb(api.call(true, latency)));
    elapse(ioc, latency);
    CHECK(r->value == 42);
  }
  CHECK(cb.state() == circuit_state::closed);  // 1 slow of 3
  auto r = run(ioc, cb(api.call(true, 200ms)));
  elapse(ioc, 200ms);
  CHECK(r->value == 42);  // a slow call still returns its result
  CHECK(cb.counters().slow == 2);
  CHECK(cb.state() == circuit_state::open);  // 2 slow of 4
}

// Issue 23: slow-call durations are timed on the coarse clock (the time
// window's, `CLOCK_MONOTONIC_COARSE`) when the threshold is at least 100
// times its resolution, on the precise one below; a manual_clock is always
// read as it is.
TEST_CASE("slow calls: the coarse clock from 100 times its resolution, the precise one below") {
  using levee::detail::guard_access;
  using std::chrono::nanoseconds;
  const levee::breaker_options unsampled{.probe_timeout = nanoseconds::max()};
#if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
  {
    using steady = std::chrono::steady_clock;
    using kind = levee::detail::breaker_impl<steady, asio::wait_traits<steady>>::start_kind;
    timespec res{};
    REQUIRE(::clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0);
    const nanoseconds line(100 *
                           (static_cast<std::int64_t>(res.tv_sec) * 1'000'000'000 + res.tv_nsec));
    CHECK(levee::detail::coarse_line<steady>() == line);
    CHECK(levee::detail::coarse_enough<steady>(line));
    CHECK_FALSE(levee::detail::coarse_enough<steady>(line - 1ns));
    asio::io_context ioc;
    auto start_kind = [&](nanoseconds slow) {
      levee::breaker_options o = unsampled;
      o.slow_call_duration = slow;
      levee::circuit_breaker cb(ioc, o);
      return guard_access::breaker(cb).start_time().kind;
    };
    CHECK(start_kind(line) == kind::coarse);
    CHECK(start_kind(1h) == kind::coarse);
    CHECK(start_kind(line - 1ns) == kind::precise);
    CHECK(start_kind(1ms) == kind::precise);
    CHECK(start_kind(0ns) == kind::none);  // off: no read
  }
#endif
  // A clock without a coarse variant: the precise reads, as before.
  CHECK(levee::detail::coarse_line<vclock>() == nanoseconds::max());
  asio::io_context ioc;
  levee::breaker_options o = unsampled;
  o.slow_call_duration = 1h;
  breaker cb(ioc, o);
  auto& impl = guard_access::breaker(cb);
  using kind = std::remove_reference_t<decltype(impl)>::start_kind;
  CHECK(impl.start_time().kind == kind::precise);
}

// Issue 11, defect 2: the README's declaration order (io_context first,
// breaker second) with calls still in flight at shutdown.
TEST_CASE("shutdown: a breaker destroyed before its io_context with calls in flight is safe") {
  virtual_time vt;
  fake_service api;
  SECTION("a coroutine call, destroyed with the io_context") {
    asio::io_context ioc;
    breaker cb(ioc, {.minimum_calls = 1});
    spawn(ioc, cb(api.call(true, 1h)));
    settle(ioc);
    REQUIRE(api.started == 1);
  }  // ~breaker, then ~io_context destroys the suspended frame and its scope
  SECTION("a probe and a token-form call, destroyed with the io_context") {
    asio::io_context ioc;
    breaker cb(ioc, {.minimum_calls = 1, .open_duration = 1s});
    run(ioc, cb(api.call(false)));
    elapse(ioc, 1s);
    REQUIRE(cb.state() == circuit_state::half_open);
    spawn(ioc, cb(api.call(true, 1h)));  // the probe
    settle(ioc);
    REQUIRE(cb.probes_in_flight() == 1);
    timer t(ioc, 1h);
    cb.async_execute(t.async_wait(asio::deferred), [](boost::system::error_code) {});
    settle(ioc);
  }
  SECTION("a breaker replaced by move assignment while its call is in flight") {
    asio::io_context ioc;
    breaker cb(ioc, {.minimum_calls = 1});
    auto call = spawn(ioc, cb(api.call(false, 1s)));
    settle(ioc);
    cb = breaker(ioc, {.minimum_calls = 1});  // the old state lives on until the call ends
    elapse(ioc, 1s);
    CHECK(call->done);
    CHECK(cb.state() == circuit_state::closed);  // the new breaker saw nothing
    CHECK(cb.counters().failures == 0);
    settle(ioc);
    CHECK(ioc.stopped());  // the old one armed no timer
  }
  SECTION("calls that finish after the breaker is gone") {
    asio::io_context ioc;
    auto cb = std::make_unique<breaker>(ioc, levee::breaker_options{.minimum_calls = 1});
    auto ok = spawn(ioc, (*cb)(api.call(true, 1s)));
    auto failed = spawn(ioc, (*cb)(api.call(false, 2s)));  // would trip: no timer may be armed
    settle(ioc);
    cb.reset();
    elapse(ioc, 1s);
    CHECK(ok->value == 42);
    elapse(ioc, 1s);
    CHECK(failed->done);
    CHECK(failed->error);
    settle(ioc);
    CHECK(ioc.stopped());  // nothing left pending: the breaker's state is gone
  }
}

TEST_CASE("durations: open_duration = max() stays open for ever (issue 11, defect 7)") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = std::chrono::nanoseconds::max()});
  run(ioc, cb(api.call(false)));
  REQUIRE(cb.state() == circuit_state::open);
  elapse(ioc, 1ms);
  elapse(ioc, 24h * 365 * 100);
  CHECK(cb.state() == circuit_state::open);
}

TEST_CASE("durations: every duration option works up to max()") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  constexpr auto forever = std::chrono::nanoseconds::max();
  breaker cb(ioc, {.window = forever,
                   .minimum_calls = 2,
                   .open_duration = forever,
                   .open_duration_multiplier = 2,
                   .max_open_duration = forever,
                   .open_duration_jitter = 0.5,
                   .recovery_window = forever,
                   .slow_call_duration = forever});
  elapse(ioc, 1h);
  auto ok = run(ioc, cb(api.call(true, 1s)));
  elapse(ioc, 1s);
  CHECK(ok->value == 42);
  CHECK(cb.counters().slow == 0);
  run(ioc, cb(api.call(false)));
  REQUIRE(cb.state() == circuit_state::open);  // 1 failure of 2 calls
  elapse(ioc, 24h * 365 * 100);
  CHECK(cb.state() == circuit_state::open);
  CHECK_FALSE(cb.metrics().stuck_open);
}

TEST_CASE("a hung probe holds HALF_OPEN at most max_half_open_duration (issue 11)") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 1s, .max_half_open_duration = 10s});
  run(ioc, cb(api.call(false)));
  elapse(ioc, 1s);
  REQUIRE(cb.state() == circuit_state::half_open);
  CHECK(ioc.stopped());  // HALF_OPEN with no probe yet: no timer pending
  auto hung = spawn(ioc, cb(api.call(true, 1h)));
  settle(ioc);
  REQUIRE(cb.probes_in_flight() == 1);
  elapse(ioc, 9s);
  CHECK(cb.state() == circuit_state::half_open);
  CHECK(run(ioc, cb(api.call(true)))->thrown_code() == levee::error::circuit_open);
  elapse(ioc, 1s);  // 10 s after the probe started
  CHECK(cb.state() == circuit_state::open);
  elapse(ioc, 1s);
  REQUIRE(cb.state() == circuit_state::half_open);
  auto next = run(ioc, cb(api.call(true)));
  CHECK(next->value == 42);
  CHECK(cb.state() == circuit_state::closed);
  elapse(ioc, 1h);  // the hung probe finally returns: nothing changes
  CHECK(hung->value == 42);
  CHECK(cb.state() == circuit_state::closed);
  settle(ioc);
  CHECK(ioc.stopped());  // CLOSED and idle: the half-open timer was cancelled
}

// Issue 11, feature: a rejection says when to retry, as Polly's
// BrokenCircuitException.RetryAfter.
TEST_CASE("a rejection carries retry_after and the breaker's name") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  breaker cb(ioc, {.minimum_calls = 1, .open_duration = 30s, .max_half_open_duration = 1min},
             "recommendations");
  CHECK(cb.retry_after() == 0s);  // CLOSED: admits now
  run(ioc, cb(api.call(false)));
  REQUIRE(cb.state() == circuit_state::open);
  elapse(ioc, 10s);
  CHECK(cb.retry_after() == 20s);

  auto r = run(ioc, cb(api.call(true)));
  REQUIRE(r->error);
  CHECK(r->thrown_code() == levee::error::circuit_open);  // catch (system_error&) still works
  try {
    std::rethrow_exception(r->error);
  } catch (const levee::circuit_open_error& e) {
    CHECK(e.code() == levee::error::circuit_open);
    CHECK(e.retry_after() == 20s);
    CHECK(e.breaker() == "recommendations");
  }

  // The tuple form: the same value from the breaker.
  auto t = run(ioc, cb(api.call_ec({})));
  CHECK(std::get<0>(*t->value) == levee::error::circuit_open);
  CHECK(cb.retry_after() == 20s);

  // The token form's exception_ptr carries it too, computed when the call was
  // rejected.
  std::exception_ptr rejection;
  cb.async_execute(asio::deferred.values(std::exception_ptr(), 9),
                   [&](std::exception_ptr e, int) { rejection = e; });
  elapse(ioc, 5s);
  REQUIRE(rejection);
  try {
    std::rethrow_exception(rejection);
  } catch (const levee::circuit_open_error& e) {
    CHECK(e.retry_after() == 20s);
    CHECK(e.code() == levee::error::circuit_open);
  }

  // HALF_OPEN with its slot taken: at the latest when the round ends.
  elapse(ioc, 15s);
  REQUIRE(cb.state() == circuit_state::half_open);
  CHECK(cb.retry_after() == 0s);  // a slot is free
  auto probe = spawn(ioc, cb(api.call(true, 1h)));
  settle(ioc);
  elapse(ioc, 5s);
  CHECK(cb.retry_after() == 55s);

  // Unnamed, the message is a plain system_error's, as before.
  CHECK(std::string(levee::circuit_open_error(1s, "").what()) ==
        boost::system::system_error(make_error_code(levee::error::circuit_open)).what());

  cb.force_open();
  CHECK(cb.retry_after() == std::chrono::nanoseconds::max());  // until an operator says so
  cb.reset();
  CHECK(cb.retry_after() == 0s);
}

// Issue 18, item 5: between a trip and the arming of the open timer (by the
// thread that tripped it), another thread asking retry_after() was told 0,
// "retry now", while the breaker was OPEN. The shell's two steps are taken
// one at a time here, as another thread would see them.
TEST_CASE("retry_after between a trip and the arming of its timer is never 0 in OPEN") {
  virtual_time vt;
  asio::io_context ioc;
  using impl = levee::detail::breaker_impl<vclock, vclock::wait_traits>;
  auto b = std::make_shared<impl>(ioc.get_executor(),
                                  levee::breaker_options{.minimum_calls = 1,
                                                         .open_duration = 30s,
                                                         .open_duration_multiplier = 2.0,
                                                         .max_open_duration = 10min,
                                                         .open_duration_jitter = 0.1},
                                  "");
  const levee::detail::permit p = b->core().try_acquire();
  REQUIRE(p);
  const levee::detail::transition t =
      b->core().complete(p, levee::outcome::failure, levee::detail::nanos::zero());
  REQUIRE(t.to == circuit_state::open);
  // Tripped, not armed yet: the shortest the period can be (30 s less 10 %).
  CHECK(b->retry_after() == 27s);
  b->apply(t);  // armed: the period's own duration, 27 s to 33 s
  const auto armed = b->retry_after();
  CHECK(armed == t.open_for);
  CHECK(armed >= 27s);
  CHECK(armed <= 33s);
  impl::detach(std::move(b));
  settle(ioc);
}
