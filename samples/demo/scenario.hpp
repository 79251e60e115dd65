// The demo's scenario: what it runs (the modes, the settings) and what it
// measures. The levee code is in scenario.cpp; the report, the command line
// and the /metrics endpoint are in files of their own.
#pragma once

#include <levee/breaker/observe.hpp>
#include <levee/breaker/options.hpp>
#include <levee/http/client.hpp>
#include <levee/limit/adaptive_limit.hpp>

#include <flaky/schedule.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace demo {

using nanos = std::chrono::nanoseconds;

/// How the sessions call the API.
enum class mode {
  naive_retry,           ///< each failure retried up to 3 times, 100 ms apart, no breaker
  breaker,               ///< each call guarded by a circuit breaker
  breaker_retry_budget,  ///< retries under a shared retry budget, each attempt guarded
  breaker_adaptive,      ///< as breaker_retry_budget, with an adaptive limit inside the breaker
  breaker_throttle       ///< client-side adaptive throttling outside the breaker (graded shedding)
};

inline constexpr std::array all_modes = {mode::naive_retry, mode::breaker,
                                         mode::breaker_retry_budget, mode::breaker_adaptive,
                                         mode::breaker_throttle};

/// The mode's name, as the command line, the tables and the summary spell it.
const char* to_string(mode m) noexcept;

/// The mode named `name`, if there is one.
std::optional<mode> mode_from_string(std::string_view name) noexcept;

/// Whether the mode guards its calls with a breaker.
constexpr bool has_breaker(mode m) noexcept {
  return m != mode::naive_retry;
}

/// What the command line chose (cli.hpp).
struct settings {
  double scale = 0.1;  ///< real time = scenario time * scale
  int sessions = 1000;
  std::vector<mode> modes = {all_modes.begin(), all_modes.end()};
  std::string out = "demo-out";  ///< where the timeline and the chart go
  std::string summary;           ///< the JSON summary's file, if any
  std::string metrics_out;       ///< the final metrics' file, if any
  std::uint16_t metrics_port = 0;
  bool chart = true;
  std::string config;  ///< --config FILE: the registry's options, reloaded on SIGHUP
};

/// Real time for a span of scenario time.
inline nanos scaled(const settings& s, nanos scenario) {
  return nanos(static_cast<std::int64_t>(static_cast<double>(scenario.count()) * s.scale));
}

/// The breaker every guarded mode (and every fleet instance) uses, and why
/// its slow-call threshold is 6 s: see scenario.cpp.
levee::breaker_options breaker_options_for(const settings& s);

/// The agent's HTTP client.
levee::http::client_options client_options_for(const settings& s);

/// Scenario milliseconds for a span of real time.
inline double scenario_ms(const settings& s, nanos real) {
  return std::chrono::duration<double, std::milli>(real).count() / s.scale;
}

// ---- measurements -----------------------------------------------------------

/// The `p` quantile of `v` (0 when empty), by nth_element on a copy.
inline double percentile_of(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  const auto k = static_cast<std::size_t>(
      std::clamp(p * static_cast<double>(v.size() - 1), 0.0, static_cast<double>(v.size() - 1)));
  std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
  return v[k];
}

struct phase_figures {
  std::uint64_t offered = 0;         // calls made by sessions
  std::uint64_t succeeded = 0;       // calls that got a 2xx in the end
  std::uint64_t fast_failed = 0;     // rejected by levee without calling the API
  std::uint64_t downstream = 0;      // requests the API received
  std::size_t peak_in_flight = 0;    // attempts in flight at once (client side)
  std::size_t peak_waiting = 0;      // requests waiting for a pooled connection at once
  std::vector<double> latencies_ms;  // per call, scenario ms
  std::vector<double> fast_fail_ms;  // per call levee rejected before any attempt reached the API

  // Calls whose last attempt the adaptive limit refused, and of those the
  // ones made 5 s (scenario time) or more into the phase.
  std::uint64_t limit_exceeded = 0;
  std::uint64_t limit_exceeded_after_5s = 0;

  // The longest event-loop lag of the phase, scenario ms: how late a timer
  // due every 2 ms of real time fired, on the agent's thread or the API's,
  // whichever was later. It is the time a call's completion may wait for its
  // thread, whether the thread was busy or the machine stopped it; a loaded
  // machine stops a thread for tens of ms at times, which the time scale
  // stretches (at --quick's 0.035, 17 ms are 500 ms of scenario time).
  // cmake/check-demo-summary.cmake reads it.
  double loop_lag_ms = 0;

  double percentile(double p) const { return percentile_of(latencies_ms, p); }
  double fast_fail_percentile(double p) const { return percentile_of(fast_fail_ms, p); }
  double max() const {
    return latencies_ms.empty() ? 0 : *std::max_element(latencies_ms.begin(), latencies_ms.end());
  }
};

struct timeline_row {
  double t_ms = 0;  // real time since the start of the mode
  std::size_t phase = 0;
  int state = 0;                 // 0 closed, 1 half-open, 2 open, -1 no breaker
  std::uint64_t downstream = 0;  // requests the API received in this row
  std::uint64_t offered = 0;
  double p99_ms = 0;  // scenario ms, calls that finished in this row
  std::size_t in_flight = 0;
  std::size_t waiting = 0;
};

struct mode_result {
  mode which = mode::naive_retry;
  std::vector<phase_figures> phases;
  std::vector<timeline_row> timeline;
  std::optional<double> recovery_to_closed_ms;            // scenario ms from "healed" to CLOSED
  std::vector<levee::named_metrics> metrics;              // the breaker's, at the end
  std::vector<levee::named_limit_metrics> limit_metrics;  // the adaptive limit's, at the end
};

class metrics_endpoint;

/// Runs the schedule once in mode `m`: starts the flaky API on its own thread
/// and `s.sessions` sessions on this one, until the schedule ends and the
/// breaker has had time to close. `metrics`, if not null, serves the mode's
/// breaker while it runs.
mode_result run_mode(const settings& s, mode m, const std::vector<flaky::phase>& schedule,
                     metrics_endpoint* metrics);

}  // namespace demo
