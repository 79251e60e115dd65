#include "cli.hpp"

#include <levee/config/config.hpp>

#include <boost/program_options.hpp>

#include <iostream>
#include <sstream>
#include <string>

namespace demo {

namespace po = boost::program_options;

const char* const usage = R"(levee-demo: the seed's cascading failure, with and without levee.

usage: levee-demo [options]

Starts a flaky recommendation API on 127.0.0.1 (healthy at 200 ms; 15 % errors
with latency rising to 8 s; an outright failure; healed) and 1,000 sessions that
call it, once per mode, and prints what each mode did, phase by phase.

options:
  --scale F          time scale of the scenario (default 0.1: its 200 s run in
                     20 s per mode, about a minute and a half in all); durations printed
                     are scenario time (real time / F)
  --quick            --scale 0.035: the whole run in under 30 s (CI)
  --sessions N       concurrent sessions (default 1000)
  --modes LIST       comma-separated, from naive_retry, breaker,
                     breaker_retry_budget, breaker_adaptive, breaker_throttle
                     (default: all five)
  --out DIR          where the timeline and the chart go (default demo-out)
  --summary FILE     also write the figures as JSON to FILE
  --metrics-out FILE write the breakers' final metrics to FILE (Prometheus
                     text format 0.0.4)
  --metrics-port N   serve the running breaker's metrics at
                     http://127.0.0.1:N/metrics (default 0: any free port,
                     printed at the start)
  --no-chart         do not run gnuplot
  --config FILE      the breaker's (and the limit's) options from a JSON file
                     (samples/levee.json; README, "Changing a running breaker
                     / configuration from a file") over the demo's own; the
                     breaker's key is recommendation-api (MODE), so the
                     pattern recommendation-api* covers every mode. The
                     file's durations are real time. Read again on SIGHUP
                     (kill -HUP PID) while a mode runs: the breaker keeps its
                     window and state; a file with errors changes nothing
                     (its errors are printed)
  --fleet N          run the scenario with N instances sharing their breakers
                     through a redis-server the demo starts (modes local,
                     shared, shared_redis_down; --fleet N --help says more)
  --replicas N       run the scenario against N replicas of the API, one of
                     them sick (modes naive_retry, breaker, upstream;
                     --replicas N --help says more)
  --help             this text

outputs:
  a progress line on stderr while running (rewritten in place on a terminal, a
  line per update in a file or a pipe); a table per phase; DIR/timeline.csv (one
  row per 100 ms of real time: state, downstream requests, client p99);
  DIR/demo.png (drawn by gnuplot from the CSV); the JSON summary with --summary.
)";

command_line parse_command_line(int argc, const char* const* argv) {
  command_line cl;
  settings& s = cl.chosen;
  auto fail = [&](const std::string& why) {
    std::cerr << "levee-demo: " << why << '\n';
    cl.what = command_line::action::error;
    return cl;
  };
  double scale = s.scale;
  int sessions = s.sessions;
  int port = s.metrics_port;
  std::string modes;
  bool no_chart = false;
  // The descriptions are in `usage`, written out for people.
  po::options_description options;
  options.add_options()                           //
      ("scale", po::value(&scale))                //
      ("quick", po::bool_switch())                //
      ("sessions", po::value(&sessions))          //
      ("modes", po::value(&modes))                //
      ("out", po::value(&s.out))                  //
      ("summary", po::value(&s.summary))          //
      ("metrics-out", po::value(&s.metrics_out))  //
      ("metrics-port", po::value(&port))          //
      ("no-chart", po::bool_switch(&no_chart))    //
      ("config", po::value(&s.config))            //
      ("help,h", "");
  const po::positional_options_description no_arguments;  // options only
  po::variables_map given;
  try {
    // Options are spelled out in full: no guessing "--sess" for "--sessions".
    const auto parsed =
        po::command_line_parser(argc, argv)
            .options(options)
            .positional(no_arguments)
            .style(po::command_line_style::default_style & ~po::command_line_style::allow_guessing)
            .run();
    po::store(parsed, given);
    po::notify(given);
    // --quick is --scale 0.035: of the two, the last one given counts.
    for (const auto& o : parsed.options) {
      if (o.string_key == "quick") s.scale = 0.035;
      if (o.string_key == "scale") s.scale = scale;
    }
  } catch (const po::error& e) {
    return fail(std::string(e.what()) + " (try --help)");
  }
  if (given.count("help")) {
    cl.what = command_line::action::help;
    return cl;
  }
  if (given.count("scale") && !(scale > 0 && scale <= 10)) {
    return fail("--scale needs a number in (0, 10]");
  }
  if (sessions < 1 || sessions > 100000) return fail("--sessions needs a number in [1, 100000]");
  s.sessions = sessions;
  if (given.count("modes")) {
    s.modes.clear();
    std::istringstream list(modes);
    for (std::string name; std::getline(list, name, ',');) {
      const auto m = mode_from_string(name);
      if (!m) return fail("unknown mode '" + name + "'");
      s.modes.push_back(*m);
    }
    if (s.modes.empty()) return fail("--modes needs at least one mode");
  }
  if (port < 0 || port > 65535) return fail("--metrics-port needs a port number");
  s.metrics_port = static_cast<std::uint16_t>(port);
  s.chart = !no_chart;
  if (!s.config.empty()) {
    try {
      levee::read_registry_config(s.config);  // its errors now, not once the run started
    } catch (const levee::config_error& e) {
      return fail(s.config + ":\n" + e.what());
    }
  }
  return cl;
}

}  // namespace demo
