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

TEST_CASE("close() from another thread while a 4-thread io_context runs the link") {
  redis_fixture redis;
  asio::io_context ioc(4);
  std::vector<std::unique_ptr<levee::circuit_breaker>> breakers;
  for (char c = 'a'; c < 'i'; ++c)
    breakers.push_back(
        std::make_unique<levee::circuit_breaker>(ioc, fast_breaker(10), std::string(1, c)));
  levee::fleet_link link(ioc.get_executor(), fast_fleet(redis.address()));
  std::atomic<int> waited{0};
  for (int i = 0; i < 4; ++i)
    link.async_wait_connected(5s, [&](boost::system::error_code) { ++waited; });
  std::atomic<int> running{4};
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&] {
      ioc.run();
      --running;
    });
  // Attaching from one thread, reading metrics from another, closing from a third.
  std::thread attacher([&] {
    for (auto& b : breakers) link.attach(*b);
  });
  std::thread reader([&] {
    for (int i = 0; i < 200; ++i) (void)link.metrics();
  });
  REQUIRE(wait_until([&] { return link.metrics().rounds >= 4; }));
  std::thread closer([&] { link.close(); });
  closer.join();
  attacher.join();
  reader.join();
  REQUIRE(wait_until([&] { return running.load() == 0; }));
  for (auto& t : threads) t.join();
  CHECK(waited == 4);
  for (auto& b : breakers) CHECK(b->state() == circuit_state::closed);
}
