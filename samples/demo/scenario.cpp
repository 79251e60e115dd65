// The demo's levee code: one mode of the seed's cascading failure.
//
// An agent calls a product recommendation API during peak hours. 1,000
// sessions share one HTTP client (a pool of 256 connections, a 10 s deadline
// per request); each mode makes the same calls through its own
// levee::pipeline (docs/pipeline.md):
//   naive_retry           retry each failure up to 3 times, no breaker
//   breaker               guard each call with a circuit breaker
//   breaker_retry_budget  retry under a shared retry budget, each attempt guarded
//   breaker_adaptive      as breaker_retry_budget, an adaptive limit inside the breaker
//   breaker_throttle      adaptive throttling (graded shedding) outside the breaker
#include "scenario.hpp"

#include "config_reload.hpp"
#include "loop_lag.hpp"
#include "metrics_endpoint.hpp"
#include "progress.hpp"

#include <levee/http.hpp>
#include <levee/levee.hpp>
#include <levee/pipeline.hpp>

#include <flaky/server.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <cstdio>
#include <memory>
#include <random>
#include <thread>
#include <utility>

namespace demo {

namespace asio = boost::asio;
namespace http = levee::http;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;

const char* to_string(mode m) noexcept {
  switch (m) {
    case mode::naive_retry:
      return "naive_retry";
    case mode::breaker:
      return "breaker";
    case mode::breaker_retry_budget:
      return "breaker_retry_budget";
    case mode::breaker_adaptive:
      return "breaker_adaptive";
    case mode::breaker_throttle:
      return "breaker_throttle";
  }
  return "?";
}

std::optional<mode> mode_from_string(std::string_view name) noexcept {
  for (const mode m : all_modes) {
    if (name == to_string(m)) return m;
  }
  return std::nullopt;
}

namespace {

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

class run {
 public:
  run(const settings& s, mode m, std::vector<flaky::phase> schedule, metrics_endpoint* metrics)
      : s_(s), mode_(m), schedule_(std::move(schedule)), metrics_(metrics) {
    result_.which = mode_;
    result_.phases.resize(schedule_.size());
  }
  run(const run&) = delete;
  run& operator=(const run&) = delete;

  mode_result go() {
    // The API, on its own thread.
    asio::io_context server_ioc(1);
    flaky::server api(server_ioc.get_executor(), schedule_, {.time_scale = s_.scale, .seed = 42});
    port_ = api.start();
    api_ = &api;
    asio::co_spawn(server_ioc, watch_lag(server_watch_done_), asio::detached);
    std::thread server_thread([&] { server_ioc.run(); });

    // The agent: sessions, client, and the mode's guards, on this thread.
    asio::io_context ioc(1);
    client_.emplace(ioc.get_executor(), client_options_for(s_));
    // The breaker comes from a registry, named after the API's host, so that
    // /metrics, --metrics-out and --config (reloaded on SIGHUP) reach it.
    levee::registry_options ro{.defaults = breaker_options_for(s_), .idle_timeout = {}};
    if (mode_ == mode::breaker_adaptive) ro.limits = limit_options();
    registry_.emplace(ioc, std::move(ro));
    const std::string key = "recommendation-api (" + std::string(to_string(mode_)) + ")";
    guards_ = registry_->guards(key);  // its state, for the timeline
    if (metrics_) metrics_->start(ioc, [this] { return registry_->prometheus_text(); });
    reload_ = watch_config(ioc.get_executor(), *registry_, s_.config);  // --config
    // The mode's pipeline: its layers in levee's order, one rule (HTTP's) for
    // all of them; the breaker (and the limit) is the registry's for `key`.
    levee::pipeline_options<http::result> po{.name = key, .rules = http::rules()};
    switch (mode_) {
      case mode::naive_retry:  // retry each failure up to 3 times, no breaker
        po.retry = levee::retry_options{.max_attempts = 4,
                                        .initial_delay = scaled(s_, 100ms),
                                        .multiplier = 1,
                                        .max_delay = scaled(s_, 100ms),
                                        .jitter = levee::jitter_kind::none};
        pipe_.emplace(ioc, std::move(po));
        break;
      case mode::breaker:
        break;
      case mode::breaker_retry_budget:
      case mode::breaker_adaptive:
        // Retries under a shared budget, each attempt guarded by the breaker
        // (and, in breaker_adaptive, the registry's limit inside it: one frame,
        // one clock read when the attempt starts and one when it ends).
        po.retry = levee::retry_options{
            .max_attempts = 4,
            .initial_delay = scaled(s_, 100ms),
            .multiplier = 2,
            .max_delay = scaled(s_, 2s),
            .jitter = levee::jitter_kind::full,
            .seed = 7,
            .budget = std::make_shared<levee::retry_budget>(levee::retry_budget_options{
                .ratio = 0.2, .min_retries_per_second = 10 / s_.scale, .ttl = scaled(s_, 10s)})};
        break;
      case mode::breaker_throttle:
        // The throttle outside the breaker: it sheds a share of calls that
        // grows as the API's success rate falls; the breaker still refuses
        // every call once the failure rate crosses its threshold. A call the
        // breaker refuses is neither a request nor an accept to the throttle.
        // The SRE book's K = 2, over a window of 10 s of scenario time (the
        // breaker's), so that it follows the degradation's ramp and lets
        // everything through again soon after the heal.
        po.throttle = levee::throttle_options{.k = 2.0, .window = scaled(s_, 10s), .buckets = 10};
        break;
    }
    if (!pipe_) pipe_.emplace(ioc.get_executor(), std::move(po), *registry_, key);

    start_ = steady::now();
    end_ = start_ + api.length();
    std::mt19937_64 rng(1);
    for (int i = 0; i < s_.sessions; ++i) {
      asio::co_spawn(ioc, session(rng()), asio::detached);
    }
    asio::co_spawn(ioc, sample(), asio::detached);
    asio::co_spawn(ioc, watch_lag(client_watch_done_), asio::detached);
    ioc.run();

    server_watch_done_ = true;
    api.stop();
    server_thread.join();
    for (std::size_t p = 0; p < schedule_.size(); ++p) {
      result_.phases[p].loop_lag_ms = scenario_ms(s_, nanos(lag_ns_[p].load()));
    }
    if (has_breaker(mode_)) result_.metrics = registry_->metrics();
    result_.limit_metrics = registry_->limit_metrics();
    // Everything bound to `ioc` goes before it.
    client_.reset();
    pipe_.reset();
    guards_ = {};
    registry_.reset();
    return std::move(result_);
  }

 private:
  std::size_t phase_now() const { return api_->phase_index(); }

  // The adaptive limit of mode breaker_adaptive. Gradient2 compares each
  // window's round trip with a long-term one. Here the API's own latency
  // ramps from 200 ms to 8 s in the degrading phase's 60 s, which a long-term
  // average over Gradient2's default 600 windows reads as queueing: the limit
  // falls and gives the API's goodput away (one --quick run: 1,024 calls
  // succeeded in the degradation against naive_retry's 1,443). With 10
  // windows the baseline follows the ramp a few seconds behind, and with
  // rtt_tolerance 1.5 only a round trip 1.5 times that baseline counts as
  // queueing. What that gives (limit events of --quick runs): the limit dips
  // from 100 to about 92 in the ramp's first seconds, when the latency
  // doubles faster than the baseline follows, then grows by queue_size x
  // smoothing (0.8) per window, to about 120 when the breaker opens (50 s
  // into the degradation; 130 if it stayed closed to the end): later the
  // ramp is slower, and the queueing the limit lets in (latency *= in_flight
  // / 100 beyond the capacity of 100) stays under the tolerance. That
  // is enough: beyond its capacity the API completes 100 / latency calls a
  // second whatever the calls in flight, so 100 to 130 in flight gets all of
  // its goodput and adds at most 1.3 x to each call's latency. max_limit 150
  // (1.5 x capacity) bounds the connections the API may hold whatever the
  // estimate. A window lasts 1 s of scenario time (scaled like every
  // duration of the demo), longer than a healthy round trip. The limit
  // starts at the capacity, so a healthy API (about 20 to 60 calls in
  // flight) is never throttled: Gradient2 does not move while fewer than
  // half the limit's calls are in flight.
  levee::adaptive_limit_options limit_options() const {
    levee::adaptive_limit_options lo;
    lo.algorithm = levee::limit_algorithm::gradient2;
    lo.initial_limit = 100;
    lo.min_limit = 20;
    lo.max_limit = 150;
    lo.rtt_tolerance = 1.5;
    lo.long_window = 10;
    lo.sample_window = scaled(s_, 1s);
    lo.classifier = http::classify;
    return lo;
  }

  struct call_outcome {
    bool ok = false;        // a 2xx in the end
    bool rejected = false;  // levee refused the last attempt (levee::is_rejection)
    bool sent = false;      // at least one attempt reached the API
    bool limited = false;   // the adaptive limit refused the last attempt
  };

  // One call, as the mode makes it.
  asio::awaitable<call_outcome> call() {
    bool sent = false;
    const std::string url = "http://127.0.0.1:" + std::to_string(port_) + "/recommendations";
    auto attempt = [&]() -> asio::awaitable<http::result> {
      ++in_flight_;
      sent = true;
      auto& f = result_.phases[phase_now()];
      f.peak_in_flight = std::max(f.peak_in_flight, in_flight_);
      auto r = co_await http::async_get(*client_, url, asio::as_tuple(asio::use_awaitable));
      --in_flight_;
      co_return r;
    };
    const http::result r = co_await (*pipe_)(attempt);
    const auto& [ec, res] = r;
    co_return call_outcome{!ec && res.result_int() / 100 == 2, levee::is_rejection(ec), sent,
                           ec == levee::error::limit_exceeded};
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
      const auto [ok, rejected, sent, limited] = co_await call();
      --calls_active_;
      const auto took = steady::now() - t0;
      auto& f = result_.phases[phase];
      ++f.offered;
      ++row_offered_;
      f.succeeded += ok;
      f.fast_failed += rejected;
      if (limited) {
        ++f.limit_exceeded;
        f.limit_exceeded_after_5s +=
            scenario_ms(s_, (t0 - start_) - api_->phase_start(phase)) >= 5000;
      }
      const double ms = scenario_ms(s_, took);
      f.latencies_ms.push_back(ms);
      // A fast failure: refused by levee without reaching the API (a call
      // whose first attempt reached it and whose retry was refused is not).
      if (rejected && !sent) f.fast_fail_ms.push_back(ms);
      row_latencies_.push_back(ms);
      // Think time: 5 to 15 s of scenario time between a session's calls, so
      // 1,000 sessions offer about 100 calls per second.
      think.expires_after(nanos(std::uniform_int_distribution<std::int64_t>(
          scaled(s_, 5s).count(), scaled(s_, 15s).count())(rng)));
      co_await think.async_wait(asio::use_awaitable);
    }
  }

  // Every 10 ms: the breaker's state (for the recovery time); every 100 ms: a
  // timeline row; every 500 ms: the progress line (progress.hpp).
  asio::awaitable<void> sample() {
    asio::steady_timer tick(co_await asio::this_coro::executor);
    std::uint64_t last_downstream = 0;
    auto next_row = start_ + 100ms;
    auto next_progress = start_;
    progress_line progress(stderr);
    const std::size_t healed = schedule_.size() - 1;
    const bool guarded = has_breaker(mode_);
    while (steady::now() < end_ + scaled(s_, 10s)) {
      const auto now = steady::now();
      const std::size_t phase = phase_now();
      const auto state = guards_.breaker->state();
      const auto waiting = client_->stats().waiting;
      auto& f = result_.phases[phase];
      f.peak_waiting = std::max(f.peak_waiting, waiting);
      if (guarded && phase == healed && !result_.recovery_to_closed_ms &&
          state == levee::circuit_state::closed) {
        result_.recovery_to_closed_ms = scenario_ms(s_, (now - start_) - api_->phase_start(healed));
      }
      if (now >= next_row) {
        const auto downstream = api_->stats().requests;
        timeline_row row;
        row.t_ms = std::chrono::duration<double, std::milli>(now - start_).count();
        row.phase = phase;
        row.state = guarded ? state_code(state) : -1;
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
        progress.print(
            "  %-21s %-10s t=%4.0fs/%.0fs  offered %7llu  downstream %7llu  in flight %4zu  %s",
            to_string(mode_), schedule_[phase].name.c_str(), scenario_ms(s_, now - start_) / 1000,
            scenario_ms(s_, api_->length()) / 1000,
            static_cast<unsigned long long>(total_offered()),
            static_cast<unsigned long long>(api_->stats().requests), in_flight_,
            guarded ? levee::to_string(state) : "no breaker");
        next_progress += 500ms;
      }
      if (now >= end_ && calls_active_ == 0) break;
      tick.expires_after(10ms);
      co_await tick.async_wait(asio::use_awaitable);
    }
    for (std::size_t p = 0; p < schedule_.size(); ++p)
      result_.phases[p].downstream = api_->requests_in_phase(p);
    if (metrics_) metrics_->stop();
    client_watch_done_ = true;
    reload_.reset();        // SIGHUP is ignored until the next mode
    client_->close_idle();  // the client's idle timer goes too: run() returns
    progress.finish();
  }

  // The event loop's lag, as phase_figures::loop_lag_ms says (loop_lag.hpp).
  asio::awaitable<void> watch_lag(const std::atomic<bool>& done) {
    return demo::watch_lag(done, lag_ns_, [this] { return phase_now(); });
  }

  std::uint64_t total_offered() const {
    std::uint64_t n = 0;
    for (const auto& f : result_.phases) n += f.offered;
    return n;
  }

  const settings& s_;
  mode mode_;
  std::vector<flaky::phase> schedule_;
  metrics_endpoint* metrics_;
  mode_result result_;
  flaky::server* api_ = nullptr;
  std::uint16_t port_ = 0;
  steady::time_point start_, end_;
  std::optional<http::client> client_;
  std::optional<levee::breaker_registry> registry_;
  std::unique_ptr<config_reloader<levee::breaker_registry>> reload_;  // --config FILE
  levee::breaker_registry::guard_set guards_;          // the limit: breaker_adaptive only
  std::optional<levee::pipeline<http::result>> pipe_;  // the mode's layers
  std::size_t in_flight_ = 0;
  std::size_t calls_active_ = 0;
  std::uint64_t row_offered_ = 0;
  std::vector<double> row_latencies_;
  // Per phase, real ns (sized in the member's order: after schedule_).
  std::vector<std::atomic<std::int64_t>> lag_ns_ =
      std::vector<std::atomic<std::int64_t>>(schedule_.size());
  std::atomic<bool> client_watch_done_{false};
  std::atomic<bool> server_watch_done_{false};
};

}  // namespace

mode_result run_mode(const settings& s, mode m, const std::vector<flaky::phase>& schedule,
                     metrics_endpoint* metrics) {
  return run(s, m, schedule, metrics).go();
}

// The same breaker in every mode. A call of 6 s or more is slow: 30
// times the healthy 200 ms, and under the dead API's 8 s. What the
// threshold decides is whether the breaker is open when the API dies.
// The dead API answers its 503s after 8 s, so for 8 s nothing tells the
// client it is dead: whatever is sent meanwhile goes to it blind, as many
// calls as the API completes in that time (with an adaptive limit of about
// the capacity, about capacity / 8 s per second). Only the degradation's
// own latency can open the breaker before that, and it rises to 8 s at the
// very moment the API dies: a threshold of 8 s is crossed there and
// then, unless the client queues calls on its own (the breaker modes'
// 600 calls in flight make theirs slow 30 s earlier). With the limit
// inside the breaker, calls take the API's own latency (times at most
// 1.3), so with 8 s the breaker opened 2 s after the death and 28 to 48
// requests reached the dead API (--quick runs); with 6 s it opens about
// 10 s before the death (calls over 6 s from 85 s into the scenario on),
// every later probe is slow, and it stays open through the outage.
//
// Probes get 1 s (five times the healthy 200 ms), not the automatic deadline
// (4 x the p99 seen before the trip: here the degradation's, up to 6 s), so a
// probe into the dead API no longer waits 8 s for its 503: the breaker closes
// within open_duration + 1 s + a probe's 200 ms of the heal (issue 18).
levee::breaker_options breaker_options_for(const settings& s) {
  levee::breaker_options bo{.failure_rate_threshold = 0.5,
                            .window = scaled(s, 10s),
                            .minimum_calls = 20,
                            .open_duration = scaled(s, 5s),
                            .slow_call_duration = scaled(s, 6s),
                            .slow_call_rate_threshold = 0.5,
                            .probe_timeout = scaled(s, 1s)};
  bo.classifier = http::classify;
  return bo;
}

levee::http::client_options client_options_for(const settings& s) {
  return {.max_connections_per_host = 256,
          .timeout = scaled(s, 10s),
          .body_limit = 64 * 1024,
          .idle_timeout = scaled(s, 10s)};
}

}  // namespace demo
