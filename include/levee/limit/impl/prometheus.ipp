// levee: the adaptive limits' Prometheus exposition, compiled once in lib/.
#pragma once

#include <levee/core/detail/prometheus_text.hpp>
#include <levee/limit/adaptive_limit.hpp>

#include <ostream>

namespace levee {

void write_limits_prometheus(std::ostream& out, const std::vector<named_limit_metrics>& limits) {
  using m_t = adaptive_limit_metrics;
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
    for (const auto& l : limits)
      out << name << "{limit=\"" << detail::escape(l.name) << "\"} " << value(l.metrics) << '\n';
  };
  family("levee_limit", "gauge", "The adaptive concurrency limit (calls admitted at once).",
         [](const m_t& m) { return detail::number(m.limit); });
  family("levee_limit_in_flight", "gauge", "Calls running under the limit.",
         [](const m_t& m) { return detail::number(std::uint64_t{m.in_flight}); });
  family("levee_limit_queued", "gauge", "Calls waiting for room under the limit.",
         [](const m_t& m) { return detail::number(std::uint64_t{m.queued}); });
  family("levee_limit_admitted_calls_total", "counter", "Calls the limit started.",
         [](const m_t& m) { return detail::number(m.admitted); });
  family("levee_limit_rejected_calls_total", "counter",
         "Calls refused with limit_exceeded, without being started.",
         [](const m_t& m) { return detail::number(m.limited); });
  family("levee_limit_samples_total", "counter",
         "Call outcomes the limit learned from (all but ignored ones).",
         [](const m_t& m) { return detail::number(m.samples); });
  family("levee_limit_drops_total", "counter", "Samples that were drops (failures, timeouts).",
         [](const m_t& m) { return detail::number(m.drops); });
  family("levee_limit_events_lost_total", "counter",
         "Events a listener missed because posting them failed to allocate.",
         [](const m_t& m) { return detail::number(m.events_lost); });
  family("levee_limit_reconfigurations_total", "counter",
         "Times reconfigure applied new options to the limit.",
         [](const m_t& m) { return detail::number(m.reconfigurations); });
}

}  // namespace levee
