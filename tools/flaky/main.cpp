// levee-flaky-server: a flaky HTTP upstream for demos, tests and your own
// clients. Run with --help.
#include <flaky/schedule.hpp>
#include <flaky/server.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <charconv>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>

namespace {

const char* const usage = R"(levee-flaky-server: an HTTP upstream that fails on a schedule.

usage: levee-flaky-server [options] [--phase SPEC]...

Answers every request (any method, any target) as the current phase of its
fault schedule says. Phases run one after the other from the moment the server
starts; after the last one it stays there (or starts over with --loop).

options:
  --address ADDR     listen on ADDR (default 127.0.0.1: loopback only)
  --port N           listen on port N (default 0: any free port, printed)
  --phase SPEC       add a phase (repeatable; see below)
  --schedule FILE    read phases from FILE, one per line; '#' starts a comment
  --seed-scenario    the levee demo's schedule (the default with no phase):
                       healthy, degrading, outage, healed
  --scale F          multiply every duration (phases and latencies) by F;
                     0.1 runs the seed scenario's 200 s in 20 s
  --loop             repeat the schedule instead of staying in its last phase
  --seed N           seed of the random draws (default 1)
  --help             this text

a phase: NAME DURATION [key=value ...]
  NAME               a word, shown in the log
  DURATION           how long the phase lasts: 10s, 200ms, 1.5m, 100us
  errors=F           fraction of requests answered with an error status (0..1)
  status=N           that status (default 503)
  retry_after=N      add 'Retry-After: N' (seconds) to the error answers
  latency=L          delay before each answer:
                       200ms           fixed
                       100ms..2s       uniform between the two
                       ramp:200ms..8s  rising from the first to the second
                                       across the phase
                       exp:200ms       exponential with that mean
  capacity=N         above N requests in flight, every delay is multiplied by
                     in_flight / N: an overloaded upstream slows down
  reset=F            fraction of requests answered by a TCP reset
  refuse=1           close the listener: new connections are refused, open
                     ones are dropped

examples:
  levee-flaky-server --port 8080 --phase "ok 30s latency=20ms" \
      --phase "sick 30s errors=0.5 status=500 latency=100ms..2s" --loop
  levee-flaky-server --seed-scenario --scale 0.1
  curl -i http://127.0.0.1:8080/recommendations
)";

}  // namespace

int main(int argc, char** argv) {
  flaky::server_options options;
  std::vector<flaky::phase> schedule;
  bool seed_scenario = false;
  auto fail = [](const std::string& message) {
    std::cerr << "levee-flaky-server: " << message << " (try --help)\n";
    return 2;
  };
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> const char* { return i + 1 < argc ? argv[++i] : nullptr; };
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      return 0;
    } else if (arg == "--address") {
      const char* v = value();
      if (!v) return fail("--address needs a value");
      options.address = v;
    } else if (arg == "--port") {
      const char* v = value();
      unsigned port = 0;
      if (!v || std::from_chars(v, v + std::strlen(v), port).ec != std::errc() || port > 65535)
        return fail("--port needs a number in [0, 65535]");
      options.port = static_cast<std::uint16_t>(port);
    } else if (arg == "--phase") {
      const char* v = value();
      if (!v) return fail("--phase needs a spec");
      std::string error;
      auto p = flaky::parse_phase(v, error);
      if (!p) return fail(error);
      schedule.push_back(std::move(*p));
    } else if (arg == "--schedule") {
      const char* v = value();
      if (!v) return fail("--schedule needs a file");
      std::ifstream in(v);
      if (!in) return fail(std::string("cannot read ") + v);
      std::stringstream text;
      text << in.rdbuf();
      std::string error;
      auto s = flaky::parse_schedule(text.str(), error);
      if (!s) return fail(std::string(v) + ": " + error);
      schedule.insert(schedule.end(), s->begin(), s->end());
    } else if (arg == "--seed-scenario") {
      seed_scenario = true;
    } else if (arg == "--scale") {
      const char* v = value();
      double scale = 0;
      if (!v || std::from_chars(v, v + std::strlen(v), scale).ec != std::errc() || !(scale > 0))
        return fail("--scale needs a positive number");
      options.time_scale = scale;
    } else if (arg == "--loop") {
      options.loop = true;
    } else if (arg == "--seed") {
      const char* v = value();
      if (!v || std::from_chars(v, v + std::strlen(v), options.seed).ec != std::errc())
        return fail("--seed needs a number");
    } else {
      return fail("unknown option " + arg);
    }
  }
  if (seed_scenario || schedule.empty()) {
    auto seed = flaky::seed_schedule();
    schedule.insert(schedule.end(), seed.begin(), seed.end());
  }

  boost::asio::io_context ioc(1);
  flaky::server server(ioc.get_executor(), schedule, options);
  std::uint16_t port = 0;
  try {
    port = server.start();
  } catch (const std::exception& e) {
    return fail(std::string("cannot listen: ") + e.what());
  }
  std::cout << "levee-flaky-server: listening on http://" << options.address << ":" << port
            << "/ (time scale " << options.time_scale << (options.loop ? ", looping" : "") << ")\n"
            << flaky::describe(schedule) << std::flush;
  boost::asio::signal_set signals(ioc, SIGINT, SIGTERM);
  signals.async_wait([&](auto, int) {
    server.stop();
    ioc.stop();
  });
  ioc.run();
}
