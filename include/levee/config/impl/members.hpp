// levee: the configuration document's names, one table per options struct
// (their C++ members' names), and how each kind of value is read.
#pragma once

#include <levee/registry/options.hpp>

#include <boost/json/value.hpp>

#include <chrono>
#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

namespace levee::detail::config {

/// Every error found, each `path: rule`.
struct reader {
  std::vector<std::string> errors;
  void error(const std::string& path, std::string_view rule) {
    errors.push_back(path + ": " + std::string(rule));
  }
};

/// One member: its name in the document and in C++.
template <class O, class T>
struct member {
  std::string_view name;
  T O::*ptr;
};
template <class O, class T>
constexpr member<O, T> m(std::string_view name, T O::*ptr) {
  return {name, ptr};
}

// Every member but the classifier (a function).
inline const auto breaker_members = std::make_tuple(
    m("failure_rate_threshold", &breaker_options::failure_rate_threshold),
    m("window", &breaker_options::window), m("window_buckets", &breaker_options::window_buckets),
    m("window_type", &breaker_options::window_type),
    m("window_calls", &breaker_options::window_calls),
    m("minimum_calls", &breaker_options::minimum_calls),
    m("open_duration", &breaker_options::open_duration),
    m("open_duration_multiplier", &breaker_options::open_duration_multiplier),
    m("max_open_duration", &breaker_options::max_open_duration),
    m("open_duration_jitter", &breaker_options::open_duration_jitter),
    m("jitter_seed", &breaker_options::jitter_seed),
    m("recovery_window", &breaker_options::recovery_window),
    m("half_open_probes", &breaker_options::half_open_probes),
    m("successes_to_close", &breaker_options::successes_to_close),
    m("max_half_open_duration", &breaker_options::max_half_open_duration),
    m("consecutive_failures", &breaker_options::consecutive_failures),
    m("slow_call_duration", &breaker_options::slow_call_duration),
    m("slow_call_rate_threshold", &breaker_options::slow_call_rate_threshold),
    m("probe_timeout", &breaker_options::probe_timeout));

inline const auto limit_members =
    std::make_tuple(m("algorithm", &adaptive_limit_options::algorithm),
                    m("initial_limit", &adaptive_limit_options::initial_limit),
                    m("min_limit", &adaptive_limit_options::min_limit),
                    m("max_limit", &adaptive_limit_options::max_limit),
                    m("smoothing", &adaptive_limit_options::smoothing),
                    m("rtt_tolerance", &adaptive_limit_options::rtt_tolerance),
                    m("long_window", &adaptive_limit_options::long_window),
                    m("queue_size", &adaptive_limit_options::queue_size),
                    m("sample_window", &adaptive_limit_options::sample_window),
                    m("min_window_samples", &adaptive_limit_options::min_window_samples),
                    m("backoff_ratio", &adaptive_limit_options::backoff_ratio),
                    m("aimd_timeout", &adaptive_limit_options::aimd_timeout),
                    m("max_queue", &adaptive_limit_options::max_queue),
                    m("max_wait", &adaptive_limit_options::max_wait));

// The top level's own members (its sections, "defaults" and "endpoints",
// are read apart).
inline const auto registry_members =
    std::make_tuple(m("idle_timeout", &registry_options::idle_timeout),
                    m("max_breakers", &registry_options::max_breakers));

/// Reads a duration: digits and a unit, or "max". Empty: done; else the rule.
inline std::string parse_duration(std::string_view s, std::chrono::nanoseconds& out) {
  static constexpr const char* rule =
      "must be a duration: an integer and a unit (ns, us, ms, s, m, h), such as \"30s\" or "
      "\"250ms\", or \"max\"";
  if (s == "max") {
    out = std::chrono::nanoseconds::max();
    return {};
  }
  std::size_t i = 0;
  std::uint64_t n = 0;
  constexpr std::uint64_t top = std::numeric_limits<std::int64_t>::max();
  bool too_big = false;
  for (; i < s.size() && s[i] >= '0' && s[i] <= '9'; ++i) {
    n = n * 10 + static_cast<std::uint64_t>(s[i] - '0');
    if (n > top) {
      too_big = true;
      n = top + 1;  // stays above top, without overflowing
    }
  }
  if (i == 0) return rule;
  const std::string_view unit = s.substr(i);
  std::uint64_t scale = 0;
  if (unit == "ns")
    scale = 1;
  else if (unit == "us")
    scale = 1'000;
  else if (unit == "ms")
    scale = 1'000'000;
  else if (unit == "s")
    scale = 1'000'000'000;
  else if (unit == "m")
    scale = 60'000'000'000;
  else if (unit == "h")
    scale = 3'600'000'000'000;
  else
    return rule;
  if (too_big || n > top / scale)
    return "must not exceed nanoseconds::max() (292 years: write \"max\" for no limit)";
  out = std::chrono::nanoseconds(static_cast<std::int64_t>(n * scale));
  return {};
}

/// Reads `v` into `out` (left as it was on an error, reported at `path`).
template <class T>
void read_member(reader& r, const std::string& path, const boost::json::value& v, T& out) {
  if constexpr (std::is_same_v<T, double>) {
    if (v.is_double())
      out = v.get_double();
    else if (v.is_int64())
      out = static_cast<double>(v.get_int64());
    else if (v.is_uint64())
      out = static_cast<double>(v.get_uint64());
    else
      r.error(path, "must be a number");
  } else if constexpr (std::is_integral_v<T>) {
    static_assert(std::is_unsigned_v<T>);
    std::uint64_t n = 0;
    if (v.is_uint64()) {
      n = v.get_uint64();
    } else if (v.is_int64() && v.get_int64() >= 0) {
      n = static_cast<std::uint64_t>(v.get_int64());
    } else {
      r.error(path, "must be an integer, 0 or more");
      return;
    }
    if (n > std::numeric_limits<T>::max()) {
      r.error(path, "must be at most " + std::to_string(std::numeric_limits<T>::max()));
      return;
    }
    out = static_cast<T>(n);
  } else if constexpr (std::is_same_v<T, std::chrono::nanoseconds>) {
    const auto* s = v.if_string();
    const std::string rule =
        s ? parse_duration(*s, out) : parse_duration("", out);  // the rule for a non-string
    if (!rule.empty()) r.error(path, rule);
  } else if constexpr (std::is_same_v<T, window_kind>) {
    const auto* s = v.if_string();
    if (s && *s == "time")
      out = window_kind::time;
    else if (s && *s == "count")
      out = window_kind::count;
    else
      r.error(path, "must be \"time\" or \"count\"");
  } else {
    static_assert(std::is_same_v<T, limit_algorithm>);
    const auto* s = v.if_string();
    if (s && *s == "gradient2")
      out = limit_algorithm::gradient2;
    else if (s && *s == "aimd")
      out = limit_algorithm::aimd;
    else
      r.error(path, "must be \"gradient2\" or \"aimd\"");
  }
}

}  // namespace levee::detail::config
