// levee: what an upstream tells the outside world: ejection events and
// metrics per endpoint, and their Prometheus exposition.
#pragma once

#include <levee/breaker/observe.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace levee {

/// Why an endpoint was ejected or returned (docs/upstream.md).
enum class upstream_cause : std::uint8_t {
  consecutive_failures = 0,  ///< ejected: failures in a row
  success_rate = 1,          ///< ejected: its success rate was an outlier in an interval
  probe = 2,                 ///< ejected: its probe failed; returned: its probe succeeded
  health_check = 3,          ///< ejected or returned by the active health check
};

/// The number of `upstream_cause` values.
inline constexpr std::size_t upstream_causes = 4;

/// The name of a cause.
/// \param c The cause.
/// \return "consecutive_failures", "success_rate", "probe" or "health_check".
const char* to_string(upstream_cause c) noexcept;

/// An endpoint left the picking or came back (docs/upstream.md).
struct upstream_event {
  /// What happened to the endpoint.
  enum kind_type : std::uint8_t {
    ejected,   ///< taken out for `ejected_for` (after failures in a row, or a failed probe)
    returned,  ///< its probe succeeded: back in service
  };
  kind_type kind = ejected;                 ///< what happened
  std::size_t endpoint = 0;                 ///< its index in the upstream
  std::string address;                      ///< as given to the upstream
  std::chrono::nanoseconds ejected_for{0};  ///< ejected: for how long
  std::uint32_t level = 0;  ///< the ejection's level: 1 for a first one, then 2, 3...
  upstream_cause cause = upstream_cause::consecutive_failures;  ///< why
};

/// The name of an upstream event's kind.
/// \param k The kind.
/// \return "ejected" or "returned".
const char* to_string(upstream_event::kind_type k) noexcept;

/// One endpoint's metrics.
struct upstream_endpoint_metrics {
  std::string address;                     ///< as given to the upstream
  bool ejected = false;                    ///< out of the picking (its probe may be in flight)
  bool probing = false;                    ///< its probe is in flight
  std::uint32_t outstanding = 0;           ///< calls on it now
  std::uint32_t consecutive_failures = 0;  ///< failures in a row, as its classifier saw them
  std::uint32_t level = 0;                 ///< the level of its last ejection (before decay)
  std::uint64_t ejections = 0;             ///< times it was ejected
  std::uint64_t returns = 0;               ///< times it came back
  /// Ejections and returns by cause (`ejections_by[std::size_t(upstream_cause::probe)]`).
  std::uint64_t ejections_by[upstream_causes] = {};
  std::uint64_t returns_by[upstream_causes] = {};  ///< returns by cause (probe, health_check)
  /// Its success rate in the last success-rate interval, or -1 when it had
  /// too few calls (or success-rate ejection is off).
  double success_rate = -1;
  /// Its latency estimate (`upstream_options::latency_decay`) as of its last
  /// sample, 0 before the first or when the estimate is off.
  std::chrono::nanoseconds latency{0};
  breaker_metrics breaker;  ///< its own breaker's
};

/// An upstream's metrics.
struct upstream_metrics {
  std::string name;                                  ///< the upstream's name, "" when unnamed
  std::vector<upstream_endpoint_metrics> endpoints;  ///< one per endpoint, in order
  std::size_t ejected = 0;                           ///< endpoints out of the picking now
  bool panicking = false;                            ///< too few in service: ejection ignored
  std::uint64_t retries = 0;      ///< attempts after the first, each on another endpoint
  std::uint64_t updates = 0;      ///< times `update` changed the endpoints (a name watch's lookups)
  std::uint64_t resolutions = 0;  ///< a name watch's lookups that succeeded
  std::uint64_t resolution_failures = 0;  ///< its lookups that failed (the endpoints were kept)
  breaker_metrics breaker;                ///< the upstream's own breaker
};

/// Writes upstreams' metrics in the Prometheus text format 0.0.4, with
/// labels `upstream` and (per endpoint) `endpoint`:
///
/// | Metric | Type | Labels |
/// |---|---|---|
/// | `levee_upstream_ejected` | gauge | upstream, endpoint |
/// | `levee_upstream_ejections_total` | counter | upstream, endpoint, cause |
/// | `levee_upstream_returns_total` | counter | upstream, endpoint, cause |
/// | `levee_upstream_success_rate` | gauge | upstream, endpoint (when it has one) |
/// | `levee_upstream_outstanding` | gauge | upstream, endpoint |
/// | `levee_upstream_ejection_level` | gauge | upstream, endpoint |
/// | `levee_upstream_endpoint_calls_total` | counter | upstream, endpoint, outcome |
/// | `levee_upstream_endpoint_rejected_total` | counter | upstream, endpoint |
/// | `levee_upstream_endpoint_state` | gauge | upstream, endpoint, state |
/// | `levee_upstream_retries_total` | counter | upstream |
/// | `levee_upstream_updates_total` | counter | upstream |
/// | `levee_upstream_resolutions_total` | counter | upstream, result |
/// | `levee_upstream_panic` | gauge | upstream |
/// | `levee_upstream_state` | gauge | upstream, state |
///
/// \param out Where the text goes.
/// \param upstreams The upstreams' metrics (`basic_upstream::metrics`).
void write_prometheus(std::ostream& out, const std::vector<upstream_metrics>& upstreams);

}  // namespace levee
