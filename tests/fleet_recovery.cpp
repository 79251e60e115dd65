// levee::fleet on the way back, against a real redis-server
// (tests/redis_fixture.*): Redis restarted with its data lost, error replies,
// failed connects, and the link's end. Real time, short buckets (50 ms),
// bounded waits.
#include "fleet_support.hpp"
#include "redis_fixture.hpp"

#include <levee/breaker/detail/fleet_hook.hpp>
#include <levee/fleet/fleet.hpp>

#include <catch2/catch.hpp>

#include <algorithm>
#include <mutex>
#include <sstream>
#include <thread>

using namespace levee_test;
using levee::circuit_state;

namespace {

std::uint64_t received_opens(const fleet_vector& fleet, std::size_t skip) {
  std::uint64_t n = 0;
  for (std::size_t i = 0; i < fleet.size(); ++i)
    if (i != skip) n += fleet[i]->link().metrics().opens_received;
  return n;
}

std::uint64_t received_closes(const fleet_vector& fleet) {
  std::uint64_t n = 0;
  for (auto& i : fleet) n += i->link().metrics().closes_received;
  return n;
}

// Instance 0 alone falls sick (quorum 1): its local trip is published and
// the opening opens the two healthy instances (their calls keep the fleet's
// failure rate under the threshold: only the published record opens them).
// Then it heals: one instance probes for the fleet and its closing closes the
// others.
void published_opening_and_closing_reach_the_others(fleet_vector& fleet) {
  // A whole window of healthy calls first (after Redis lost its data the
  // fleet's window is empty, and instance 0's failures alone would trip it:
  // then the record's path would not be the one tested).
  std::this_thread::sleep_for(600ms);
  const auto opens = received_opens(fleet, 0);
  const auto closes = received_closes(fleet);
  fleet[0]->sick = true;
  REQUIRE(wait_until([&] { return fleet[0]->breaker().state() == circuit_state::open; }));
  // Within one round (50 ms) or the message: well inside the open period
  // (300 ms). Ignored as stale, they would follow only once instance 0's
  // reopenings had caught up with the generations they saw.
  CHECK(wait_until([&] { return all_in(fleet, circuit_state::open); }, 150ms));
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  // A link counts an opening (a closing) it applied just after the breaker's
  // transition, on its strand: the count may follow the state a moment later
  // (seen under load: 5 >= 6 right after all were open).
  const auto want_opens = opens + 2;
  wait_until([&] { return received_opens(fleet, 0) >= want_opens; });
  CHECK(received_opens(fleet, 0) >= want_opens);
  fleet[0]->sick = false;
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::closed); }));
  const auto want_closes = closes + 2;  // the prober's two followers
  wait_until([&] { return received_closes(fleet) >= want_closes; });
  CHECK(received_closes(fleet) >= want_closes);
}

}  // namespace

TEST_CASE("Redis restarted with its data lost: a published opening and closing reach the others") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.quorum = 1;
  auto fleet = make_fleet(3, fast_breaker(10), &fo);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  // Twice before the restart: each link has seen generations 1 to 4.
  published_opening_and_closing_reach_the_others(fleet);
  published_opening_and_closing_reach_the_others(fleet);
  redis.kill();
  REQUIRE(wait_until([&] { return !fleet[0]->connected(); }));
  redis.restart();
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  // Within one round, as before the restart.
  published_opening_and_closing_reach_the_others(fleet);
  // And with the data flushed under a live connection (no reconnect).
  CHECK(redis.command({"FLUSHALL"}) == "OK");
  published_opening_and_closing_reach_the_others(fleet);
  CHECK(fleet[1]->link().metrics().connects == 2);
}

namespace {

// A listener's events, read from the test's thread.
struct event_log {
  std::mutex mutex;
  std::vector<levee::fleet_event> seen;
  std::function<void(const levee::fleet_event&)> listener() {
    return [this](const levee::fleet_event& e) {
      std::lock_guard g(mutex);
      seen.push_back(e);
    };
  }
  std::vector<levee::fleet_event> of(levee::fleet_event_kind k) {
    std::lock_guard g(mutex);
    std::vector<levee::fleet_event> out;
    for (auto& e : seen)
      if (e.kind == k) out.push_back(e);
    return out;
  }
};

// Two breakers on one link, on a 2-thread io_context.
struct two_breakers {
  asio::io_context ioc{2};
  levee::circuit_breaker a{ioc, fast_breaker(10), "a"}, b{ioc, fast_breaker(10), "b"};
  levee::fleet_link link;
  event_log events;
  std::vector<std::thread> threads;
  explicit two_breakers(const levee::fleet_options& fo) : link(ioc.get_executor(), fo) {
    link.listen(events.listener());
    link.attach(a);
    link.attach(b);
    for (int i = 0; i < 2; ++i) threads.emplace_back([this] { ioc.run(); });
  }
  ~two_breakers() {
    ioc.stop();
    for (auto& t : threads) t.join();
  }
};

}  // namespace

TEST_CASE("an error reply at one breaker's key stays with that breaker") {
  redis_fixture redis;
  two_breakers t(fast_fleet(redis.address()));
  REQUIRE(wait_until([&] { return t.link.metrics().connected && t.link.metrics().rounds >= 4; }));
  // Breaker a's record is a hash now: its rounds get WRONGTYPE.
  CHECK(redis.command({"HSET", "levee:{a}:state", "x", "1"}) == "1");
  REQUIRE(wait_until([&] { return t.link.metrics().command_errors >= 3; }));
  const auto before = t.link.metrics();
  std::this_thread::sleep_for(300ms);  // six rounds of each breaker
  const auto m = t.link.metrics();
  CHECK(m.connected);
  CHECK(m.connects == 1);  // no reconnect storm
  CHECK(m.disconnects == 0);
  CHECK(m.rounds >= before.rounds + 4);  // b's rounds go on
  CHECK(m.last_error.find("WRONGTYPE") != std::string::npos);
  const auto errors = t.events.of(levee::fleet_event_kind::command_error);
  REQUIRE(errors.size() == 1);  // once per run of errors, then counted
  CHECK(errors[0].breaker == "a");
  CHECK(errors[0].reason.find("WRONGTYPE") != std::string::npos);
  // Meanwhile a is a local breaker: its open timer half-opens it (gated, it
  // would wait for a round that never comes back).
  REQUIRE(levee::detail::fleet_hook_of(t.a).open(100ms) == 100ms);
  REQUIRE(wait_until([&] { return t.a.state() == circuit_state::half_open; }, 1000ms));
  t.a.reset();
  // The way back: the key repaired, a's rounds succeed again.
  CHECK(redis.command({"DEL", "levee:{a}:state"}) == "1");
  std::this_thread::sleep_for(150ms);
  const auto repaired = t.link.metrics().command_errors;
  std::this_thread::sleep_for(300ms);
  CHECK(t.link.metrics().command_errors == repaired);
  CHECK(t.link.metrics().connects == 1);
}

TEST_CASE("OOM under maxmemory with noeviction: no reconnect and sharing resumes after") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.quorum = 1;
  auto fleet = make_fleet(3, fast_breaker(10), &fo);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  CHECK(redis.command({"CONFIG", "SET", "maxmemory-policy", "noeviction"}) == "OK");
  CHECK(redis.command({"CONFIG", "SET", "maxmemory", "1"}) == "OK");
  REQUIRE(wait_until([&] { return fleet[0]->link().metrics().command_errors >= 3; }));
  std::this_thread::sleep_for(300ms);
  for (auto& i : fleet) {
    const auto m = i->link().metrics();
    CHECK(m.connected);
    CHECK(m.connects == 1);
    CHECK(m.last_error.rfind("OOM", 0) == 0);
  }
  CHECK(redis.command({"CONFIG", "SET", "maxmemory", "0"}) == "OK");
  published_opening_and_closing_reach_the_others(fleet);
  for (auto& i : fleet) CHECK(i->link().metrics().connects == 1);
}

TEST_CASE("connections killed as soon as they are made: the backoff keeps growing") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.reconnect_min = 10ms;
  fo.reconnect_max = 1s;
  asio::io_context ioc;
  levee::fleet_link link(ioc.get_executor(), fo);
  std::thread t([&] { ioc.run(); });
  REQUIRE(wait_until([&] { return link.metrics().connected; }));
  std::atomic<bool> killing{true};
  std::thread killer([&] {
    while (killing) {
      redis.command({"CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes"});
      std::this_thread::sleep_for(3ms);
    }
  });
  std::this_thread::sleep_for(2500ms);
  killing = false;
  killer.join();
  const auto m = link.metrics();
  WARN("connections killed for 2.5 s: " << m.connects << " connects, " << m.reconnects
                                        << " attempts (backoff 10 ms to 1 s)");
  // 10, 20, 40, ... 640 ms, 1 s: about 9 attempts in 2.5 s; a backoff reset
  // by each successful connect makes it hundreds.
  CHECK(m.reconnects <= 14);
  // The way back: connected again, and it stays.
  REQUIRE(wait_until([&] { return link.metrics().connected; }, 2500ms));
  const auto connects = link.metrics().connects;
  std::this_thread::sleep_for(300ms);
  CHECK(link.metrics().connected);
  CHECK(link.metrics().connects == connects);
  link.close();
  t.join();
}

TEST_CASE("a failed connect is reported with Redis's text and then the right password connects") {
  redis_fixture redis({.password = "s3cret"});
  auto fo = fast_fleet(redis.address());
  SECTION("wrong password, then the right one") {
    fo.password = "wrong";
    asio::io_context ioc;
    levee::fleet_link link(ioc.get_executor(), fo);
    event_log events;
    link.listen(events.listener());
    std::atomic<int> waited{-1};
    link.async_wait_connected(400ms, [&](boost::system::error_code ec) { waited = ec ? 1 : 0; });
    std::thread t([&] { ioc.run(); });
    REQUIRE(wait_until([&] { return waited.load() >= 0; }));
    CHECK(waited == 1);  // not connected within 400 ms: timed out
    REQUIRE(
        wait_until([&] { return !events.of(levee::fleet_event_kind::connect_failed).empty(); }));
    const auto failed = events.of(levee::fleet_event_kind::connect_failed);
    CHECK(failed[0].reason.rfind("WRONGPASS", 0) == 0);
    const auto m = link.metrics();
    CHECK(m.last_error.rfind("WRONGPASS", 0) == 0);
    CHECK(m.connect_failures >= 1);
    std::ostringstream prom;
    levee::write_prometheus(prom, m);
    CHECK(prom.str().find("levee_fleet_last_error_info{error=\"WRONGPASS") != std::string::npos);
    CHECK(prom.str().find("levee_fleet_connect_failures_total") != std::string::npos);
    // The way back: Redis's password changed to the link's.
    CHECK(redis.command({"CONFIG", "SET", "requirepass", "wrong"}) == "OK");
    REQUIRE(wait_until([&] { return link.metrics().connected; }));
    // The link sets its metrics before it calls its listeners, on its strand:
    // seeing `connected` here does not mean the event has been delivered yet.
    REQUIRE(wait_until([&] { return !events.of(levee::fleet_event_kind::connected).empty(); }));
    CHECK(events.of(levee::fleet_event_kind::connected).size() == 1);
    std::atomic<int> again{-1};
    link.async_wait_connected(400ms, [&](boost::system::error_code ec) { again = ec ? 1 : 0; });
    REQUIRE(wait_until([&] { return again.load() >= 0; }));
    CHECK(again == 0);
    link.close();
    t.join();
  }
  SECTION("no password") {
    fo.password = "";
    asio::io_context ioc;
    levee::fleet_link link(ioc.get_executor(), fo);
    std::thread t([&] { ioc.run(); });
    REQUIRE(wait_until([&] { return link.metrics().connect_failures >= 1; }));
    CHECK(link.metrics().last_error.rfind("NOAUTH", 0) == 0);
    link.close();
    t.join();
  }
}

TEST_CASE("a failed connect: a password to a Redis without one and nothing listening") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.password = "s3cret";
  {
    asio::io_context ioc;
    levee::fleet_link link(ioc.get_executor(), fo);
    std::thread t([&] { ioc.run(); });
    REQUIRE(wait_until([&] { return link.metrics().connect_failures >= 1; }));
    CHECK(link.metrics().last_error.find("AUTH") != std::string::npos);
    link.close();
    t.join();
  }
  redis.kill();
  fo.password = "";
  asio::io_context ioc;
  levee::fleet_link link(ioc.get_executor(), fo);
  event_log events;
  link.listen(events.listener());
  std::thread t([&] { ioc.run(); });
  REQUIRE(wait_until([&] { return link.metrics().connect_failures >= 2; }));
  // The link sets its metrics before it calls its listeners: the events of
  // the failures these metrics count are all delivered once there are as many.
  const auto m = link.metrics();
  REQUIRE(wait_until([&] {
    return events.of(levee::fleet_event_kind::connect_failed).size() >= m.connect_failures;
  }));
  const auto failed = events.of(levee::fleet_event_kind::connect_failed);
  CHECK_FALSE(failed[0].reason.empty());
  CHECK(std::any_of(failed.begin(), failed.end(),
                    [&](const auto& f) { return f.reason == m.last_error; }));
  // The way back: Redis is there again.
  redis.restart();
  REQUIRE(wait_until([&] { return link.metrics().connected; }));
  link.close();
  t.join();
}

TEST_CASE("close(): the link leaves no pending work and run() returns") {
  redis_fixture redis;
  asio::io_context ioc;
  levee::circuit_breaker breaker(ioc, fast_breaker(10), "api");
  levee::breaker_registry registry(ioc, {.defaults = fast_breaker(10)});
  registry.get("r");
  levee::fleet_link link(ioc.get_executor(), fast_fleet(redis.address()));
  link.attach(breaker);
  link.attach(registry);
  std::atomic<bool> returned{false};
  std::atomic<int> waiter{-1};
  std::thread t([&] {
    ioc.run();
    returned = true;
  });
  REQUIRE(wait_until([&] { return link.metrics().connected && link.metrics().rounds >= 4; }));
  link.close();
  REQUIRE(wait_until([&] { return returned.load(); }));
  t.join();
  // A wait started after close() ends at once, with operation_aborted.
  link.async_wait_connected(10s, [&](boost::system::error_code ec) {
    waiter = ec == asio::error::operation_aborted ? 1 : 0;
  });
  ioc.restart();
  ioc.run();  // that wait, and nothing else
  CHECK(waiter == 1);
  CHECK_FALSE(link.metrics().connected);
  CHECK(link.metrics().breakers == 0);
  // Both connections gone from Redis (only the fixture's own is listed).
  REQUIRE(wait_until([&] {
    const std::string clients = redis.command({"CLIENT", "LIST"});
    std::size_t n = 0;
    for (auto at = clients.find("id="); at != std::string::npos; at = clients.find("id=", at + 1))
      ++n;
    return n == 1;
  }));
  link.close();  // twice: nothing
}

TEST_CASE("events with reason fleet say who published and which generation") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.quorum = 1;
  // Two healthy instances keep the fleet's failure rate under the threshold:
  // only instance 0's published opening opens them.
  auto fleet = make_fleet(3, fast_breaker(10), &fo);
  std::vector<std::unique_ptr<event_log>> logs;
  for (auto& i : fleet) {
    logs.push_back(std::make_unique<event_log>());
    i->link().listen(logs.back()->listener());
  }
  // The breakers' own transition events with reason fleet say it too (held
  // by the listeners: the instances' threads outlive this scope's locals).
  struct fleet_transitions {
    std::mutex mutex;
    std::vector<std::vector<levee::breaker_event>> of;
  };
  auto recorded = std::make_shared<fleet_transitions>();
  recorded->of.resize(fleet.size());
  for (std::size_t k = 0; k < fleet.size(); ++k)
    fleet[k]->breaker().listen(levee::transition_events, [recorded,
                                                          k](const levee::breaker_event& e) {
      std::lock_guard g(recorded->mutex);
      if (e.kind == levee::event_kind::transition && e.reason == levee::transition_reason::fleet)
        recorded->of[k].push_back(e);
    });
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  std::this_thread::sleep_for(600ms);  // a window of healthy calls
  fleet[0]->sick = true;
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  // The links' events follow the transitions (a follower's just after its
  // breaker opened, the publisher's when its script's reply comes, maybe
  // after the followers had the message): wait for them too.
  REQUIRE(wait_until([&] {
    return !logs[0]->of(levee::fleet_event_kind::published).empty() &&
           !logs[1]->of(levee::fleet_event_kind::fleet_opened).empty() &&
           !logs[2]->of(levee::fleet_event_kind::fleet_opened).empty();
  }));
  const auto published = logs[0]->of(levee::fleet_event_kind::published);
  REQUIRE(published.size() == 1);
  CHECK(published[0].breaker == "api");
  CHECK(published[0].instance == "instance-0");
  CHECK(published[0].reason == "open");
  CHECK(published[0].generation != 0);
  for (int k : {1, 2}) {
    const auto opened = logs[k]->of(levee::fleet_event_kind::fleet_opened);
    REQUIRE(opened.size() == 1);
    CHECK(opened[0].breaker == "api");
    CHECK(opened[0].instance == "instance-0");
    CHECK(opened[0].generation == published[0].generation);
    CHECK(opened[0].when >= published[0].when);
  }
  // The closing, by whoever probed: its two followers say who and which.
  fleet[0]->sick = false;
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::closed); }));
  std::vector<levee::fleet_event> closes, closings;
  const auto collect = [&] {
    closes.clear();
    closings.clear();
    for (auto& l : logs) {
      for (auto& e : l->of(levee::fleet_event_kind::fleet_closed)) closes.push_back(e);
      for (auto& e : l->of(levee::fleet_event_kind::published))
        if (e.reason == "close") closings.push_back(e);
    }
    return closings.size() >= 1 && closes.size() >= 2;
  };
  wait_until(collect);  // the events follow the transitions
  collect();
  REQUIRE(closings.size() == 1);
  REQUIRE(closes.size() == 2);
  for (auto& e : closes) {
    CHECK(e.generation == closings[0].generation);
    CHECK(e.instance == closings[0].instance);
    CHECK(e.generation > published[0].generation);
  }
  // Issue 27, item 5: the followers' breaker events, an opening by
  // instance 0's record and a closing by the prober's (the prober itself
  // closed by its own probe, reason probes_succeeded).
  REQUIRE(wait_until([&] {
    std::lock_guard g(recorded->mutex);
    std::size_t n = 0;
    for (auto& t : recorded->of) n += t.size();
    return n >= 4;
  }));
  std::lock_guard g(recorded->mutex);
  const auto& transitions = recorded->of;
  for (int k : {1, 2}) {
    REQUIRE(!transitions[k].empty());
    CHECK(transitions[k][0].to == circuit_state::open);
    CHECK(transitions[k][0].fleet_instance == "instance-0");
    CHECK(transitions[k][0].fleet_generation == published[0].generation);
  }
  std::size_t fleet_closings = 0;
  for (auto& t : transitions)
    for (auto& e : t)
      if (e.to == circuit_state::closed) {
        ++fleet_closings;
        CHECK(e.fleet_instance == closings[0].instance);
        CHECK(e.fleet_generation == closings[0].generation);
      }
  CHECK(fleet_closings == 2);
}

TEST_CASE(
    "Redis restarted empty during an outage: the rest of it is shared and closing reaches all") {
  redis_fixture redis;
  const auto fo = fast_fleet(redis.address());
  auto fleet = make_fleet(3, fast_breaker(10), &fo);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  set_all(fleet, &fleet_instance::sick, true);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  redis.kill();
  REQUIRE(wait_until([&] { return !fleet[0]->connected() && fleet[0]->half_opens() >= 1; }));
  redis.restart();
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  // One open period (300 ms) of local probes at most, then one probe for
  // the fleet per open period.
  std::this_thread::sleep_for(700ms);
  const auto half_opens = total(fleet, &fleet_instance::half_opens);
  std::this_thread::sleep_for(1500ms);  // five open periods
  const auto during = total(fleet, &fleet_instance::half_opens) - half_opens;
  WARN("after Redis returned during the outage: " << during
                                                  << " half-open rounds in 1.5 s (alone: 15)");
  CHECK(during <= 8);
  // The way back: the heal closes everyone through the prober's closing.
  const auto closes = received_closes(fleet);
  set_all(fleet, &fleet_instance::sick, false);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::closed); }));
  wait_until([&] { return received_closes(fleet) >= closes + 2; });  // counted just after
  CHECK(received_closes(fleet) >= closes + 2);
}

TEST_CASE("the probe lease goes to an instance with a call to make") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.probe_lease = 2s;  // an idle winner would hold the fleet this long
  auto fleet = make_fleet(3, fast_breaker(10), &fo);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  set_all(fleet, &fleet_instance::sick, true);
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::open); }));
  fleet[1]->traffic = false;  // two idle instances, one busy (a call every 10 ms)
  fleet[2]->traffic = false;
  std::this_thread::sleep_for(1500ms);  // five open periods of outage
  CHECK(fleet[1]->link().metrics().probe_leases_won == 0);
  CHECK(fleet[2]->link().metrics().probe_leases_won == 0);
  CHECK(fleet[0]->link().metrics().probe_leases_won >= 3);
  // The way back: healed, the fleet closes within an open period and a call.
  set_all(fleet, &fleet_instance::sick, false);
  const auto healed = std::chrono::steady_clock::now();
  REQUIRE(wait_until([&] { return all_in(fleet, circuit_state::closed); }));
  const auto took = std::chrono::steady_clock::now() - healed;
  WARN("heal to fleet closed, 1 busy and 2 idle instances, open_duration 300 ms: "
       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count() << " ms");
  CHECK(took < 1000ms);  // an idle winner: up to the 2 s lease
}

TEST_CASE("checks: names with NUL refused and a second breaker under a name refused") {
  asio::io_context ioc;
  levee::fleet_options fo;
  fo.address = "127.0.0.1:1";  // nothing listens: never connects, no matter
  levee::fleet_link link(ioc.get_executor(), fo);
  levee::circuit_breaker first(ioc, fast_breaker(10), "api"), second(ioc, fast_breaker(10), "api");
  CHECK_THROWS_AS(link.attach(first, std::string("a\0b", 3)), std::invalid_argument);
  link.attach(first);
  CHECK_THROWS_AS(link.attach(second), std::invalid_argument);  // the first stays linked
  CHECK_NOTHROW(link.attach(first));                            // the same breaker again: nothing
  CHECK(link.metrics().breakers == 1);
  link.close();
  ioc.run();
}

TEST_CASE("checks: a registry's breakers the link cannot attach are not kept alive") {
  redis_fixture redis;
  asio::io_context ioc;
  levee::breaker_registry registry(ioc, {.defaults = fast_breaker(10), .idle_timeout = 200ms});
  levee::breaker_options counted = fast_breaker(10);
  counted.window_type = levee::window_kind::count;
  counted.window_calls = 20;
  registry.set_options("counted", counted);
  registry.get("counted");
  levee::fleet_link link(ioc.get_executor(), fast_fleet(redis.address()));
  link.attach(registry);
  std::thread t([&] { ioc.run(); });
  std::this_thread::sleep_for(600ms);  // 12 scans, three idle timeouts
  CHECK(registry.evict_idle() == 1);   // nobody asked for it: evicted
  CHECK(registry.size() == 0);
  CHECK(link.metrics().breakers == 0);
  link.close();
  t.join();
}

TEST_CASE("quorum 1 with one instance's path broken: figures for docs/fleet.md") {
  redis_fixture redis;
  auto run = [&](std::size_t quorum) {
    auto fo = fast_fleet(redis.address());
    fo.quorum = quorum;
    fo.key_prefix = std::string("q").append(std::to_string(quorum));
    auto fleet = make_fleet(3, fast_breaker(10), &fo);
    REQUIRE(wait_until([&] { return all_connected(fleet); }));
    fleet[0]->sick = true;  // only instance 0's path is broken
    std::this_thread::sleep_for(4000ms);
    set_all(fleet, &fleet_instance::traffic, false);
    return std::tuple(fleet[0]->failed.load(),
                      fleet[1]->rejected.load() + fleet[2]->rejected.load(),
                      fleet[0]->link().metrics().closes_received);
  };
  const auto [sick1, healthy_rejected1, closed1] = run(1);
  const auto [sick2, healthy_rejected2, closed2] = run(2);
  WARN("4 s, instance 0 broken, 3 instances, open 300 ms, a call per 10 ms: quorum 1: "
       << sick1 << " calls to the broken path, " << healthy_rejected1
       << " healthy calls refused, closed by the others " << closed1
       << " times; quorum 2: " << sick2 << ", " << healthy_rejected2 << ", " << closed2);
  CHECK(sick2 < sick1);
  CHECK(healthy_rejected2 == 0);
  CHECK(closed2 == 0);
}
