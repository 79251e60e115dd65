// levee-demo --replicas N: the tables, the timeline, the chart and the
// summary's `replicas` object (cmake/check-replicas-summary.cmake reads it).
#include "replicas.hpp"

#include "report.hpp"  // print_json

#include <boost/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

namespace demo::replicas {

namespace json = boost::json;

namespace {

const char* colour(mode m) {
  switch (m) {
    case mode::naive_retry:
      return "#d62728";
    case mode::breaker:
      return "#1f77b4";
    case mode::upstream:
      return "#2ca02c";
  }
  return "black";
}

double round1(double v) {
  return std::round(v * 10) / 10;
}

double ms_of(std::chrono::nanoseconds real, const settings& s) {
  return round1(scenario_ms(s, real));
}

}  // namespace

void print_tables(const std::vector<flaky::phase>& schedule,
                  const std::vector<mode_result>& results) {
  const mode_table<mode_result> table{results, 38, 16};
  for (std::size_t p = 0; p < schedule.size(); ++p) {
    table.header("phase " + std::to_string(p + 1) + ": " + schedule[p].name);
    auto count = [p](std::uint64_t phase_figures::*member) {
      return [p, member](const mode_result& r) { return std::to_string(r.phases[p].*member); };
    };
    table.line("requests offered by sessions", count(&phase_figures::offered));
    table.line("requests that reached the replicas", count(&phase_figures::downstream));
    table.line("  of them, to the sick replica", count(&phase_figures::requests_to_sick));
    table.line("  of those, the upstream's probes", count(&phase_figures::probes_to_sick));
    table.line("client success rate", [&](const mode_result& r) {
      const auto& f = r.phases[p];
      return f.offered ? fixed(100.0 * f.success_rate(), 1) + " %" : std::string("-");
    });
    table.line("latency p50",
               [&](const mode_result& r) { return human_ms(r.phases[p].percentile(0.5)); });
    table.line("latency p99",
               [&](const mode_result& r) { return human_ms(r.phases[p].percentile(0.99)); });
    table.line("latency max", [&](const mode_result& r) {
      return human_ms(r.phases[p].latencies_ms.empty()
                          ? 0
                          : *std::max_element(r.phases[p].latencies_ms.begin(),
                                              r.phases[p].latencies_ms.end()));
    });
    table.line("fast-fails (not sent)", count(&phase_figures::fast_failed));
    table.line("peak requests in flight",
               [&](const mode_result& r) { return std::to_string(r.phases[p].peak_in_flight); });
    table.line("longest event-loop lag",
               [&](const mode_result& r) { return human_ms(r.phases[p].loop_lag_ms); });
  }
  table.header("the whole run");
  table.line("sick replica ejected / returned", [](const mode_result& r) {
    if (r.which != mode::upstream) return std::string("-");
    return std::to_string(r.ejections) + " / " + std::to_string(r.returns);
  });
  table.line("the breaker opened", [](const mode_result& r) {
    if (r.which != mode::breaker) return std::string("-");
    return std::string(r.breaker_opened ? "yes" : "never");
  });
  std::cout << "\n(durations are scenario time: real time divided by the time scale)\n";
}

void write_timeline(const settings& s, const std::vector<flaky::phase>& schedule,
                    const std::vector<mode_result>& results, const std::string& path) {
  std::ofstream out(path);
  out << "mode,t_real_ms,t_scenario_s,phase,to_sick_per_s,downstream_per_s,client_success_pct,"
         "client_p99_ms\n";
  const double per_s = s.scale / 0.1;  // a row is 100 ms of real time
  for (const auto& r : results) {
    for (const auto& row : r.timeline) {
      out << to_string(r.which) << ',' << fixed(row.t_ms, 0) << ','
          << fixed(row.t_ms / 1000 / s.scale, 2) << ',' << schedule[row.phase].name << ','
          << fixed(static_cast<double>(row.to_sick) * per_s, 1) << ','
          << fixed(static_cast<double>(row.downstream) * per_s, 1) << ',';
      if (row.finished)
        out << fixed(100.0 * static_cast<double>(row.succeeded) / static_cast<double>(row.finished),
                     1);
      out << ',' << (row.finished ? fixed(row.p99_ms, 1) : std::string()) << '\n';
    }
  }
}

bool draw_chart(const std::vector<mode_result>& results, const std::vector<flaky::phase>& schedule,
                const settings& s, int replicas, const std::string& csv, const std::string& png) {
  const std::string script_path = s.out + "/replicas.gnuplot";
  std::ofstream g(script_path);
  g << "set datafile separator ','\nset datafile missing ''\n"
       "set terminal pngcairo size 1400,1000 font ',10' noenhanced\n"
       "set output '"
    << png << "'\nset multiplot layout 3,1 title 'levee demo: " << replicas
    << " replicas, one follows the seed scenario, " << s.sessions
    << " sessions'\nset grid\nset key outside right\nset xlabel 'scenario time (s)'\n";
  double at = 0;
  for (std::size_t i = 0; i < schedule.size(); ++i) {
    g << "set label '" << schedule[i].name << "' at " << at + 1 << ", graph 0.93 tc rgb 'gray40'\n";
    at += std::chrono::duration<double>(schedule[i].duration).count();
    if (i + 1 < schedule.size())
      g << "set arrow from " << at << ", graph 0 to " << at
        << ", graph 1 nohead dt 2 lc rgb 'gray'\n";
  }
  auto plot = [&](const char* ylabel, int column) {
    g << "set ylabel '" << ylabel << "'\nplot ";
    bool first = true;
    for (const auto& r : results) {
      g << (first ? "" : ", ") << "'" << csv << "' using 3:(strcol(1) eq '" << to_string(r.which)
        << "' ? $" << column << " : 1/0) with lines lw 2 lc rgb '" << colour(r.which) << "' title '"
        << to_string(r.which) << "'";
      first = false;
    }
    g << '\n';
  };
  plot("requests/s to the sick replica", 5);
  g << "set logscale y\n";
  plot("client p99 latency (ms)", 8);
  g << "unset logscale y\nset yrange [0:105]\n";
  plot("client success rate (%)", 7);
  g << "unset multiplot\n";
  g.close();
  const std::string command = "gnuplot '" + script_path + "' 2>&1";
  return std::system(command.c_str()) == 0;
}

bool write_summary(const settings& s, const run_info& info,
                   const std::vector<flaky::phase>& schedule,
                   const std::vector<mode_result>& results) {
  json::object modes;
  for (const auto& r : results) {
    json::object phases;
    phase_figures all;
    for (std::size_t p = 0; p < r.phases.size(); ++p) {
      const auto& f = r.phases[p];
      all.offered += f.offered;
      all.succeeded += f.succeeded;
      all.downstream += f.downstream;
      all.requests_to_sick += f.requests_to_sick;
      phases[schedule[p].name] = json::object{{"offered", f.offered},
                                              {"succeeded", f.succeeded},
                                              {"success_rate", f.success_rate()},
                                              {"p50_ms", round1(f.percentile(0.5))},
                                              {"p99_ms", round1(f.percentile(0.99))},
                                              {"downstream", f.downstream},
                                              {"requests_to_sick", f.requests_to_sick},
                                              {"probes_to_sick", f.probes_to_sick},
                                              {"attempts", f.attempts},
                                              {"fast_failed", f.fast_failed},
                                              {"peak_in_flight", f.peak_in_flight},
                                              {"loop_lag_ms", round1(f.loop_lag_ms)}};
    }
    json::object m{{"offered", all.offered},
                   {"downstream", all.downstream},
                   {"requests_to_sick", all.requests_to_sick},
                   {"success_rate", all.success_rate()},
                   {"phases", std::move(phases)}};
    if (r.which == mode::upstream) {
      m["sick_ejections"] = r.ejections;
      m["sick_returns"] = r.returns;
    }
    if (r.which == mode::breaker) m["breaker_opened"] = r.breaker_opened;
    modes[to_string(r.which)] = std::move(m);
  }
  const auto& o = info.upstream;
  const json::object options{{"attempt_timeout_ms", ms_of(info.attempt_timeout, s)},
                             {"retry_timeout_ms", ms_of(info.retry_timeout, s)},
                             {"max_attempts", o.max_attempts},
                             {"consecutive_failures", o.outlier.consecutive_failures},
                             {"base_ejection_time_ms", ms_of(o.outlier.base_ejection_time, s)},
                             {"max_ejection_time_ms", ms_of(o.outlier.max_ejection_time, s)}};
  const json::value summary =
      json::object{{"scale", s.scale},
                   {"sessions", s.sessions},
                   {"replicas", json::object{{"count", info.replicas},
                                             {"sick", 1},
                                             {"capacity_each", schedule.front().capacity},
                                             {"upstream_options", options},
                                             {"modes", std::move(modes)}}}};
  const std::filesystem::path path(s.summary);
  std::error_code dir_error;
  if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), dir_error);
  std::ofstream file(path);
  demo::print_json(file, summary);
  file << '\n';
  return static_cast<bool>(file.flush());
}

}  // namespace demo::replicas
