// reconfigure(): a running layer takes new options without losing what it
// knows (docs/reconfigure.md). Virtual time (manual_clock); the last cases
// reconfigure from one thread while calls run on a 4-thread io_context.
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/limit/bulkhead.hpp>
#include <levee/retry/retry_budget.hpp>

#include "support.hpp"

#include <boost/asio/post.hpp>

#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace levee_test;
using levee::circuit_state;
using levee::transition_reason;

namespace {

levee::breaker_options base_options() {
  return {.failure_rate_threshold = 0.5, .window = 10s, .minimum_calls = 10, .open_duration = 30s};
}

/// `n` calls, the first `failures` of them failing.
void calls(asio::io_context& ioc, breaker& cb, fake_service& api, int n, int failures) {
  for (int i = 0; i < n; ++i) run(ioc, cb(api.call(i >= failures)));
}

/// The message of the `std::invalid_argument` that `reconfigure(o)` throws.
template <class Layer, class Options>
std::string rejection(Layer& layer, const Options& o) {
  try {
    layer.reconfigure(o);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(nothing thrown)";
}

/// promtool's verdict on an exposition (true without promtool: warned).
bool promtool_accepts(const std::string& text) {
  if (::access("/usr/bin/promtool", X_OK) != 0) {
    WARN("promtool not found: exposition not checked");
    return true;
  }
  char path[] = "/tmp/levee-reconfigure-prom-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::ofstream(path) << text;
  const std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::remove(path);
  return rc == 0;
}

/// Opens `cb` by failures (10 calls, all failed).
void trip(asio::io_context& ioc, breaker& cb, fake_service& api) {
  calls(ioc, cb, api, 10, 10);
  REQUIRE(cb.state() == circuit_state::open);
}

}  // namespace

// ---- the breaker -------------------------------------------------------------

TEST_CASE("reconfigure breaker: invalid options throw naming the member, nothing changes") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, base_options(), "b");
  fake_service api;
  calls(ioc, cb, api, 6, 2);
  const levee::window_totals before = cb.window();
  const levee::breaker_options& old = cb.options();

  auto bad = base_options();
  bad.failure_rate_threshold = 1.5;
  CHECK(rejection(cb, bad).find("breaker_options::failure_rate_threshold") != std::string::npos);
  bad = base_options();
  bad.window_buckets = 0;
  CHECK(rejection(cb, bad).find("breaker_options::window_buckets") != std::string::npos);
  bad = base_options();
  bad.window_type = levee::window_kind::count;
  bad.window_calls = 5;  // < minimum_calls
  CHECK(rejection(cb, bad).find("breaker_options::minimum_calls") != std::string::npos);

  // Nothing changed: the options, the window, the state, the counter.
  CHECK(&cb.options() == &old);
  CHECK(cb.options().failure_rate_threshold == 0.5);
  CHECK(cb.options().window_buckets == 10);
  CHECK(cb.window().calls == before.calls);
  CHECK(cb.window().failures == before.failures);
  CHECK(cb.state() == circuit_state::closed);
  CHECK(cb.metrics().reconfigurations == 0);
  // And it still works as before: 4 more failures reach 6 of 10.
  calls(ioc, cb, api, 4, 4);
  CHECK(cb.state() == circuit_state::open);
}

TEST_CASE("reconfigure breaker: thresholds and minimum_calls take effect at once, window kept") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, base_options());
  fake_service api;
  std::vector<levee::breaker_event> events;
  cb.listen(levee::all_events & ~levee::call_events,
            [&](const levee::breaker_event& e) { events.push_back(e); });

  calls(ioc, cb, api, 10, 3);  // 30 %: under 50 %
  REQUIRE(cb.state() == circuit_state::closed);

  auto o = base_options();
  o.failure_rate_threshold = 0.4;  // still over 30 %: the window is kept
  cb.reconfigure(o);
  settle(ioc);
  CHECK(cb.state() == circuit_state::closed);
  CHECK(cb.window().calls == 10);
  CHECK(cb.window().failures == 3);
  CHECK(cb.options().failure_rate_threshold == 0.4);

  o.failure_rate_threshold = 0.3;  // the window it has is now over: it opens at once
  cb.reconfigure(o);
  settle(ioc);
  CHECK(cb.state() == circuit_state::open);
  REQUIRE(events.size() == 3);
  CHECK(events[0].kind == levee::event_kind::reconfigured);
  CHECK(events[1].kind == levee::event_kind::reconfigured);
  CHECK(events[2].kind == levee::event_kind::transition);
  CHECK(events[2].reason == transition_reason::failure_rate);
  CHECK(events[2].calls == 10);  // decided on the window it already had
  CHECK(events[2].rate == Approx(0.3));
  CHECK(cb.metrics().reconfigurations == 2);
}

TEST_CASE("reconfigure breaker: a lower minimum_calls opens on the calls already counted") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, base_options());
  fake_service api;
  calls(ioc, cb, api, 5, 4);  // 80 %, but only 5 of 10 calls
  REQUIRE(cb.state() == circuit_state::closed);
  auto o = base_options();
  o.minimum_calls = 5;
  cb.reconfigure(o);
  CHECK(cb.state() == circuit_state::open);

  // consecutive_failures switched on counts from the switch on.
  virtual_time vt2;
  breaker cb2(ioc, base_options());
  calls(ioc, cb2, api, 3, 3);
  auto c = base_options();
  c.consecutive_failures = 2;
  cb2.reconfigure(c);
  run(ioc, cb2(api.call(false)));
  CHECK(cb2.state() == circuit_state::closed);  // 1 in a row since
  run(ioc, cb2(api.call(false)));
  CHECK(cb2.state() == circuit_state::open);
}

TEST_CASE("reconfigure breaker: a new window starts empty, the state and open streak are kept") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, base_options());
  fake_service api;

  SECTION("CLOSED: each window change empties the window, which then counts as usual") {
    calls(ioc, cb, api, 8, 4);
    REQUIRE(cb.window().calls == 8);
    auto o = base_options();
    std::vector<levee::breaker_options> windows;
    o.window_buckets = 20;  // fits the room the shards have
    windows.push_back(o);
    o.window_buckets = 1024;  // does not: a window of its own
    windows.push_back(o);
    o.window = 60s;
    o.window_buckets = 6;  // back into the shards' room
    windows.push_back(o);
    o.window_type = levee::window_kind::count;
    o.window_calls = 10;
    windows.push_back(o);
    o.window_calls = 4096;  // a bigger count window: memory of its own
    windows.push_back(o);
    o.window_type = levee::window_kind::time;
    windows.push_back(o);
    for (const auto& w : windows) {
      cb.reconfigure(w);
      CHECK(cb.window().calls == 0);
      CHECK(cb.state() == circuit_state::closed);
      calls(ioc, cb, api, 9, 4);
      CHECK(cb.window().calls == 9);
      CHECK(cb.window().failures == 4);
      CHECK(cb.state() == circuit_state::closed);
      elapse(ioc, 1s);
    }
    run(ioc, cb(api.call(false)));  // 5 of 10
    CHECK(cb.state() == circuit_state::open);
    CHECK(cb.metrics().reconfigurations == windows.size());
  }

  SECTION("a time window reconfigured keeps ageing with its new buckets") {
    auto o = base_options();
    o.window = 4s;
    o.window_buckets = 4;
    cb.reconfigure(o);
    calls(ioc, cb, api, 5, 5);  // under minimum_calls
    elapse(ioc, 4s);            // gone from a 4 s window
    CHECK(cb.window().calls == 0);
    calls(ioc, cb, api, 9, 0);
    run(ioc, cb(api.call(false)));
    CHECK(cb.state() == circuit_state::closed);  // 1 of 10: the old failures left
  }

  SECTION("OPEN with an open streak of 2: a new window keeps both") {
    auto o = base_options();
    o.open_duration_multiplier = 2;
    trip(ioc, cb, api);
    elapse(ioc, 30s);
    REQUIRE(cb.state() == circuit_state::half_open);
    run(ioc, cb(api.call(false)));  // the probe fails
    REQUIRE(cb.state() == circuit_state::open);
    REQUIRE(cb.metrics().open_streak == 2);
    o.window = 20s;
    cb.reconfigure(o);
    CHECK(cb.state() == circuit_state::open);
    CHECK(cb.metrics().open_streak == 2);
    CHECK(cb.window().calls == 0);
    // The streak backs the open duration off: 2 x 30 s from when it opened.
    elapse(ioc, 59s);
    CHECK(cb.state() == circuit_state::open);
    elapse(ioc, 1s);
    CHECK(cb.state() == circuit_state::half_open);
    run(ioc, cb(api.call(true)));
    CHECK(cb.state() == circuit_state::closed);
    CHECK(cb.metrics().open_streak == 0);
  }
}

TEST_CASE("reconfigure breaker: an OPEN breaker's timer is re-armed from when it opened") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, base_options());  // open_duration 30 s
  fake_service api;
  trip(ioc, cb, api);
  elapse(ioc, 10s);
  auto o = base_options();

  SECTION("shorter: 15 s from the opening, 5 s from now") {
    o.open_duration = 15s;
    cb.reconfigure(o);
    settle(ioc);
    CHECK(cb.retry_after() == 5s);
    elapse(ioc, 4999ms);
    CHECK(cb.state() == circuit_state::open);
    elapse(ioc, 1ms);
    CHECK(cb.state() == circuit_state::half_open);
  }
  SECTION("longer: 60 s from the opening") {
    o.open_duration = 60s;
    cb.reconfigure(o);
    elapse(ioc, 20s);  // 30 s after it opened: the old timer would have fired
    CHECK(cb.state() == circuit_state::open);
    CHECK(cb.retry_after() == 30s);
    elapse(ioc, 30s);
    CHECK(cb.state() == circuit_state::half_open);
  }
  SECTION("already past: HALF_OPEN at once, through the timer") {
    o.open_duration = 5s;
    cb.reconfigure(o);
    CHECK(cb.state() == circuit_state::open);  // the timer's handler has not run yet
    settle(ioc);                               // no time passes
    CHECK(cb.state() == circuit_state::half_open);
    run(ioc, cb(api.call(true)));
    CHECK(cb.state() == circuit_state::closed);
  }
  SECTION("jitter and backoff changed: the new period's bounds") {
    o.open_duration = 20s;
    o.open_duration_jitter = 0.5;  // [10 s, 30 s] from the opening
    o.jitter_seed = 7;
    cb.reconfigure(o);
    settle(ioc);
    CHECK(cb.retry_after() <= 20s);
    elapse(ioc, 20s);  // 30 s after the opening: past any draw
    CHECK(cb.state() == circuit_state::half_open);
  }
}

TEST_CASE("reconfigure breaker: probes and the backoff take effect at once") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, base_options());
  fake_service api;
  trip(ioc, cb, api);
  elapse(ioc, 30s);
  REQUIRE(cb.state() == circuit_state::half_open);

  // One probe in flight (1 s); the limit was 1.
  auto p1 = spawn(ioc, cb(api.call(true, 1s)));
  settle(ioc);
  REQUIRE(cb.probes_in_flight() == 1);
  auto rejected = run(ioc, cb(api.call(true)));
  CHECK(rejected->thrown_code() == levee::error::circuit_open);

  auto o = base_options();
  o.half_open_probes = 3;
  o.successes_to_close = 2;
  o.open_duration_multiplier = 3;
  cb.reconfigure(o);
  auto p2 = spawn(ioc, cb(api.call(true, 1s)));
  settle(ioc);
  CHECK(cb.probes_in_flight() == 2);  // a second slot at once
  elapse(ioc, 1s);
  CHECK(p1->value == 42);
  CHECK(p2->value == 42);
  CHECK(cb.state() == circuit_state::closed);  // two successes: the new rule

  // The new multiplier: the second opening in a row lasts 3 x 30 s.
  trip(ioc, cb, api);
  elapse(ioc, 30s);
  run(ioc, cb(api.call(false)));
  REQUIRE(cb.state() == circuit_state::open);
  elapse(ioc, 89s);
  CHECK(cb.state() == circuit_state::open);
  elapse(ioc, 1s);
  CHECK(cb.state() == circuit_state::half_open);

  // A lower probe limit cancels no probe: the two in flight finish and count.
  o.half_open_probes = 2;
  cb.reconfigure(o);
  auto q1 = spawn(ioc, cb(api.call(true, 1s)));
  auto q2 = spawn(ioc, cb(api.call(true, 1s)));
  settle(ioc);
  o.half_open_probes = 1;
  cb.reconfigure(o);
  CHECK(cb.probes_in_flight() == 2);
  elapse(ioc, 1s);
  CHECK(q1->value == 42);
  CHECK(q2->value == 42);
  CHECK(cb.state() == circuit_state::closed);
}

TEST_CASE("reconfigure breaker: calls in flight finish under the rules they were admitted with") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, base_options());
  fake_service api;

  SECTION("recorded in the window that exists when they complete") {
    auto slow = spawn(ioc, cb(api.call(false, 2s)));
    settle(ioc);
    auto o = base_options();
    o.window_buckets = 1024;  // a new window while the call runs
    cb.reconfigure(o);
    elapse(ioc, 2s);
    CHECK(slow->done);
    CHECK(cb.window().calls == 1);  // in the new window
    CHECK(cb.window().failures == 1);
    CHECK(cb.counters().failures == 1);
  }
  SECTION("classified by the classifier in force when they complete") {
    auto call = spawn(ioc, cb(api.call(false, 1s)));
    settle(ioc);
    auto o = base_options();
    o.classifier = [](const levee::call_result&) { return levee::outcome::ignored; };
    cb.reconfigure(o);
    elapse(ioc, 1s);
    CHECK(call->done);
    CHECK(cb.counters().ignored == 1);
    CHECK(cb.counters().failures == 0);
  }
  SECTION("not slow when slow-call detection came on after they started") {
    auto call = spawn(ioc, cb(api.call(true, 5s)));
    settle(ioc);
    auto o = base_options();
    o.slow_call_duration = 1s;
    cb.reconfigure(o);
    elapse(ioc, 5s);
    CHECK(call->value == 42);
    CHECK(cb.counters().slow == 0);
    run(ioc, cb(api.call(true, 2s)));  // started with it on: slow
    elapse(ioc, 2s);
    CHECK(cb.counters().slow == 1);
  }
  SECTION("a probe admitted before stays a probe of its round") {
    trip(ioc, cb, api);
    elapse(ioc, 30s);
    auto probe = spawn(ioc, cb(api.call(true, 1s)));
    settle(ioc);
    auto o = base_options();
    o.window_type = levee::window_kind::count;
    o.window_calls = 20;
    o.successes_to_close = 1;
    cb.reconfigure(o);
    CHECK(cb.probes_in_flight() == 1);
    elapse(ioc, 1s);
    CHECK(probe->value == 42);
    CHECK(cb.state() == circuit_state::closed);
    CHECK(cb.window().calls == 0);  // closing starts a fresh window
  }
}

TEST_CASE("reconfigure breaker: the reconfigured event, the counter and the exposition") {
  virtual_time vt;
  asio::io_context ioc;
  breaker cb(ioc, base_options(), "api");
  int events = 0;
  circuit_state seen = circuit_state::open;
  cb.listen(static_cast<levee::event_mask>(levee::event_kind::reconfigured),
            [&](const levee::breaker_event& e) {
              ++events;
              seen = e.to;
              CHECK(e.breaker == "api");
            });
  cb.reconfigure(base_options());
  cb.reconfigure(base_options());
  settle(ioc);
  CHECK(events == 2);
  CHECK(seen == circuit_state::closed);
  CHECK(std::string(levee::to_string(levee::event_kind::reconfigured)) == "reconfigured");
  CHECK(cb.metrics().reconfigurations == 2);
  std::ostringstream text;
  levee::write_prometheus(text, {{"api", cb.metrics()}});
  CHECK(text.str().find("# TYPE levee_reconfigurations_total counter\n"
                        "levee_reconfigurations_total{breaker=\"api\"} 2\n") != std::string::npos);
  CHECK(promtool_accepts(text.str()));
}

// ---- the adaptive limit --------------------------------------------------------

namespace {
using limit_t = levee::basic_adaptive_limit<vclock>;
using bulkhead_t = levee::basic_bulkhead<vclock>;

levee::adaptive_limit_options aimd_options(std::size_t limit) {
  return {.algorithm = levee::limit_algorithm::aimd,
          .initial_limit = limit,
          .min_limit = 1,
          .max_limit = 20,
          .max_queue = 10};
}

/// A call of `latency` (virtual) that succeeds with 7.
asio::awaitable<std::tuple<boost::system::error_code, int>> slow_ok(std::chrono::nanoseconds lat) {
  timer t(co_await asio::this_coro::executor, lat);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return std::tuple(boost::system::error_code(), 7);
}
}  // namespace

TEST_CASE("reconfigure limit: invalid options throw naming the member, nothing changes") {
  virtual_time vt;
  asio::io_context ioc;
  limit_t limit(ioc, aimd_options(10), "l");
  auto bad = aimd_options(10);
  bad.max_limit = 0;
  CHECK(rejection(limit, bad).find("adaptive_limit_options::max_limit") != std::string::npos);
  bad = aimd_options(10);
  bad.backoff_ratio = 1.5;
  CHECK(rejection(limit, bad).find("adaptive_limit_options::backoff_ratio") != std::string::npos);
  CHECK(limit.options().max_limit == 20);
  CHECK(limit.options().backoff_ratio == 0.9);
  CHECK(limit.limit() == 10);
  CHECK(limit.metrics().reconfigurations == 0);
}

TEST_CASE("reconfigure limit: a lower limit cancels no call, a higher one admits waiters") {
  virtual_time vt;
  asio::io_context ioc;
  limit_t limit(ioc, aimd_options(6), "l");
  std::vector<levee::limit_event> events;
  limit.listen(levee::all_limit_events, [&](const levee::limit_event& e) { events.push_back(e); });
  std::vector<std::shared_ptr<pending<std::tuple<boost::system::error_code, int>>>> running;
  for (int i = 0; i < 6; ++i) running.push_back(spawn(ioc, limit(slow_ok(1s))));
  settle(ioc);
  REQUIRE(limit.in_flight() == 6);

  auto o = aimd_options(2);
  o.max_limit = 2;  // the limit 6 becomes 2: the 6 calls run on
  o.max_queue = 0;
  limit.reconfigure(o);
  settle(ioc);
  CHECK(limit.limit() == 2);
  CHECK(limit.in_flight() == 6);
  auto refused = run(ioc, limit(slow_ok(1s)));
  CHECK(std::get<0>(*refused->value) == levee::error::limit_exceeded);
  elapse(ioc, 1s);
  for (const auto& r : running) CHECK(std::get<1>(*r->value) == 7);  // none cancelled
  CHECK(limit.in_flight() == 0);

  // 2 running, 3 waiting; min_limit 5 raises the limit: 3 more at once.
  o.max_queue = 10;
  limit.reconfigure(o);
  running.clear();
  for (int i = 0; i < 5; ++i) running.push_back(spawn(ioc, limit(slow_ok(1s))));
  settle(ioc);
  REQUIRE(limit.in_flight() == 2);
  REQUIRE(limit.metrics().queued == 3);
  o.min_limit = 5;
  o.max_limit = 20;
  o.initial_limit = 5;
  limit.reconfigure(o);
  settle(ioc);
  CHECK(limit.limit() == 5);
  CHECK(limit.in_flight() == 5);
  CHECK(limit.metrics().queued == 0);
  elapse(ioc, 1s);
  for (const auto& r : running) CHECK(std::get<1>(*r->value) == 7);

  CHECK(limit.metrics().reconfigurations == 3);
  int reconfigured = 0;
  for (const auto& e : events) reconfigured += e.kind == levee::limit_event_kind::reconfigured;
  CHECK(reconfigured == 3);
  std::ostringstream text;
  levee::write_limits_prometheus(text, {{"l", limit.metrics()}});
  CHECK(text.str().find("# TYPE levee_limit_reconfigurations_total counter\n"
                        "levee_limit_reconfigurations_total{limit=\"l\"} 3\n") !=
        std::string::npos);
  CHECK(promtool_accepts(text.str()));
}

TEST_CASE("reconfigure limit: the learned limit is kept, and a new algorithm starts from it") {
  virtual_time vt;
  asio::io_context ioc;
  limit_t limit(ioc, aimd_options(10));
  // Two drops: 10 -> 9 -> 8.
  auto fail = []() -> asio::awaitable<int> {
    throw service_error("down");
    co_return 0;
  };
  run(ioc, limit(fail()));
  run(ioc, limit(fail()));
  REQUIRE(limit.limit() == 8);
  limit.reconfigure(aimd_options(15));  // initial_limit is not applied again
  CHECK(limit.limit() == 8);
  auto g = aimd_options(15);
  g.algorithm = levee::limit_algorithm::gradient2;
  limit.reconfigure(g);
  CHECK(limit.limit() == 8);
}

// ---- the bulkhead ------------------------------------------------------------

TEST_CASE("reconfigure bulkhead: invalid options throw naming the member, nothing changes") {
  virtual_time vt;
  asio::io_context ioc;
  bulkhead_t b(ioc, {.max_concurrent = 4, .max_queue = 2});
  CHECK(rejection(b, levee::bulkhead_options{.max_concurrent = 0})
            .find("bulkhead_options::max_concurrent") != std::string::npos);
  CHECK(rejection(b, levee::bulkhead_options{.max_wait = -1s}).find("bulkhead_options::max_wait") !=
        std::string::npos);
  CHECK(b.options().max_concurrent == 4);
  CHECK(b.options().max_queue == 2);
  CHECK(b.reconfigurations() == 0);
}

TEST_CASE("reconfigure bulkhead: a lower capacity cancels no call, waiters wait for room") {
  virtual_time vt;
  asio::io_context ioc;
  bulkhead_t b(ioc, {.max_concurrent = 4, .max_queue = 10});
  std::vector<std::shared_ptr<pending<std::tuple<boost::system::error_code, int>>>> calls_;
  for (int i = 0; i < 6; ++i) calls_.push_back(spawn(ioc, b(slow_ok(i < 2 ? 1s : 2s))));
  settle(ioc);
  REQUIRE(b.in_flight() == 4);
  REQUIRE(b.queued() == 2);
  b.reconfigure({.max_concurrent = 2, .max_queue = 10});
  settle(ioc);
  CHECK(b.in_flight() == 4);  // nobody cancelled
  CHECK(b.queued() == 2);
  elapse(ioc, 1s);  // 2 finish: their slots are not passed on, 2 still run
  CHECK(b.in_flight() == 2);
  CHECK(b.queued() == 2);
  elapse(ioc, 1s);  // the other 2 finish; the 2 waiters start, as 2 are allowed
  for (int i = 0; i < 4; ++i) CHECK(std::get<1>(*calls_[i]->value) == 7);
  CHECK(b.in_flight() == 2);
  CHECK(b.queued() == 0);
  // A third call now waits: 2 run.
  calls_.push_back(spawn(ioc, b(slow_ok(1s))));
  settle(ioc);
  CHECK(b.queued() == 1);
  // A higher capacity admits it at once.
  b.reconfigure({.max_concurrent = 3, .max_queue = 10});
  settle(ioc);
  CHECK(b.in_flight() == 3);
  CHECK(b.queued() == 0);
  elapse(ioc, 1s);
  elapse(ioc, 1s);
  for (const auto& c : calls_) CHECK(std::get<1>(*c->value) == 7);
  CHECK(b.in_flight() == 0);
  // A lower max_queue cancels no waiter: new calls are refused.
  for (int i = 0; i < 5; ++i) calls_.push_back(spawn(ioc, b(slow_ok(1s))));
  settle(ioc);
  REQUIRE(b.queued() == 2);
  b.reconfigure({.max_concurrent = 3, .max_queue = 1});
  auto refused = run(ioc, b(slow_ok(1s)));
  CHECK(std::get<0>(*refused->value) == levee::error::bulkhead_full);
  CHECK(b.queued() == 2);
  elapse(ioc, 1s);  // 3 finish, the 2 waiters start
  elapse(ioc, 1s);
  for (const auto& c : calls_) CHECK(std::get<1>(*c->value) == 7);
  CHECK(b.reconfigurations() == 3);
}

// ---- the retry budget --------------------------------------------------------

TEST_CASE("reconfigure retry budget: invalid options throw naming the member, nothing changes") {
  levee::retry_budget budget({.ratio = 0.2, .min_retries_per_second = 0});
  CHECK(rejection(budget, levee::retry_budget_options{.ratio = 11})
            .find("retry_budget_options::ratio") != std::string::npos);
  CHECK(rejection(budget, levee::retry_budget_options{.buckets = 0})
            .find("retry_budget_options::buckets") != std::string::npos);
  CHECK(budget.options().ratio == 0.2);
  CHECK(budget.reconfigurations() == 0);
}

TEST_CASE("reconfigure retry budget: a new ratio applies at once, the window is kept") {
  using levee::retry_budget;
  retry_budget budget({.ratio = 0.2, .min_retries_per_second = 0, .ttl = 10s, .buckets = 10});
  for (int i = 0; i < 10; ++i) budget.deposit(1s);
  CHECK(budget.state(1s).available == 2);
  budget.reconfigure({.ratio = 0.5, .min_retries_per_second = 0, .ttl = 10s, .buckets = 10});
  CHECK(budget.state(1s).successes == 10);
  CHECK(budget.state(1s).available == 5);
  for (int i = 0; i < 3; ++i) CHECK(budget.try_withdraw(2s));
  // A new ttl and bucket count: the window's counts are carried over.
  budget.reconfigure({.ratio = 0.5, .min_retries_per_second = 1, .ttl = 20s, .buckets = 4});
  const auto s = budget.state(2s);
  CHECK(s.successes == 10);
  CHECK(s.retries == 3);
  CHECK(s.available == 5 - 3 + 20);  // 0.5 x 10 - 3 + 1/s x 20 s
  // They count for one new ttl at most, then leave.
  CHECK(budget.state(25s).successes == 0);
  CHECK(budget.state(25s).available == 20);
  CHECK(budget.reconfigurations() == 2);
}

// ---- calls in flight on 4 threads while another thread reconfigures ----------

TEST_CASE("reconfigure threads: calls on a 4-thread io_context while a thread reconfigures") {
  constexpr int threads = 4, coroutines = 8, rounds = 600;
  asio::io_context ioc(threads);
  levee::circuit_breaker cb(ioc, {.failure_rate_threshold = 0.5,
                                  .window = 50ms,
                                  .minimum_calls = 5,
                                  .open_duration = 200us,
                                  .half_open_probes = 2});
  levee::bulkhead bh(ioc, {.max_concurrent = 4, .max_queue = 64});
  levee::adaptive_limit lim(ioc, {.algorithm = levee::limit_algorithm::aimd,
                                  .initial_limit = 8,
                                  .min_limit = 2,
                                  .max_limit = 16,
                                  .max_queue = 64});
  std::atomic<int> finished{0}, calls_made{0}, other{0};
  std::mutex odd_mutex;
  std::string odd;
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc,
        [&, k]() -> asio::awaitable<void> {
          auto work = [](bool ok) -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
            co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
            co_return std::tuple(
                ok ? boost::system::error_code() : make_error_code(boost::system::errc::io_error),
                7);
          };
          for (int r = 0; r < rounds; ++r) {
            const bool ok = (k + r) % 3 != 0;
            auto [ec, v] = co_await cb(bh(lim(work(ok))));
            ++calls_made;
            // A probe past its (automatic) deadline: error::timeout.
            if (ec && ec != levee::error::circuit_open && ec != boost::system::errc::io_error &&
                ec != levee::error::bulkhead_full && ec != levee::error::limit_exceeded &&
                ec != levee::error::timeout) {
              ++other;
              const std::lock_guard g(odd_mutex);
              odd = ec.message();
            }
          }
          ++finished;
        },
        asio::detached);
  }
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back([&] { ioc.run(); });
  // Reconfigure over and over while they run: thresholds, windows of every
  // kind and size, open durations, probes; capacities up and down.
  int n = 0;
  // do-while: in an optimized build the calls may all end before the first
  // pass; at least one reconfiguration then still races their completions.
  do {
    levee::breaker_options o{
        .failure_rate_threshold = n % 2 ? 0.3 : 0.6,
        .window = n % 3 ? 50ms : 20ms,
        .window_buckets = n % 4 == 0 ? 1000u : 10u,
        .window_type = n % 5 == 0 ? levee::window_kind::count : levee::window_kind::time,
        .window_calls = n % 7 ? 50u : 5000u,
        .minimum_calls = 5,
        .open_duration = n % 2 ? 100us : 300us,
        .half_open_probes = static_cast<std::size_t>(1 + n % 3),
        .consecutive_failures = static_cast<std::size_t>(n % 2 ? 0 : 4)};
    cb.reconfigure(o);
    bh.reconfigure({.max_concurrent = static_cast<std::size_t>(1 + n % 5), .max_queue = 64});
    lim.reconfigure(
        {.algorithm = n % 2 ? levee::limit_algorithm::aimd : levee::limit_algorithm::gradient2,
         .initial_limit = 4,
         .min_limit = static_cast<std::size_t>(1 + n % 4),
         .max_limit = 16,
         .max_queue = 64});
    (void)cb.metrics();
    ++n;
    std::this_thread::yield();
  } while (finished.load() < coroutines);
  for (auto& t : pool) t.join();
  INFO(odd);
  CHECK(other == 0);
  CHECK(calls_made == coroutines * rounds);
  const levee::breaker_counters c = cb.counters();
  CHECK(c.successes + c.failures + c.ignored + c.rejected == std::uint64_t(coroutines * rounds));
  CHECK(bh.in_flight() == 0);
  CHECK(lim.in_flight() == 0);
  CHECK(cb.metrics().reconfigurations == std::uint64_t(n));
  CHECK(bh.reconfigurations() == std::uint64_t(n));
  CHECK(n > 0);
}
