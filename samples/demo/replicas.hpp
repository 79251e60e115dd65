// levee-demo --replicas N: the seed's scenario against N replicas of the API.
// One replica follows the seed's story (healthy, degrading, outage, healed);
// the others stay healthy, each with the single API's capacity. Three modes
// in the same run:
//   naive_retry  round-robin over the replicas, each failure retried, no breaker
//   breaker      round-robin, one breaker for the whole set (the demo's breaker)
//   upstream     levee::upstream: per-replica ejection, retries elsewhere
// The summary (--summary) gets a `replicas` object (docs/demo.md).
#pragma once

#include "replicas_model.hpp"

#include <levee/upstream/options.hpp>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

namespace demo::replicas {

/// When the command line has `--replicas N`: runs the replica modes with the
/// other options (--quick, --scale, --sessions, --modes, --out, --summary,
/// --no-chart) and returns the exit status. Without it: `std::nullopt`.
std::optional<int> replicas_main(int argc, char** argv);

/// What the run used, for the report.
struct run_info {
  int replicas = 3;
  std::chrono::nanoseconds attempt_timeout{};  ///< a first attempt's or a probe's, real time
  std::chrono::nanoseconds retry_timeout{};    ///< a retry's, real time
  levee::upstream_options upstream;            ///< the `upstream` mode's options
};

// replicas_report.cpp
void print_tables(const std::vector<flaky::phase>& schedule,
                  const std::vector<mode_result>& results);
void write_timeline(const settings& s, const std::vector<flaky::phase>& schedule,
                    const std::vector<mode_result>& results, const std::string& path);
bool draw_chart(const std::vector<mode_result>& results, const std::vector<flaky::phase>& schedule,
                const settings& s, int replicas, const std::string& csv, const std::string& png);
bool write_summary(const settings& s, const run_info& info,
                   const std::vector<flaky::phase>& schedule,
                   const std::vector<mode_result>& results);

}  // namespace demo::replicas
