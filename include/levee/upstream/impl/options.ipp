// levee: the upstream's option checks (compiled once).
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/upstream/options.hpp>

#include <cmath>
#include <stdexcept>
#include <string>

namespace levee {

void validate(const outlier_options& o) {
  const auto reject = [](const char* member, const char* rule) {
    detail::reject_option("outlier_options", member, rule);
  };
  if (o.base_ejection_time <= std::chrono::nanoseconds::zero())
    reject("base_ejection_time", "must be greater than zero");
  if (o.max_ejection_time < o.base_ejection_time)
    reject("max_ejection_time", "must be at least base_ejection_time");
  if (!(o.max_ejected_share >= 0.0 && o.max_ejected_share <= 1.0))
    reject("max_ejected_share", "must be in [0, 1]");
  if (!(o.panic_threshold >= 0.0 && o.panic_threshold <= 1.0))
    reject("panic_threshold", "must be in [0, 1]");
  if (o.success_rate_interval < std::chrono::nanoseconds::zero())
    reject("success_rate_interval", "must not be negative");
  if (o.success_rate_minimum_hosts < 2) reject("success_rate_minimum_hosts", "must be at least 2");
  if (o.success_rate_request_volume < 1)
    reject("success_rate_request_volume", "must be at least 1");
  if (!(o.success_rate_stdev_factor >= 0.0 && std::isfinite(o.success_rate_stdev_factor)))
    reject("success_rate_stdev_factor", "must be finite and not negative");
}

void validate(const upstream_options& o) {
  validate(o.outlier);
  if (o.max_attempts < 1)
    detail::reject_option("upstream_options", "max_attempts", "must be at least 1");
  if (o.latency_decay < std::chrono::nanoseconds::zero())
    detail::reject_option("upstream_options", "latency_decay", "must not be negative");
  const auto nested = [](const char* member, const breaker_options& b) {
    try {
      validate(b);
    } catch (const std::invalid_argument& e) {
      throw std::invalid_argument(std::string("upstream_options::") + member + ": " + e.what());
    }
  };
  nested("endpoint_breaker", o.endpoint_breaker);
  nested("upstream_breaker", o.upstream_breaker);
}

void validate(const health_check_options& o) {
  const auto reject = [](const char* member, const char* rule) {
    detail::reject_option("health_check_options", member, rule);
  };
  if (o.target.empty()) reject("target", "must not be empty");
  if (o.interval <= std::chrono::nanoseconds::zero())
    reject("interval", "must be greater than zero");
  if (o.timeout <= std::chrono::nanoseconds::zero()) reject("timeout", "must be greater than zero");
  if (o.timeout > o.interval) reject("timeout", "must not exceed interval");
  if (o.unhealthy_threshold < 1) reject("unhealthy_threshold", "must be at least 1");
}

void validate(const resolve_options& o) {
  const auto reject = [](const char* member, const char* rule) {
    detail::reject_option("resolve_options", member, rule);
  };
  if (o.host.empty()) reject("host", "must not be empty");
  if (o.port == 0 && o.scheme != "http" && o.scheme != "https")
    reject("port", "must be set when scheme is neither http nor https");
  if (o.min_ttl <= std::chrono::nanoseconds::zero()) reject("min_ttl", "must be greater than zero");
  if (o.max_ttl < o.min_ttl) reject("max_ttl", "must be at least min_ttl");
  if (o.interval < std::chrono::nanoseconds::zero()) reject("interval", "must not be negative");
  if (o.retry_interval <= std::chrono::nanoseconds::zero())
    reject("retry_interval", "must be greater than zero");
  if (o.timeout <= std::chrono::nanoseconds::zero()) reject("timeout", "must be greater than zero");
}

}  // namespace levee
