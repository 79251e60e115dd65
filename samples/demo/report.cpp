#include "report.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <ostream>
#include <sstream>

namespace demo {

namespace json = boost::json;

namespace {

double ratio(std::uint64_t a, std::uint64_t b) {
  return b ? static_cast<double>(a) / static_cast<double>(b) : 0;
}

struct totals {
  std::uint64_t offered = 0, downstream = 0, succeeded = 0, fast_failed = 0;
};

totals sum(const mode_result& r) {
  totals t;
  for (const auto& f : r.phases) {
    t.offered += f.offered;
    t.downstream += f.downstream;
    t.succeeded += f.succeeded;
    t.fast_failed += f.fast_failed;
  }
  return t;
}

std::size_t outage_phase(const std::vector<flaky::phase>& schedule) {
  for (std::size_t i = 0; i < schedule.size(); ++i)
    if (schedule[i].name == "outage") return i;
  return schedule.size() - 1;
}

const char* colour(mode m) {
  switch (m) {
    case mode::naive_retry:
      return "#d62728";
    case mode::breaker:
      return "#1f77b4";
    case mode::breaker_retry_budget:
      return "#2ca02c";
    case mode::breaker_adaptive:
      return "#9467bd";
    case mode::breaker_throttle:
      return "#ff7f0e";
  }
  return "black";
}

// ---- the JSON summary's layout ----------------------------------------------
// Boost.JSON builds the summary and writes its strings; this prints it for
// people too: a member a line, a container of scalars on one line, numbers
// with six significant digits (printf's %g).

bool is_scalar(const json::value& v) {
  return !v.is_object() && !v.is_array();
}

bool one_line(const json::value& v) {
  if (const auto* o = v.if_object()) {
    return std::all_of(o->begin(), o->end(),
                       [](const json::key_value_pair& m) { return is_scalar(m.value()); });
  }
  if (const auto* a = v.if_array()) return std::all_of(a->begin(), a->end(), is_scalar);
  return true;
}

}  // namespace

void print_json(std::ostream& out, const json::value& v, int indent) {
  if (v.is_double()) {
    char digits[32];
    const auto end = std::to_chars(std::begin(digits), std::end(digits), v.get_double(),
                                   std::chars_format::general, 6)
                         .ptr;
    out.write(digits, end - digits);
    return;
  }
  if (is_scalar(v)) {
    out << json::serialize(v);
    return;
  }
  const bool flat = one_line(v);
  bool first = true;
  auto next = [&] {
    if (!first) out << (flat ? ", " : ",");
    if (!flat) out << '\n' << std::string(static_cast<std::size_t>(indent + 2), ' ');
    first = false;
  };
  auto close = [&](char c) {
    if (!flat && !first) out << '\n' << std::string(static_cast<std::size_t>(indent), ' ');
    out << c;
  };
  if (const auto* o = v.if_object()) {
    out << '{';
    for (const auto& m : *o) {
      next();
      out << json::serialize(m.key()) << ": ";
      print_json(out, m.value(), indent + 2);
    }
    close('}');
  } else {
    out << '[';
    for (const auto& e : v.get_array()) {
      next();
      print_json(out, e, indent + 2);
    }
    close(']');
  }
}

// ---- the tables -------------------------------------------------------------

void print_tables(const std::vector<flaky::phase>& schedule,
                  const std::vector<mode_result>& results) {
  const mode_table<mode_result> table{results, 34, 22};
  for (std::size_t p = 0; p < schedule.size(); ++p) {
    table.header("phase " + std::to_string(p + 1) + ": " + schedule[p].name);
    table.line("requests offered by sessions",
               [&](const mode_result& r) { return std::to_string(r.phases[p].offered); });
    table.line("requests that reached the API",
               [&](const mode_result& r) { return std::to_string(r.phases[p].downstream); });
    table.line("amplification", [&](const mode_result& r) {
      const auto& f = r.phases[p];
      return f.offered ? fixed(ratio(f.downstream, f.offered), 2) + " x" : std::string("-");
    });
    table.line("client success rate", [&](const mode_result& r) {
      const auto& f = r.phases[p];
      return f.offered ? fixed(100.0 * ratio(f.succeeded, f.offered), 1) + " %" : std::string("-");
    });
    table.line("latency p50",
               [&](const mode_result& r) { return human_ms(r.phases[p].percentile(0.5)); });
    table.line("latency p99",
               [&](const mode_result& r) { return human_ms(r.phases[p].percentile(0.99)); });
    table.line("latency max", [&](const mode_result& r) { return human_ms(r.phases[p].max()); });
    table.line("fast-fails (not sent)",
               [&](const mode_result& r) { return std::to_string(r.phases[p].fast_failed); });
    table.line("fast-fail latency p99", [&](const mode_result& r) {
      return human_ms(r.phases[p].fast_fail_percentile(0.99));
    });
    table.line("peak requests in flight",
               [&](const mode_result& r) { return std::to_string(r.phases[p].peak_in_flight); });
    table.line("peak pool waiters",
               [&](const mode_result& r) { return std::to_string(r.phases[p].peak_waiting); });
    table.line("longest event-loop lag",
               [&](const mode_result& r) { return human_ms(r.phases[p].loop_lag_ms); });
  }
  table.header("after the API healed");
  table.line("time until the breaker closed", [&](const mode_result& r) {
    if (!has_breaker(r.which)) return std::string("no breaker");
    return r.recovery_to_closed_ms ? human_ms(*r.recovery_to_closed_ms) : std::string("never");
  });
  std::cout << "\n(durations are scenario time: real time divided by the time scale)\n";
}

// ---- the timeline and the chart ---------------------------------------------

void write_timeline(const settings& s, const std::vector<flaky::phase>& schedule,
                    const std::vector<mode_result>& results, const std::string& path) {
  std::ofstream out(path);
  out << "mode,t_real_ms,t_scenario_s,phase,state,downstream_per_s,offered_per_s,client_p99_ms,in_"
         "flight,pool_waiting\n";
  for (const auto& r : results) {
    for (const auto& row : r.timeline) {
      // A row covers 100 ms of real time, that is 0.1 / scale s of scenario time.
      const double per_s = 1.0 / (0.1 / s.scale);
      out << to_string(r.which) << ',' << fixed(row.t_ms, 0) << ','
          << fixed(row.t_ms / 1000 / s.scale, 2) << ',' << schedule[row.phase].name << ','
          << row.state << ',' << fixed(static_cast<double>(row.downstream) * per_s, 1) << ','
          << fixed(static_cast<double>(row.offered) * per_s, 1) << ',' << fixed(row.p99_ms, 1)
          << ',' << row.in_flight << ',' << row.waiting << '\n';
    }
  }
}

bool draw_chart(const std::vector<mode_result>& results, const std::vector<flaky::phase>& schedule,
                const settings& s, const std::string& csv, const std::string& png) {
  const std::string script_path = s.out + "/demo.gnuplot";
  std::ofstream g(script_path);
  g << "set datafile separator ','\n"
       "set terminal pngcairo size 1400,1000 font ',10' noenhanced\n"
       "set output '"
    << png
    << "'\n"
       "set multiplot layout 3,1 title 'levee demo: the seed scenario, "
    << s.sessions
    << " sessions'\n"
       "set grid\nset key outside right\nset xlabel 'scenario time (s)'\n";
  // Phase boundaries as vertical lines, phase names on top.
  double at = 0;
  for (std::size_t i = 0; i < schedule.size(); ++i) {
    g << "set label '" << schedule[i].name << "' at " << at + 1 << ", graph 0.93 tc rgb 'gray40'\n";
    at += std::chrono::duration<double>(schedule[i].duration).count();
    if (i + 1 < schedule.size())
      g << "set arrow from " << at << ", graph 0 to " << at
        << ", graph 1 nohead dt 2 lc rgb 'gray'\n";
  }
  auto plot = [&](const char* ylabel, int column, bool guarded_only) {
    g << "set ylabel '" << ylabel << "'\nplot ";
    bool first = true;
    for (const auto& r : results) {
      if (guarded_only && !has_breaker(r.which)) continue;
      g << (first ? "" : ", ") << "'" << csv << "' using 3:(strcol(1) eq '" << to_string(r.which)
        << "' ? $" << column << " : 1/0) with " << (column == 5 ? "steps" : "lines")
        << " lw 2 lc rgb '" << colour(r.which) << "' title '" << to_string(r.which) << "'";
      first = false;
    }
    g << '\n';
  };
  plot("API load (requests/s)", 6, false);
  g << "set logscale y\n";
  plot("client p99 latency (ms)", 8, false);
  g << "unset logscale y\nset yrange [-0.2:2.2]\nset ytics ('closed' 0, 'half-open' 1, 'open' 2)\n";
  plot("breaker state", 5, true);
  g << "unset multiplot\n";
  g.close();
  const std::string command = "gnuplot '" + script_path + "' 2>&1";
  return std::system(command.c_str()) == 0;
}

// ---- the summary ------------------------------------------------------------

void write_summary(const settings& s, const std::vector<flaky::phase>& schedule,
                   const std::vector<mode_result>& results) {
  const std::size_t outage = outage_phase(schedule);
  json::object modes;
  for (const auto& r : results) {
    const totals t = sum(r);
    json::array phases;
    for (std::size_t p = 0; p < r.phases.size(); ++p) {
      const auto& f = r.phases[p];
      phases.push_back(json::object{{"name", schedule[p].name},
                                    {"offered", f.offered},
                                    {"downstream", f.downstream},
                                    {"succeeded", f.succeeded},
                                    {"fast_failed", f.fast_failed},
                                    {"limit_exceeded", f.limit_exceeded},
                                    {"limit_exceeded_after_5s", f.limit_exceeded_after_5s},
                                    {"p50_ms", f.percentile(0.5)},
                                    {"p99_ms", f.percentile(0.99)},
                                    {"max_ms", f.max()},
                                    {"peak_in_flight", f.peak_in_flight},
                                    {"peak_pool_waiters", f.peak_waiting},
                                    {"fast_fail_p99_ms", f.fast_fail_percentile(0.99)},
                                    {"loop_lag_ms", f.loop_lag_ms}});
    }
    json::value recovery;  // null: the breaker never closed (or there is none)
    if (r.recovery_to_closed_ms) recovery = std::round(*r.recovery_to_closed_ms * 10) / 10;
    modes[to_string(r.which)] = json::object{{"offered_requests", t.offered},
                                             {"downstream_requests", t.downstream},
                                             {"amplification", ratio(t.downstream, t.offered)},
                                             {"success_rate", ratio(t.succeeded, t.offered)},
                                             {"outage_p99_ms", r.phases[outage].percentile(0.99)},
                                             {"recovery_to_closed_ms", std::move(recovery)},
                                             {"fast_failed", t.fast_failed},
                                             {"phases", std::move(phases)}};
  }
  // The flaky API's capacity (requests in flight before it slows down): the
  // largest of its phases'.
  std::size_t capacity = 0;
  for (const auto& p : schedule) capacity = std::max(capacity, p.capacity);
  const json::value summary =
      json::object{{"scale", s.scale},
                   {"sessions", s.sessions},
                   {"api_capacity", capacity},
                   {"open_duration_ms", scenario_ms(s, breaker_options_for(s).open_duration)},
                   {"modes", std::move(modes)}};
  std::ofstream out(s.summary);
  print_json(out, summary);
  out << '\n';
}

}  // namespace demo
