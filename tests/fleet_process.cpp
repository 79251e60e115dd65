// One instance of a service as a process, for the multi-process fleet test
// (tests/fleet.cpp): connects its link, waits until a wall-clock start time so
// that every process starts together, calls a downstream that fails
// (`sick`) for `ms` milliseconds, then prints what it saw on one line.
//
// fleet_process <address> <instance id> <start, ms since the epoch> <ms> <sick 0/1>
#include "fleet_support.hpp"

#include <cstdio>
#include <cstdlib>
#include <string>

int main(int argc, char** argv) {
  using namespace levee_test;
  if (argc != 6) {
    std::fprintf(stderr, "usage: fleet_process address id start_ms run_ms sick\n");
    return 2;
  }
  auto fo = fast_fleet(argv[1]);
  fo.instance_id = argv[2];
  const auto start =
      std::chrono::system_clock::time_point(std::chrono::milliseconds(std::atoll(argv[3])));
  const auto run = std::chrono::milliseconds(std::atoll(argv[4]));
  fleet_instance i(fast_breaker(10), &fo);
  i.traffic = false;
  i.sick = std::atoi(argv[5]) != 0;
  const bool connected = wait_until([&] { return i.connected(); }, 3000ms);
  std::this_thread::sleep_until(start);
  i.traffic = true;
  std::this_thread::sleep_for(run);
  i.traffic = false;
  const auto m = i.link().metrics();
  std::printf(
      "connected=%d reached=%llu failed=%llu probes=%llu half_opens=%llu opens=%llu "
      "leases=%llu opens_received=%llu\n",
      connected ? 1 : 0, static_cast<unsigned long long>(i.reached.load()),
      static_cast<unsigned long long>(i.failed.load()),
      static_cast<unsigned long long>(i.probes.load()),
      static_cast<unsigned long long>(i.half_opens()),
      static_cast<unsigned long long>(i.opens_from_closed()),
      static_cast<unsigned long long>(m.probe_leases_won),
      static_cast<unsigned long long>(m.opens_received));
  std::fflush(stdout);
  i.die();
  return 0;
}
