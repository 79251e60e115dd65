// levee::fleet with several threads: instances on 4-thread io_contexts, calls
// from every thread, metrics read from another, Redis stopped and continued,
// a link destroyed while its strand works. Run under TSan (label concurrency).
#include "fleet_support.hpp"
#include "redis_fixture.hpp"

#include <catch2/catch.hpp>

using namespace levee_test;
using levee::circuit_state;

TEST_CASE("fleet links on 4-thread io_contexts") {
  redis_fixture redis;
  const auto fo = fast_fleet(redis.address());
  std::vector<std::unique_ptr<fleet_instance>> fleet;
  for (int i = 0; i < 3; ++i) {
    auto o = fo;
    o.instance_id = "t" + std::to_string(i);
    fleet.push_back(std::make_unique<fleet_instance>(fast_breaker(20), &o, "api", 5ms, 4, 4));
  }
  auto all = [&](auto pred) {
    for (auto& i : fleet)
      if (!pred(*i)) return false;
    return true;
  };
  std::atomic<bool> reading{true};
  std::thread reader([&] {
    while (reading) {
      for (std::size_t k = 0; k < fleet.size(); ++k) {
        if (k < 2) (void)fleet[k]->link().metrics();  // fleet[2]'s link is dropped
        (void)fleet[k]->breaker().metrics();
      }
      std::this_thread::sleep_for(1ms);
    }
  });
  REQUIRE(wait_until([&] { return all([](fleet_instance& i) { return i.connected(); }); }));
  for (auto& i : fleet) i->sick = true;
  REQUIRE(wait_until([&] {
    return all([](fleet_instance& i) { return i.breaker().state() == circuit_state::open; });
  }));
  std::this_thread::sleep_for(400ms);  // probes race
  for (auto& i : fleet) i->sick = false;
  REQUIRE(wait_until(
      [&] {
        return all([](fleet_instance& i) { return i.breaker().state() == circuit_state::closed; });
      },
      5000ms));
  std::uint64_t leases = 0;
  for (auto& i : fleet) leases += i->link().metrics().probe_leases_won;
  CHECK(leases >= 1);
  redis.pause();
  std::this_thread::sleep_for(300ms);
  fleet[2]->drop_link();  // while its strand times out and reconnects
  redis.resume();
  REQUIRE(wait_until([&] { return fleet[0]->connected() && fleet[1]->connected(); }));
  for (auto& i : fleet) {
    CHECK(i->slowest_ns.load() < std::chrono::nanoseconds(100ms).count());
    CHECK(i->breaker().state() == circuit_state::closed);
  }
  reading = false;
  reader.join();
}
