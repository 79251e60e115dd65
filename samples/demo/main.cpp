// levee-demo: the seed's cascading failure, on loopback, time-scaled.
//
// An agent calls a product recommendation API during peak hours. The API is
// healthy at 200 ms, then degrades (15 % errors, latency rising to 8 s), then
// fails outright, then heals. 1,000 concurrent sessions call it. The same
// schedule runs once per mode (scenario.cpp, the levee code):
//   naive_retry           each session retries failures up to 3 times, no breaker
//   breaker               each call guarded by a levee circuit breaker
//   breaker_retry_budget  retries under a shared retry budget, each attempt
//                         guarded by the breaker
//   breaker_adaptive      as breaker_retry_budget, with an adaptive
//                         concurrency limit inside the breaker
//   breaker_throttle      client-side adaptive throttling (graded shedding)
//                         outside the breaker
// and the demo prints, per phase and side by side, what each mode did to the
// API and to the sessions (report.cpp). Run with --help (cli.cpp).
#include "cli.hpp"
#include "metrics_endpoint.hpp"
#include "replicas.hpp"  // --replicas N
#include "report.hpp"
#include "scenario.hpp"
#ifdef LEVEE_DEMO_FLEET
#include "fleet.hpp"  // --fleet N
#endif

#include <levee/breaker/observe.hpp>

#include <flaky/schedule.hpp>

#include <filesystem>
#include <fstream>
#include <iostream>
#include <system_error>

int main(int argc, char** argv) {
  if (const auto status = demo::replicas::replicas_main(argc, argv)) return *status;
#ifdef LEVEE_DEMO_FLEET
  if (const auto status = demo::fleet_main(argc, argv)) return *status;
#endif
  const demo::command_line cl = demo::parse_command_line(argc, argv);
  switch (cl.what) {
    case demo::command_line::action::help:
      std::cout << demo::usage;
      return 0;
    case demo::command_line::action::error:
      return 2;
    case demo::command_line::action::run:
      break;
  }
  const demo::settings& s = cl.chosen;
  const auto schedule = flaky::seed_schedule();
  std::cout << "levee demo: " << s.sessions
            << " sessions call a recommendation API that follows the seed's "
            << "scenario (time scale " << s.scale << "):\n"
            << flaky::describe(schedule) << "modes: ";
  for (const auto m : s.modes) std::cout << demo::to_string(m) << ' ';
  std::cout << "\n\n";

  demo::metrics_endpoint endpoint(s.metrics_port);
  std::cout << "metrics served at http://127.0.0.1:" << endpoint.port()
            << "/metrics while it runs\n\n"
            << std::flush;
  std::vector<demo::mode_result> results;
  for (const auto m : s.modes) results.push_back(demo::run_mode(s, m, schedule, &endpoint));

  demo::print_tables(schedule, results);

  std::error_code ec;
  std::filesystem::create_directories(s.out, ec);
  if (ec) std::cerr << "levee-demo: cannot create " << s.out << '\n';
  const std::string csv = s.out + "/timeline.csv", png = s.out + "/demo.png";
  demo::write_timeline(s, schedule, results, csv);
  std::cout << "\ntimeline: " << csv << '\n';
  if (s.chart) {
    if (demo::draw_chart(results, schedule, s, csv, png)) {
      std::cout << "chart:    " << png << '\n';
    } else {
      std::cout
          << "chart:    not drawn (is gnuplot installed? the demo command installs gnuplot-nox)\n";
    }
  }
  if (!s.summary.empty()) {
    demo::write_summary(s, schedule, results);
    std::cout << "summary:  " << s.summary << '\n';
  }
  if (!s.metrics_out.empty()) {
    std::vector<levee::named_metrics> all;
    std::vector<levee::named_limit_metrics> limits;
    for (const auto& r : results) {
      all.insert(all.end(), r.metrics.begin(), r.metrics.end());
      limits.insert(limits.end(), r.limit_metrics.begin(), r.limit_metrics.end());
    }
    std::ofstream out(s.metrics_out);
    levee::write_prometheus(out, all);
    if (!limits.empty()) levee::write_limits_prometheus(out, limits);
    std::cout << "metrics:  " << s.metrics_out << '\n';
  }
}
