// The fleet link's decisions, sans I/O (fleet/detail/fleet_decisions.hpp): plain
// numbers for time (Redis time in us), no Redis, no Asio, no clock.
#include <levee/fleet/detail/fleet_decisions.hpp>

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <random>
#include <string>

using levee::breaker_counters;
using levee::breaker_options;
using levee::circuit_state;
using levee::transition_reason;
using levee::detail::fleet_decisions;
using levee::detail::fleet_record;
using levee::detail::fleet_thresholds;
using levee::detail::fleet_window;
using levee::detail::probe_decision;
using levee::detail::probe_race;
using levee::detail::publication;
using levee::detail::record_decision;
using levee::detail::round_request;
using namespace std::chrono_literals;
using std::chrono::nanoseconds;

namespace {

// The breaker's options: 50 % failures, at least 10 calls; quorum 2.
fleet_thresholds thresholds(std::size_t quorum = 2, std::size_t fleet_minimum = 0,
                            breaker_options o = {}) {
  return fleet_thresholds::of(o, quorum, fleet_minimum);
}

fleet_decisions decisions(std::size_t quorum = 2) {
  return fleet_decisions(thresholds(quorum), breaker_counters{});
}

fleet_record opening(std::uint64_t generation, std::int64_t half_open_us) {
  return fleet_record::parse("o " + std::to_string(generation) + " " +
                             std::to_string(half_open_us) + " peer");
}

fleet_record closing(std::uint64_t generation) {
  return fleet_record::parse("c " + std::to_string(generation) + " 0 peer");
}

// A round sent and answered, the breaker OPEN with its timer expired
// (generation `g`): the probe race was asked for.
void asked_to_probe(fleet_decisions& d, std::uint64_t g) {
  static std::uint64_t rejected = 0;
  breaker_counters c;
  c.rejected = ++rejected;  // a call was refused since the last round: one to make
  round_request q;
  REQUIRE(d.tick(c, true, g, false, q));
  REQUIRE(q.want_probe);
  d.round_answered();
}

}  // namespace

TEST_CASE("fleet decisions: records parse, malformed ones are none") {
  const fleet_record o = fleet_record::parse("o 7 1500000 host:1:ab api");
  CHECK(o.kind == 'o');
  CHECK(o.generation == 7);
  CHECK(o.half_open_us == 1500000);
  CHECK(o.rest == "host:1:ab api");
  const fleet_record c = fleet_record::parse("c 8 0 host:1:ab");
  CHECK(c.kind == 'c');
  CHECK(c.generation == 8);
  CHECK(fleet_record::parse("").kind == 0);
  CHECK(fleet_record::parse("x 1 2 id").kind == 0);
  CHECK(fleet_record::parse("o one 2 id").kind == 0);
  CHECK(fleet_record::parse("oo 1 2 id").kind == 0);
}

TEST_CASE("fleet decisions: quorum, one sick instance is a minority") {
  const fleet_thresholds t = thresholds(2);
  // Every failure from one instance: its network is broken, not the service.
  CHECK_FALSE(levee::detail::fleet_window_trips(t, {100, 100, 0, 1}));
  // The same failures from two instances: quorum reached.
  CHECK(levee::detail::fleet_window_trips(t, {100, 100, 0, 2}));
  CHECK(levee::detail::fleet_window_trips(t, {100, 50, 0, 3}));  // rate 0.5 reaches 0.5
  CHECK_FALSE(levee::detail::fleet_window_trips(t, {100, 49, 0, 3}));
  // A quorum of 3.
  CHECK_FALSE(levee::detail::fleet_window_trips(thresholds(3), {100, 100, 0, 2}));
  CHECK(levee::detail::fleet_window_trips(thresholds(3), {100, 100, 0, 3}));
  // A quorum of 1: one instance is enough.
  CHECK(levee::detail::fleet_window_trips(thresholds(1), {100, 100, 0, 1}));
}

TEST_CASE("fleet decisions: the fleet's minimum calls") {
  // 0: the breaker's minimum_calls (10).
  CHECK_FALSE(levee::detail::fleet_window_trips(thresholds(2, 0), {9, 9, 0, 2}));
  CHECK(levee::detail::fleet_window_trips(thresholds(2, 0), {10, 9, 0, 2}));
  // Its own: 40.
  CHECK(thresholds(2, 40).minimum_calls == 40);
  CHECK_FALSE(levee::detail::fleet_window_trips(thresholds(2, 40), {39, 39, 0, 4}));
  CHECK(levee::detail::fleet_window_trips(thresholds(2, 40), {40, 20, 0, 4}));
}

TEST_CASE("fleet decisions: the slow-call rate, only with slow-call detection on") {
  breaker_options o;
  o.slow_call_rate_threshold = 0.8;
  const fleet_window slow{100, 0, 80, 2};
  CHECK_FALSE(levee::detail::fleet_window_trips(thresholds(2, 0, o), slow));  // detection off
  o.slow_call_duration = 100ms;
  CHECK(levee::detail::fleet_window_trips(thresholds(2, 0, o), slow));
  CHECK_FALSE(levee::detail::fleet_window_trips(thresholds(2, 0, o), {100, 0, 79, 2}));
  // The quorum holds for slow calls too.
  CHECK_FALSE(levee::detail::fleet_window_trips(thresholds(2, 0, o), {100, 0, 100, 1}));
}

TEST_CASE("fleet decisions: the fleet's window opens only a CLOSED breaker") {
  const fleet_decisions d = decisions();
  const fleet_window w{100, 100, 0, 2};
  CHECK(d.window_opens(w, circuit_state::closed));
  CHECK_FALSE(d.window_opens(w, circuit_state::open));
  CHECK_FALSE(d.window_opens(w, circuit_state::half_open));
  CHECK_FALSE(d.window_opens(w, circuit_state::forced_open));
  CHECK_FALSE(d.window_opens({100, 100, 0, 1}, circuit_state::closed));
}

TEST_CASE("fleet decisions: a published opening opens until the fleet's half-open time") {
  fleet_decisions d = decisions();
  const record_decision r = d.on_record(opening(3, 5'000'000), circuit_state::closed, 2'000'000);
  CHECK(r.what == record_decision::action::open);
  CHECK(r.open_for == 3s);
  CHECK(d.seen() == 3);
  CHECK(d.half_open_us() == 5'000'000);
  CHECK_FALSE(d.fleet_open());  // until the breaker did open
  d.opened_by_fleet();
  CHECK(d.fleet_open());
  // The same news again (a message after the round): known.
  CHECK(d.on_record(opening(3, 5'000'000), circuit_state::open, 2'100'000).what ==
        record_decision::action::join);
}

TEST_CASE("fleet decisions: stale generations are ignored") {
  fleet_decisions d = decisions();
  d.on_record(opening(5, 9'000'000), circuit_state::closed, 1'000'000);
  d.opened_by_fleet();
  // An older closing, read late: it must not close the fleet's opening.
  CHECK(d.on_record(closing(4), circuit_state::open, 1'500'000).what ==
        record_decision::action::stale);
  CHECK(d.fleet_open());
  // An older opening, for a CLOSED breaker: stale, no open.
  fleet_decisions e = decisions();
  e.on_record(closing(9), circuit_state::closed, 1'000'000);
  CHECK(e.on_record(opening(8, 9'000'000), circuit_state::closed, 1'000'000).what ==
        record_decision::action::stale);
  CHECK(e.seen() == 9);
}

TEST_CASE("fleet decisions: openings that came and went") {
  fleet_decisions d = decisions();
  // Its half-open time has passed: a CLOSED breaker does not open.
  CHECK(d.on_record(opening(2, 1'000'000), circuit_state::closed, 1'000'000).what ==
        record_decision::action::nothing);
  // An OPEN breaker joins a newer opening: its opening is the fleet's.
  CHECK(d.on_record(opening(3, 4'000'000), circuit_state::open, 2'000'000).what ==
        record_decision::action::join);
  CHECK(d.fleet_open());
  // No record any more (expired, or Redis lost its data): not the fleet's.
  CHECK(d.on_record(fleet_record{}, circuit_state::open, 3'000'000).what ==
        record_decision::action::nothing);
  CHECK_FALSE(d.fleet_open());
}

TEST_CASE("fleet decisions: a closing closes only a fleet opening") {
  fleet_decisions d = decisions();
  d.on_record(opening(1, 5'000'000), circuit_state::closed, 1'000'000);
  d.opened_by_fleet();
  CHECK(d.on_record(closing(2), circuit_state::open, 6'000'000).what ==
        record_decision::action::close);
  CHECK_FALSE(d.fleet_open());
  // A breaker that opened alone (its own window) stays open.
  fleet_decisions e = decisions();
  CHECK(e.on_record(closing(2), circuit_state::open, 6'000'000).what ==
        record_decision::action::nothing);
}

TEST_CASE("fleet decisions: rounds carry the counts since the last round") {
  fleet_decisions d(thresholds(), breaker_counters{10, 2, 0, 1, 0});
  round_request q;
  REQUIRE(d.tick({15, 5, 0, 3, 0}, true, 0, false, q));
  CHECK(q.calls == 8);  // successes + failures
  CHECK(q.failures == 3);
  CHECK(q.slow == 2);
  CHECK_FALSE(q.want_probe);
  CHECK(q.renew_generation == 0);
  CHECK(d.in_flight());
  // Unanswered: the next tick sends nothing, its counts go with the next round.
  CHECK_FALSE(d.tick({20, 5, 0, 3, 0}, true, 0, false, q));
  d.round_answered();
  REQUIRE(d.tick({21, 6, 0, 3, 0}, true, 0, false, q));
  CHECK(q.calls == 7);
  CHECK(q.failures == 1);
}

TEST_CASE("fleet decisions: fallback when disconnected") {
  fleet_decisions d = decisions();
  d.on_record(opening(1, 5'000'000), circuit_state::closed, 1'000'000);
  d.opened_by_fleet();
  round_request q;
  REQUIRE(d.tick({1, 1, 0, 0, 0}, true, 0, false, q));  // a round in flight
  d.disconnected();
  CHECK_FALSE(d.fleet_open());
  CHECK_FALSE(d.in_flight());
  // While down: no round, and the counts are dropped (they would all land in
  // one bucket); no publication.
  CHECK_FALSE(d.tick({50, 50, 0, 0, 0}, false, 7, false, q));
  CHECK(d.on_transition(circuit_state::closed, circuit_state::open, transition_reason::failure_rate,
                        30s, false)
            .mode == nullptr);
  // Connected again: only what came after.
  REQUIRE(d.tick({52, 51, 0, 0, 0}, true, 0, false, q));
  CHECK(q.calls == 3);
  CHECK(q.failures == 1);
}

TEST_CASE("fleet decisions: a local opening is published, fleet and manual ones are not") {
  fleet_decisions d = decisions();
  const publication p = d.on_transition(circuit_state::closed, circuit_state::open,
                                        transition_reason::failure_rate, 30s, true);
  REQUIRE(p.mode != nullptr);
  CHECK(std::string(p.mode) == "open");
  CHECK(p.open_for == 30s);
  CHECK(p.generation == 0);
  CHECK(d.on_transition(circuit_state::closed, circuit_state::open, transition_reason::fleet, 30s,
                        true)
            .mode == nullptr);
  CHECK(d.on_transition(circuit_state::closed, circuit_state::open, transition_reason::manual, 30s,
                        true)
            .mode == nullptr);
  // Not the prober: its half-open outcomes are its own.
  CHECK(d.on_transition(circuit_state::half_open, circuit_state::closed,
                        transition_reason::probes_succeeded, 0s, true)
            .mode == nullptr);
}

TEST_CASE("fleet decisions: lease won, the prober publishes its outcome") {
  fleet_decisions d = decisions();
  asked_to_probe(d, 12);
  const probe_decision p = d.on_probe(probe_race::won, 4);
  CHECK(p.what == probe_decision::action::probe);
  CHECK(p.generation == 12);  // the breaker's OPEN generation
  d.probe_started(true);
  CHECK(d.probing());
  CHECK(d.probing_generation() == 4);  // the lease's (the record's)
  // While its probe runs, each round renews the lease.
  round_request q;
  REQUIRE(d.tick({}, true, 0, true, q));
  CHECK(q.renew_generation == 4);
  d.round_answered();
  REQUIRE(d.tick({}, true, 0, false, q));  // no probe in flight: let it expire
  CHECK(q.renew_generation == 0);
  d.round_answered();
  const publication c = d.on_transition(circuit_state::half_open, circuit_state::closed,
                                        transition_reason::probes_succeeded, 0s, true);
  REQUIRE(c.mode != nullptr);
  CHECK(std::string(c.mode) == "close");
  CHECK(c.generation == 4);
  CHECK_FALSE(d.probing());
}

TEST_CASE("fleet decisions: a failed probe reopens the fleet") {
  fleet_decisions d = decisions();
  asked_to_probe(d, 12);
  d.on_probe(probe_race::won, 4);
  d.probe_started(true);
  const publication r = d.on_transition(circuit_state::half_open, circuit_state::open,
                                        transition_reason::probe_failed, 60s, true);
  REQUIRE(r.mode != nullptr);
  CHECK(std::string(r.mode) == "reopen");
  CHECK(r.open_for == 60s);
  CHECK(r.generation == 4);
}

TEST_CASE("fleet decisions: lease lost or not yet, keep rejecting") {
  fleet_decisions d = decisions();
  asked_to_probe(d, 12);
  const probe_decision lost = d.on_probe(probe_race::lost, 4);
  CHECK(lost.what == probe_decision::action::wait);
  CHECK(lost.lost);
  CHECK_FALSE(d.probing());
  CHECK(d.on_probe(probe_race::won, 4).what == probe_decision::action::none);  // asked once
  asked_to_probe(d, 12);
  const probe_decision early = d.on_probe(probe_race::not_yet, 4);
  CHECK(early.what == probe_decision::action::wait);
  CHECK_FALSE(early.lost);
}

TEST_CASE("fleet decisions: no fleet opening, the breaker half-opens alone") {
  fleet_decisions d = decisions();
  d.on_record(opening(1, 2'000'000), circuit_state::open, 1'000'000);  // joins
  CHECK(d.fleet_open());
  asked_to_probe(d, 9);
  const probe_decision p = d.on_probe(probe_race::no_opening, 0);
  CHECK(p.what == probe_decision::action::half_open);
  CHECK(p.generation == 9);
  CHECK_FALSE(d.fleet_open());
  CHECK(levee::detail::to_probe_race(-1) == probe_race::no_opening);
  CHECK(levee::detail::to_probe_race(42) == probe_race::no_opening);
}

TEST_CASE("fleet decisions: a round given up decides nothing") {
  fleet_decisions d = decisions();
  asked_to_probe(d, 12);
  CHECK(levee::detail::to_probe_race(-2) == probe_race::given_up);
  CHECK(d.on_probe(probe_race::given_up, 0).what == probe_decision::action::none);
  // No race was asked for: nothing, whatever the reply says.
  fleet_decisions e = decisions();
  CHECK(e.on_probe(probe_race::won, 1).what == probe_decision::action::none);
}

TEST_CASE("fleet decisions: Redis time and command deadlines") {
  levee::detail::redis_clock c;
  CHECK_FALSE(c.known());
  CHECK(c.deadline(100, 1'000'000) == 0);  // no deadline before Redis told its time
  c.learn(5'000'000, 1'000);               // Redis time 5 s when the steady clock read 1 ms
  CHECK(c.known());
  CHECK(c.now(2'000) == 5'001'000);
  CHECK(c.deadline(2'000, 1'000'000) == 6'001'000);
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  CHECK(c.deadline(2'000, max) == max);  // saturated
  c.forget();
  CHECK(c.deadline(2'000, 1'000'000) == 0);
}

TEST_CASE("fleet decisions: reconnection delays double, jittered, up to the maximum") {
  levee::detail::reconnect_backoff b(100ms, 350ms);
  std::mt19937_64 rng(42);
  const nanoseconds bounds[] = {100ms, 200ms, 350ms, 350ms};
  for (nanoseconds d : bounds) {
    const nanoseconds delay = b.next(rng);
    CHECK(delay >= d / 2);
    CHECK(delay <= d);
  }
  b.reset();
  const nanoseconds first = b.next(rng);
  CHECK(first >= 50ms);
  CHECK(first <= 100ms);
  levee::detail::reconnect_backoff forever(1s, nanoseconds::max());
  for (int i = 0; i < 80; ++i) CHECK(forever.next(rng) > nanoseconds::zero());  // saturates
}

TEST_CASE("fleet decisions: a connection that fails at once does not reset the backoff") {
  levee::detail::reconnect_backoff b(100ms, 800ms);
  std::mt19937_64 rng(7);
  b.next(rng);                  // up to 100 ms
  b.next(rng);                  // up to 200 ms
  b.connection_lasted(5ms);     // connected, and lost at once
  CHECK(b.next(rng) >= 200ms);  // up to 400 ms: still growing
  b.connection_lasted(799ms);   // not yet stable
  CHECK(b.next(rng) >= 400ms);  // up to 800 ms
  b.connection_lasted(800ms);   // up for reconnect_max: stable
  CHECK(b.next(rng) <= 100ms);
}

TEST_CASE("fleet decisions: after Redis lost its data, lower generations are news") {
  fleet_decisions d = decisions();
  CHECK(d.on_record(opening(7, 5'000'000), circuit_state::closed, 1'000'000).what ==
        record_decision::action::open);
  d.opened_by_fleet();
  CHECK(d.on_record(closing(8), circuit_state::open, 1'000'000).what ==
        record_decision::action::close);
  CHECK(d.on_record(opening(3, 5'000'000), circuit_state::closed, 1'000'000).what ==
        record_decision::action::stale);
  d.disconnected();  // Redis restarted: its generations start again
  CHECK(d.on_record(opening(1, 5'000'000), circuit_state::closed, 1'000'000).what ==
        record_decision::action::open);
}

TEST_CASE("fleet decisions: the probe lease is raced for only with a call to make") {
  fleet_decisions d = decisions();
  round_request q;
  REQUIRE(d.tick({}, true, 0, false, q));
  d.round_answered();
  // OPEN generation 12 expired, no call refused since the last round: an idle
  // instance does not take the lease.
  REQUIRE(d.tick({}, true, 12, false, q));
  CHECK_FALSE(q.want_probe);
  d.round_answered();
  CHECK_FALSE(d.wants_probe({}, 12));
  breaker_counters busy;
  busy.rejected = 3;  // calls refused: it has calls to make
  CHECK(d.wants_probe(busy, 12));
  CHECK_FALSE(d.wants_probe(busy, 0));  // nothing expired
  REQUIRE(d.tick(busy, true, 12, false, q));
  CHECK(q.want_probe);
}

TEST_CASE("fleet decisions: a local probe that fails publishes an opening") {
  // After Redis came back during an outage, no fleet opening exists: each
  // breaker probes alone; a failed probe is published (quorum applies in
  // Redis) so that the rest of the outage is shared.
  fleet_decisions d = decisions();
  asked_to_probe(d, 9);
  REQUIRE(d.on_probe(probe_race::no_opening, 0).what == probe_decision::action::half_open);
  const publication p = d.on_transition(circuit_state::half_open, circuit_state::open,
                                        transition_reason::probe_failed, 30s, true);
  REQUIRE(p.mode != nullptr);
  CHECK(std::string(p.mode) == "open");
  CHECK(p.open_for == 30s);
  CHECK(d.on_transition(circuit_state::half_open, circuit_state::open,
                        transition_reason::probe_failed, 30s, false)
            .mode == nullptr);  // disconnected: nothing
}
