// levee: the retry policies' Prometheus exposition, compiled once in lib/.
#pragma once

#include <levee/core/detail/prometheus_text.hpp>
#include <levee/retry/retry.hpp>

#include <ostream>

namespace levee {

void write_retry_prometheus(std::ostream& out, const std::vector<named_retry_metrics>& policies) {
  using m_t = retry_metrics;
  auto family = [&](const char* name, const char* help, auto value) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << " counter\n";
    for (const auto& p : policies)
      out << name << "{policy=\"" << detail::escape(p.name) << "\"} " << value(p.metrics) << '\n';
  };
  family("levee_retry_operations_total", "Operations started under the retry policy.",
         [](const m_t& m) { return detail::number(m.operations); });
  family("levee_retry_attempts_total", "Attempts started, first attempts included.",
         [](const m_t& m) { return detail::number(m.attempts); });
  family("levee_retry_retries_total", "Attempts after an operation's first one.",
         [](const m_t& m) { return detail::number(m.retries); });
  family("levee_retry_budget_refusals_total",
         "Retries the retry budget refused (the operation gave up with attempts left).",
         [](const m_t& m) { return detail::number(m.budget_refusals); });
  family("levee_retry_exhausted_total",
         "Operations that gave up on a retryable outcome after max_attempts attempts.",
         [](const m_t& m) { return detail::number(m.exhausted); });
}

}  // namespace levee
