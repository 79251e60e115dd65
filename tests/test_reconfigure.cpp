// reconfigure(): a running layer takes new options without losing what it
// knows (docs/reconfigure.md). Virtual time (manual_clock); the last cases
// reconfigure from one thread while calls run on a 4-thread io_context.
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/limit/bulkhead.hpp>
#include <levee/retry/retry_budget.hpp>

#include "support.hpp"

#include <boost/asio/thread_pool.hpp>

#include <atomic>
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
}
