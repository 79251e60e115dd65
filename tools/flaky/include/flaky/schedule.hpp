// The flaky upstream's fault schedule: phases of health and sickness.
#pragma once

#include <chrono>
#include <cstddef>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace flaky {

using nanos = std::chrono::nanoseconds;

/// How long a response takes.
struct latency_spec {
  enum class kind { fixed, uniform, ramp, exponential };
  kind shape = kind::fixed;
  nanos low{0};   ///< fixed: the latency; uniform, ramp: the start; exponential: the mean
  nanos high{0};  ///< uniform, ramp: the end

  /// A latency for a request `progress` of the way (0..1) through its phase.
  nanos sample(double progress, std::mt19937_64& rng) const;
};

/// One phase of the schedule.
struct phase {
  std::string name = "phase";
  nanos duration = std::chrono::seconds(10);
  double error_rate = 0;                ///< fraction of requests answered with `error_status`
  unsigned error_status = 503;          ///< the status of those answers
  std::optional<unsigned> retry_after;  ///< Retry-After (seconds) on error answers
  latency_spec latency;                 ///< before each answer
  bool refuse = false;                  ///< listener closed: new connections are refused
  double reset_rate = 0;                ///< fraction of requests answered by a TCP reset
  std::size_t capacity = 0;  ///< 0: unlimited; else latency *= max(1, in_flight / capacity)
};

/// Parses a duration: "200ms", "8s", "1.5s", "2m", "100us", "0".
std::optional<nanos> parse_duration(std::string_view text);

/// Parses one phase: `NAME DURATION [key=value ...]`, keys:
///   errors=0.15  status=503  retry_after=2  latency=200ms | 100ms..2s |
///   ramp:200ms..8s | exp:200ms  refuse=1  reset=0.05  capacity=300
/// Returns the phase, or sets `error` to a message naming what is wrong.
std::optional<phase> parse_phase(std::string_view spec, std::string& error);

/// Parses a schedule file: one phase per line, blank lines and `#` comments
/// ignored.
std::optional<std::vector<phase>> parse_schedule(std::string_view text, std::string& error);

/// The seed's scenario: healthy at 200 ms; 15 % errors with latency rising to
/// 8 s; an outright failure; healed. Unscaled, 200 s.
std::vector<phase> seed_schedule();

/// A schedule as text, for logs and --help.
std::string describe(const std::vector<phase>& schedule);

}  // namespace flaky
