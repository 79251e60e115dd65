// levee-demo --fleet N: the seed's scenario with N instances of the agent
// (io_contexts on their own threads, each with 1000/N sessions and its own
// breaker) against the same flaky API, in three modes:
//   local              each instance's breaker alone
//   shared             breakers linked through a redis-server the demo starts
//   shared_redis_down  shared, with Redis stopped (SIGSTOP) during the outage
// The summary (--summary) gets a `fleet` object.
#pragma once

#include <optional>

namespace demo {

/// When the command line has `--fleet N`: runs the fleet modes with the other
/// options (--quick, --scale, --sessions, --summary) and returns the exit
/// status. Without `--fleet`: nothing, `std::nullopt`.
std::optional<int> fleet_main(int argc, char** argv);

}  // namespace demo
