// levee: the upstream's event names and Prometheus exposition, compiled once.
#pragma once

#include <levee/core/detail/prometheus_text.hpp>
#include <levee/upstream/observe.hpp>

#include <ostream>

namespace levee {

const char* to_string(upstream_cause c) noexcept {
  switch (c) {
    case upstream_cause::consecutive_failures:
      return "consecutive_failures";
    case upstream_cause::success_rate:
      return "success_rate";
    case upstream_cause::probe:
      return "probe";
    default:
      return "health_check";
  }
}

const char* to_string(upstream_event::kind_type k) noexcept {
  return k == upstream_event::returned ? "returned" : "ejected";
}

void write_prometheus(std::ostream& out, const std::vector<upstream_metrics>& upstreams) {
  constexpr circuit_state states[] = {circuit_state::closed,    circuit_state::open,
                                      circuit_state::half_open, circuit_state::forced_open,
                                      circuit_state::disabled,  circuit_state::metrics_only};
  const auto head = [&](const char* name, const char* type, const char* help) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
  };
  const auto sample = [&](const char* name, const std::string& labels, const std::string& value) {
    out << name << '{' << labels << "} " << value << '\n';
  };
  const auto per_endpoint = [&](const char* name, const char* type, const char* help,
                                auto&& samples) {
    head(name, type, help);
    for (const auto& u : upstreams)
      for (const auto& e : u.endpoints)
        samples(e, "upstream=\"" + detail::escape(u.name) + "\",endpoint=\"" +
                       detail::escape(e.address) + '"');
  };
  const auto per_upstream = [&](const char* name, const char* type, const char* help,
                                auto&& samples) {
    head(name, type, help);
    for (const auto& u : upstreams) samples(u, "upstream=\"" + detail::escape(u.name) + '"');
  };
  using endpoint = upstream_endpoint_metrics;
  per_endpoint("levee_upstream_ejected", "gauge", "1 while the endpoint is out of the picking.",
               [&](const endpoint& e, const std::string& l) {
                 sample("levee_upstream_ejected", l, e.ejected ? "1" : "0");
               });
  constexpr upstream_cause ejected_by[] = {upstream_cause::consecutive_failures,
                                           upstream_cause::success_rate, upstream_cause::probe,
                                           upstream_cause::health_check};
  constexpr upstream_cause returned_by[] = {upstream_cause::probe, upstream_cause::health_check};
  const auto by_cause = [&](const char* name, const std::string& l, const auto& causes,
                            const std::uint64_t(&counts)[upstream_causes]) {
    for (const auto c : causes)
      sample(name, l + ",cause=\"" + to_string(c) + '"',
             detail::number(counts[static_cast<std::size_t>(c)]));
  };
  per_endpoint("levee_upstream_ejections_total", "counter", "Ejections of the endpoint, by cause.",
               [&](const endpoint& e, const std::string& l) {
                 by_cause("levee_upstream_ejections_total", l, ejected_by, e.ejections_by);
               });
  per_endpoint("levee_upstream_returns_total", "counter",
               "Returns of the endpoint to service after an ejection, by cause.",
               [&](const endpoint& e, const std::string& l) {
                 by_cause("levee_upstream_returns_total", l, returned_by, e.returns_by);
               });
  per_endpoint("levee_upstream_success_rate", "gauge",
               "The endpoint's success rate in the last success-rate interval.",
               [&](const endpoint& e, const std::string& l) {
                 if (e.success_rate >= 0)
                   sample("levee_upstream_success_rate", l, detail::number(e.success_rate));
               });
  per_endpoint("levee_upstream_outstanding", "gauge", "Calls in flight on the endpoint.",
               [&](const endpoint& e, const std::string& l) {
                 sample("levee_upstream_outstanding", l,
                        detail::number(std::uint64_t{e.outstanding}));
               });
  per_endpoint("levee_upstream_ejection_level", "gauge",
               "The level of the endpoint's last ejection (its duration in base times).",
               [&](const endpoint& e, const std::string& l) {
                 sample("levee_upstream_ejection_level", l, detail::number(std::uint64_t{e.level}));
               });
  per_endpoint("levee_upstream_endpoint_calls_total", "counter",
               "Calls to the endpoint that finished, by outcome.",
               [&](const endpoint& e, const std::string& l) {
                 const char* n = "levee_upstream_endpoint_calls_total";
                 sample(n, l + ",outcome=\"success\"", detail::number(e.breaker.successes));
                 sample(n, l + ",outcome=\"failure\"", detail::number(e.breaker.failures));
                 sample(n, l + ",outcome=\"ignored\"", detail::number(e.breaker.ignored));
               });
  per_endpoint(
      "levee_upstream_endpoint_rejected_total", "counter", "Calls the endpoint's breaker refused.",
      [&](const endpoint& e, const std::string& l) {
        sample("levee_upstream_endpoint_rejected_total", l, detail::number(e.breaker.rejected));
      });
  per_endpoint("levee_upstream_endpoint_state", "gauge",
               "1 for the endpoint breaker's current state, 0 for the others.",
               [&](const endpoint& e, const std::string& l) {
                 for (const auto s : states)
                   sample("levee_upstream_endpoint_state", l + ",state=\"" + to_string(s) + '"',
                          e.breaker.state == s ? "1" : "0");
               });
  per_upstream("levee_upstream_retries_total", "counter",
               "Attempts after the first, each on another endpoint.",
               [&](const upstream_metrics& u, const std::string& l) {
                 sample("levee_upstream_retries_total", l, detail::number(u.retries));
               });
  per_upstream("levee_upstream_updates_total", "counter",
               "Times the endpoints changed (a name watch's lookups, or update).",
               [&](const upstream_metrics& u, const std::string& l) {
                 sample("levee_upstream_updates_total", l, detail::number(u.updates));
               });
  per_upstream("levee_upstream_resolutions_total", "counter",
               "A name watch's lookups, by result (a failed one keeps the endpoints).",
               [&](const upstream_metrics& u, const std::string& l) {
                 sample("levee_upstream_resolutions_total", l + ",result=\"ok\"",
                        detail::number(u.resolutions));
                 sample("levee_upstream_resolutions_total", l + ",result=\"failed\"",
                        detail::number(u.resolution_failures));
               });
  per_upstream("levee_upstream_panic", "gauge",
               "1 while too few endpoints are in service and ejection is ignored.",
               [&](const upstream_metrics& u, const std::string& l) {
                 sample("levee_upstream_panic", l, u.panicking ? "1" : "0");
               });
  per_upstream("levee_upstream_state", "gauge",
               "1 for the upstream breaker's current state, 0 for the others.",
               [&](const upstream_metrics& u, const std::string& l) {
                 for (const auto s : states)
                   sample("levee_upstream_state", l + ",state=\"" + to_string(s) + '"',
                          u.breaker.state == s ? "1" : "0");
               });
}

}  // namespace levee
