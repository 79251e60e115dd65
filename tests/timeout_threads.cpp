// with_timeout and with_deadline whose call is on a concrete executor that is
// not a strand (`asio::awaitable<T, asio::io_context::executor_type>`), on a
// 4-thread io_context: the timer races the call's completion. Label
// "concurrency".
//
// Real time, short and bounded, as tests/layers_threads.cpp: the race between
// a timer and a completion on another thread is the point.
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/timeout/timeout.hpp>

#include "support.hpp"

#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <thread>
#include <vector>

using namespace levee_test;

namespace {

using io_ex = asio::io_context::executor_type;
using ec_t = boost::system::error_code;

constexpr int threads = 4;
constexpr int coroutines = 32;
constexpr int rounds = 100;

void run_threads(asio::io_context& ioc) {
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back([&] { ioc.run(); });
  for (auto& t : pool) t.join();
}

/// A call of `latency` real time on `Executor`, tuple form; counts its starts.
template <class Executor>
asio::awaitable<std::tuple<ec_t, int>, Executor> call_on(std::chrono::nanoseconds latency,
                                                         std::atomic<int>& started) {
  started.fetch_add(1);
  asio::basic_waitable_timer<std::chrono::steady_clock,
                             asio::wait_traits<std::chrono::steady_clock>, Executor>
      t(co_await asio::this_coro::executor, latency);
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable_t<Executor>{}));
  co_return std::tuple(ec, ec ? 0 : 7);
}

/// Latencies around a limit of 100 us.
std::chrono::nanoseconds latency_of(int i) {
  constexpr std::chrono::nanoseconds choices[] = {90us, 95us, 100us, 100us, 105us, 110us};
  return choices[static_cast<std::size_t>(i) % std::size(choices)];
}

struct counts {
  std::atomic<int> ok{0}, timed_out{0}, other{0}, finished{0}, started{0};
};

template <class Executor>
void race_many(asio::io_context& ioc, counts& c) {
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc.get_executor(),
        [&c, k]() -> asio::awaitable<void, Executor> {
          for (int r = 0; r < rounds; ++r) {
            const auto lat = latency_of(k + r);
            auto [ec, v] =
                (k + r) % 2 == 0
                    ? co_await levee::with_timeout(100us, call_on<Executor>(lat, c.started))
                    : co_await levee::with_deadline(100us, call_on<Executor>(lat, c.started));
            if (!ec && v == 7) {
              c.ok++;
            } else if (ec == levee::error::timeout || ec == levee::error::deadline_exceeded) {
              c.timed_out++;
            } else {
              c.other++;
            }
          }
          c.finished++;
        },
        asio::detached);
  }
  run_threads(ioc);
}

}  // namespace

TEST_CASE("timeout threads: calls on io_context::executor_type race their timers on 4 threads") {
  asio::io_context ioc(threads);
  counts c;
  race_many<io_ex>(ioc, c);
  CHECK(c.finished == coroutines);
  CHECK(c.other == 0);
  CHECK(c.ok + c.timed_out == coroutines * rounds);
}

TEST_CASE("timeout threads: calls on any_io_executor race their timers on 4 threads") {
  asio::io_context ioc(threads);
  counts c;
  race_many<asio::any_io_executor>(ioc, c);
  CHECK(c.finished == coroutines);
  CHECK(c.other == 0);
  CHECK(c.ok + c.timed_out == coroutines * rounds);
  CHECK(c.ok > 0);
  CHECK(c.timed_out > 0);
}

namespace {

/// A call of `latency` on `Executor` that fails (connection_refused) when
/// `fail`, tuple form.
template <class Executor>
asio::awaitable<std::tuple<ec_t, int>, Executor> failing_on(std::chrono::nanoseconds latency,
                                                            bool fail, std::atomic<int>& started) {
  auto [ec, v] = co_await call_on<Executor>(latency, started);
  if (!ec && fail) ec = asio::error::connection_refused;
  co_return std::tuple(ec, v);
}

/// Probe latencies around a 200 us deadline.
std::chrono::nanoseconds probe_latency_of(int i) {
  constexpr std::chrono::nanoseconds choices[] = {50us, 180us, 195us, 200us, 205us, 220us, 400us};
  return choices[static_cast<std::size_t>(i) % std::size(choices)];
}

struct breaker_counts {
  std::atomic<int> ok{0}, timed_out{0}, rejected{0}, failed{0}, refused{0}, other{0}, finished{0},
      started{0};
};

/// Calls on `Executor` through `b`, failing in phases, so that the breaker
/// keeps cycling through HALF_OPEN with up to 4 probes at once.
template <class Executor>
void cycle_breaker(asio::io_context& ioc, levee::circuit_breaker& b, breaker_counts& c) {
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc.get_executor(),
        [&b, &c, k]() -> asio::awaitable<void, Executor> {
          for (int r = 0; r < rounds; ++r) {
            const bool fail = (r / 10) % 2 == 0 && (k + r) % 2 == 0;
            try {
              auto [ec, v] =
                  co_await b(failing_on<Executor>(probe_latency_of(k + r), fail, c.started));
              if (!ec && v == 7) {
                c.ok++;
              } else if (ec == levee::error::timeout) {
                c.timed_out++;
              } else if (ec == levee::error::circuit_open) {
                c.rejected++;
              } else if (ec == asio::error::connection_refused) {
                c.failed++;
              } else {
                c.other++;
              }
            } catch (const std::invalid_argument& e) {
              if (std::string_view(e.what()).find("probe_timeout") != std::string_view::npos)
                c.refused++;
            }
          }
          c.finished++;
        },
        asio::detached);
  }
  run_threads(ioc);
}

levee::breaker_options cycling(std::chrono::nanoseconds probe_timeout) {
  return {.window = 5ms,
          .window_buckets = 5,
          .minimum_calls = 4,
          .open_duration = 300us,
          .half_open_probes = 4,
          .probe_timeout = probe_timeout};
}

}  // namespace

TEST_CASE("timeout threads: breaker probes on io_context::executor_type race their deadline") {
  asio::io_context ioc(threads);
  levee::circuit_breaker b(ioc, cycling(200us));
  breaker_counts c;
  cycle_breaker<io_ex>(ioc, b, c);
  CHECK(c.finished == coroutines);
  CHECK(c.other == 0);
}
