// An upstream's endpoint breakers from a registry that a fleet link shares
// (docs/upstream.md, "Composing"): one instance finds a replica sick, and the
// other instance's upstream passes over it without sending it a call. Two
// instances as io_contexts in this process against a real redis-server
// (tests/redis_fixture.*), real time, bounded waits.
#include "fleet_support.hpp"
#include "redis_fixture.hpp"

#include <levee/fleet/fleet.hpp>
#include <levee/registry/registry.hpp>
#include <levee/upstream/upstream.hpp>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/use_future.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <thread>
#include <tuple>

using namespace levee_test;
using levee::circuit_state;

namespace {

using result = std::tuple<boost::system::error_code, int>;

/// One service instance: a registry of breakers shared through a fleet
/// link, an upstream of three replicas taking its breakers from it.
struct instance {
  instance(const levee::fleet_options& fo, const levee::upstream_options& uo)
      : reg(ioc, {.defaults = fast_breaker(10)}),
        up(ioc, {"a:1", "b:2", "c:3"}, reg, uo, "api"),
        link(ioc.get_executor(), fo),
        thread([this] { ioc.run(); }) {
    link.attach(reg);
  }
  ~instance() {
    work.reset();
    ioc.stop();
    thread.join();
  }
  /// `n` calls through the upstream, one after the other; how many succeeded.
  int calls(int n) {
    auto f = asio::co_spawn(
        ioc,
        [this, n]() -> asio::awaitable<int> {
          int ok = 0;
          for (int i = 0; i < n; ++i) {
            auto [ec, v] =
                co_await up([this](const levee::upstream_endpoint& e) { return replica(e.index); });
            ok += !ec;
          }
          co_return ok;
        },
        asio::use_future);
    return f.get();
  }
  asio::awaitable<result> replica(std::size_t i) {
    ++sent[i];
    if (i == 1 && b_sick) co_return result(asio::error::connection_refused, 0);
    co_return result(boost::system::error_code(), int(i) + 1);
  }
  bool b_open() { return reg.get("b:2")->state() == circuit_state::open; }

  asio::io_context ioc;
  asio::executor_work_guard<asio::io_context::executor_type> work{ioc.get_executor()};
  levee::breaker_registry reg;
  levee::upstream up;
  levee::fleet_link link;
  std::array<std::atomic<int>, 3> sent{};
  std::atomic<bool> b_sick{false};
  std::thread thread;
};

}  // namespace

TEST_CASE(
    "upstream with a fleet-linked registry: one instance's sick replica is passed over "
    "by the other's") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());
  fo.quorum = 1;  // one instance's evidence opens the fleet's breaker
  levee::upstream_options uo;
  uo.outlier.consecutive_failures = 0;  // no ejection: the shared breakers do the work
  uo.seed = 9;
  // Picking on outstanding calls alone: the calls here take microseconds,
  // and b's probe through its half-open breaker is slower than the others'
  // calls, which the latency estimate would remember for about a second.
  uo.latency_decay = std::chrono::nanoseconds(0);
  instance one(fo, uo), two(fo, uo);
  REQUIRE(wait_until([&] { return one.link.metrics().connected && two.link.metrics().connected; }));
  REQUIRE(wait_until([&] { return two.link.metrics().breakers == 3; }));

  // Replica b refuses instance one's calls (the calls are retried elsewhere
  // and succeed); its breaker in one opens, and the fleet opens two's.
  one.b_sick = true;
  two.b_sick = true;
  // With a fleet link, the window is the fleet's: it opens at a round.
  int ok = 0, made = 0;
  REQUIRE(wait_until(
      [&] {
        ok += one.calls(10);
        made += 10;
        return one.b_open();
      },
      3000ms));
  CHECK(ok == made);
  REQUIRE(wait_until([&] { return two.b_open(); }, 3000ms));
  CHECK(two.sent[1] == 0);
  const auto half_opened = [&] { return two.reg.get("b:2")->metrics().transitions[1][2]; };
  const auto probes_before = half_opened();
  CHECK(two.calls(60) == 60);
  // Passed over: not one call sent to it, but for a probe if its open period
  // (300 ms of real time) ended during the calls on a stalled machine.
  CHECK(std::uint64_t(two.sent[1]) <= half_opened() - probes_before);

  // The way back: b heals; both instances keep calling, a probe after the
  // open period closes the breakers, and b gets its share of two's calls.
  one.b_sick = false;
  two.b_sick = false;
  const auto closed = [](instance& i) {
    return i.reg.get("b:2")->state() == circuit_state::closed;
  };
  REQUIRE(wait_until(
      [&] {
        one.calls(5);
        two.calls(5);
        return closed(one) && closed(two);
      },
      3000ms));
  const int before = two.sent[1];
  CHECK(two.calls(60) == 60);
  CHECK(two.sent[1] - before > 10);
}
