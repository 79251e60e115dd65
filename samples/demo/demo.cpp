// levee-demo: the seed's cascading failure, on loopback, time-scaled.
//
// An agent calls a product recommendation API during peak hours. The API is
// healthy at 200 ms, then degrades (15 % errors, latency rising to 8 s), then
// fails outright, then heals. 1,000 concurrent sessions call it. The same
// schedule runs once per mode:
//   naive_retry           each session retries failures up to 3 times, no breaker
//   breaker               each call guarded by a levee circuit breaker
//   breaker_retry_budget  retries under a shared retry budget, each attempt
//                         guarded by the breaker
// and the demo prints, per phase and side by side, what each mode did to the
// API and to the sessions. Run with --help.
#include <levee/http.hpp>
#include <levee/levee.hpp>

#include <flaky/schedule.hpp>
#include <flaky/server.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <iomanip>
#include <iostream>
#include <map>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <unistd.h>

namespace asio = boost::asio;
namespace http = levee::http;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using nanos = std::chrono::nanoseconds;

namespace {

const char* const usage = R"(levee-demo: the seed's cascading failure, with and without levee.

usage: levee-demo [options]

Starts a flaky recommendation API on 127.0.0.1 (healthy at 200 ms; 15 % errors
with latency rising to 8 s; an outright failure; healed) and 1,000 sessions that
call it, once per mode, and prints what each mode did, phase by phase.

options:
  --scale F          time scale of the scenario (default 0.1: its 200 s run in
                     20 s per mode, about a minute in all); durations printed
                     are scenario time (real time / F)
  --quick            --scale 0.035: the whole run in under 30 s (CI)
  --sessions N       concurrent sessions (default 1000)
  --modes LIST       comma-separated, from naive_retry, breaker,
                     breaker_retry_budget (default: all three)
  --out DIR          where the timeline and the chart go (default demo-out)
  --summary FILE     also write the figures as JSON to FILE
  --metrics-out FILE write the breakers' final metrics to FILE (Prometheus
                     text format 0.0.4)
  --metrics-port N   serve the running breaker's metrics at
                     http://127.0.0.1:N/metrics (default 0: any free port,
                     printed at the start)
  --no-chart         do not run gnuplot
  --help             this text

outputs:
  a progress line while running; a table per phase; DIR/timeline.csv (one row
  per 100 ms of real time: state, downstream requests, client p99); DIR/demo.png
  (drawn by gnuplot from the CSV); the JSON summary with --summary.
)";

// ---- settings ---------------------------------------------------------------

struct settings {
  double scale = 0.1;
  int sessions = 1000;
  std::vector<std::string> modes = {"naive_retry", "breaker", "breaker_retry_budget"};
  std::string out = "demo-out";
  std::string summary;
  std::string metrics_out;
  std::uint16_t metrics_port = 0;
  bool chart = true;
};

nanos scaled(const settings& s, nanos scenario) {
  return nanos(static_cast<std::int64_t>(static_cast<double>(scenario.count()) * s.scale));
}
double scenario_ms(const settings& s, nanos real) {
  return std::chrono::duration<double, std::milli>(real).count() / s.scale;
}

// ---- measurements -----------------------------------------------------------

struct phase_figures {
  std::uint64_t offered = 0;         // calls made by sessions
  std::uint64_t succeeded = 0;       // calls that got a 2xx in the end
  std::uint64_t fast_failed = 0;     // rejected by levee without calling the API
  std::uint64_t downstream = 0;      // requests the API received
  std::size_t peak_in_flight = 0;    // attempts in flight at once (client side)
  std::size_t peak_waiting = 0;      // requests waiting for a pooled connection at once
  std::vector<double> latencies_ms;  // per call, scenario ms

  double percentile(double p) const {
    if (latencies_ms.empty()) return 0;
    std::vector<double> v = latencies_ms;
    const auto k = static_cast<std::size_t>(
        std::clamp(p * static_cast<double>(v.size() - 1), 0.0, static_cast<double>(v.size() - 1)));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
  }
  double max() const {
    return latencies_ms.empty() ? 0 : *std::max_element(latencies_ms.begin(), latencies_ms.end());
  }
};

struct timeline_row {
  double t_ms = 0;  // real time since the start of the mode
  std::size_t phase = 0;
  int state = 0;                 // 0 closed, 1 half-open, 2 open, -1 no breaker
  std::uint64_t downstream = 0;  // requests the API received in this row
  std::uint64_t offered = 0;
  double p99_ms = 0;  // scenario ms, calls that finished in this row
  std::size_t in_flight = 0;
  std::size_t waiting = 0;
};

struct mode_result {
  std::string name;
  std::vector<phase_figures> phases;
  std::vector<timeline_row> timeline;
  std::optional<double> recovery_to_closed_ms;  // scenario ms from "healed" to CLOSED
  levee::detail::call_counters breaker_counters{};
  std::vector<levee::named_metrics> metrics;  // the breaker's, at the end
};

// ---- /metrics ---------------------------------------------------------------

/// Serves the current mode's Prometheus exposition at /metrics on 127.0.0.1.
/// The socket listens from construction to the end of the program (a scrape
/// between two modes waits in the backlog); each mode serves it on its own
/// io_context, between `start` and `stop`.
class metrics_endpoint {
 public:
  explicit metrics_endpoint(std::uint16_t port) {
    asio::ip::tcp::acceptor acceptor(home_);
    const asio::ip::tcp::endpoint at(asio::ip::make_address("127.0.0.1"), port);
    acceptor.open(at.protocol());
    acceptor.set_option(asio::socket_base::reuse_address(true));
    acceptor.bind(at);
    acceptor.listen();
    port_ = acceptor.local_endpoint().port();
    socket_ = acceptor.release();
  }
  ~metrics_endpoint() {
    if (!acceptor_) ::close(socket_);  // else the acceptor owns it and closes it
  }

  void start(asio::io_context& ioc, std::function<std::string()> text) {
    text_ = std::move(text);
    acceptor_.emplace(ioc, asio::ip::tcp::v4(), socket_);
    asio::co_spawn(ioc, serve(), asio::detached);
  }

  void stop() {  // the pending accept ends; the socket stays open for the next mode
    if (!acceptor_) return;
    acceptor_->release();
    acceptor_.reset();  // before its io_context goes
  }

  std::uint16_t port() const { return port_; }

 private:
  asio::awaitable<void> serve() {
    for (;;) {
      auto [ec, socket] = co_await acceptor_->async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      boost::beast::tcp_stream stream(std::move(socket));
      stream.expires_after(2s);
      boost::beast::flat_buffer buffer;
      boost::beast::http::request<boost::beast::http::string_body> req;
      auto [rec, n] = co_await boost::beast::http::async_read(stream, buffer, req,
                                                              asio::as_tuple(asio::use_awaitable));
      if (rec) continue;
      boost::beast::http::response<boost::beast::http::string_body> res(
          req.target() == "/metrics" ? boost::beast::http::status::ok
                                     : boost::beast::http::status::not_found,
          req.version());
      res.set(boost::beast::http::field::content_type, "text/plain; version=0.0.4");
      res.body() = req.target() == "/metrics" ? text_() : "try /metrics\n";
      res.keep_alive(false);
      res.prepare_payload();
      (void)co_await boost::beast::http::async_write(stream, res,
                                                     asio::as_tuple(asio::use_awaitable));
    }
  }

  asio::io_context home_;  // only to open the socket
  asio::ip::tcp::acceptor::native_handle_type socket_;
  std::uint16_t port_;
  std::function<std::string()> text_;
  std::optional<asio::ip::tcp::acceptor> acceptor_;
};

int state_code(levee::circuit_state s) {
  switch (s) {
    case levee::circuit_state::closed:
      return 0;
    case levee::circuit_state::half_open:
      return 1;
    case levee::circuit_state::open:
    case levee::circuit_state::forced_open:
      return 2;
    case levee::circuit_state::disabled:
    case levee::circuit_state::metrics_only:
      return 0;
  }
  return -1;
}

// ---- one mode ---------------------------------------------------------------

class run {
 public:
  run(const settings& s, std::string mode, std::vector<flaky::phase> schedule,
      metrics_endpoint* metrics)
      : s_(s), mode_(std::move(mode)), schedule_(std::move(schedule)), metrics_(metrics) {
    result_.name = mode_;
    result_.phases.resize(schedule_.size());
  }

  mode_result go() {
    // The API, on its own thread.
    asio::io_context server_ioc(1);
    flaky::server api(server_ioc.get_executor(), schedule_, {.time_scale = s_.scale, .seed = 42});
    port_ = api.start();
    api_ = &api;
    std::thread server_thread([&] { server_ioc.run(); });

    // The agent: sessions, client, and the mode's guards, on this thread.
    asio::io_context ioc(1);
    client_.emplace(ioc.get_executor(), http::client_options{.max_connections_per_host = 256,
                                                             .timeout = scaled(s_, 10s),
                                                             .body_limit = 64 * 1024,
                                                             .idle_timeout = scaled(s_, 10s)});
    levee::breaker_options bo{.failure_rate_threshold = 0.5,
                              .window = scaled(s_, 10s),
                              .minimum_calls = 20,
                              .open_duration = scaled(s_, 5s),
                              .slow_call_duration = scaled(s_, 8s),
                              .slow_call_rate_threshold = 0.5};
    bo.classifier = http::classify;
    // The breaker comes from a registry, named after the API's host, so that
    // /metrics and --metrics-out expose it.
    registry_.emplace(ioc, levee::registry_options{.defaults = bo, .idle_timeout = {}});
    breaker_ = registry_->get("recommendation-api (" + mode_ + ")");
    if (metrics_) metrics_->start(ioc, [this] { return registry_->prometheus_text(); });
    naive_.emplace(levee::retry_options{.max_attempts = 4,
                                        .initial_delay = scaled(s_, 100ms),
                                        .multiplier = 1,
                                        .max_delay = scaled(s_, 100ms),
                                        .jitter = levee::jitter_kind::none,
                                        .retryable = http::retryable});
    budgeted_.emplace(levee::retry_options{
        .max_attempts = 4,
        .initial_delay = scaled(s_, 100ms),
        .multiplier = 2,
        .max_delay = scaled(s_, 2s),
        .jitter = levee::jitter_kind::full,
        .seed = 7,
        .retryable = http::retryable,
        .budget = std::make_shared<levee::retry_budget>(levee::retry_budget_options{
            .ratio = 0.2, .min_retries_per_second = 10 / s_.scale, .ttl = scaled(s_, 10s)})});

    start_ = steady::now();
    end_ = start_ + api.length();
    std::mt19937_64 rng(1);
    for (int i = 0; i < s_.sessions; ++i) {
      asio::co_spawn(ioc, session(rng()), asio::detached);
    }
    asio::co_spawn(ioc, sample(), asio::detached);
    ioc.run();

    api.stop();
    server_thread.join();
    result_.breaker_counters = breaker_->counters();
    if (guarded()) result_.metrics = registry_->metrics();
    // Everything bound to `ioc` goes before it.
    client_.reset();
    breaker_.reset();
    registry_.reset();
    return std::move(result_);
  }

 private:
  bool guarded() const { return mode_ != "naive_retry"; }

  std::size_t phase_now() const { return api_->phase_index(); }

  // One call, as the mode makes it. Returns whether it succeeded in the end and
  // whether levee refused it.
  asio::awaitable<std::pair<bool, bool>> call() {
    const std::string url = "http://127.0.0.1:" + std::to_string(port_) + "/recommendations";
    auto attempt = [&]() -> asio::awaitable<http::result> {
      ++in_flight_;
      auto& f = result_.phases[phase_now()];
      f.peak_in_flight = std::max(f.peak_in_flight, in_flight_);
      auto r = co_await http::http_get(*client_, url, http::nothrow);
      --in_flight_;
      co_return r;
    };
    http::result r;
    if (mode_ == "naive_retry") {
      r = co_await levee::retry(*naive_, attempt);
    } else if (mode_ == "breaker") {
      r = co_await (*breaker_)(attempt());
    } else {
      r = co_await levee::retry(*budgeted_, [&] { return (*breaker_)(attempt()); });
    }
    const auto& [ec, res] = r;
    co_return std::pair(!ec && res.result_int() / 100 == 2, levee::is_rejection(ec));
  }

  asio::awaitable<void> session(std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    asio::steady_timer think(co_await asio::this_coro::executor);
    // Sessions start spread over the first think time.
    think.expires_after(
        nanos(std::uniform_int_distribution<std::int64_t>(0, scaled(s_, 10s).count())(rng)));
    co_await think.async_wait(asio::use_awaitable);
    while (steady::now() < end_) {
      const auto t0 = steady::now();
      const std::size_t phase = phase_now();
      ++calls_active_;
      auto [ok, rejected] = co_await call();
      --calls_active_;
      const auto took = steady::now() - t0;
      auto& f = result_.phases[phase];
      ++f.offered;
      ++row_offered_;
      f.succeeded += ok;
      f.fast_failed += rejected;
      const double ms = scenario_ms(s_, took);
      f.latencies_ms.push_back(ms);
      row_latencies_.push_back(ms);
      // Think time: 5 to 15 s of scenario time between a session's calls, so
      // 1,000 sessions offer about 100 calls per second.
      think.expires_after(nanos(std::uniform_int_distribution<std::int64_t>(
          scaled(s_, 5s).count(), scaled(s_, 15s).count())(rng)));
      co_await think.async_wait(asio::use_awaitable);
    }
  }

  // Every 10 ms: the breaker's state (for the recovery time); every 100 ms: a
  // timeline row. Also the progress line.
  asio::awaitable<void> sample() {
    asio::steady_timer tick(co_await asio::this_coro::executor);
    std::uint64_t last_downstream = 0;
    auto next_row = start_ + 100ms;
    auto next_progress = start_;
    const std::size_t healed = schedule_.size() - 1;
    while (steady::now() < end_ + scaled(s_, 10s)) {
      const auto now = steady::now();
      const std::size_t phase = phase_now();
      const auto state = breaker_->state();
      const auto waiting = client_->stats().waiting;
      auto& f = result_.phases[phase];
      f.peak_waiting = std::max(f.peak_waiting, waiting);
      if (guarded() && phase == healed && !result_.recovery_to_closed_ms &&
          state == levee::circuit_state::closed) {
        result_.recovery_to_closed_ms = scenario_ms(s_, (now - start_) - api_->phase_start(healed));
      }
      if (now >= next_row) {
        const auto downstream = api_->stats().requests;
        timeline_row row;
        row.t_ms = std::chrono::duration<double, std::milli>(now - start_).count();
        row.phase = phase;
        row.state = guarded() ? state_code(state) : -1;
        row.downstream = downstream - last_downstream;
        row.offered = std::exchange(row_offered_, 0);
        if (!row_latencies_.empty()) {
          std::sort(row_latencies_.begin(), row_latencies_.end());
          row.p99_ms = row_latencies_[static_cast<std::size_t>(
              0.99 * static_cast<double>(row_latencies_.size() - 1))];
        }
        row_latencies_.clear();
        row.in_flight = in_flight_;
        row.waiting = waiting;
        last_downstream = downstream;
        result_.timeline.push_back(row);
        next_row += 100ms;
      }
      if (now >= next_progress) {
        std::fprintf(stderr,
                     "\r  %-21s %-10s t=%4.0fs/%.0fs  offered %7llu  downstream %7llu  in flight "
                     "%4zu  %s   ",
                     mode_.c_str(), schedule_[phase].name.c_str(),
                     scenario_ms(s_, now - start_) / 1000, scenario_ms(s_, api_->length()) / 1000,
                     static_cast<unsigned long long>(total_offered()),
                     static_cast<unsigned long long>(api_->stats().requests), in_flight_,
                     guarded() ? levee::to_string(state) : "no breaker");
        next_progress += 500ms;
      }
      if (now >= end_ && calls_active_ == 0) break;
      tick.expires_after(10ms);
      co_await tick.async_wait(asio::use_awaitable);
    }
    for (std::size_t p = 0; p < schedule_.size(); ++p) {
      result_.phases[p].downstream = api_->requests_in_phase(p);
    }
    if (metrics_) metrics_->stop();
    client_->close_idle();  // the client's idle timer goes too: run() returns
    std::fprintf(stderr, "\n");
  }

  std::uint64_t total_offered() const {
    std::uint64_t n = 0;
    for (const auto& f : result_.phases) n += f.offered;
    return n;
  }

  const settings& s_;
  std::string mode_;
  std::vector<flaky::phase> schedule_;
  metrics_endpoint* metrics_;
  mode_result result_;
  flaky::server* api_ = nullptr;
  std::uint16_t port_ = 0;
  steady::time_point start_, end_;
  std::optional<http::client> client_;
  std::optional<levee::breaker_registry> registry_;
  std::shared_ptr<levee::circuit_breaker> breaker_;
  std::optional<levee::retry_policy> naive_, budgeted_;
  std::size_t in_flight_ = 0;
  std::size_t calls_active_ = 0;
  std::uint64_t row_offered_ = 0;
  std::vector<double> row_latencies_;
};

// ---- reporting --------------------------------------------------------------

std::string fixed(double v, int digits = 0) {
  std::ostringstream o;
  o << std::fixed << std::setprecision(digits) << v;
  return o.str();
}

std::string human_ms(double ms) {
  if (ms >= 10000) return fixed(ms / 1000, 1) + " s";
  if (ms >= 1000) return fixed(ms / 1000, 2) + " s";
  return fixed(ms) + " ms";
}

void print_tables(const std::vector<flaky::phase>& schedule,
                  const std::vector<mode_result>& results) {
  const int label = 34, column = 22;
  auto header = [&](const std::string& title) {
    std::cout << '\n' << std::left << std::setw(label) << title;
    for (const auto& r : results) std::cout << std::right << std::setw(column) << r.name;
    std::cout << '\n'
              << std::string(
                     static_cast<std::size_t>(label + column * static_cast<int>(results.size())),
                     '-')
              << '\n';
  };
  auto line = [&](const std::string& name, auto value) {
    std::cout << std::left << std::setw(label) << name;
    for (const auto& r : results) std::cout << std::right << std::setw(column) << value(r);
    std::cout << '\n';
  };
  for (std::size_t p = 0; p < schedule.size(); ++p) {
    header("phase " + std::to_string(p + 1) + ": " + schedule[p].name);
    line("requests offered by sessions",
         [&](const mode_result& r) { return std::to_string(r.phases[p].offered); });
    line("requests that reached the API",
         [&](const mode_result& r) { return std::to_string(r.phases[p].downstream); });
    line("amplification", [&](const mode_result& r) {
      const auto& f = r.phases[p];
      return f.offered
                 ? fixed(static_cast<double>(f.downstream) / static_cast<double>(f.offered), 2) +
                       " x"
                 : std::string("-");
    });
    line("client success rate", [&](const mode_result& r) {
      const auto& f = r.phases[p];
      return f.offered
                 ? fixed(100.0 * static_cast<double>(f.succeeded) / static_cast<double>(f.offered),
                         1) +
                       " %"
                 : std::string("-");
    });
    line("latency p50",
         [&](const mode_result& r) { return human_ms(r.phases[p].percentile(0.5)); });
    line("latency p99",
         [&](const mode_result& r) { return human_ms(r.phases[p].percentile(0.99)); });
    line("latency max", [&](const mode_result& r) { return human_ms(r.phases[p].max()); });
    line("fast-fails (not sent)",
         [&](const mode_result& r) { return std::to_string(r.phases[p].fast_failed); });
    line("peak requests in flight",
         [&](const mode_result& r) { return std::to_string(r.phases[p].peak_in_flight); });
    line("peak pool waiters",
         [&](const mode_result& r) { return std::to_string(r.phases[p].peak_waiting); });
  }
  header("after the API healed");
  line("time until the breaker closed", [&](const mode_result& r) {
    if (r.name == "naive_retry") return std::string("no breaker");
    return r.recovery_to_closed_ms ? human_ms(*r.recovery_to_closed_ms) : std::string("never");
  });
  std::cout << "\n(durations are scenario time: real time divided by the time scale)\n";
}

struct totals {
  std::uint64_t offered = 0, downstream = 0, succeeded = 0;
};
totals sum(const mode_result& r) {
  totals t;
  for (const auto& f : r.phases) {
    t.offered += f.offered;
    t.downstream += f.downstream;
    t.succeeded += f.succeeded;
  }
  return t;
}

std::size_t outage_phase(const std::vector<flaky::phase>& schedule) {
  for (std::size_t i = 0; i < schedule.size(); ++i)
    if (schedule[i].name == "outage") return i;
  return schedule.size() - 1;
}

void write_summary(const settings& s, const std::vector<flaky::phase>& schedule,
                   const std::vector<mode_result>& results) {
  std::ofstream out(s.summary);
  out << "{\n  \"scale\": " << s.scale << ",\n  \"sessions\": " << s.sessions
      << ",\n  \"modes\": {";
  const std::size_t outage = outage_phase(schedule);
  for (std::size_t m = 0; m < results.size(); ++m) {
    const auto& r = results[m];
    const totals t = sum(r);
    out << (m ? "," : "") << "\n    \"" << r.name << "\": {\n"
        << "      \"offered_requests\": " << t.offered << ",\n"
        << "      \"downstream_requests\": " << t.downstream << ",\n"
        << "      \"amplification\": "
        << (t.offered ? static_cast<double>(t.downstream) / static_cast<double>(t.offered) : 0)
        << ",\n"
        << "      \"success_rate\": "
        << (t.offered ? static_cast<double>(t.succeeded) / static_cast<double>(t.offered) : 0)
        << ",\n"
        << "      \"outage_p99_ms\": " << r.phases[outage].percentile(0.99) << ",\n"
        << "      \"recovery_to_closed_ms\": "
        << (r.recovery_to_closed_ms ? fixed(*r.recovery_to_closed_ms, 1) : std::string("null"))
        << ",\n"
        << "      \"fast_failed\": " <<
        [&] {
          std::uint64_t n = 0;
          for (const auto& f : r.phases) n += f.fast_failed;
          return n;
        }()
        << ",\n"
        << "      \"phases\": [";
    for (std::size_t p = 0; p < r.phases.size(); ++p) {
      const auto& f = r.phases[p];
      out << (p ? "," : "") << "\n        {\"name\": \"" << schedule[p].name
          << "\", \"offered\": " << f.offered << ", \"downstream\": " << f.downstream
          << ", \"succeeded\": " << f.succeeded << ", \"fast_failed\": " << f.fast_failed
          << ", \"p50_ms\": " << f.percentile(0.5) << ", \"p99_ms\": " << f.percentile(0.99)
          << ", \"max_ms\": " << f.max() << ", \"peak_in_flight\": " << f.peak_in_flight
          << ", \"peak_pool_waiters\": " << f.peak_waiting << "}";
    }
    out << "\n      ]\n    }";
  }
  out << "\n  }\n}\n";
}

void write_timeline(const settings& s, const std::vector<flaky::phase>& schedule,
                    const std::vector<mode_result>& results, const std::string& path) {
  std::ofstream out(path);
  out << "mode,t_real_ms,t_scenario_s,phase,state,downstream_per_s,offered_per_s,client_p99_ms,in_"
         "flight,pool_waiting\n";
  for (const auto& r : results) {
    for (const auto& row : r.timeline) {
      // A row covers 100 ms of real time, that is 0.1 / scale s of scenario time.
      const double per_s = 1.0 / (0.1 / s.scale);
      out << r.name << ',' << fixed(row.t_ms, 0) << ',' << fixed(row.t_ms / 1000 / s.scale, 2)
          << ',' << schedule[row.phase].name << ',' << row.state << ','
          << fixed(static_cast<double>(row.downstream) * per_s, 1) << ','
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
  const std::map<std::string, std::string> colour = {
      {"naive_retry", "#d62728"}, {"breaker", "#1f77b4"}, {"breaker_retry_budget", "#2ca02c"}};
  auto plot = [&](const char* ylabel, int column, bool guarded_only) {
    g << "set ylabel '" << ylabel << "'\nplot ";
    bool first = true;
    for (const auto& r : results) {
      if (guarded_only && r.name == "naive_retry") continue;
      g << (first ? "" : ", ") << "'" << csv << "' using 3:(strcol(1) eq '" << r.name << "' ? $"
        << column << " : 1/0) with " << (column == 5 ? "steps" : "lines") << " lw 2 lc rgb '"
        << colour.at(r.name) << "' title '" << r.name << "'";
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

std::optional<settings> parse(int argc, char** argv) {
  settings s;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string { return i + 1 < argc ? argv[++i] : std::string(); };
    if (arg == "--help" || arg == "-h") {
      std::cout << usage;
      std::exit(0);
    } else if (arg == "--scale") {
      const std::string v = value();
      double x = 0;
      if (std::from_chars(v.data(), v.data() + v.size(), x).ec != std::errc() || !(x > 0) ||
          x > 10) {
        std::cerr << "levee-demo: --scale needs a number in (0, 10]\n";
        return std::nullopt;
      }
      s.scale = x;
    } else if (arg == "--quick") {
      s.scale = 0.035;
    } else if (arg == "--sessions") {
      const std::string v = value();
      int n = 0;
      if (std::from_chars(v.data(), v.data() + v.size(), n).ec != std::errc() || n < 1 ||
          n > 100000) {
        std::cerr << "levee-demo: --sessions needs a number in [1, 100000]\n";
        return std::nullopt;
      }
      s.sessions = n;
    } else if (arg == "--modes") {
      s.modes.clear();
      std::stringstream list(value());
      std::string m;
      while (std::getline(list, m, ',')) {
        if (m != "naive_retry" && m != "breaker" && m != "breaker_retry_budget") {
          std::cerr << "levee-demo: unknown mode '" << m << "'\n";
          return std::nullopt;
        }
        s.modes.push_back(m);
      }
      if (s.modes.empty()) return std::nullopt;
    } else if (arg == "--out") {
      s.out = value();
    } else if (arg == "--summary") {
      s.summary = value();
    } else if (arg == "--metrics-out") {
      s.metrics_out = value();
    } else if (arg == "--metrics-port") {
      const std::string v = value();
      unsigned p = 0;
      if (std::from_chars(v.data(), v.data() + v.size(), p).ec != std::errc() || p > 65535) {
        std::cerr << "levee-demo: --metrics-port needs a port number\n";
        return std::nullopt;
      }
      s.metrics_port = static_cast<std::uint16_t>(p);
    } else if (arg == "--no-chart") {
      s.chart = false;
    } else {
      std::cerr << "levee-demo: unknown option " << arg << " (try --help)\n";
      return std::nullopt;
    }
  }
  return s;
}

}  // namespace

int main(int argc, char** argv) {
  auto parsed = parse(argc, argv);
  if (!parsed) return 2;
  const settings& s = *parsed;
  const auto schedule = flaky::seed_schedule();
  std::cout << "levee demo: " << s.sessions
            << " sessions call a recommendation API that follows the seed's "
            << "scenario (time scale " << s.scale << "):\n"
            << flaky::describe(schedule) << "modes: ";
  for (const auto& m : s.modes) std::cout << m << ' ';
  std::cout << "\n\n";

  metrics_endpoint endpoint(s.metrics_port);
  std::cout << "metrics served at http://127.0.0.1:" << endpoint.port()
            << "/metrics while it runs\n\n"
            << std::flush;
  std::vector<mode_result> results;
  for (const auto& mode : s.modes) results.push_back(run(s, mode, schedule, &endpoint).go());

  print_tables(schedule, results);

  std::string mkdir = "mkdir -p '" + s.out + "'";
  if (std::system(mkdir.c_str()) != 0) std::cerr << "levee-demo: cannot create " << s.out << '\n';
  const std::string csv = s.out + "/timeline.csv", png = s.out + "/demo.png";
  write_timeline(s, schedule, results, csv);
  std::cout << "\ntimeline: " << csv << '\n';
  if (s.chart) {
    if (draw_chart(results, schedule, s, csv, png)) {
      std::cout << "chart:    " << png << '\n';
    } else {
      std::cout
          << "chart:    not drawn (is gnuplot installed? the demo command installs gnuplot-nox)\n";
    }
  }
  if (!s.summary.empty()) {
    write_summary(s, schedule, results);
    std::cout << "summary:  " << s.summary << '\n';
  }
  if (!s.metrics_out.empty()) {
    std::vector<levee::named_metrics> all;
    for (const auto& r : results) all.insert(all.end(), r.metrics.begin(), r.metrics.end());
    std::ofstream out(s.metrics_out);
    levee::write_prometheus(out, all);
    std::cout << "metrics:  " << s.metrics_out << '\n';
  }
}
