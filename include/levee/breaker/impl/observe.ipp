// levee: event names and the Prometheus text exposition, compiled once in lib/.
#pragma once

#include <levee/breaker/observe.hpp>
#include <levee/core/detail/prometheus_text.hpp>

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
    case event_kind::reconfigured:
      return "reconfigured";
  }
  return "unknown";
}

namespace {

constexpr circuit_state all_states[] = {circuit_state::closed,    circuit_state::open,
                                        circuit_state::half_open, circuit_state::forced_open,
                                        circuit_state::disabled,  circuit_state::metrics_only};

}  // namespace

void write_prometheus(std::ostream& out, const std::vector<named_metrics>& breakers) {
  auto family = [&](const char* name, const char* type, const char* help, auto&& samples) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
    for (const auto& b : breakers) samples(b.metrics, "breaker=\"" + detail::escape(b.name) + '"');
  };
  auto sample = [&](const char* name, const std::string& labels, const std::string& value) {
    out << name << '{' << labels << "} " << value << '\n';
  };

  family("levee_calls_total", "counter", "Calls that finished, by outcome.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_calls_total", l + ",outcome=\"success\"", detail::number(m.successes));
           sample("levee_calls_total", l + ",outcome=\"failure\"", detail::number(m.failures));
           sample("levee_calls_total", l + ",outcome=\"ignored\"", detail::number(m.ignored));
         });
  family("levee_slow_calls_total", "counter", "Calls that took at least slow_call_duration.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_slow_calls_total", l, detail::number(m.slow));
         });
  family("levee_rejected_calls_total", "counter", "Calls refused without being started.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_rejected_calls_total", l, detail::number(m.rejected));
         });
  family("levee_state", "gauge", "1 for the breaker's current state, 0 for the others.",
         [&](const breaker_metrics& m, const std::string& l) {
           for (const auto s : all_states)
             sample("levee_state", l + ",state=\"" + to_string(s) + '"', m.state == s ? "1" : "0");
         });
  family("levee_failure_ratio", "gauge", "Failures over calls in the current window (0 to 1).",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_failure_ratio", l, detail::number(m.failure_rate));
         });
  family("levee_slow_call_ratio", "gauge", "Slow calls over calls in the current window (0 to 1).",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_slow_call_ratio", l, detail::number(m.slow_call_rate));
         });
  family("levee_window_calls", "gauge", "Calls in the current window.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_window_calls", l, detail::number(m.window_calls));
         });
  family("levee_state_seconds_total", "counter", "Time spent in each state.",
         [&](const breaker_metrics& m, const std::string& l) {
           for (const auto s : all_states)
             sample("levee_state_seconds_total", l + ",state=\"" + to_string(s) + '"',
                    detail::number(detail::seconds(m.time_in_state[static_cast<std::size_t>(s)])));
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
                      detail::number(n));
             }
         });
  family("levee_open_streak", "gauge", "Openings since the breaker last closed.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_open_streak", l, detail::number(m.open_streak));
         });
  family("levee_not_closed_seconds", "gauge", "Time since the breaker last left CLOSED.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_not_closed_seconds", l, detail::number(detail::seconds(m.not_closed_for)));
         });
  family("levee_stuck_open", "gauge",
         "1 when the breaker has not been CLOSED for its recovery window.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_stuck_open", l, m.stuck_open ? "1" : "0");
         });
  family("levee_reconfigurations_total", "counter",
         "Times reconfigure applied new options to the breaker.",
         [&](const breaker_metrics& m, const std::string& l) {
           sample("levee_reconfigurations_total", l, detail::number(m.reconfigurations));
         });
}

}  // namespace levee
