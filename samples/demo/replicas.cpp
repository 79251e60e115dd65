// levee-demo --replicas N (replicas.hpp): N flaky replicas, one of them sick,
// three modes, each run in turn with the same sessions.
#include "replicas.hpp"

#include "cli.hpp"
#include "loop_lag.hpp"
#include "progress.hpp"

#include <levee/http.hpp>
#include <levee/levee.hpp>
#include <levee/pipeline.hpp>
#include <levee/upstream/http.hpp>

#include <flaky/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <memory>
#include <random>
#include <sstream>
#include <thread>

namespace demo::replicas {

namespace {

namespace asio = boost::asio;
namespace http = levee::http;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

// The deadline of a first attempt (and of a probe) in mode `upstream`: 1.75
// times the healthy replicas' 200 ms (scenario time). A replica slower than
// that is as good as failing for this agent: the attempt is cut, counts as a
// failure for the replica (levee::http::classify: a timeout), and is retried
// at once on another replica. Without it a degrading replica's slow answers
// count only once they arrive, seconds later, and every call sent to it
// meanwhile is slow: with 500 ms, 69 requests reached the degrading replica
// and the phase's p99 was 328 ms against the healthy phase's 220 (a --quick
// run); with 350 ms, 25 to 49. A retry goes to another replica, which has no
// reason to be slow: it gets 1 s, so that a stall of the machine (tens of
// milliseconds of real time, seconds of scenario time at --quick) does not
// fail every attempt of the calls it catches (docs/demo.md, "Replicas").
constexpr auto attempt_deadline = 350ms;
constexpr auto retry_deadline = 1s;

// The `upstream` mode's options, scenario time scaled like every duration of
// the demo; what each one does: docs/upstream.md; why these: docs/demo.md.
levee::upstream_options upstream_options_for(const settings& s) {
  levee::upstream_options o = http::upstream_defaults();
  o.max_attempts = 3;  // a failed attempt goes to another replica, then to the third
  o.outlier.consecutive_failures = 3;
  o.outlier.base_ejection_time = scaled(s, 10s);
  o.outlier.max_ejection_time = scaled(s, 30s);
  // Success-rate ejection needs a factor under 1.41 with three replicas and
  // 100 calls a replica per interval: consecutive failures (timeouts
  // included) are what catch the sick replica here.
  o.outlier.success_rate_interval = std::chrono::nanoseconds::zero();
  o.endpoint_breaker = breaker_options_for(s);
  o.upstream_breaker = breaker_options_for(s);
  o.seed = 7;
  return o;
}

class run {
 public:
  run(const settings& s, mode m, int n, const std::vector<flaky::phase>& sick)
      : s_(s), mode_(m), n_(static_cast<std::size_t>(n)), sick_schedule_(sick), rr_(n_) {
    result_.which = m;
    result_.phases.resize(sick.size());
  }

  mode_result go() {
    // The replicas, on one thread of their own; replica 0 is the sick one.
    asio::io_context server_ioc(1);
    const auto healthy = healthy_schedule(sick_schedule_);
    for (std::size_t i = 0; i < n_; ++i)
      servers_.push_back(std::make_unique<flaky::server>(
          server_ioc.get_executor(), i == 0 ? sick_schedule_ : healthy,
          flaky::server_options{.time_scale = s_.scale, .seed = 42 + i}));
    for (auto& sv : servers_) {
      ports_.push_back(sv->start());
      origins_.push_back("http://127.0.0.1:" + std::to_string(ports_.back()));
    }
    asio::co_spawn(server_ioc, watch_lag(server_watch_done_), asio::detached);
    std::thread server_thread([&] { server_ioc.run(); });

    asio::io_context ioc(1);
    client_.emplace(ioc.get_executor(), client_options_for(s_));
    levee::pipeline_options<http::result> po{
        .name = "replicas (" + std::string(to_string(mode_)) + ")", .rules = http::rules()};
    switch (mode_) {
      case mode::naive_retry:  // the demo's naive_retry: 3 retries, 100 ms apart
        po.retry = levee::retry_options{.max_attempts = 4,
                                        .initial_delay = scaled(s_, 100ms),
                                        .multiplier = 1,
                                        .max_delay = scaled(s_, 100ms),
                                        .jitter = levee::jitter_kind::none};
        pipe_.emplace(ioc, std::move(po));
        break;
      case mode::breaker:  // the demo's breaker, around the whole set
        po.breaker = breaker_options_for(s_);
        po.breaker->classifier = {};  // the pipeline's rules (HTTP's) classify for it
        pipe_.emplace(ioc, std::move(po));
        break;
      case mode::upstream:
        up_.emplace(ioc, origins_, upstream_options_for(s_), "replicas");
        break;
    }

    start_ = steady::now() - servers_[0]->elapsed();
    end_ = start_ + servers_[0]->length();
    std::mt19937_64 rng(1);
    for (int i = 0; i < s_.sessions; ++i) asio::co_spawn(ioc, session(rng()), asio::detached);
    asio::co_spawn(ioc, sample(), asio::detached);
    asio::co_spawn(ioc, watch_lag(client_watch_done_), asio::detached);
    ioc.run();

    server_watch_done_ = true;
    for (auto& sv : servers_) sv->stop();
    server_thread.join();
    for (std::size_t p = 0; p < result_.phases.size(); ++p) {
      auto& f = result_.phases[p];
      f.loop_lag_ms = scenario_ms(s_, nanos(lag_ns_[p].load()));
      f.requests_to_sick = servers_[0]->requests_in_phase(p);
      for (auto& sv : servers_) f.downstream += sv->requests_in_phase(p);
    }
    if (up_) {
      const auto m = up_->metrics();
      result_.ejections = m.endpoints[0].ejections;
      result_.returns = m.endpoints[0].returns;
    }
    client_.reset();
    pipe_.reset();
    up_.reset();
    return std::move(result_);
  }

 private:
  std::size_t phase_now() const { return servers_[0]->phase_index(); }

  // One attempt to replica `i`; `probe`: the upstream's probe of it.
  asio::awaitable<http::result> attempt(std::size_t i, std::chrono::nanoseconds timeout) {
    auto& f = result_.phases[phase_now()];
    ++f.attempts;
    ++in_flight_;
    f.peak_in_flight = std::max(f.peak_in_flight, in_flight_);
    http::request req(boost::beast::http::verb::get, "/recommendations", 11);
    auto r = co_await client_->async_request("127.0.0.1", ports_[i], std::move(req), timeout,
                                             asio::as_tuple(asio::use_awaitable));
    --in_flight_;
    co_return r;
  }

  asio::awaitable<http::result> call() {
    if (up_) {
      std::size_t attempts = 0;
      auto fn = [this,
                 &attempts](const levee::upstream_endpoint& e) -> asio::awaitable<http::result> {
        // The body runs once the replica's breaker admitted the attempt; an
        // attempt to an ejected replica whose probe is in flight is that probe.
        const bool probe = up_->metrics().endpoints[e.index].probing;
        if (probe && e.index == 0) ++result_.phases[phase_now()].probes_to_sick;
        const bool first = attempts++ == 0;
        co_return co_await attempt(e.index,
                                   scaled(s_, first || probe ? attempt_deadline : retry_deadline));
      };
      co_return co_await (*up_)(fn);
    }
    auto fn = [this]() { return attempt(rr_.next(), client_->options().timeout); };
    co_return co_await (*pipe_)(fn);
  }

  asio::awaitable<void> session(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    asio::steady_timer think(co_await asio::this_coro::executor);
    think.expires_after(
        nanos(std::uniform_int_distribution<std::int64_t>(0, scaled(s_, 10s).count())(rng)));
    co_await think.async_wait(asio::use_awaitable);
    while (steady::now() < end_) {
      const auto t0 = steady::now();
      const std::size_t phase = phase_now();
      ++calls_active_;
      const auto [ec, res] = co_await call();
      --calls_active_;
      const bool ok = !ec && res.result_int() / 100 == 2;
      auto& f = result_.phases[phase];
      ++f.offered;
      f.succeeded += ok;
      f.fast_failed += levee::is_rejection(ec);
      const double ms = scenario_ms(s_, steady::now() - t0);
      f.latencies_ms.push_back(ms);
      row_latencies_.push_back(ms);
      row_succeeded_ += ok;
      // 5 to 15 s of thinking: 1,000 sessions offer about 100 calls a second.
      think.expires_after(nanos(std::uniform_int_distribution<std::int64_t>(
          scaled(s_, 5s).count(), scaled(s_, 15s).count())(rng)));
      co_await think.async_wait(asio::use_awaitable);
    }
  }

  std::uint64_t downstream_now() const {
    std::uint64_t n = 0;
    for (const auto& sv : servers_) n += sv->stats().requests;
    return n;
  }

  // Every 100 ms a timeline row, every 500 ms the progress line.
  asio::awaitable<void> sample() {
    asio::steady_timer tick(co_await asio::this_coro::executor);
    std::uint64_t last_sick = 0, last_all = 0;
    auto next_row = start_ + 100ms;
    auto next_progress = start_;
    progress_line progress(stderr);
    auto guard = pipe_ ? pipe_->breaker() : nullptr;
    while (steady::now() < end_ + scaled(s_, 10s)) {
      const auto now = steady::now();
      const std::size_t phase = phase_now();
      if (guard && guard->state() == levee::circuit_state::open) result_.breaker_opened = true;
      if (now >= next_row) {
        timeline_row row;
        row.t_ms = std::chrono::duration<double, std::milli>(now - start_).count();
        row.phase = phase;
        const auto sick = servers_[0]->stats().requests, all = downstream_now();
        row.to_sick = sick - std::exchange(last_sick, sick);
        row.downstream = all - std::exchange(last_all, all);
        row.finished = row_latencies_.size();
        row.succeeded = std::exchange(row_succeeded_, 0);
        row.p99_ms = percentile_of(std::move(row_latencies_), 0.99);
        row_latencies_.clear();
        result_.timeline.push_back(row);
        next_row += 100ms;
      }
      if (now >= next_progress) {
        std::uint64_t offered = 0;
        for (const auto& f : result_.phases) offered += f.offered;
        progress.print(
            "  replicas %-12s %-10s t=%4.0fs/%.0fs  offered %7llu  to the sick one %6llu",
            to_string(mode_), sick_schedule_[phase].name.c_str(),
            scenario_ms(s_, now - start_) / 1000, scenario_ms(s_, servers_[0]->length()) / 1000,
            static_cast<unsigned long long>(offered),
            static_cast<unsigned long long>(servers_[0]->stats().requests));
        next_progress += 500ms;
      }
      if (now >= end_ && calls_active_ == 0) break;
      tick.expires_after(10ms);
      co_await tick.async_wait(asio::use_awaitable);
    }
    client_watch_done_ = true;
    client_->close_idle();  // the client's idle timer goes too: run() returns
    progress.finish();
  }

  // The event loop's lag, as phase_figures::loop_lag_ms says (loop_lag.hpp).
  asio::awaitable<void> watch_lag(const std::atomic<bool>& done) {
    return demo::watch_lag(done, lag_ns_, [this] { return phase_now(); });
  }

  const settings& s_;
  mode mode_;
  std::size_t n_;
  std::vector<flaky::phase> sick_schedule_;
  round_robin rr_;
  mode_result result_;
  std::vector<std::unique_ptr<flaky::server>> servers_;
  std::vector<std::uint16_t> ports_;
  std::vector<std::string> origins_;
  steady::time_point start_, end_;
  std::optional<http::client> client_;
  std::optional<levee::pipeline<http::result>> pipe_;  // naive_retry, breaker
  std::optional<levee::upstream> up_;                  // upstream
  std::size_t in_flight_ = 0;
  std::size_t calls_active_ = 0;
  std::uint64_t row_succeeded_ = 0;
  std::vector<double> row_latencies_;
  // Per phase, real ns (sized in the member's order: after sick_schedule_).
  std::vector<std::atomic<std::int64_t>> lag_ns_ =
      std::vector<std::atomic<std::int64_t>>(sick_schedule_.size());
  std::atomic<bool> client_watch_done_{false};
  std::atomic<bool> server_watch_done_{false};
};

std::optional<mode> mode_named(std::string_view name) {
  for (const mode m : all_modes)
    if (name == to_string(m)) return m;
  return std::nullopt;
}

}  // namespace

std::optional<int> replicas_main(int argc, char** argv) {
  // --replicas N and --modes LIST are taken out; the rest is the demo's
  // usual command line.
  int n = 0;
  std::string modes_text;
  bool modes_given = false;
  std::vector<const char*> rest;
  for (int i = 0; i < argc; ++i) {
    const std::string a = argv[i];
    std::optional<std::string> value;
    if ((a == "--replicas" || a == "--modes") && i + 1 < argc) {
      value = argv[++i];
    } else if (a.rfind("--replicas=", 0) == 0 || a.rfind("--modes=", 0) == 0) {
      value = a.substr(a.find('=') + 1);
    }
    if (!value && a == "--quick") {
      // --quick is --scale 0.07 here, not 0.035: the upstream's p99 is
      // checked against 1.2 x the healthy phase's, 40 ms of scenario time
      // over a 200 ms call, and at 0.035 that is 1.4 ms of real time, less
      // than a busy machine's scheduling stalls (docs/demo.md, "Replicas").
      rest.push_back("--scale");
      rest.push_back("0.07");
    } else if (!value) {
      rest.push_back(argv[i]);
    } else if (a.rfind("--replicas", 0) == 0) {
      n = std::atoi(value->c_str());
      if (n < 2 || n > 16) {
        std::cerr << "levee-demo: --replicas needs a number in [2, 16]\n";
        return 2;
      }
    } else {
      modes_text = *value;
      modes_given = true;
    }
  }
  if (n == 0) return std::nullopt;  // not ours: main() reads the whole command line
  const command_line cl = parse_command_line(static_cast<int>(rest.size()), rest.data());
  if (cl.what == command_line::action::help) {
    std::cout << usage
              << "\n  --replicas N       N replicas of the API (one follows the scenario, the "
                 "others\n                     stay healthy), modes naive_retry, breaker, "
                 "upstream\n                     (--modes picks among them); with it, --quick is "
                 "--scale 0.07\n                     (about 45 s in all)\n";
    return 0;
  }
  if (cl.what == command_line::action::error) return 2;
  const settings& s = cl.chosen;
  std::vector<mode> modes(std::begin(all_modes), std::end(all_modes));
  if (modes_given) {
    modes.clear();
    std::istringstream list(modes_text);
    for (std::string name; std::getline(list, name, ',');) {
      const auto m = mode_named(name);
      if (!m) {
        std::cerr << "levee-demo: unknown mode '" << name << "' (with --replicas: naive_retry, "
                  << "breaker, upstream)\n";
        return 2;
      }
      modes.push_back(*m);
    }
    if (modes.empty()) {
      std::cerr << "levee-demo: --modes needs at least one mode\n";
      return 2;
    }
  }
  const auto schedule = flaky::seed_schedule();
  std::cout << "levee demo, replicas: " << s.sessions << " sessions call " << n
            << " replicas of a recommendation API (time scale " << s.scale
            << "); replica 1 follows the seed's scenario:\n"
            << flaky::describe(schedule) << "the other " << n - 1
            << " stay healthy (200 ms, capacity " << schedule.front().capacity << " each)\nmodes: ";
  for (const auto m : modes) std::cout << to_string(m) << ' ';
  std::cout << "\n\n" << std::flush;

  std::vector<mode_result> results;
  for (const auto m : modes) results.push_back(run(s, m, n, schedule).go());

  print_tables(schedule, results);
  int status = 0;
  for (const auto& r : results) {
    if (r.which != mode::upstream) continue;
    const claims c = check_upstream(schedule, r.phases);
    std::cout << "\nupstream: " << (c.met() ? "every claim met" : "claims missed") << '\n';
    for (const auto& why : c.missed) std::cout << "  " << why << '\n';
  }
  std::error_code ec;
  std::filesystem::create_directories(s.out, ec);
  const std::string csv = s.out + "/replicas.csv", png = s.out + "/replicas.png";
  write_timeline(s, schedule, results, csv);
  std::cout << "\ntimeline: " << csv << '\n';
  if (s.chart) {
    if (draw_chart(results, schedule, s, n, csv, png))
      std::cout << "chart:    " << png << '\n';
    else
      std::cout << "chart:    not drawn (is gnuplot installed?)\n";
  }
  if (!s.summary.empty()) {
    const run_info info{.replicas = n,
                        .attempt_timeout = scaled(s, attempt_deadline),
                        .retry_timeout = scaled(s, retry_deadline),
                        .upstream = upstream_options_for(s)};
    if (!write_summary(s, info, schedule, results)) {
      std::cerr << "levee-demo: cannot write " << s.summary << '\n';
      status = 1;
    } else {
      std::cout << "summary:  " << s.summary << '\n';
    }
  }
  return status;
}

}  // namespace demo::replicas
