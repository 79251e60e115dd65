// levee: the pipelines' Prometheus exposition, compiled once in lib/.
#pragma once

#include <levee/breaker/observe.hpp>
#include <levee/core/detail/prometheus_text.hpp>
#include <levee/hedge/options.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/limit/throttle.hpp>
#include <levee/pipeline/options.hpp>
#include <levee/retry/retry.hpp>

#include <ostream>

namespace levee {

void write_pipelines_prometheus(std::ostream& out, const std::vector<pipeline_metrics>& pipelines) {
  using m_t = pipeline_metrics;
  auto header = [&](const char* name, const char* type, const char* help) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
  };
  auto family = [&](const char* name, const char* type, const char* help, auto has, auto value) {
    bool any = false;
    for (const auto& p : pipelines) any = any || has(p);
    if (!any) return;
    header(name, type, help);
    for (const auto& p : pipelines)
      if (has(p))
        out << name << "{pipeline=\"" << detail::escape(p.name) << "\"} " << value(p) << '\n';
  };
  auto all = [](const m_t&) { return true; };
  family("levee_pipeline_calls_total", "counter", "Calls started through the pipeline.", all,
         [](const m_t& m) { return detail::number(m.calls); });
  family("levee_pipeline_timeouts_total", "counter",
         "Attempts the per-attempt timeout ended (error::timeout).", all,
         [](const m_t& m) { return detail::number(m.timeouts); });
  family("levee_pipeline_deadlines_exceeded_total", "counter",
         "Calls the total deadline ended (error::deadline_exceeded).", all,
         [](const m_t& m) { return detail::number(m.deadlines_exceeded); });
  bool fallbacks = false;
  for (const auto& p : pipelines) fallbacks = fallbacks || p.fallback.has_value();
  if (fallbacks) {
    header("levee_pipeline_fallbacks_total", "counter", "Answers the fallback gave, by reason.");
    for (const auto& p : pipelines) {
      if (!p.fallback) continue;
      const std::string l = "levee_pipeline_fallbacks_total{pipeline=\"" + detail::escape(p.name);
      out << l << "\",reason=\"rejection\"} " << detail::number(p.fallback->rejections) << '\n';
      out << l << "\",reason=\"failure\"} " << detail::number(p.fallback->failures) << '\n';
    }
  }
  auto has_bulkhead = [](const m_t& m) { return m.bulkhead.has_value(); };
  family("levee_pipeline_bulkhead_in_flight", "gauge", "Calls holding a slot of the bulkhead.",
         has_bulkhead,
         [](const m_t& m) { return detail::number(std::uint64_t{m.bulkhead->in_flight}); });
  family("levee_pipeline_bulkhead_queued", "gauge", "Calls waiting for a slot of the bulkhead.",
         has_bulkhead,
         [](const m_t& m) { return detail::number(std::uint64_t{m.bulkhead->queued}); });

  std::vector<named_retry_metrics> retries;
  std::vector<named_metrics> breakers;
  std::vector<named_limit_metrics> limits;
  std::vector<named_throttle_metrics> throttles;
  std::vector<named_hedge_metrics> hedges;
  for (const auto& p : pipelines) {
    if (p.retry) retries.push_back({p.name, *p.retry});
    if (p.hedge) hedges.push_back({p.name, *p.hedge});
    if (p.throttle) throttles.push_back({p.name, *p.throttle});
    if (p.registry_guards) continue;  // the registry's exposition has them
    if (p.breaker) breakers.push_back({p.name, *p.breaker});
    if (p.limit) limits.push_back({p.name, *p.limit});
  }
  if (!retries.empty()) write_retry_prometheus(out, retries);
  if (!hedges.empty()) write_hedges_prometheus(out, hedges);
  if (!throttles.empty()) write_throttles_prometheus(out, throttles);
  if (!breakers.empty()) write_prometheus(out, breakers);
  if (!limits.empty()) write_limits_prometheus(out, limits);
}

}  // namespace levee
