// levee::basic_upstream on virtual time with fake replicas: ejection, the way
// back, retries elsewhere, the upstream's breaker, both forms, no pending work.
#include <levee/pipeline.hpp>
#include <levee/registry/registry.hpp>
#include <levee/timeout.hpp>
#include <levee/timeout/deadline.hpp>
#include <levee/upstream/upstream.hpp>

#include "support.hpp"

#include <boost/asio/post.hpp>

#include <array>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

using namespace levee_test;
using levee::upstream_endpoint;
using levee::upstream_event;
using vupstream = levee::basic_upstream<vclock>;
using result = std::tuple<boost::system::error_code, int>;

namespace {

/// Three replicas that answer as told.
struct replicas {
  std::array<boost::system::error_code, 3> answer{};
  std::array<int, 3> calls{};

  asio::awaitable<result> call(const upstream_endpoint& e) {
    ++calls[e.index];
    const auto ec = answer[e.index];
    co_return result(ec, ec ? 0 : int(e.index) + 1);
  }
  auto fn() {
    return [this](const upstream_endpoint& e) { return call(e); };
  }
  int total() const { return calls[0] + calls[1] + calls[2]; }
};

const std::vector<std::string> three{"a:1", "b:2", "c:3"};
const boost::system::error_code refused = asio::error::connection_refused;

levee::upstream_options options() {
  levee::upstream_options o;
  o.outlier.consecutive_failures = 3;
  o.outlier.base_ejection_time = 30s;
  o.max_attempts = 2;
  o.seed = 1;
  o.upstream_breaker.minimum_calls = 5;
  o.endpoint_breaker.minimum_calls = 1000;  // here, ejection does the work
  o.endpoint_breaker.window_calls = 1000;
  o.endpoint_breaker.window_type = levee::window_kind::count;
  return o;
}

/// `n` calls, one after the other; returns how many succeeded.
int calls(asio::io_context& ioc, vupstream& up, replicas& r, int n) {
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    auto p = run(ioc, up(r.fn()));
    REQUIRE(p->done);
    REQUIRE(p->value);
    ok += !std::get<0>(*p->value);
  }
  return ok;
}

}  // namespace

TEST_CASE("upstream: a replica that fails every call is ejected, calls keep succeeding",
          "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  vupstream up(ioc, three, options(), "api");
  std::vector<upstream_event> events;
  up.listen([&](const upstream_event& e) { events.push_back(e); });
  r.answer[1] = refused;
  // Every call succeeds: a failure on b is retried at once on a or c.
  CHECK(calls(ioc, up, r, 300) == 300);
  // b got its three failures in a row, then nothing.
  CHECK(r.calls[1] == 3);
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == upstream_event::ejected);
  CHECK(events[0].address == "b:2");
  CHECK(events[0].ejected_for == 30s);
  const auto m = up.metrics();
  CHECK(m.endpoints[1].ejected);
  CHECK(m.endpoints[1].ejections == 1);
  CHECK(m.ejected == 1);
  CHECK(m.retries == 3);
  CHECK(up.breaker().state() == levee::circuit_state::closed);

  SECTION("it heals: back after its ejection time, through one probe") {
    r.answer[1] = {};
    elapse(ioc, 29s);
    calls(ioc, up, r, 100);
    CHECK(r.calls[1] == 3);  // not yet
    elapse(ioc, 1s);
    CHECK(calls(ioc, up, r, 300) == 300);
    CHECK(r.calls[1] > 3 + 60);  // its share again
    REQUIRE(events.size() == 2);
    CHECK(events[1].kind == upstream_event::returned);
    const auto after = up.metrics();
    CHECK_FALSE(after.endpoints[1].ejected);
    CHECK(after.endpoints[1].returns == 1);
    CHECK(after.ejected == 0);
  }
  SECTION("still sick at its probe: ejected again, for longer") {
    elapse(ioc, 30s);
    CHECK(calls(ioc, up, r, 100) == 100);
    CHECK(r.calls[1] == 4);  // the one probe
    REQUIRE(events.size() == 2);
    CHECK(events[1].kind == upstream_event::ejected);
    CHECK(events[1].ejected_for == 60s);
    CHECK(events[1].level == 2);
  }
}

TEST_CASE(
    "upstream: without retries, a replica failing every call costs its 3 ejecting calls: "
    "99.97 % of 10,000 succeed",
    "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  auto o = options();
  o.max_attempts = 1;  // no retry elsewhere: each call is one attempt
  vupstream up(ioc, three, o, "api");
  r.answer[1] = refused;
  const int ok = calls(ioc, up, r, 10000);
  // Ejected on its third failure in a row (consecutive_failures = 3); after
  // that no call goes to it: the three are the only failures.
  CHECK(r.calls[1] == 3);
  CHECK(ok == 10000 - 3);
  CHECK(ok * 1000 >= 10000 * 999);
  CHECK(up.metrics().endpoints[1].ejected);
}

TEST_CASE("upstream: a replica whose success rate is an outlier is ejected", "[upstream]") {
  // Five replicas; one fails one call in four, never three in a row, so only
  // its success rate gives it away, at the end of a 10 s interval.
  virtual_time vt;
  asio::io_context ioc;
  auto o = options();
  o.max_attempts = 1;
  o.outlier.success_rate_interval = 10s;
  o.outlier.success_rate_minimum_hosts = 5;
  o.outlier.success_rate_request_volume = 20;
  const std::vector<std::string> five{"a:1", "b:2", "c:3", "d:4", "e:5"};
  vupstream up(ioc, five, o, "api");
  std::vector<upstream_event> events;
  up.listen([&](const upstream_event& e) { events.push_back(e); });
  std::array<int, 5> sent{};
  const auto fn = [&](const upstream_endpoint& e) -> asio::awaitable<result> {
    const bool fail = e.index == 3 && ++sent[3] % 4 == 0;
    if (e.index != 3) ++sent[e.index];
    co_return result(fail ? refused : boost::system::error_code(), 1);
  };
  const auto run_calls = [&](int n) {
    int ok = 0;
    for (int i = 0; i < n; ++i) {
      auto p = run(ioc, up(fn));
      REQUIRE(p->value);
      ok += !std::get<0>(*p->value);
    }
    return ok;
  };
  run_calls(500);
  CHECK(events.empty());  // the interval is not over
  elapse(ioc, 10s);
  run_calls(1);  // the first call to finish after it ends the interval
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == upstream_event::ejected);
  CHECK(events[0].address == "d:4");
  CHECK(events[0].cause == levee::upstream_cause::success_rate);
  const auto m = up.metrics();
  CHECK(m.endpoints[3].ejected);
  CHECK(m.endpoints[3].success_rate == Approx(0.75).margin(0.02));
  CHECK(m.endpoints[0].success_rate == 1.0);
  const int before = sent[3];
  CHECK(run_calls(400) == 400);
  CHECK(sent[3] == before);  // skipped while ejected
}

TEST_CASE("upstream: update: endpoints come and go, calls in flight end normally", "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  vupstream up(ioc, three, options(), "api");
  std::map<std::string, int> got;
  bool b_sick = true;
  const auto fn = [&](const upstream_endpoint& e) -> asio::awaitable<result> {
    ++got[e.address];
    if (e.address == "c:3") {  // slow: in flight across the update
      timer t(co_await asio::this_coro::executor, 1s);
      co_await t.async_wait(asio::use_awaitable);
    }
    const bool fail = e.address == "b:2" && b_sick;
    co_return result(fail ? refused : boost::system::error_code(), 1);
  };
  for (int i = 0; i < 30; ++i) run(ioc, up(fn));  // b ejected; some calls wait on c
  REQUIRE(up.metrics().endpoints[1].ejected);
  std::vector<std::shared_ptr<pending<result>>> in_flight;
  for (int i = 0; i < 20; ++i) in_flight.push_back(spawn(ioc, up(fn)));
  settle(ioc);
  REQUIRE(got["c:3"] > 0);
  // c leaves, d arrives; b stays, and stays ejected.
  CHECK(up.update({"a:1", "b:2", "d:4"}));
  CHECK_FALSE(up.update({"a:1", "b:2", "d:4"}));  // the same list: no change
  CHECK(up.size() == 3);
  CHECK(up.endpoint(2).address == "d:4");
  auto m = up.metrics();
  CHECK(m.endpoints[1].ejected);
  CHECK(m.endpoints[1].ejections == 1);
  CHECK(m.ejected == 1);
  const int c_before = got["c:3"];
  got["a:1"] = got["d:4"] = 0;
  int ok = 0;
  for (int i = 0; i < 90; ++i) {
    auto p = run(ioc, up(fn));
    REQUIRE(p->value);
    ok += !std::get<0>(*p->value);
  }
  CHECK(ok == 90);
  CHECK(got["c:3"] == c_before);  // never picked again
  CHECK(got["d:4"] > 30);
  CHECK(got["a:1"] > 30);
  elapse(ioc, 1s);  // the calls in flight on c end, normally
  for (const auto& p : in_flight) {
    REQUIRE(p->done);
    REQUIRE(p->value);
    CHECK_FALSE(std::get<0>(*p->value));
  }
  // b heals and returns through its probe, as before the update.
  b_sick = false;
  elapse(ioc, 30s);
  for (int i = 0; i < 60; ++i) run(ioc, up(fn));
  m = up.metrics();
  CHECK_FALSE(m.endpoints[1].ejected);
  CHECK(m.endpoints[1].returns == 1);
  CHECK(m.ejected == 0);
  CHECK_THROWS_AS(up.update({}), std::invalid_argument);
}

TEST_CASE("upstream: concurrent calls of one request avoid each other's endpoint across an update",
          "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  vupstream up(ioc, std::vector<std::string>{"a:1", "b:2"}, options(), "api");
  levee::upstream_tried tried;  // as a hedge's attempts share it
  std::vector<std::string> picked;
  const auto fn = [&](const upstream_endpoint& e) -> asio::awaitable<result> {
    picked.push_back(e.address);
    timer t(co_await asio::this_coro::executor, 1s);
    co_await t.async_wait(asio::use_awaitable);
    co_return result(boost::system::error_code(), 1);
  };
  auto first = spawn(ioc, up(fn, tried));
  settle(ioc);
  REQUIRE(picked.size() == 1);
  // Reordered: the first call's endpoint has the other index now.
  REQUIRE(up.update({"b:2", "a:1"}));
  auto second = spawn(ioc, up(fn, tried));
  settle(ioc);
  REQUIRE(picked.size() == 2);
  CHECK(picked[1] != picked[0]);
  elapse(ioc, 1s);
  for (const auto& p : {first, second}) {
    REQUIRE(p->done);
    REQUIRE(p->value);
    CHECK_FALSE(std::get<0>(*p->value));
  }
  // The way back: a new request, with its own record, may go anywhere.
  levee::upstream_tried fresh;
  auto third = spawn(ioc, up(fn, fresh));
  settle(ioc);
  CHECK(picked.size() == 3);
  elapse(ioc, 1s);
  REQUIRE(third->done);
  CHECK(up.metrics().endpoints[0].outstanding == 0);
  CHECK(up.metrics().endpoints[1].outstanding == 0);
}

TEST_CASE(
    "upstream: a request's record of tried endpoints is not fooled by a new breaker at a freed "
    "one's address",
    "[upstream]") {
  // The record knows an endpoint by its breaker. When an update removes the
  // endpoint a request tried, and the next update adds another, the new
  // breaker can be allocated where the old one was: had the record kept only
  // the address, the request would take the new endpoint for one it tried
  // (whether the allocator reuses the address varies: the next test checks
  // the mechanism).
  virtual_time vt;
  asio::io_context ioc;
  vupstream up(ioc, std::vector<std::string>{"a:0", "b:0"}, options(), "api");
  std::vector<std::string> picked;
  const auto fn = [&](const upstream_endpoint& e) -> asio::awaitable<result> {
    picked.push_back(e.address);
    co_return result(boost::system::error_code(), 1);
  };
  int newcomer = 0;
  for (int r = 1; r <= 20; ++r) {
    const std::string x = "x:" + std::to_string(r), y = "y:" + std::to_string(r);
    const std::string z = "z:" + std::to_string(r);
    REQUIRE(up.update({x, y}));
    levee::upstream_tried tried;
    picked.clear();
    run(ioc, up(fn, tried));
    REQUIRE(picked.size() == 1);
    const std::string other = picked[0] == x ? y : x;
    REQUIRE(up.update({other}));     // the tried endpoint leaves; its breaker is freed
    REQUIRE(up.update({other, z}));  // a new breaker, maybe at the same address
    run(ioc, up(fn, tried));
    REQUIRE(picked.size() == 2);
    if (picked[1] == z) ++newcomer;
  }
  CHECK(newcomer > 0);  // neither endpoint was tried: both are picked
}

TEST_CASE("upstream: a request's record of tried endpoints keeps their breakers alive",
          "[upstream]") {
  // What makes the test above hold whatever the allocator does: a breaker
  // the record names cannot be freed, so its address cannot be reused.
  auto breaker = std::make_shared<int>(1);
  const std::weak_ptr<int> seen = breaker;
  {
    levee::upstream_tried tried;
    tried.add(breaker);
    breaker.reset();  // the update that removed the endpoint
    CHECK_FALSE(seen.expired());
  }
  CHECK(seen.expired());  // the way back: freed with the request's record
}

TEST_CASE("upstream: all replicas fail: the upstream's breaker opens and calls fail fast",
          "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  vupstream up(ioc, three, options());
  r.answer = {refused, refused, refused};
  CHECK(calls(ioc, up, r, 5) == 0);
  CHECK(up.breaker().state() == levee::circuit_state::open);
  const int before = r.total();
  auto p = run(ioc, up(r.fn()));
  REQUIRE(p->value);
  CHECK(std::get<0>(*p->value) == levee::error::circuit_open);
  CHECK(r.total() == before);  // nothing sent
  SECTION("the exception form throws circuit_open_error") {
    auto q = run(ioc, up([&](const upstream_endpoint& e) -> asio::awaitable<int> {
                   auto [ec, v] = co_await r.call(e);
                   if (ec) throw boost::system::system_error(ec);
                   co_return v;
                 }));
    REQUIRE(q->done);
    CHECK(q->thrown_code() == levee::error::circuit_open);
    CHECK(r.total() == before);
  }
  SECTION("the way back: healed, the breaker closes after its open duration") {
    r.answer = {};
    elapse(ioc, 30s);
    CHECK(calls(ioc, up, r, 20) == 20);
    CHECK(up.breaker().state() == levee::circuit_state::closed);
  }
}

TEST_CASE(
    "upstream: endpoint breakers from a registry: shared with its other callers, evicted "
    "only once the upstream lets go",
    "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  levee::registry_options ro;
  ro.defaults.minimum_calls = 3;
  ro.defaults.open_duration = 10s;
  ro.idle_timeout = 1min;
  levee::basic_breaker_registry<vclock> reg(ioc, ro);
  auto o = options();
  o.outlier.consecutive_failures = 0;  // no ejection: here the breakers do the work
  vupstream up(ioc, three, reg, o, "api");
  REQUIRE(reg.size() == 3);
  CHECK(&up.endpoint_breaker(1) == reg.get("b:2").get());

  // b:2 refuses connections: its breaker (the registry's) opens, and the
  // calls succeed on the others.
  r.answer[1] = refused;
  CHECK(calls(ioc, up, r, 40) == 40);
  CHECK(reg.get("b:2")->state() == levee::circuit_state::open);
  // Another caller of the registry by that key is refused too: one breaker.
  auto direct = run(ioc, (*reg.get("b:2"))(r.call(upstream_endpoint{"b:2", 1})));
  REQUIRE(direct->value);
  CHECK(std::get<0>(*direct->value) == levee::error::circuit_open);
  bool listed = false;
  for (const auto& m : reg.metrics())
    if (m.name == "b:2") listed = m.metrics.state == levee::circuit_state::open;
  CHECK(listed);

  // Idle for longer than the registry's idle timeout: the upstream holds
  // the breakers, so nothing is evicted.
  elapse(ioc, 2min);
  CHECK(reg.evict_idle() == 0);
  CHECK(reg.size() == 3);
  // An update removes b:2: it is the registry's alone, and evicted when idle.
  REQUIRE(up.update({"a:1", "c:3"}));
  elapse(ioc, 2min);
  CHECK(reg.evict_idle() == 1);
  CHECK(reg.size() == 2);

  // The way back: b:2 heals and comes back; its breaker is the registry's
  // new one, closed, and it gets its share as before.
  r.answer[1] = {};
  REQUIRE(up.update(three));
  CHECK(reg.size() == 3);
  CHECK(&up.endpoint_breaker(1) == reg.get("b:2").get());
  const int before = r.calls[1];
  CHECK(calls(ioc, up, r, 60) == 60);
  CHECK(r.calls[1] - before > 10);
  for (const auto& m : reg.metrics()) CHECK(m.metrics.state == levee::circuit_state::closed);
}

TEST_CASE("upstream: a repeated address: update adopts it once, ejection still works",
          "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;  // indexes: a, a, b then a, c
  vupstream up(ioc, {"a:1", "a:1", "b:2"}, options());
  // Eject the first a: three failures in a row on index 0.
  r.answer = {refused, {}, {}};
  CHECK(calls(ioc, up, r, 60) == 60);
  REQUIRE(up.metrics().endpoints[0].ejected);
  REQUIRE(up.metrics().ejected == 1);
  r = {};
  REQUIRE(up.update({"a:1", "c:3"}));
  // a took one of the two a's states: one endpoint ejected at most, counted once.
  const auto m = up.metrics();
  const std::size_t ejected = m.endpoints[0].ejected + m.endpoints[1].ejected;
  CHECK(m.ejected == ejected);
  // c (index 1 now) fails: it can still be ejected (within the share of 1 of 2).
  elapse(ioc, 30s);  // a's ejection, if adopted, is over
  r.answer = {boost::system::error_code(), refused, boost::system::error_code()};
  calls(ioc, up, r, 60);
  CHECK(up.metrics().endpoints[1].ejected);
}

TEST_CASE("upstream: two of three sick, at most 50 % ejected: one ejected, calls still succeed",
          "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  auto o = options();
  o.outlier.max_ejected_share = 0.5;
  vupstream up(ioc, three, o);
  r.answer = {refused, refused, {}};
  // Until one of them is ejected, a call may meet both; after that, a
  // failure on the sick one left in service is retried on the healthy one.
  calls(ioc, up, r, 20);
  REQUIRE(up.metrics().ejected == 1);
  CHECK(calls(ioc, up, r, 300) == 300);
  const auto m = up.metrics();
  CHECK(m.ejected == 1);
  CHECK_FALSE(m.panicking);  // two of three in service
  CHECK(m.endpoints[0].ejected != m.endpoints[1].ejected);
  const int left = m.endpoints[0].ejected ? 1 : 0;
  CHECK(r.calls[left] > 100);  // still picked: the share forbids its ejection
  SECTION("with a share of 70 % both are ejected and the upstream panics") {
    auto o2 = options();
    o2.outlier.max_ejected_share = 0.7;
    vupstream panicky(ioc, three, o2);
    calls(ioc, panicky, r, 100);
    const auto p = panicky.metrics();
    CHECK(p.ejected == 2);
    CHECK(p.panicking);
  }
}

TEST_CASE("upstream: retries go elsewhere, never after a rejection, within the budget",
          "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  SECTION("a retry never lands on the endpoint that failed") {
    auto o = options();
    o.max_attempts = 3;
    o.outlier.consecutive_failures = 0;  // no ejection: only the retries avoid them
    vupstream up(ioc, three, o);
    r.answer = {refused, refused, {}};
    CHECK(calls(ioc, up, r, 50) == 50);
    // Each call tried at most a and b once each before c.
    CHECK(r.calls[2] == 50);
    CHECK(r.calls[0] <= 50);
    CHECK(r.calls[1] <= 50);
  }
  SECTION("a rejection from inside the call is not retried") {
    vupstream up(ioc, three, options());
    r.answer = {levee::error::bulkhead_full, levee::error::bulkhead_full,
                levee::error::bulkhead_full};
    auto p = run(ioc, up(r.fn()));
    REQUIRE(p->value);
    CHECK(std::get<0>(*p->value) == levee::error::bulkhead_full);
    CHECK(r.total() == 1);
  }
  SECTION("an empty budget: no retry") {
    auto o = options();
    o.budget = std::make_shared<levee::retry_budget>(
        levee::retry_budget_options{.ratio = 0, .min_retries_per_second = 0});
    vupstream up(ioc, three, o);
    r.answer = {refused, refused, refused};
    auto p = run(ioc, up(r.fn()));
    REQUIRE(p->value);
    CHECK(std::get<0>(*p->value) == refused);
    CHECK(r.total() == 1);
    CHECK(up.metrics().retries == 0);
  }
  SECTION("an endpoint whose breaker is open is passed over without an attempt") {
    auto o = options();
    o.max_attempts = 1;
    vupstream up(ioc, three, o);
    up.endpoint_breaker(0).force_open();
    CHECK(calls(ioc, up, r, 100) == 100);
    CHECK(r.calls[0] == 0);
    CHECK(up.metrics().endpoints[0].breaker.rejected > 0);
    up.endpoint_breaker(1).force_open();
    up.endpoint_breaker(2).force_open();
    auto p = run(ioc, up(r.fn()));
    REQUIRE(p->value);
    CHECK(std::get<0>(*p->value) == levee::error::circuit_open);
    CHECK(r.total() == 100);
  }
}

TEST_CASE("upstream: the completion-token form", "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  vupstream up(ioc, three, options());
  bool done = false;
  up.async_call(r.fn(), [&](std::exception_ptr e, result v) {
    done = true;
    CHECK_FALSE(e);
    CHECK_FALSE(std::get<0>(v));
  });
  settle(ioc);
  CHECK(done);
}

namespace {

asio::awaitable<result> deadline_seen(std::vector<std::optional<std::chrono::nanoseconds>>& seen) {
  seen.push_back(levee::remaining_deadline(co_await asio::this_coro::executor));
  co_return result(boost::system::error_code(), 1);
}

asio::awaitable<result> through_token(vupstream& up,
                                      std::vector<std::optional<std::chrono::nanoseconds>>& seen) {
  co_return co_await up.async_call(
      [&seen](const upstream_endpoint&) { return deadline_seen(seen); }, asio::use_awaitable);
}

}  // namespace

TEST_CASE("upstream: the completion-token form carries the caller's with_deadline", "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  vupstream up(ioc, three, options());
  std::vector<std::optional<std::chrono::nanoseconds>> seen;
  auto p = run(ioc, levee::with_deadline<vclock>(250ms, through_token(up, seen)));
  REQUIRE(p->done);
  REQUIRE(p->value);
  CHECK_FALSE(std::get<0>(*p->value));
  // The way back: outside a with_deadline, none.
  auto q = run(ioc, through_token(up, seen));
  REQUIRE(q->done);
  REQUIRE(seen.size() == 2);
  CHECK(seen[0] == std::optional<std::chrono::nanoseconds>(250ms));
  CHECK(seen[1] == std::nullopt);
}

TEST_CASE("upstream: an idle upstream has no pending work", "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  vupstream up(ioc, three, options());
  r.answer[0] = refused;
  calls(ioc, up, r, 50);  // with an ejection in it
  REQUIRE(up.metrics().ejected == 1);
  ioc.restart();
  CHECK(ioc.run() == 0);  // nothing left to run: no timer, no post
}

TEST_CASE("upstream: options are validated by name", "[upstream]") {
  asio::io_context ioc;
  auto o = options();
  o.outlier.panic_threshold = 2;
  CHECK_THROWS_WITH(vupstream(ioc, three, o), "outlier_options::panic_threshold must be in [0, 1]");
  CHECK_THROWS_AS(vupstream(ioc, std::vector<std::string>{}), std::invalid_argument);
  o = options();
  o.latency_decay = -1ns;
  CHECK_THROWS_WITH(vupstream(ioc, three, o),
                    "upstream_options::latency_decay must not be negative");
  o.latency_decay = std::chrono::nanoseconds::max();  // accepted: the estimate barely fades
  CHECK_NOTHROW(vupstream(ioc, three, o));
}

TEST_CASE("upstream: the Prometheus exposition", "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  vupstream up(ioc, three, options(), "api");
  r.answer[2] = refused;
  calls(ioc, up, r, 30);
  std::ostringstream out;
  levee::write_prometheus(out, {up.metrics()});
  const std::string text = out.str();
  CHECK(text.find("levee_upstream_ejected{upstream=\"api\",endpoint=\"c:3\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("levee_upstream_ejections_total{upstream=\"api\",endpoint=\"c:3\",cause="
                  "\"consecutive_failures\"} 1\n") != std::string::npos);
  CHECK(text.find("levee_upstream_ejections_total{upstream=\"api\",endpoint=\"c:3\",cause="
                  "\"success_rate\"} 0\n") != std::string::npos);
  CHECK(text.find("levee_upstream_returns_total{upstream=\"api\",endpoint=\"a:1\",cause="
                  "\"probe\"} 0\n") != std::string::npos);
  CHECK(text.find("levee_upstream_returns_total{upstream=\"api\",endpoint=\"a:1\",cause="
                  "\"health_check\"} 0\n") != std::string::npos);
  CHECK(text.find("levee_upstream_panic{upstream=\"api\"} 0\n") != std::string::npos);
  CHECK(text.find("levee_upstream_endpoint_calls_total{upstream=\"api\",endpoint=\"c:3\",outcome="
                  "\"failure\"} 3\n") != std::string::npos);
  if (::access("/usr/bin/promtool", X_OK) != 0) {
    WARN("promtool not found: exposition not checked");
    return;
  }
  char path[] = "/tmp/levee-upstream-prom-XXXXXX";
  const int fd = ::mkstemp(path);
  REQUIRE(fd >= 0);
  ::close(fd);
  std::ofstream(path) << text;
  const std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::remove(path);
  CHECK(rc == 0);
}

TEST_CASE("upstream: 4 threads, one sick replica ejected and probed again and again",
          "[upstream][threads]") {
  // Real time, ejections of 1 ms: picks, ejections, probes and returns race
  // on 4 threads. Every call must succeed (a failure is retried elsewhere)
  // and the counts must add up when it is over.
  asio::io_context ioc(4);
  levee::upstream_options o;
  o.outlier.consecutive_failures = 2;
  o.outlier.base_ejection_time = 1ms;
  o.outlier.max_ejection_time = 2ms;
  o.max_attempts = 2;
  // The sick one's own breaker opens too, and its open timer (1 ms) races.
  o.endpoint_breaker.open_duration = 1ms;
  o.endpoint_breaker.minimum_calls = 4;
  levee::upstream up(ioc, three, o);
  std::atomic<int> ok{0}, sent_to_sick{0};
  std::atomic<int> flips{0};
  const auto fn = [&](const upstream_endpoint& e) -> asio::awaitable<result> {
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    if (e.index == 0) {
      ++sent_to_sick;
      // Sick, except one call in 50 (its probe sometimes succeeds: returns).
      if (++flips % 50 != 0) co_return result(refused, 0);
    }
    co_return result(boost::system::error_code(), 1);
  };
  constexpr int workers = 32, each = 100;
  for (int w = 0; w < workers; ++w)
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < each; ++i) {
            auto [ec, v] = co_await up(fn);
            if (!ec) ++ok;
          }
        },
        asio::detached);
  std::vector<std::thread> pool;
  for (int i = 0; i < 4; ++i) pool.emplace_back([&] { ioc.run(); });
  for (auto& t : pool) t.join();
  CHECK(ok == workers * each);
  const auto m = up.metrics();
  for (const auto& e : m.endpoints) CHECK(e.outstanding == 0);
  CHECK(m.endpoints[0].ejections > 1);                   // probes failed: ejected again
  CHECK(m.endpoints[0].breaker.transitions[0][1] >= 1);  // its breaker opened
  CHECK(m.endpoints[0].ejections >= m.endpoints[0].returns);
  // A failed probe ejects again without a return in between.
  CHECK(m.ejected == (m.endpoints[0].ejected ? 1u : 0u));
  CHECK(sent_to_sick < workers * each / 2);
}

TEST_CASE("upstream: 4 threads, the endpoint list changes while calls run", "[upstream][threads]") {
  asio::io_context ioc(4);
  levee::upstream_options o;
  o.max_attempts = 2;
  levee::upstream up(ioc, three, o);
  std::atomic<int> ok{0};
  const auto fn = [&](const upstream_endpoint& e) -> asio::awaitable<result> {
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    co_return result(boost::system::error_code(), int(e.address.size()));
  };
  constexpr int workers = 16, each = 100;
  for (int w = 0; w < workers; ++w)
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < each; ++i) {
            auto [ec, v] = co_await up(fn);
            if (!ec) ++ok;
          }
        },
        asio::detached);
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 200; ++i) {
          up.update(i % 2 ? three : std::vector<std::string>{"a:1", "d:4"});
          (void)up.metrics();
          co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
        }
      },
      asio::detached);
  std::vector<std::thread> pool;
  for (int i = 0; i < 4; ++i) pool.emplace_back([&] { ioc.run(); });
  for (auto& t : pool) t.join();
  CHECK(ok == workers * each);
  for (const auto& e : up.metrics().endpoints) CHECK(e.outstanding == 0);
}

// The upstream composes with the pipeline as its operation: the pipeline adds
// the fallback, the total deadline and the per-attempt timeout around it; the
// retries (elsewhere) and the breakers are the upstream's own, so the
// pipeline leaves its retry and breaker out (docs/pipeline.md).
TEST_CASE("upstream: inside a pipeline, the fallback answers when every replica is down",
          "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  vupstream up(ioc, three, options());
  levee::basic_pipeline<result, vclock> pipe(
      ioc, {.name = "replicas",
            .fallback = {{.on = levee::fallback_on::rejection,
                          .value = result(boost::system::error_code(), -1)}},
            .deadline = 1s});
  auto call = [&] { return up(r.fn()); };
  r.answer = {refused, {}, {}};
  for (int i = 0; i < 20; ++i) {
    auto p = run(ioc, pipe(call));
    REQUIRE(p->value);
    CHECK_FALSE(std::get<0>(*p->value));  // retried elsewhere by the upstream
  }
  r.answer = {refused, refused, refused};
  // Until the upstream's breaker sees more failures than the 20 successes.
  for (int i = 0; i < 100 && up.breaker().state() != levee::circuit_state::open; ++i)
    run(ioc, pipe(call));
  REQUIRE(up.breaker().state() == levee::circuit_state::open);
  auto p = run(ioc, pipe(call));
  CHECK(*p->value ==
        result(boost::system::error_code(), -1));  // the upstream's rejection, answered
  CHECK(pipe.metrics().fallback->rejections >= 1);
  // The way back: healed, the upstream's breaker closes, no more answers.
  r.answer = {};
  elapse(ioc, 30s);
  const auto answered = pipe.metrics().fallback->used();
  for (int i = 0; i < 20; ++i) {
    auto q = run(ioc, pipe(call));
    CHECK(std::get<1>(*q->value) > 0);
  }
  CHECK(up.breaker().state() == levee::circuit_state::closed);
  CHECK(pipe.metrics().fallback->used() == answered);
}

TEST_CASE(
    "upstream: an adaptive limit per upstream, in a pipeline, bounds the calls to all "
    "replicas together",
    "[upstream]") {
  virtual_time vt;
  asio::io_context ioc;
  replicas r;
  vupstream up(ioc, three, options());
  levee::adaptive_limit_options lo;
  lo.initial_limit = lo.min_limit = 2;
  lo.max_limit = 4;
  levee::basic_pipeline<result, vclock> pipe(ioc, {.name = "replicas", .limit = lo});
  int in_flight = 0, most = 0;
  // Each call holds its replica for 10 ms of virtual time.
  const auto slow = [&](const upstream_endpoint& e) -> asio::awaitable<result> {
    ++in_flight;
    most = std::max(most, in_flight);
    timer t(co_await asio::this_coro::executor, 10ms);
    co_await t.async_wait(asio::use_awaitable);
    --in_flight;
    co_return co_await r.call(e);
  };
  std::vector<std::shared_ptr<pending<result>>> calls;
  for (int i = 0; i < 8; ++i) calls.push_back(run(ioc, pipe([&] { return up(slow); })));
  CHECK(most == 2);  // two admitted, across the three replicas
  elapse(ioc, 10ms);

  int ok = 0, refused_here = 0;
  for (const auto& p : calls) {
    REQUIRE(p->value);
    const auto ec = std::get<0>(*p->value);
    ok += !ec;
    refused_here += ec == levee::condition::rejected;
  }
  CHECK(ok == 2);
  CHECK(refused_here == 6);
  CHECK(r.total() == 2);  // the refused calls reached no replica
  CHECK(up.breaker().metrics().successes == 2);
  CHECK(up.breaker().metrics().failures == 0);
  // The way back: the limit's slots are free again.
  for (int i = 0; i < 4; ++i) {
    auto p = run(ioc, pipe([&] { return up(slow); }));
    elapse(ioc, 10ms);
    REQUIRE(p->value);
    CHECK_FALSE(std::get<0>(*p->value));
  }
  CHECK(pipe.metrics().limit->in_flight == 0);
}
