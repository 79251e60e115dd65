// levee: event names and the Prometheus text exposition, compiled once in lib/.
#pragma once

#include <levee/adaptive_limit.hpp>
#include <levee/observe.hpp>

#include <cmath>
#include <cstdio>
#include <ostream>

namespace levee {

const char* to_string(event_kind k) noexcept {
  switch (k) {
    case event_kind::transition:
      return "transition";
    case event_kind::success:
      return "success";
    case event_kind::failure:
      return "failure";
    case event_kind::ignored:
      return "ignored";
    case event_kind::rejected:
      return "rejected";
    case event_kind::stuck_open:
      return "stuck_open";
  }
  return "unknown";
}

namespace {

// The length of the well-formed UTF-8 sequence at the start of `s`, or 0 if
// it is ill-formed; `bad` is then the length of its maximal ill-formed
// subpart (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal
// Subparts"): the bytes that begin a valid sequence, at least one.
std::size_t utf8_sequence(std::string_view s, std::size_t& bad) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = byte(0);
  bad = 1;
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) low = 0xA0;   // no overlong forms
    if (c == 0xED) high = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) low = 0x90;   // no overlong forms
    if (c == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;  // a continuation byte, C0, C1 or F5..FF
  }
  for (std::size_t i = 1; i < n; ++i) {
    if (i >= s.size()) return 0;
    const unsigned char d = byte(i);
    if (i == 1 ? (d < low || d > high) : (d < 0x80 || d > 0xBF)) return 0;
    bad = i + 1;
  }
  return n;
}

// Label values: valid UTF-8 (each maximal ill-formed subpart becomes U+FFFD,
// so that one bad name cannot make Prometheus reject the whole scrape), with
// backslash, double quote and line feed escaped.
std::string escape(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  while (!v.empty()) {
    std::size_t bad = 0;
    const std::size_t n = utf8_sequence(v, bad);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      v.remove_prefix(bad);
      continue;
    }
    if (n > 1) {
      out.append(v.substr(0, n));
      v.remove_prefix(n);
      continue;
    }
    const char c = v.front();
    v.remove_prefix(1);
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", v);
  return buffer;
}

std::string number(std::uint64_t v) {
  return std::to_string(v);
}

double seconds(std::chrono::nanoseconds d) {
  return std::chrono::duration<double>(d).count();
}

constexpr circuit_state all_states[] = {circuit_state::closed,    circuit_state::open,
                                        circuit_state::half_open, circuit_state::forced_open,
                                        circuit_state::disabled,  circuit_state::metrics_only};

}  // namespace

void write_prometheus(std::ostream& out, const std::vector<named_metrics>& breakers) {
  auto family = [&](const char* name, const char* type, const char* help, auto&& samples) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
    for (const auto& b : breakers) samples(b.metrics, "breaker=\"" + escape(b.name) + '"');
  };
  auto sample = [&](const char* name, const std::string& labels, const std::string& value) {
    out << name << '{' << labels << "} " << value << '\n';
  };

  family("levee_calls_total", "counter", "Calls that finished, by outcome.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_calls_total", l + ",outcome=\"success\"", number(m.successes));
           sample("levee_calls_total", l + ",outcome=\"failure\"", number(m.failures));
           sample("levee_calls_total", l + ",outcome=\"ignored\"", number(m.ignored));
         });
  family("levee_slow_calls_total", "counter", "Calls that took at least slow_call_duration.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_slow_calls_total", l, number(m.slow));
         });
  family("levee_rejected_calls_total", "counter", "Calls refused without being started.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_rejected_calls_total", l, number(m.rejected));
         });
  family("levee_state", "gauge", "1 for the breaker's current state, 0 for the others.",
         [&](const breaker_metrics& m, const std::string& l) {
           for (const auto s : all_states)
             sample("levee_state", l + ",state=\"" + to_string(s) + '"', m.state == s ? "1" : "0");
         });
  family("levee_failure_ratio", "gauge", "Failures over calls in the current window (0 to 1).",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_failure_ratio", l, number(m.failure_rate));
         });
  family("levee_slow_call_ratio", "gauge", "Slow calls over calls in the current window (0 to 1).",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_slow_call_ratio", l, number(m.slow_call_rate));
         });
  family("levee_window_calls", "gauge", "Calls in the current window.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_window_calls", l, number(m.window_calls));
         });
  family("levee_state_seconds_total", "counter", "Time spent in each state.",
         [&](const breaker_metrics& m, const std::string& l) {
           for (const auto s : all_states)
             sample("levee_state_seconds_total", l + ",state=\"" + to_string(s) + '"',
                    number(seconds(m.time_in_state[static_cast<std::size_t>(s)])));
         });
  family("levee_transitions_total", "counter", "State transitions, by pair of states.",
         [&](const breaker_metrics& m, const std::string& l) {
           for (const auto from : all_states)
             for (const auto to : all_states) {
               const auto n =
                   m.transitions[static_cast<std::size_t>(from)][static_cast<std::size_t>(to)];
               if (n == 0) continue;
               sample("levee_transitions_total",
                      l + ",from=\"" + to_string(from) + "\",to=\"" + to_string(to) + '"',
                      number(n));
             }
         });
  family("levee_open_streak", "gauge", "Openings since the breaker last closed.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_open_streak", l, number(m.open_streak));
         });
  family("levee_not_closed_seconds", "gauge", "Time since the breaker last left CLOSED.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_not_closed_seconds", l, number(seconds(m.not_closed_for)));
         });
  family("levee_stuck_open", "gauge",
         "1 when the breaker has not been CLOSED for its recovery window.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_stuck_open", l, m.stuck_open ? "1" : "0");
         });
}

void write_limits_prometheus(std::ostream& out, const std::vector<named_limit_metrics>& limits) {
  using m_t = adaptive_limit_metrics;
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
    for (const auto& l : limits)
      out << name << "{limit=\"" << escape(l.name) << "\"} " << value(l.metrics) << '\n';
  };
  family("levee_limit", "gauge", "The adaptive concurrency limit (calls admitted at once).",
         [](const m_t& m) { return number(m.limit); });
  family("levee_limit_in_flight", "gauge", "Calls running under the limit.",
         [](const m_t& m) { return number(std::uint64_t{m.in_flight}); });
  family("levee_limit_queued", "gauge", "Calls waiting for room under the limit.",
         [](const m_t& m) { return number(std::uint64_t{m.queued}); });
  family("levee_limit_admitted_calls_total", "counter", "Calls the limit started.",
         [](const m_t& m) { return number(m.admitted); });
  family("levee_limit_rejected_calls_total", "counter",
         "Calls refused with limit_exceeded, without being started.",
         [](const m_t& m) { return number(m.limited); });
  family("levee_limit_samples_total", "counter",
         "Call outcomes the limit learned from (all but ignored ones).",
         [](const m_t& m) { return number(m.samples); });
  family("levee_limit_drops_total", "counter", "Samples that were drops (failures, timeouts).",
         [](const m_t& m) { return number(m.drops); });
}

}  // namespace levee
