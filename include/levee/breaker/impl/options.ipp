// levee: option validation, compiled once in lib/.
#pragma once

#include <levee/breaker/detail/window_kinds.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/detail/validate.hpp>

#include <cmath>
#include <stdexcept>
#include <string>
#include <type_traits>

namespace levee {

const char* to_string(circuit_state s) noexcept {
  switch (s) {
    case circuit_state::closed:
      return "closed";
    case circuit_state::open:
      return "open";
    case circuit_state::half_open:
      return "half_open";
    case circuit_state::forced_open:
      return "forced_open";
    case circuit_state::disabled:
      return "disabled";
    case circuit_state::metrics_only:
      return "metrics_only";
  }
  return "unknown";
}

const char* to_string(transition_reason r) noexcept {
  switch (r) {
    case transition_reason::failure_rate:
      return "failure_rate";
    case transition_reason::slow_call_rate:
      return "slow_call_rate";
    case transition_reason::consecutive_failures:
      return "consecutive_failures";
    case transition_reason::probe_failed:
      return "probe_failed";
    case transition_reason::probes_succeeded:
      return "probes_succeeded";
    case transition_reason::open_elapsed:
      return "open_elapsed";
    case transition_reason::manual:
      return "manual";
    case transition_reason::half_open_timeout:
      return "half_open_timeout";
    case transition_reason::fleet:
      return "fleet";
  }
  return "unknown";
}

namespace {
[[noreturn]] void reject_option(const char* member, const char* rule) {
  detail::reject_option("breaker_options", member, rule);
}
}  // namespace

void validate(const breaker_options& o) {
  if (!(o.failure_rate_threshold > 0.0 && o.failure_rate_threshold <= 1.0))
    reject_option("failure_rate_threshold", "must be in (0, 1]");
  if (o.window <= std::chrono::nanoseconds::zero())
    reject_option("window", "must be greater than zero");
  if (o.window_buckets < 1 || o.window_buckets > 1024)
    reject_option("window_buckets", "must be in [1, 1024]");
  if (o.window.count() / static_cast<std::int64_t>(o.window_buckets) < 1)
    reject_option("window_buckets", "must not exceed window in nanoseconds");
  if (!detail::window_kinds::known(o.window_type)) {
    static const std::string rule = detail::window_kinds::rule();
    reject_option("window_type", rule.c_str());
  }
  if (o.window_calls < 1 || o.window_calls > (std::size_t{1} << 20))
    reject_option("window_calls", "must be in [1, 1048576]");
  if (o.minimum_calls < 1) reject_option("minimum_calls", "must be at least 1");
  // The window kind's own rules (breaker/detail/window_kinds.hpp).
  detail::window_kinds::visit(o.window_type,
                              [&o]<class W>(std::type_identity<W>) { W::validate(o); });
  if (o.open_duration <= std::chrono::nanoseconds::zero())
    reject_option("open_duration", "must be greater than zero");
  if (!(o.open_duration_multiplier >= 1.0 && o.open_duration_multiplier <= 1000.0))
    reject_option("open_duration_multiplier", "must be in [1, 1000]");
  if (o.open_duration_multiplier > 1.0 && o.max_open_duration < o.open_duration)
    reject_option("max_open_duration", "must not be less than open_duration");
  if (!(o.open_duration_jitter >= 0.0 && o.open_duration_jitter < 1.0))
    reject_option("open_duration_jitter", "must be in [0, 1)");
  if (o.half_open_probes < 1 || o.half_open_probes > 8191)
    reject_option("half_open_probes", "must be in [1, 8191]");
  // The core counts probe successes in 32 bits (saturating): a larger number
  // could never be reached, and the breaker would never close.
  if (o.successes_to_close < 1 || o.successes_to_close > 0xffff'ffffu)
    reject_option("successes_to_close", "must be in [1, 4294967295]");
  if (o.max_half_open_duration <= std::chrono::nanoseconds::zero())
    reject_option("max_half_open_duration", "must be greater than zero");
  if (o.slow_call_duration < std::chrono::nanoseconds::zero())
    reject_option("slow_call_duration", "must not be negative");
  if (!(o.slow_call_rate_threshold > 0.0 && o.slow_call_rate_threshold <= 1.0))
    reject_option("slow_call_rate_threshold", "must be in (0, 1]");
  if (o.probe_timeout < std::chrono::nanoseconds::zero())
    reject_option("probe_timeout", "must not be negative");
  if (o.recovery_window < std::chrono::nanoseconds::zero())
    reject_option("recovery_window", "must not be negative");
}

}  // namespace levee
