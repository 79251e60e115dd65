// levee-demo --fleet N (fleet.hpp): N instances, three modes, one table and
// the summary's `fleet` object.
#include "fleet.hpp"

#include "cli.hpp"
#include "redis_process.hpp"
#include "scenario.hpp"

#include <levee/fleet/fleet.hpp>
#include <levee/http.hpp>

#include <flaky/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <sys/resource.h>
#include <unistd.h>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace demo {

namespace {

namespace asio = boost::asio;
namespace http = levee::http;
namespace json = boost::json;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

enum class fleet_mode { local, shared, shared_redis_down };

const char* to_string(fleet_mode m) {
  switch (m) {
    case fleet_mode::local:
      return "local";
    case fleet_mode::shared:
      return "shared";
    case fleet_mode::shared_redis_down:
      return "shared_redis_down";
  }
  return "?";
}

struct fleet_figures {
  fleet_mode which = fleet_mode::local;
  std::uint64_t offered = 0, succeeded = 0;
  std::uint64_t probes_in_outage = 0;      // half-open probes that reached the API in the outage
  std::uint64_t downstream_in_outage = 0;  // requests the API received in the outage
  std::uint64_t failed_by_fleet = 0;       // calls whose guard blocked the thread or took > 50 ms
  std::uint64_t guard_blocked = 0;         // of them: the thread blocked in the guard
  int opened = 0;                          // instances whose breaker opened
  double open_spread_ms = 0;               // scenario ms, first opening to last
  bool linked = false;                     // every link connected before the start (shared modes)
};

// One instance of the agent: its own io_context and thread, client, breaker,
// and (shared modes) fleet link.
class instance {
 public:
  instance(const settings& s, fleet_mode m, int id, int sessions, const std::string& redis,
           flaky::server& api, std::size_t outage)
      : s_(s), sessions_(sessions), api_(api), outage_(outage) {
    client_.emplace(ioc_.get_executor(), client_options_for(s_));
    // The demo's `breaker` mode's breaker.
    breaker_.emplace(ioc_, breaker_options_for(s_), "recommendation-api");
    breaker_->listen(static_cast<levee::event_mask>(levee::event_kind::transition),
                     [this](const levee::breaker_event& e) {
                       if (e.to == levee::circuit_state::open &&
                           e.from == levee::circuit_state::closed && !first_open_)
                         first_open_ = steady::now();
                     });
    if (m != fleet_mode::local) {
      levee::fleet_options fo;
      fo.address = redis;
      fo.instance_id = "agent-" + std::to_string(id);
      fo.connect_timeout = 500ms;
      fo.command_timeout = 200ms;
      fo.reconnect_min = 50ms;
      fo.reconnect_max = 500ms;
      // The winner renews it while its probe runs (a probe takes up to the
      // client's 10 s timeout); a dead prober's lease runs out in 3 s.
      fo.probe_lease = std::max<std::chrono::nanoseconds>(scaled(s_, 3s), 50ms);
      link_.emplace(ioc_.get_executor(), fo);
      link_->attach(*breaker_);
    }
    work_.emplace(ioc_.get_executor());  // run() waits for the sessions
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~instance() {
    stop();
    link_.reset();
    breaker_.reset();
    client_.reset();
  }

  bool connected() const { return link_ && link_->metrics().connected; }

  void start(steady::time_point end, std::uint16_t port, std::uint64_t seed) {
    end_ = end;
    port_ = port;
    asio::post(ioc_, [this, seed] {
      std::mt19937_64 rng(seed);
      for (int i = 0; i < sessions_; ++i) asio::co_spawn(ioc_, session(rng()), asio::detached);
    });
  }
  bool idle() const { return active_.load() == 0; }
  void stop() {
    ioc_.stop();
    if (thread_.joinable()) thread_.join();
  }

  std::atomic<std::uint64_t> offered{0}, succeeded{0}, probes_in_outage{0}, failed_by_fleet{0},
      guard_blocked{0};
  std::optional<steady::time_point> first_open() const { return first_open_; }

 private:
  static long voluntary_switches() {
    rusage u{};
    ::getrusage(RUSAGE_THREAD, &u);
    return u.ru_nvcsw;
  }

  asio::awaitable<void> session(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    asio::steady_timer think(co_await asio::this_coro::executor);
    think.expires_after(
        nanos(std::uniform_int_distribution<std::int64_t>(0, scaled(s_, 10s).count())(rng)));
    co_await think.async_wait(asio::use_awaitable);
    const std::string url = "http://127.0.0.1:" + std::to_string(port_) + "/recommendations";
    while (steady::now() < end_) {
      ++active_;
      steady::time_point admitted{};
      long blocked = 0;  // voluntary context switches when the guard ended
      auto attempt = [&]() -> asio::awaitable<http::result> {
        admitted = steady::now();
        blocked = voluntary_switches();
        if (breaker_->state() == levee::circuit_state::half_open && api_.phase_index() == outage_)
          ++probes_in_outage;
        co_return co_await http::async_get(*client_, url, asio::as_tuple(asio::use_awaitable));
      };
      const auto t0 = steady::now();
      const long blocked0 = voluntary_switches();
      const auto [ec, res] = co_await (*breaker_)(attempt());
      // The guard: to the attempt's start, or to the rejection. It waited if the thread blocked in
      // it (a voluntary context switch: preemption by a busy machine is not the link's doing) or if
      // it took more than 50 ms.
      if (admitted == steady::time_point{}) {  // rejected
        admitted = steady::now();
        blocked = voluntary_switches();
      }
      if (admitted - t0 > 50ms || blocked != blocked0) ++failed_by_fleet;
      if (blocked != blocked0) ++guard_blocked;
      ++offered;
      if (!ec && res.result_int() / 100 == 2) ++succeeded;
      --active_;
      think.expires_after(nanos(std::uniform_int_distribution<std::int64_t>(
          scaled(s_, 5s).count(), scaled(s_, 15s).count())(rng)));
      co_await think.async_wait(asio::use_awaitable);
    }
  }

  const settings& s_;
  int sessions_;
  flaky::server& api_;
  std::uint16_t port_ = 0;
  std::size_t outage_;
  asio::io_context ioc_{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> work_;
  std::optional<http::client> client_;
  std::optional<levee::circuit_breaker> breaker_;
  std::optional<levee::fleet_link> link_;
  std::thread thread_;
  steady::time_point end_;
  std::atomic<int> active_{0};
  std::optional<steady::time_point> first_open_;  // on the instance's thread, read after stop
};

std::size_t outage_of(const std::vector<flaky::phase>& schedule) {
  for (std::size_t i = 0; i < schedule.size(); ++i)
    if (schedule[i].name == "outage") return i;
  return schedule.size() - 1;
}

fleet_figures run_fleet_mode(const settings& s, fleet_mode m, int n,
                             const std::vector<flaky::phase>& schedule) {
  fleet_figures f;
  f.which = m;
  f.linked = m != fleet_mode::local;
  const std::size_t outage = outage_of(schedule);
  std::optional<redis_process> redis;
  if (m != fleet_mode::local) {
    redis.emplace();
    if (!redis->running()) {
      std::cerr << "levee-demo: redis-server did not start (install redis-server)\n";
      f.linked = false;
    }
  }
  asio::io_context server_ioc(1);
  flaky::server api(server_ioc.get_executor(), schedule, {.time_scale = s.scale, .seed = 42});
  std::vector<std::unique_ptr<instance>> fleet;
  for (int i = 0; i < n; ++i)
    fleet.push_back(std::make_unique<instance>(
        s, m, i, s.sessions / n, redis ? redis->socket_path() : std::string(), api, outage));
  if (m != fleet_mode::local) {
    const auto limit = steady::now() + 3s;
    auto all_connected = [&] {
      for (auto& i : fleet)
        if (!i->connected()) return false;
      return true;
    };
    while (!all_connected() && steady::now() < limit) std::this_thread::sleep_for(10ms);
    f.linked = f.linked && all_connected();
  }
  // The API's schedule starts now; the sessions run to its end.
  const std::uint16_t port = api.start();
  std::thread server_thread([&] { server_ioc.run(); });
  const auto start = steady::now() - api.elapsed();
  const auto end = start + api.length();
  for (std::size_t i = 0; i < fleet.size(); ++i) fleet[i]->start(end, port, 1 + i);
  bool paused = false;
  while (steady::now() < end) {
    const std::size_t phase = api.phase_index();
    if (m == fleet_mode::shared_redis_down && redis) {
      if (phase == outage && !paused) {
        redis->pause();
        paused = true;
      } else if (phase > outage && paused) {
        redis->resume();
        paused = false;
      }
    }
    std::fprintf(stderr, "\r  fleet %-18s %-10s t=%4.0fs/%.0fs   ", to_string(m),
                 schedule[phase].name.c_str(), scenario_ms(s, steady::now() - start) / 1000,
                 scenario_ms(s, api.length()) / 1000);
    std::this_thread::sleep_for(20ms);
  }
  if (paused) redis->resume();
  const auto grace = steady::now() + scaled(s, 10s) + 1s;
  for (auto& i : fleet)
    while (!i->idle() && steady::now() < grace) std::this_thread::sleep_for(10ms);
  for (auto& i : fleet) i->stop();
  std::fprintf(stderr, "\n");
  f.downstream_in_outage = api.requests_in_phase(outage);
  api.stop();
  server_thread.join();
  std::optional<steady::time_point> first, last;
  for (auto& i : fleet) {
    f.offered += i->offered;
    f.succeeded += i->succeeded;
    f.probes_in_outage += i->probes_in_outage;
    f.failed_by_fleet += i->failed_by_fleet;
    f.guard_blocked += i->guard_blocked;
    if (const auto t = i->first_open()) {
      ++f.opened;
      if (!first || *t < *first) first = *t;
      if (!last || *t > *last) last = *t;
    }
  }
  if (first) f.open_spread_ms = scenario_ms(s, *last - *first);
  return f;
}

double rate(std::uint64_t part, std::uint64_t whole) {
  return whole ? static_cast<double>(part) / static_cast<double>(whole) : 0.0;
}

}  // namespace

std::optional<int> fleet_main(int argc, char** argv) {
  // --fleet N is taken out; the rest is the demo's usual command line.
  int n = 0;
  std::vector<const char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--fleet" && i + 1 < argc) {
      n = std::atoi(argv[++i]);
      if (n < 1 || n > 64) {
        std::cerr << "levee-demo: --fleet needs a number in [1, 64]\n";
        return 2;
      }
    } else if (a.rfind("--fleet=", 0) == 0) {
      n = std::atoi(a.c_str() + 8);
      if (n < 1 || n > 64) {
        std::cerr << "levee-demo: --fleet needs a number in [1, 64]\n";
        return 2;
      }
    } else {
      rest.push_back(argv[i]);
    }
  }
  if (n == 0) return std::nullopt;
  const command_line cl = parse_command_line(static_cast<int>(rest.size()), rest.data());
  if (cl.what == command_line::action::help) {
    std::cout << usage
              << "\n  --fleet N          N instances (1000/N sessions each) in modes local, shared,"
                 "\n                     shared_redis_down; starts its own redis-server\n";
    return 0;
  }
  if (cl.what == command_line::action::error) return 2;
  const settings& s = cl.chosen;
  const auto schedule = flaky::seed_schedule();
  std::cout << "levee demo, fleet: " << n << " instances of " << s.sessions / n
            << " sessions call a recommendation API that follows the seed's scenario (time "
               "scale "
            << s.scale << ")\n"
            << flaky::describe(schedule) << "modes: local shared shared_redis_down\n\n"
            << std::flush;
  std::vector<fleet_figures> results;
  for (const auto m : {fleet_mode::local, fleet_mode::shared, fleet_mode::shared_redis_down})
    results.push_back(run_fleet_mode(s, m, n, schedule));

  std::printf("\n%-34s", "fleet");
  for (const auto& r : results) std::printf("%20s", to_string(r.which));
  std::printf("\n");
  auto row = [&](const char* name, auto get, const char* format) {
    std::printf("%-34s", name);
    for (const auto& r : results) std::printf(format, get(r));
    std::printf("\n");
  };
  row(
      "half-open probes in the outage", [](const fleet_figures& r) { return r.probes_in_outage; },
      "%20llu");
  row(
      "requests to the API in the outage",
      [](const fleet_figures& r) { return r.downstream_in_outage; }, "%20llu");
  row(
      "instances that opened", [](const fleet_figures& r) { return r.opened; }, "%20d");
  row(
      "open spread (scenario ms)", [](const fleet_figures& r) { return r.open_spread_ms; },
      "%20.0f");
  row(
      "success rate", [](const fleet_figures& r) { return rate(r.succeeded, r.offered); },
      "%20.3f");
  row(
      "calls whose guard blocked or >50 ms",
      [](const fleet_figures& r) { return r.failed_by_fleet; }, "%20llu");
  bool linked = true;
  for (const auto& r : results) linked = linked && (r.linked || r.which == fleet_mode::local);
  if (!linked) std::printf("(a link did not connect before the start: see above)\n");

  if (!s.summary.empty()) {
    json::object modes;
    for (const auto& r : results)
      modes[to_string(r.which)] =
          json::object{{"probes_in_outage", r.probes_in_outage},
                       {"downstream_in_outage", r.downstream_in_outage},
                       {"instances_opened", r.opened},
                       {"open_spread_ms", std::round(r.open_spread_ms * 10) / 10},
                       {"success_rate", rate(r.succeeded, r.offered)},
                       {"offered", r.offered},
                       {"failed_by_fleet", r.failed_by_fleet},
                       {"guard_blocked", r.guard_blocked},
                       {"linked", r.linked}};
    const json::value summary =
        json::object{{"scale", s.scale},
                     {"sessions", s.sessions},
                     {"fleet", json::object{{"instances", n}, {"modes", std::move(modes)}}}};
    const std::filesystem::path path(s.summary);
    std::error_code dir_error;
    if (path.has_parent_path()) std::filesystem::create_directories(path.parent_path(), dir_error);
    std::ofstream file(path);
    file << json::serialize(summary) << '\n';
    if (!file.flush()) {
      std::cerr << "levee-demo: cannot write " << s.summary << '\n';
      return 1;
    }
    std::cout << "summary:  " << s.summary << '\n';
  }
  return 0;
}

}  // namespace demo
