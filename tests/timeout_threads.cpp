// with_timeout, with_deadline, a pipeline's timeout and a breaker's probe
// deadline whose call is on a concrete executor that is not a strand
// (`asio::awaitable<T, asio::io_context::executor_type>`), on a 4-thread
// io_context: such a call cannot be kept to one thread while its timer races
// it, and is refused (docs/layers.md, "Timeouts"). The same races on
// `any_io_executor` and on a concrete strand run. Label "concurrency".
//
// Real time, short and bounded, as tests/layers_threads.cpp: the race between
// a timer and a completion on another thread is the point.
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/pipeline/pipeline.hpp>
#include <levee/registry/registry.hpp>
#include <levee/timeout/timeout.hpp>

#include "support.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

using namespace levee_test;

namespace {

using io_ex = asio::io_context::executor_type;
using ec_t = boost::system::error_code;

constexpr int threads = 4;
constexpr int coroutines = 32;
constexpr int rounds = 100;

/// A call of `latency` real time on `Executor`, tuple form; counts its starts.
template <class Executor>
asio::awaitable<std::tuple<ec_t, int>, Executor> call_on(std::chrono::nanoseconds latency,
                                                         std::atomic<int>& started) {
  started.fetch_add(1);
  // 0: answered without waiting, inside the race's launch (race_launch.hpp).
  if (latency == std::chrono::nanoseconds::zero()) co_return std::tuple(ec_t(), 7);
  asio::basic_waitable_timer<std::chrono::steady_clock,
                             asio::wait_traits<std::chrono::steady_clock>, Executor>
      t(co_await asio::this_coro::executor, latency);
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable_t<Executor>{}));
  co_return std::tuple(ec, ec ? 0 : 7);
}

/// Latencies around a limit of 100 us, one of 1 us: a call that wins its
/// race however slow the machine (a 90 or 95 us call wins only if its timer
/// is armed within 5 or 10 us of the deadline's, which a loaded
/// ThreadSanitizer run may never do), and 0: a call that answers without
/// waiting, which ends its race inside the launch while other threads run
/// other races on the pooled strands.
std::chrono::nanoseconds latency_of(int i) {
  constexpr std::chrono::nanoseconds choices[] = {90us, 95us, 100us, 100us, 105us, 110us, 1us, 0us};
  return choices[static_cast<std::size_t>(i) % std::size(choices)];
}

/// Where a coroutine on `Executor` is spawned: a new strand for a strand.
template <class Executor>
Executor spawn_executor(asio::io_context& ioc) {
  if constexpr (levee::detail::is_asio_strand<Executor>::value) {
    return asio::make_strand(ioc);
  } else {
    return ioc.get_executor();
  }
}

/// Whether `e` is the refusal of a call on an executor that cannot be
/// serialised, by `who`.
bool is_refusal(const std::exception& e, std::string_view who) {
  const std::string_view what = e.what();
  return what.find(who) != std::string_view::npos &&
         what.find("io_context::executor_type") != std::string_view::npos;
}

struct counts {
  std::atomic<int> ok{0}, timed_out{0}, other{0}, finished{0}, started{0};
};

template <class Executor>
void race_many(asio::io_context& ioc, counts& c) {
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        spawn_executor<Executor>(ioc),
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
  run_threads(ioc, threads);
}

}  // namespace

TEST_CASE(
    "timeout threads: with_timeout and with_deadline on io_context::executor_type are refused") {
  // Before the refusal, these calls (as `race_many<io_ex>`, the timer and the
  // call racing on 4 threads) ended the process in 5 runs of 5 under ASan:
  // std::terminate on a `co_await: Operation canceled` escaping Asio's
  // co_spawn, the timer's cancellation emitted into the call from one thread
  // while it completed on another.
  STATIC_REQUIRE(!levee::detail::can_serialize<io_ex>);
  STATIC_REQUIRE(!levee::detail::can_serialize<asio::thread_pool::executor_type>);
  STATIC_REQUIRE(levee::detail::can_serialize<asio::strand<io_ex>>);
  STATIC_REQUIRE(levee::detail::can_serialize<asio::any_io_executor>);
  asio::io_context ioc(threads);
  std::atomic<int> refused{0}, unbounded{0}, other{0}, finished{0}, started{0};
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc.get_executor(),
        [&, k]() -> asio::awaitable<void, io_ex> {
          for (int r = 0; r < rounds; ++r) {
            const bool deadline = (k + r) % 2 == 1;
            try {
              if (deadline) {
                co_await levee::with_deadline(100us, call_on<io_ex>(latency_of(k + r), started));
              } else {
                co_await levee::with_timeout(100us, call_on<io_ex>(latency_of(k + r), started));
              }
              other++;
            } catch (const std::invalid_argument& e) {
              is_refusal(e, deadline ? "levee::with_deadline" : "levee::with_timeout") ? refused++
                                                                                       : other++;
            }
            // No limit, no race: runs as the call alone.
            auto [ec, v] = co_await levee::with_timeout(std::chrono::nanoseconds::max(),
                                                        call_on<io_ex>(1us, started));
            (!ec && v == 7) ? unbounded++ : other++;
          }
          finished++;
        },
        asio::detached);
  }
  run_threads(ioc, threads);
  CHECK(finished == coroutines);
  CHECK(refused == coroutines * rounds);
  CHECK(unbounded == coroutines * rounds);
  CHECK(started == coroutines * rounds);  // the unbounded calls only: no refused call started
  CHECK(other == 0);
}

TEST_CASE("timeout threads: the refusal through a completion token, and on one thread") {
  // co_spawn's token form: the handler gets the refusal as its exception_ptr.
  asio::io_context ioc;
  std::atomic<int> started{0};
  std::exception_ptr refusal;
  bool completed = false;
  asio::co_spawn(ioc.get_executor(), levee::with_timeout(1s, call_on<io_ex>(1us, started)),
                 [&](std::exception_ptr e, std::tuple<ec_t, int>) {
                   completed = true;
                   refusal = e;
                 });
  ioc.run();  // one thread: refused all the same (the type decides, not the threads)
  REQUIRE(completed);
  REQUIRE(refusal);
  CHECK_THROWS_AS(std::rethrow_exception(refusal), std::invalid_argument);
  CHECK(started == 0);
}

TEST_CASE("timeout threads: a pipeline's timeout and deadline refuse io_context::executor_type") {
  using result = std::tuple<ec_t, int>;
  asio::io_context ioc;
  std::atomic<int> started{0};
  levee::pipeline<result> timed(ioc, {.timeout = 100us});
  levee::pipeline<result> bounded(ioc, {.deadline = 100us});
  levee::pipeline<result> plain(ioc, levee::pipeline_options<result>{});
  int refused = 0, ok = 0;
  asio::co_spawn(
      ioc.get_executor(),
      [&]() -> asio::awaitable<void, io_ex> {
        auto factory = [&] { return call_on<io_ex>(1us, started); };
        for (auto* p : {&timed, &bounded}) {
          try {
            co_await (*p)(factory);
          } catch (const std::invalid_argument& e) {
            if (is_refusal(
                    e, p == &timed ? "pipeline_options::timeout" : "pipeline_options::deadline"))
              ++refused;
          }
        }
        auto [ec, v] = co_await plain(factory);  // no race: runs
        if (!ec && v == 7) ++ok;
      },
      asio::detached);
  ioc.run();
  CHECK(refused == 2);
  CHECK(ok == 1);
  CHECK(started == 1);
  CHECK(timed.metrics().calls == 0);  // refused before the pipeline counted a call
}

// The race's call starts inside the race's strand, as Asio starts a
// coroutine inside its executor: work it posts onto its executor runs only
// once it waits, never beside its start, on a 4-thread io_context (see
// tests/hedge_threads.cpp; the same change, not kept, failed this). The
// call then hops once onto its strand, so it goes on on another thread
// while its launch unwinds. Every call answers (its limit is far).
TEST_CASE("timeout threads: work a call posts onto its executor never runs beside its start") {
  asio::io_context ioc;
  std::atomic<int> ok{0}, finished{0}, overlaps{0};
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc.get_executor(),
        [&, k]() -> asio::awaitable<void> {
          for (int r = 0; r < rounds; ++r) {
            call_steps s{.overlaps = overlaps, .spin_count = 10000};
            auto hop = [&s]() -> asio::awaitable<std::tuple<ec_t, int>> {
              const asio::any_io_executor ex = co_await asio::this_coro::executor;
              asio::post(ex, [&s] { s.step(); });  // runs before the hop below ends
              s.step();
              co_await asio::post(ex, asio::use_awaitable);
              co_return std::tuple(ec_t(), 7);
            };
            auto [ec, v] = (k + r) % 2 == 0
                               ? co_await levee::with_timeout(std::chrono::seconds(5), hop())
                               : co_await levee::with_deadline(std::chrono::seconds(5), hop());
            if (!ec && v == 7) ok++;
          }
          finished++;
        },
        asio::detached);
  }
  run_threads(ioc, threads);
  CHECK(finished == coroutines);
  CHECK(ok == coroutines * rounds);
  CHECK(overlaps == 0);
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

TEST_CASE("timeout threads: calls on strand<io_context::executor_type> race their timers") {
  asio::io_context ioc(threads);
  counts c;
  race_many<asio::strand<io_ex>>(ioc, c);
  CHECK(c.finished == coroutines);
  CHECK(c.other == 0);
  CHECK(c.ok + c.timed_out == coroutines * rounds);
  CHECK(c.ok > 0);
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
  run_threads(ioc, threads);
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

TEST_CASE(
    "timeout threads: a breaker with probe_timeout refuses calls on io_context::executor_type") {
  // Before the refusal, these calls ended the process in 6 runs of 25 under
  // ASan (std::terminate on `co_await: Operation canceled`; a
  // heap-use-after-free in the race's timer handler): a probe's deadline
  // raced its call on two threads.
  asio::io_context ioc(threads);
  levee::circuit_breaker b(ioc, cycling(200us));
  breaker_counts c;
  cycle_breaker<io_ex>(ioc, b, c);
  CHECK(c.finished == coroutines);
  CHECK(c.refused == coroutines * rounds);  // every call, CLOSED ones too
  CHECK(c.started == 0);
  CHECK(c.other == 0);
  CHECK(b.state() == levee::circuit_state::closed);  // nothing recorded
}

TEST_CASE(
    "timeout threads: a breaker's automatic probe deadline is not applied on "
    "io_context::executor_type") {
  // probe_timeout zero (automatic) or nanoseconds::max(): the calls run and
  // the breaker cycles; no probe is raced against a deadline.
  for (const auto limit : {std::chrono::nanoseconds::zero(), std::chrono::nanoseconds::max()}) {
    asio::io_context ioc(threads);
    levee::circuit_breaker b(ioc, cycling(limit));
    breaker_counts c;
    cycle_breaker<io_ex>(ioc, b, c);
    CHECK(c.finished == coroutines);
    CHECK(c.refused == 0);
    CHECK(c.timed_out == 0);
    CHECK(c.other == 0);
    CHECK(c.ok + c.rejected + c.failed == coroutines * rounds);
    CHECK(c.ok > 0);
    CHECK(c.failed > 0);
  }
}

TEST_CASE("timeout threads: breaker probes on any_io_executor race their deadline") {
  asio::io_context ioc(threads);
  levee::circuit_breaker b(ioc, cycling(200us));
  breaker_counts c;
  cycle_breaker<asio::any_io_executor>(ioc, b, c);
  CHECK(c.finished == coroutines);
  CHECK(c.refused == 0);
  CHECK(c.other == 0);
  CHECK(c.ok + c.timed_out + c.rejected + c.failed == coroutines * rounds);
}

TEST_CASE("timeout threads: a registry's guard set refuses io_context::executor_type likewise") {
  // The guard set's one frame for the breaker and its limit (registry/detail/
  // guard_pair.hpp) has the breaker's probe race, and its refusal.
  for (const std::chrono::nanoseconds limit :
       {std::chrono::nanoseconds(200us), std::chrono::nanoseconds::zero()}) {
    asio::io_context ioc;
    levee::registry_options o;
    o.defaults.probe_timeout = limit;
    o.limits = levee::adaptive_limit_options{};
    levee::breaker_registry reg(ioc, o);
    const auto g = reg.guards("a:80");
    REQUIRE(g.limit);
    std::atomic<int> started{0};
    int refused = 0, ok = 0;
    asio::co_spawn(
        ioc.get_executor(),
        [&]() -> asio::awaitable<void, io_ex> {
          try {
            auto [ec, v] = co_await g(call_on<io_ex>(1us, started));
            if (!ec && v == 7) ++ok;
          } catch (const std::invalid_argument& e) {
            if (is_refusal(e, "probe_timeout")) ++refused;
          }
        },
        asio::detached);
    ioc.run();
    if (limit == 200us) {
      CHECK(refused == 1);
      CHECK(started == 0);
      CHECK(g.limit->in_flight() == 0);
    } else {
      CHECK(ok == 1);
      CHECK(started == 1);
    }
  }
}

TEST_CASE(
    "timeout threads: an inner layer's refusal goes through a pipeline's retry and fallback, "
    "and a fallback's") {
  // Before: the breaker's refusal (explicit probe_timeout, io_context::
  // executor_type) was a failed attempt inside the pipeline: retried, then
  // answered by the fallback, so every call quietly got the fallback's value
  // and the breaker never saw a call.
  using result = std::tuple<ec_t, int>;
  asio::io_context ioc;
  std::atomic<int> started{0};
  levee::breaker_options bo;
  bo.probe_timeout = 200us;
  levee::pipeline<result> pipe(
      ioc, {.fallback = {{.value = result(ec_t(), -1)}},
            .retry = levee::retry_options{.max_attempts = 3, .initial_delay = 1us},
            .breaker = bo});
  levee::circuit_breaker b(ioc, bo);
  levee::fallback<result> fb({.value = result(ec_t(), -1)});
  int refused = 0, answered = 0;
  asio::co_spawn(
      ioc.get_executor(),
      [&]() -> asio::awaitable<void, io_ex> {
        try {
          auto [ec, v] = co_await pipe([&] { return call_on<io_ex>(1us, started); });
          if (v == -1) ++answered;
        } catch (const std::invalid_argument& e) {
          if (is_refusal(e, "probe_timeout")) ++refused;
        }
        try {
          auto [ec, v] = co_await fb(b(call_on<io_ex>(1us, started)));
          if (v == -1) ++answered;
        } catch (const std::invalid_argument& e) {
          if (is_refusal(e, "probe_timeout")) ++refused;
        }
      },
      asio::detached);
  ioc.run();
  CHECK(refused == 2);
  CHECK(answered == 0);
  CHECK(started == 0);
  const auto m = pipe.metrics();
  REQUIRE(m.fallback);
  CHECK(m.fallback->used() == 0);
  REQUIRE(m.retry);
  CHECK(m.retry->retries == 0);
  CHECK(fb.metrics().used() == 0);
}
