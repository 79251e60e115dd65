// levee's benchmarks (Google Benchmark). Names are stable so that results can
// be compared over time; see bench/README.md for the figures and how to read
// them.
#include <levee/breaker/detail/window_clock.hpp>
#include <levee/http.hpp>
#include <levee/levee.hpp>
#include <levee/pipeline.hpp>
#include <levee/upstream/upstream.hpp>

#include <flaky/server.hpp>
#include <flaky/tls.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <benchmark/benchmark.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <new>
#include <string>
#include <thread>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// ---- allocation counting ------------------------------------------------------
// Every operator new in this program is counted (calls and live bytes), so
// that benchmarks can report allocations per call and bytes per breaker.

#include "counting_new.hpp"

namespace {

bool g_smoke = false;  // --smoke: CI runs every benchmark once, briefly

// ---- the guarded operations ---------------------------------------------------

asio::awaitable<int> trivial(int x) {
  co_return x + 1;
}

asio::awaitable<std::tuple<boost::system::error_code, int>> trivial_tuple(int x) {
  co_return std::tuple(boost::system::error_code(), x + 1);
}

/// Runs `body` as a coroutine on a fresh io_context until it finishes.
template <class Body>
void run_coroutine(Body body) {
  asio::io_context ioc(1);
  asio::co_spawn(ioc, body(), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  ioc.run();
}

void report_allocations(benchmark::State& state, std::uint64_t before) {
  state.counters["allocs_per_call"] = benchmark::Counter(
      static_cast<double>(t_allocations - before), benchmark::Counter::kAvgIterations);
}

// ---- parts: what a layer's hot path is made of --------------------------------

/// One locked read-modify-write on a line this thread owns, back to back: the
/// price of a count in or out, of a spinlock's exchange, of a `shared_ptr`
/// copy (one) and its release (one more).
void bm_parts_locked_add(benchmark::State& state) {
  std::atomic<std::uint64_t> a{0};
  for (auto _ : state) a.fetch_add(1, std::memory_order_relaxed);
  benchmark::DoNotOptimize(a.load(std::memory_order_relaxed));
}

/// One read of the clock the breaker's time window, the throttle and the
/// rate limiter read (`CLOCK_MONOTONIC_COARSE` for `steady_clock` on Linux).
void bm_parts_window_clock(benchmark::State& state) {
  for (auto _ : state) {
    auto now = levee::detail::window_now<std::chrono::steady_clock>();
    benchmark::DoNotOptimize(now);
  }
}

// ---- closed -------------------------------------------------------------------

void bm_closed_bare(benchmark::State& state) {
  const auto allocs = t_allocations;
  run_coroutine([&]() -> asio::awaitable<void> {
    int x = 0;
    for (auto _ : state) {
      x = co_await trivial(x);
      benchmark::DoNotOptimize(x);
    }
  });
  report_allocations(state, allocs);
}

/// The floor of any guard that returns an awaitable: a wrapper coroutine that
/// only awaits the wrapped call. Not a levee feature; it shows what part of
/// closed/guarded is the coroutine frame itself.
template <class T>
asio::awaitable<T> wrapper_only(asio::awaitable<T> aw) {
  T value = co_await std::move(aw);
  co_return value;
}

void bm_closed_wrapper_floor(benchmark::State& state) {
  const auto allocs = t_allocations;
  run_coroutine([&]() -> asio::awaitable<void> {
    int x = 0;
    for (auto _ : state) {
      x = co_await wrapper_only(trivial(x));
      benchmark::DoNotOptimize(x);
    }
  });
  report_allocations(state, allocs);
}

/// `yield_every`: when not 0, the loop lets the io_context run what was
/// posted (a listener's events) every that many calls, as a service's
/// executor does between calls; 0: it never yields.
void guarded_loop(benchmark::State& state, levee::breaker_options options,
                  levee::event_mask listen = 0, unsigned yield_every = 0) {
  asio::io_context ioc(1);
  levee::circuit_breaker breaker(ioc, options);
  std::uint64_t events = 0;
  if (listen) breaker.listen(listen, [&](const levee::breaker_event&) { ++events; });
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        unsigned n = 0;
        for (auto _ : state) {
          x = co_await breaker(trivial(x));
          benchmark::DoNotOptimize(x);
          if (yield_every != 0 && ++n == yield_every) {
            n = 0;
            co_await asio::post(ioc, asio::use_awaitable);
          }
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
  if (breaker.state() != levee::circuit_state::closed) state.SkipWithError("breaker not closed");
  if ((listen & levee::call_events) && events != static_cast<std::uint64_t>(state.iterations()))
    state.SkipWithError("events lost");
  state.counters["events"] = static_cast<double>(events);
}

void bm_closed_guarded(benchmark::State& state) {
  guarded_loop(state, {});
}

/// with_timeout and with_deadline around `trivial()`: the same race (a strand,
/// a timer, a child coroutine); with_deadline also wraps the strand in a
/// levee::deadline_executor, carrying the deadline to the call
/// (docs/deadlines.md). Their difference is what carrying it costs.
template <bool Deadline>
void bm_deadline(benchmark::State& state) {
  const auto allocs = t_allocations;
  run_coroutine([&]() -> asio::awaitable<void> {
    int x = 0;
    for (auto _ : state) {
      if constexpr (Deadline) {
        x = co_await levee::with_deadline(std::chrono::seconds(10), trivial(x));
      } else {
        x = co_await levee::with_timeout(std::chrono::seconds(10), trivial(x));
      }
      benchmark::DoNotOptimize(x);
    }
  });
  report_allocations(state, allocs);
}

/// The upstream's pick alone (sans-I/O, three endpoints): power of two
/// choices, the outstanding count up and down, the outcome recorded; with
/// the latency estimate (the default, 1 s) or on outstanding calls alone (0).
void bm_upstream_pick(benchmark::State& state) {
  levee::detail::endpoint_set set(3, levee::outlier_options{},
                                  std::chrono::nanoseconds(state.range(0)));
  std::uint64_t draw = 1;
  std::chrono::nanoseconds now{0};
  const auto allocs = t_allocations;
  for (auto _ : state) {
    const auto c = set.pick(now, draw += 0x9e3779b97f4a7c15ull);
    benchmark::DoNotOptimize(c.index);
    now += std::chrono::microseconds(1);  // a latency sample of 1 us
    set.complete(c, levee::outcome::success, now);
  }
  report_allocations(state, allocs);
}

/// closed/guarded's call through an upstream of three endpoints: the
/// upstream's breaker, the pick, the endpoint's breaker, the attempt loop.
void bm_upstream_guarded(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::upstream up(ioc, {"a:1", "b:2", "c:3"});
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : state) {
          x = co_await up([x](const levee::upstream_endpoint&) { return trivial(x); });
          benchmark::DoNotOptimize(x);
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
  if (up.metrics().ejected != 0) state.SkipWithError("an endpoint was ejected");
}

/// The same breaker with a listener for transitions: calls pay nothing for it.
void bm_closed_guarded_transition_listener(benchmark::State& state) {
  guarded_loop(state, {}, levee::transition_events);
}

/// With a listener for every call's outcome, the loop yielding every 64
/// calls so that the listener runs: compare with `closed/guarded_yielding`.
void bm_closed_guarded_call_listener(benchmark::State& state) {
  guarded_loop(state, {}, levee::call_events, 64);
}

/// closed/guarded, the loop yielding every 64 calls as
/// `closed/guarded_call_listener`'s does: the listener's baseline.
void bm_closed_guarded_yielding(benchmark::State& state) {
  guarded_loop(state, {}, 0, 64);
}

/// closed/guarded's call under a CLOSED breaker with an adaptive limit
/// (default options, Gradient2) inside it: the cost the limit adds (two clock
/// reads, two short locks, a sample).
void bm_closed_guarded_adaptive(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::circuit_breaker breaker(ioc);
  levee::adaptive_limit limit(ioc);
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : state) {
          x = co_await breaker(limit(trivial(x)));
          benchmark::DoNotOptimize(x);
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
  if (breaker.state() != levee::circuit_state::closed) state.SkipWithError("breaker not closed");
  if (limit.metrics().limited != 0) state.SkipWithError("calls limited");
}

/// closed/guarded's call under a CLOSED breaker with client-side adaptive
/// throttling outside it (default options): the cost the throttle adds on its
/// fast path (a short lock and a coarse clock read to admit, the same to
/// record the accept).
void bm_closed_guarded_throttle(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::circuit_breaker breaker(ioc);
  levee::throttle throttle(ioc);
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : state) {
          x = co_await throttle(breaker(trivial(x)));
          benchmark::DoNotOptimize(x);
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
  if (breaker.state() != levee::circuit_state::closed) state.SkipWithError("breaker not closed");
  if (throttle.metrics().rejected != 0) state.SkipWithError("calls throttled");
}

/// closed/guarded's call hedged (`hedge([&] { return breaker(trivial(x)); })`,
/// fixed delay 50 ms): the fast path, an answer without waiting. What the
/// hedge adds: the budget's count (a short lock and a clock read), a strand
/// from the context's pool, entered and left, the op's state, the
/// attempt's coroutine thread; no timer (one that answers without waiting
/// needs none) and no pass of the scheduler (docs/hedging.md).
void bm_closed_guarded_hedge(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::circuit_breaker breaker(ioc);
  levee::hedge hedge(ioc);
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : state) {
          x = co_await hedge([&] { return breaker(trivial(x)); });
          benchmark::DoNotOptimize(x);
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
  if (breaker.state() != levee::circuit_state::closed) state.SkipWithError("breaker not closed");
  if (hedge.metrics().hedges != 0) state.SkipWithError("calls hedged");
}

/// closed/guarded's call under a CLOSED breaker with a rate limiter outside
/// it, a rate it never reaches (a token per ns, a bucket of 2^30): the cost
/// of the limiter's fast path (a coarse clock read, one compare-and-swap on
/// the bucket's time, a counter on its cache line, and its coroutine frame).
void bm_closed_guarded_rate_limiter(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::circuit_breaker breaker(ioc);
  levee::rate_limiter limiter(ioc, {.rate = 1'000'000'000, .period = 1s, .burst = 1 << 30});
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : state) {
          x = co_await limiter(breaker(trivial(x)));
          benchmark::DoNotOptimize(x);
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
  if (breaker.state() != levee::circuit_state::closed) state.SkipWithError("breaker not closed");
  if (limiter.metrics().rejected != 0) state.SkipWithError("calls rate-limited");
}

/// The same pair through a registry's guard_set: breaker and limit in one
/// coroutine frame, one clock read at each end shared by both.
void bm_closed_guarded_pair(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::registry_options o;
  o.limits = levee::adaptive_limit_options{};
  levee::breaker_registry registry(ioc, o);
  const auto guards = registry.guards("api:80");
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : state) {
          x = co_await guards(trivial(x));
          benchmark::DoNotOptimize(x);
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
  if (guards.breaker->state() != levee::circuit_state::closed)
    state.SkipWithError("breaker not closed");
  if (guards.limit->metrics().limited != 0) state.SkipWithError("calls limited");
}

void bm_closed_guarded_count_window(benchmark::State& state) {
  guarded_loop(state, {.window_type = levee::window_kind::count});
}

void bm_closed_guarded_slow_calls(benchmark::State& state) {
  guarded_loop(state, {.slow_call_duration = 1s, .slow_call_rate_threshold = 0.5});
}

// ---- open and half-open ---------------------------------------------------------

/// A breaker opened by one failure, with an open duration longer than any run.
// No limit on HALF_OPEN: on the manual clock (virtual time that never moves
// here) a pending half-open timer would keep `run()` spinning.
levee::breaker_options opens_at_once() {
  return {.minimum_calls = 1,
          .open_duration = 1h,
          .max_half_open_duration = std::chrono::nanoseconds::max()};
}

asio::awaitable<std::tuple<boost::system::error_code, int>> failing() {
  co_return std::tuple(make_error_code(boost::system::errc::connection_refused), 0);
}

void bm_open_reject_tuple(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::circuit_breaker breaker(ioc, opens_at_once());
  std::uint64_t allocs = 0;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        (void)co_await breaker(failing());
        int rejected = 0;
        allocs = t_allocations;
        for (auto _ : state) {
          auto [ec, v] = co_await breaker(trivial_tuple(rejected));
          rejected += ec == levee::error::circuit_open;
          benchmark::DoNotOptimize(v);
        }
        if (rejected != static_cast<int>(state.iterations())) state.SkipWithError("not rejected");
        ioc.stop();  // the open timer would keep run() busy for an hour
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
}

void bm_open_reject_throw(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::circuit_breaker breaker(ioc, opens_at_once());
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        (void)co_await breaker(failing());
        int rejected = 0;
        for (auto _ : state) {
          try {
            benchmark::DoNotOptimize(co_await breaker(trivial(rejected)));
          } catch (const boost::system::system_error&) {
            ++rejected;
          }
        }
        if (rejected != static_cast<int>(state.iterations())) state.SkipWithError("not rejected");
        co_return;
      },
      [&](std::exception_ptr) { ioc.stop(); });
  ioc.run();
}

void bm_half_open_reject(benchmark::State& state) {
  // HALF_OPEN with its only probe slot held by a probe that never finishes:
  // every other call is rejected.
  using clock = levee::manual_clock;
  clock::reset();
  asio::io_context ioc(1);
  levee::basic_circuit_breaker<clock, clock::wait_traits> breaker(ioc, opens_at_once());
  asio::basic_waitable_timer<clock, clock::wait_traits> forever(ioc, 1000h);
  auto probe = [&]() -> asio::awaitable<int> {
    co_await forever.async_wait(asio::use_awaitable);
    co_return 0;
  };
  std::uint64_t allocs = 0;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        (void)co_await breaker(failing());
        clock::advance(2h);
        // Let the open timer fire (a few reactor turns), then start the probe.
        for (int i = 0; i < 100 && breaker.state() != levee::circuit_state::half_open; ++i)
          co_await asio::post(ioc, asio::use_awaitable);
        asio::co_spawn(ioc, breaker(probe()), asio::detached);
        for (int i = 0; i < 100 && breaker.probes_in_flight() != 1; ++i)
          co_await asio::post(ioc, asio::use_awaitable);
        if (breaker.probes_in_flight() != 1) state.SkipWithError("no probe in flight");
        int rejected = 0;
        allocs = t_allocations;
        for (auto _ : state) {
          auto [ec, v] = co_await breaker(trivial_tuple(rejected));
          rejected += ec == levee::error::circuit_open;
          benchmark::DoNotOptimize(v);
        }
        if (rejected != static_cast<int>(state.iterations())) state.SkipWithError("not rejected");
        forever.cancel();  // the probe ends (ignored) before the breaker goes
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
}

// ---- memory ---------------------------------------------------------------------

/// Fails one call in five: a failure rate under the threshold.
asio::awaitable<std::tuple<boost::system::error_code, int>> one_in_five_fails(std::int64_t i) {
  if (i % 5 == 0) co_return std::tuple(boost::system::error_code(asio::error::broken_pipe), 0);
  co_return std::tuple(boost::system::error_code(), static_cast<int>(i));
}

/// Offers `rate` calls per second for `seconds` of virtual time, 20 % of them
/// failing (below the threshold), and reports the bytes the breaker holds.
/// `name`: the breaker's name, as a registry gives one per endpoint.
void memory_loop(benchmark::State& state, const std::string& name) {
  using clock = levee::manual_clock;
  using breaker_type = levee::basic_circuit_breaker<clock, clock::wait_traits>;
  const auto rate = state.range(0);
  const std::int64_t seconds = g_smoke ? 1 : 10;
  for (auto _ : state) {
    clock::reset();
    asio::io_context ioc(1);
    // The first timer on an io_context creates Asio's timer service: make it
    // exist before measuring, so that only the breaker is counted.
    breaker_type warm_up(ioc);
    const auto before = g_live_bytes.load();
    auto breaker = std::make_unique<breaker_type>(ioc, levee::breaker_options{}, name);
    const auto step = std::chrono::nanoseconds(1'000'000'000 / rate);
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          for (std::int64_t i = 0; i < rate * seconds; ++i) {
            auto [ec, v] = co_await (*breaker)(one_in_five_fails(i));
            benchmark::DoNotOptimize(v);
            clock::advance(step);
          }
        },
        asio::detached);
    ioc.run();
    // The handle is on the heap (make_unique), so its own bytes are counted
    // with everything it allocated.
    const auto bytes = g_live_bytes.load() - before;
    if (breaker->state() != levee::circuit_state::closed) state.SkipWithError("opened");
    const auto w = breaker->window();
    if (w.failures == 0 || w.failures * 4 > w.calls) state.SkipWithError("not 20 % failures");
    state.counters["bytes_per_breaker"] = static_cast<double>(bytes);
  }
}

void bm_memory_time_window(benchmark::State& state) {
  memory_loop(state, "");
}

/// Named "10.0.0.7:8080" (13 characters, within a string's inline buffer) or
/// "payments.internal:8443" (22, allocated), at 1 M calls/s.
void bm_memory_named(benchmark::State& state, const std::string& name) {
  memory_loop(state, name);
}

/// The seed's reference solution: a deque with one (timestamp, success) entry
/// per call in the window.
void bm_memory_seed_deque(benchmark::State& state) {
  const auto rate = state.range(0);
  const std::int64_t seconds = g_smoke ? 1 : 10;
  for (auto _ : state) {
    const auto before = g_live_bytes.load();
    auto window =
        std::make_unique<std::deque<std::pair<std::chrono::steady_clock::time_point, bool>>>();
    const auto step = std::chrono::nanoseconds(1'000'000'000 / rate);
    std::chrono::steady_clock::time_point now{};
    for (std::int64_t i = 0; i < rate * seconds; ++i) {
      window->emplace_back(now, i % 5 != 0);
      while (!window->empty() && window->front().first < now - 10s) window->pop_front();
      now += step;
    }
    const auto bytes = g_live_bytes.load() - before + static_cast<std::int64_t>(sizeof(*window));
    benchmark::DoNotOptimize(window->size());
    state.counters["bytes_per_breaker"] = static_cast<double>(bytes);
  }
}

// ---- threads ----------------------------------------------------------------------

/// One breaker shared by `threads` threads, each running a coroutine on its own
/// io_context that guards `calls` trivial calls. Reports calls per second.
void bm_threads(benchmark::State& state, int threads) {
  asio::io_context timer_ioc(1);
  levee::circuit_breaker breaker(timer_ioc, {});
  const std::int64_t calls = g_smoke ? 10'000 : 2'000'000;
  for (auto _ : state) {
    std::atomic<int> ready{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> pool;
    std::vector<double> seconds(static_cast<std::size_t>(threads));
    for (int t = 0; t < threads; ++t) {
      pool.emplace_back([&, t] {
        asio::io_context ioc(1);
        asio::co_spawn(
            ioc,
            [&]() -> asio::awaitable<void> {
              ++ready;
              while (!go.load()) {
              }
              const auto start = std::chrono::steady_clock::now();
              int x = 0;
              for (std::int64_t i = 0; i < calls; ++i) x = co_await breaker(trivial(x));
              benchmark::DoNotOptimize(x);
              seconds[static_cast<std::size_t>(t)] =
                  std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
            },
            asio::detached);
        ioc.run();
      });
    }
    while (ready.load() != threads) {
    }
    go = true;
    for (auto& th : pool) th.join();
    double slowest = 0;
    for (double s : seconds) slowest = std::max(slowest, s);
    state.SetIterationTime(slowest);
  }
  state.SetItemsProcessed(state.iterations() * threads * calls);
}

// ---- http ---------------------------------------------------------------------

/// A keep-alive GET on loopback against the flaky upstream (answering at once,
/// on its own thread), bare and through a closed breaker, plain or over TLS
/// (a certificate from a CA made at start, trusted by the client).
void bm_http(benchmark::State& state, bool guarded, bool tls) {
  asio::io_context server_ioc(1);
  std::string error;
  auto phase = flaky::parse_phase("ok 1h latency=0", error);
  const auto certs = flaky::make_test_certificates({"IP:127.0.0.1"});
  flaky::server_options server_options;
  if (tls) server_options.tls = flaky::make_server_context(certs);
  flaky::server upstream(server_ioc.get_executor(), {*phase}, server_options);
  const std::string url = std::string(tls ? "https" : "http") +
                          "://127.0.0.1:" + std::to_string(upstream.start()) + "/";
  std::thread server_thread([&] { server_ioc.run(); });
  {
    asio::io_context ioc(1);
    levee::http::client_options client_options{.max_connections_per_host = 1};
    client_options.tls = flaky::make_client_context(certs.ca_pem);
    levee::http::client client(ioc.get_executor(), client_options);
    levee::breaker_options options;
    options.classifier = levee::http::classify;
    levee::circuit_breaker breaker(ioc, options);
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          for (auto _ : state) {
            // Not `guarded ? co_await a : co_await b`: GCC 12 destroys the
            // temporaries of co_await inside ?: twice.
            levee::http::result r;
            if (guarded) {
              r = co_await breaker(
                  levee::http::async_get(client, url, asio::as_tuple(asio::use_awaitable)));
            } else {
              r = co_await levee::http::async_get(client, url, asio::as_tuple(asio::use_awaitable));
            }
            if (std::get<0>(r) || std::get<1>(r).result_int() != 200) {
              state.SkipWithError("request failed");
            }
          }
          client.close_idle();  // no idle timer left: run() returns
        },
        asio::detached);
    ioc.run();
    if (client.stats().connections_opened != 1) state.SkipWithError("connection not kept alive");
  }
  upstream.stop();
  server_thread.join();
}

// ---- the summary ------------------------------------------------------------------
// After the usual console table, one block that puts each figure next to its
// target and its floor, all from this run: medians when --benchmark_repetitions
// is given, single runs otherwise.

class summary_reporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    ConsoleReporter::ReportRuns(runs);
    for (const Run& r : runs) {
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (r.run_type == Run::RT_Aggregate && !median) continue;
      if (r.error_occurred) continue;
      std::string name = r.run_name.function_name;
      figure& f = figures_[name];
      if (!median && f.from_median) continue;
      f.from_median = median;
      f.ns = r.GetAdjustedRealTime() * multiplier(r.time_unit);
      for (const auto& [key, counter] : r.counters) f.counters[key] = counter.value;
    }
  }

  void Finalize() override {
    ConsoleReporter::Finalize();
    auto& out = GetOutputStream();
    auto has = [&](const char* n) { return figures_.count(n) != 0; };
    auto ns = [&](const char* n) { return figures_[n].ns; };
    out << "\nsummary (one run, side by side):\n";
    char line[256];
    if (has("closed/bare") && has("closed/guarded") && has("closed/wrapper_floor")) {
      std::snprintf(
          line, sizeof line,
          "  CLOSED adds %.1f ns to a bare co_await (target <= 30 ns); the coroutine frame "
          "alone adds %.1f ns, levee's own work %.1f ns\n",
          ns("closed/guarded") - ns("closed/bare"), ns("closed/wrapper_floor") - ns("closed/bare"),
          ns("closed/guarded") - ns("closed/wrapper_floor"));
      out << line;
    }
    if (has("closed/guarded") && has("closed/guarded_slow_calls")) {
      std::snprintf(line, sizeof line,
                    "  slow-call detection adds %.1f ns (target <= 10 ns; guarded_slow_calls "
                    "%.1f ns)\n",
                    ns("closed/guarded_slow_calls") - ns("closed/guarded"),
                    ns("closed/guarded_slow_calls"));
      out << line;
    }
    if (has("closed/guarded") && has("closed/guarded_count_window")) {
      std::snprintf(line, sizeof line,
                    "  a count window instead of the time window: %+.1f ns (target <= 0; "
                    "guarded_count_window %.1f ns)\n",
                    ns("closed/guarded_count_window") - ns("closed/guarded"),
                    ns("closed/guarded_count_window"));
      out << line;
    }
    if (has("closed/guarded") && has("closed/guarded_adaptive")) {
      std::snprintf(line, sizeof line,
                    "  an adaptive limit inside the CLOSED breaker adds %.1f ns (target <= 30 ns; "
                    "guarded %.1f ns, guarded_adaptive %.1f ns), %.0f allocations per call\n",
                    ns("closed/guarded_adaptive") - ns("closed/guarded"), ns("closed/guarded"),
                    ns("closed/guarded_adaptive"),
                    figures_["closed/guarded_adaptive"].counters["allocs_per_call"]);
      out << line;
    }
    if (has("closed/guarded") && has("closed/guarded_throttle")) {
      std::snprintf(line, sizeof line,
                    "  adaptive throttling outside the CLOSED breaker adds %.1f ns (target <= 30 "
                    "ns; guarded_throttle %.1f ns), %.0f allocations per call\n",
                    ns("closed/guarded_throttle") - ns("closed/guarded"),
                    ns("closed/guarded_throttle"),
                    figures_["closed/guarded_throttle"].counters["allocs_per_call"]);
      out << line;
    }
    if (has("closed/guarded") && has("closed/guarded_hedge")) {
      std::snprintf(line, sizeof line,
                    "  a hedge around the CLOSED breaker (answer before the delay) adds %.1f ns "
                    "(target <= 30 ns; guarded_hedge %.1f ns, %.2fx guarded), %.0f allocations "
                    "per call\n",
                    ns("closed/guarded_hedge") - ns("closed/guarded"), ns("closed/guarded_hedge"),
                    ns("closed/guarded_hedge") / ns("closed/guarded"),
                    figures_["closed/guarded_hedge"].counters["allocs_per_call"]);
      out << line;
    }
    if (has("closed/guarded") && has("closed/guarded_rate_limiter")) {
      std::snprintf(line, sizeof line,
                    "  a rate limiter outside the CLOSED breaker adds %.1f ns (target <= 30 ns; "
                    "guarded %.1f ns, guarded_rate_limiter %.1f ns), %.0f allocations per call\n",
                    ns("closed/guarded_rate_limiter") - ns("closed/guarded"), ns("closed/guarded"),
                    ns("closed/guarded_rate_limiter"),
                    figures_["closed/guarded_rate_limiter"].counters["allocs_per_call"]);
      out << line;
    }
    if (has("closed/guarded") && has("closed/guarded_pair")) {
      std::snprintf(line, sizeof line,
                    "  the same through a registry's guard_set (one frame) adds %.1f ns (target "
                    "<= 30 ns; guarded_pair %.1f ns), %.0f allocations per call\n",
                    ns("closed/guarded_pair") - ns("closed/guarded"), ns("closed/guarded_pair"),
                    figures_["closed/guarded_pair"].counters["allocs_per_call"]);
      out << line;
    }
    if (has("deadline/with_timeout") && has("deadline/with_deadline")) {
      std::snprintf(line, sizeof line,
                    "  with_deadline carrying its deadline to the call costs %.1f ns more than "
                    "with_timeout (%.1f ns, %.0f allocations; with_deadline %.1f ns, %.0f "
                    "allocations per call)\n",
                    ns("deadline/with_deadline") - ns("deadline/with_timeout"),
                    ns("deadline/with_timeout"),
                    figures_["deadline/with_timeout"].counters["allocs_per_call"],
                    ns("deadline/with_deadline"),
                    figures_["deadline/with_deadline"].counters["allocs_per_call"]);
      out << line;
    }
    if (has("closed/guarded") && has("closed/guarded_transition_listener")) {
      std::snprintf(
          line, sizeof line,
          "  guarded with a transition listener %.1f ns, without %.1f ns (the call path does "
          "nothing for it: compare the instruction counts)\n",
          ns("closed/guarded_transition_listener"), ns("closed/guarded"));
      out << line;
    }
    if (has("closed/guarded_call_listener") && has("closed/guarded_yielding")) {
      std::snprintf(line, sizeof line,
                    "  a listener for every call adds %.1f ns (target <= +60 ns; %.1f ns against "
                    "%.1f ns, both yielding every 64 calls)\n",
                    ns("closed/guarded_call_listener") - ns("closed/guarded_yielding"),
                    ns("closed/guarded_call_listener"), ns("closed/guarded_yielding"));
      out << line;
    }
    if (has("open/reject_tuple") && has("closed/bare") && has("closed/wrapper_floor")) {
      std::snprintf(
          line, sizeof line,
          "  a rejection (error_code form) costs %.1f ns (target <= 50 ns), %.0f allocations; "
          "floor: bare %.1f ns, wrapper frame %.1f ns\n",
          ns("open/reject_tuple"), figures_["open/reject_tuple"].counters["allocs_per_call"],
          ns("closed/bare"), ns("closed/wrapper_floor"));
      out << line;
    }
    for (const char* rate : {"1000", "100000", "1000000"}) {
      const std::string t = std::string("memory/time_window/") + rate;
      const std::string d = std::string("memory/seed_deque/") + rate;
      if (!figures_.count(t)) continue;
      std::snprintf(
          line, sizeof line,
          "  memory at %s calls/s: %.0f bytes per breaker (target < 1024); the seed's deque: "
          "%.0f bytes\n",
          rate, figures_[t].counters["bytes_per_breaker"],
          figures_.count(d) ? figures_[d].counters["bytes_per_breaker"] : 0.0);
      out << line;
    }
    for (const char* length : {"13", "22"})
      if (const std::string n = std::string("memory/named/") + length; figures_.count(n))
        out << "  memory of a breaker with a " << length
            << "-character name, at 1000000 calls/s: " << figures_[n].counters["bytes_per_breaker"]
            << " bytes\n";
    if (has("http/bare") && has("http/guarded")) {
      std::snprintf(line, sizeof line,
                    "  a keep-alive GET on loopback: %.1f us bare, %.1f us guarded (%+.1f %%)\n",
                    ns("http/bare") / 1000, ns("http/guarded") / 1000,
                    100 * (ns("http/guarded") - ns("http/bare")) / ns("http/bare"));
      out << line;
    }
    if (has("http/tls_bare") && has("http/tls_guarded")) {
      std::snprintf(
          line, sizeof line,
          "  a keep-alive HTTPS GET on loopback: %.1f us bare, %.1f us guarded (%+.1f %%)\n",
          ns("http/tls_bare") / 1000, ns("http/tls_guarded") / 1000,
          100 * (ns("http/tls_guarded") - ns("http/tls_bare")) / ns("http/tls_bare"));
      out << line;
    }
    if (has("threads/1") && has("threads/2")) {
      const double one = figures_["threads/1"].counters["items_per_second"];
      const double two = figures_["threads/2"].counters["items_per_second"];
      std::snprintf(
          line, sizeof line,
          "  two threads sharing a breaker: %.2f x the throughput of one (target >= 1.6); "
          "%.1f M calls/s against %.1f M\n",
          two / one, two / 1e6, one / 1e6);
      out << line;
    }
  }

 private:
  static double multiplier(benchmark::TimeUnit u) {
    switch (u) {
      case benchmark::kNanosecond:
        return 1;
      case benchmark::kMicrosecond:
        return 1e3;
      case benchmark::kMillisecond:
        return 1e6;
      case benchmark::kSecond:
        return 1e9;
    }
    return 1;
  }
  struct figure {
    bool from_median = false;
    double ns = 0;
    std::map<std::string, double> counters;
  };
  std::map<std::string, figure> figures_;
};

}  // namespace

// ---- the pipeline against the same layers nested by hand ----------------------
// Fallback, retry (3 attempts), breaker and adaptive limit around one call
// that succeeds, in the tuple form: the pipeline must cost no more than the
// layers nested by hand (issue 26: <= +5 ns side by side).

using tuple_int = std::tuple<boost::system::error_code, int>;

void bm_layers_by_hand(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::circuit_breaker breaker(ioc);
  levee::adaptive_limit limit(ioc);
  levee::retry_policy policy({.max_attempts = 3});
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : state) {
          auto [ec, v] =
              co_await levee::retry(policy, [&] { return breaker(limit(trivial_tuple(x))); });
          x = ec ? -1 : v;  // the fallback
          benchmark::DoNotOptimize(x);
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
}

void bm_layers_pipeline(benchmark::State& state) {
  asio::io_context ioc(1);
  levee::pipeline<tuple_int> pipe(
      ioc, {.fallback = {{.value = tuple_int(boost::system::error_code(), -1)}},
            .retry = levee::retry_options{.max_attempts = 3},
            .breaker = levee::breaker_options{},
            .limit = levee::adaptive_limit_options{}});
  const auto allocs = t_allocations;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        for (auto _ : state) {
          auto [ec, v] = co_await pipe([&] { return trivial_tuple(x); });
          x = v;
          benchmark::DoNotOptimize(x);
        }
      },
      asio::detached);
  ioc.run();
  report_allocations(state, allocs);
}

int main(int argc, char** argv) {
  std::vector<char*> args;
  for (int i = 0; i < argc; ++i) {
    if (std::strcmp(argv[i], "--smoke") == 0) {
      g_smoke = true;
    } else {
      args.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(args.size());

  benchmark::RegisterBenchmark("parts/locked_add", bm_parts_locked_add);
  benchmark::RegisterBenchmark("parts/window_clock", bm_parts_window_clock);
  benchmark::RegisterBenchmark("closed/bare", bm_closed_bare);
  benchmark::RegisterBenchmark("closed/wrapper_floor", bm_closed_wrapper_floor);
  benchmark::RegisterBenchmark("closed/guarded", bm_closed_guarded);
  benchmark::RegisterBenchmark("closed/guarded_adaptive", bm_closed_guarded_adaptive);
  benchmark::RegisterBenchmark("closed/guarded_throttle", bm_closed_guarded_throttle);
  benchmark::RegisterBenchmark("closed/guarded_hedge", bm_closed_guarded_hedge);
  benchmark::RegisterBenchmark("closed/guarded_rate_limiter", bm_closed_guarded_rate_limiter);
  benchmark::RegisterBenchmark("deadline/with_timeout", bm_deadline<false>);
  benchmark::RegisterBenchmark("deadline/with_deadline", bm_deadline<true>);
  benchmark::RegisterBenchmark("upstream/pick", bm_upstream_pick)->Arg(1000000000);
  benchmark::RegisterBenchmark("upstream/pick_outstanding_only", bm_upstream_pick)->Arg(0);
  benchmark::RegisterBenchmark("upstream/guarded", bm_upstream_guarded);
  benchmark::RegisterBenchmark("closed/guarded_pair", bm_closed_guarded_pair);
  benchmark::RegisterBenchmark("layers/by_hand", bm_layers_by_hand);
  benchmark::RegisterBenchmark("layers/pipeline", bm_layers_pipeline);
  benchmark::RegisterBenchmark("closed/guarded_transition_listener",
                               bm_closed_guarded_transition_listener);
  benchmark::RegisterBenchmark("closed/guarded_call_listener", bm_closed_guarded_call_listener);
  benchmark::RegisterBenchmark("closed/guarded_yielding", bm_closed_guarded_yielding);
  benchmark::RegisterBenchmark("closed/guarded_count_window", bm_closed_guarded_count_window);
  benchmark::RegisterBenchmark("closed/guarded_slow_calls", bm_closed_guarded_slow_calls);
  benchmark::RegisterBenchmark("open/reject_tuple", bm_open_reject_tuple);
  benchmark::RegisterBenchmark("open/reject_throw", bm_open_reject_throw);
  benchmark::RegisterBenchmark("half_open/reject", bm_half_open_reject);
  for (std::int64_t rate : {1'000, 100'000, 1'000'000}) {
    const std::string suffix = std::to_string(rate);
    benchmark::RegisterBenchmark(("memory/time_window/" + suffix).c_str(), bm_memory_time_window)
        ->Arg(rate)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
    benchmark::RegisterBenchmark(("memory/seed_deque/" + suffix).c_str(), bm_memory_seed_deque)
        ->Arg(rate)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  }
  for (std::string name : {"10.0.0.7:8080", "payments.internal:8443"})
    benchmark::RegisterBenchmark(("memory/named/" + std::to_string(name.size())).c_str(),
                                 bm_memory_named, name)
        ->Arg(1'000'000)
        ->Iterations(1)
        ->Unit(benchmark::kMillisecond);
  benchmark::RegisterBenchmark("http/bare", bm_http, false, false)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("http/guarded", bm_http, true, false)->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("http/tls_bare", bm_http, false, true)
      ->Unit(benchmark::kMicrosecond);
  benchmark::RegisterBenchmark("http/tls_guarded", bm_http, true, true)
      ->Unit(benchmark::kMicrosecond);
  for (int threads : {1, 2}) {
    benchmark::RegisterBenchmark(("threads/" + std::to_string(threads)).c_str(), bm_threads,
                                 threads)
        ->UseManualTime()
        ->Iterations(g_smoke ? 1 : 3)
        ->Unit(benchmark::kMillisecond);
  }

  benchmark::Initialize(&n, args.data());
  if (benchmark::ReportUnrecognizedArguments(n, args.data())) return 1;
  summary_reporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
}
