// levee-demo --replicas N's pieces without I/O (samples/demo/replicas_model.hpp):
// the healthy replicas' schedule, the round-robin, and the upstream's three
// claims as the demo prints them (CI checks the same three from the summary:
// cmake/check-replicas-summary.cmake).
#include "../samples/demo/replicas_model.hpp"

#include <catch2/catch.hpp>

#include <chrono>
#include <cstddef>
#include <vector>

using namespace std::chrono_literals;
namespace replicas = demo::replicas;

TEST_CASE("demo replicas: a healthy replica has the sick one's phases, all healthy", "[demo]") {
  const auto sick = flaky::seed_schedule();
  const auto healthy = replicas::healthy_schedule(sick);
  REQUIRE(healthy.size() == sick.size());
  for (std::size_t i = 0; i < sick.size(); ++i) {
    CHECK(healthy[i].name == sick[i].name);
    CHECK(healthy[i].duration == sick[i].duration);
    CHECK(healthy[i].capacity == sick[i].capacity);  // the single API's capacity, each
    CHECK(healthy[i].error_rate == 0);
    CHECK_FALSE(healthy[i].refuse);
    CHECK(healthy[i].latency.shape == flaky::latency_spec::kind::fixed);
    CHECK(healthy[i].latency.low == 200ms);
  }
  CHECK(replicas::healthy_schedule({}).empty());
}

TEST_CASE("demo replicas: round-robin takes each replica in turn, retries included", "[demo]") {
  replicas::round_robin rr(3);
  std::vector<std::size_t> picks;
  for (int i = 0; i < 7; ++i) picks.push_back(rr.next());
  CHECK(picks == std::vector<std::size_t>{0, 1, 2, 0, 1, 2, 0});
  replicas::round_robin none(0);  // never divides by zero
  CHECK(none.next() == 0);
}

namespace {

// A phase's figures: `ok` of `offered` calls succeeded; `slow` of them took
// `slow_ms`, the others 200 ms.
replicas::phase_figures figures(std::uint64_t offered, std::uint64_t ok, std::size_t slow,
                                double slow_ms) {
  replicas::phase_figures f;
  f.offered = offered;
  f.succeeded = ok;
  for (std::uint64_t i = 0; i < offered; ++i) f.latencies_ms.push_back(i < slow ? slow_ms : 200.0);
  return f;
}

}  // namespace

TEST_CASE("demo replicas: the upstream's claims, met and missed", "[demo]") {
  const auto schedule = flaky::seed_schedule();  // healthy, degrading, outage, healed
  std::vector<replicas::phase_figures> phases(4, figures(1000, 1000, 0, 0));
  phases[2].requests_to_sick = 3;
  phases[2].probes_to_sick = 3;

  SECTION("all three hold") {
    const auto c = replicas::check_upstream(schedule, phases);
    CHECK(c.met());
    CHECK(c.success);
    CHECK(c.p99);
    CHECK(c.contained);
  }
  SECTION("99 % is enough, 98.9 % is not") {
    phases[1] = figures(1000, 990, 0, 0);
    CHECK(replicas::check_upstream(schedule, phases).met());
    phases[1] = figures(1000, 989, 0, 0);
    const auto c = replicas::check_upstream(schedule, phases);
    CHECK_FALSE(c.success);
    REQUIRE(c.missed.size() == 1);
    CHECK(c.missed[0].starts_with("degrading: success rate"));
  }
  SECTION("p99: 1 % of slow calls is allowed, more is not") {
    // p99 of 1,000 calls is the 990th smallest: 9 slow calls leave it at 200 ms.
    phases[3] = figures(1000, 1000, 9, 5000);
    CHECK(replicas::check_upstream(schedule, phases).met());
    phases[3] = figures(1000, 1000, 11, 5000);
    const auto c = replicas::check_upstream(schedule, phases);
    CHECK_FALSE(c.p99);
    CHECK(c.success);
    REQUIRE(c.missed.size() == 1);
    CHECK(c.missed[0].starts_with("healed: p99"));
  }
  SECTION("p99 against the healthy phase's, not a fixed figure") {
    for (auto& f : phases) f = figures(1000, 1000, 20, 230);  // every p99 230 ms
    phases[2].requests_to_sick = phases[2].probes_to_sick = 1;
    CHECK(replicas::check_upstream(schedule, phases).met());
    phases[1] = figures(1000, 1000, 20, 277);  // 1.2 x 230 = 276
    CHECK_FALSE(replicas::check_upstream(schedule, phases).p99);
  }
  SECTION("a stall of the machine: the p99 bound grows by the phase's event-loop lag") {
    // The shape of a CI run's outage phase: the healthy p99 at 220 ms, a
    // stall of 80 ms real time at --scale 0.1 held 2.5 % of the calls up to
    // 365 ms. Without a lag that misses; with the loops' 800 ms (scenario)
    // lag measured in that phase it is the machine, not the routing.
    for (auto& f : phases) f = figures(1000, 1000, 20, 220);
    phases[2] = figures(1000, 1000, 25, 365);
    phases[2].requests_to_sick = phases[2].probes_to_sick = 2;
    const auto c = replicas::check_upstream(schedule, phases);
    CHECK_FALSE(c.p99);
    REQUIRE(c.missed.size() == 1);
    CHECK(c.missed[0].starts_with("outage: p99"));
    phases[2].loop_lag_ms = 800;
    CHECK(replicas::check_upstream(schedule, phases).met());
    // The lag of another phase is no excuse.
    phases[2].loop_lag_ms = 0;
    phases[1].loop_lag_ms = 800;
    CHECK_FALSE(replicas::check_upstream(schedule, phases).p99);
    // A lag shorter than the excess is not enough either: 264 + 100 < 365.
    phases[2].loop_lag_ms = 100;
    CHECK_FALSE(replicas::check_upstream(schedule, phases).p99);
  }
  SECTION("in the outage the sick replica gets its probes, nothing more") {
    phases[2].requests_to_sick = 4;
    const auto c = replicas::check_upstream(schedule, phases);
    CHECK_FALSE(c.contained);
    REQUIRE(c.missed.size() == 1);
    CHECK(c.missed[0] == "outage: 4 requests to the sick replica, 3 of them probes");
  }
  SECTION("a phase without calls or figures misses") {
    phases[0] = {};
    CHECK_FALSE(replicas::check_upstream(schedule, phases).success);
    CHECK_FALSE(replicas::check_upstream(schedule, {}).met());
  }
}
