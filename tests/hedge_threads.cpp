// The hedge on a 4-thread io_context, without strands: the delay timer races
// the first attempt's answer, winners race losers, the caller's cancellation
// races both, and the budget and the latency window are updated from every
// thread. Runs under ThreadSanitizer and AddressSanitizer in CI (label
// "concurrency").
//
// Real time, short and bounded: the races between timers and answers on other
// threads are the point, and virtual time would serialise them away.
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/hedge/hedge.hpp>
#include <levee/timeout/timeout.hpp>

#include "support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string_view>
#include <thread>
#include <vector>

using namespace levee_test;
using ec_t = boost::system::error_code;

namespace {

constexpr int threads = 4;
constexpr int coroutines = 32;
constexpr int rounds = 60;

/// An attempt of `latency` real time, tuple form; counts starts and ends.
asio::awaitable<std::tuple<ec_t, int>> attempt(std::chrono::nanoseconds latency,
                                               std::atomic<int>& started, std::atomic<int>& ended) {
  started.fetch_add(1);
  asio::steady_timer t(co_await asio::this_coro::executor, latency);
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  ended.fetch_add(1);
  co_return std::tuple(ec, ec ? 0 : 7);
}

}  // namespace

TEST_CASE(
    "hedge threads: answers around the delay, losers, cancellations, deadlines and a "
    "breaker on 4 threads") {
  asio::io_context ioc;
  levee::hedge h(ioc, {.max_attempts = 3,
                       .delay = std::chrono::microseconds(300),
                       .percentile = 0.5,
                       .min_delay = std::chrono::microseconds(100),
                       .max_delay = std::chrono::milliseconds(2),
                       .min_samples = 50,
                       .window = std::chrono::milliseconds(200),
                       .max_extra_ratio = 0.5,
                       .min_extra = 20});
  levee::circuit_breaker b(ioc);
  std::atomic<int> started{0}, ended{0}, ok{0}, aborted{0}, deadline{0}, other{0}, calls{0};
  for (int c = 0; c < coroutines; ++c) {
    // Odd coroutines run on a strand of their own (the caller's cancellation
    // is emitted there, as Asio requires); even ones on the io_context's
    // executor (the hedge makes its strand), without cancellations.
    const bool stranded = c % 2 == 1;
    const asio::any_io_executor ex =
        stranded ? asio::any_io_executor(asio::make_strand(ioc)) : ioc.get_executor();
    asio::co_spawn(
        ex,
        [&, c, stranded]() -> asio::awaitable<void> {
          for (int r = 0; r < rounds; ++r) {
            const int kind = (c + r) % 4 == 3 && !stranded ? 0 : (c + r) % 4;
            // Latencies on both sides of the delay.
            const auto latency = std::chrono::microseconds(50 + ((c * 7 + r * 13) % 9) * 100);
            auto make = [&] { return attempt(latency, started, ended); };
            calls.fetch_add(1);
            std::tuple<ec_t, int> res;
            if (kind == 0) {
              res = co_await h(make);
            } else if (kind == 1) {
              res = co_await h([&] { return b(attempt(latency, started, ended)); });
            } else if (kind == 2) {
              res = co_await levee::with_deadline(std::chrono::microseconds(400), h(make));
            } else {
              // The caller cancels from another coroutine, around the delay.
              // Shared: the timer's handler may already be queued when the call ends.
              auto sig = std::make_shared<asio::cancellation_signal>();
              asio::steady_timer t(co_await asio::this_coro::executor,
                                   std::chrono::microseconds(200 + (r % 5) * 100));
              t.async_wait([sig](ec_t ec) {
                if (!ec) sig->emit(asio::cancellation_type::terminal);
              });
              auto [e, v] = co_await asio::co_spawn(
                  co_await asio::this_coro::executor, h(make),
                  asio::bind_cancellation_slot(sig->slot(), asio::as_tuple(asio::use_awaitable)));
              if (e) std::rethrow_exception(e);
              res = v;
              t.cancel();
            }
            const ec_t ec = std::get<0>(res);
            if (!ec) {
              ok.fetch_add(1);
            } else if (ec == asio::error::operation_aborted) {
              aborted.fetch_add(1);
            } else if (ec == levee::error::deadline_exceeded) {
              deadline.fetch_add(1);
            } else {
              other.fetch_add(1);
            }
          }
        },
        asio::detached);
  }
  run_threads(ioc, threads);
  const auto m = h.metrics();
  INFO("ok " << ok << " aborted " << aborted << " deadline " << deadline << " other " << other
             << " hedges " << m.hedges << " refusals " << m.budget_refusals);
  CHECK(calls == coroutines * rounds);
  CHECK(ok + aborted + deadline + other == coroutines * rounds);
  CHECK(other == 0);
  CHECK(ok > 0);
  CHECK(m.hedges > 0);
  CHECK(started == ended);  // every attempt ended before its call returned
  CHECK(static_cast<int>(m.attempts) == started);
  CHECK(m.attempts == m.calls + m.hedges);
  CHECK(b.metrics().failures == 0);  // a cancelled loser is no failure
}

// Not under ThreadSanitizer: an any_io_executor holds a strand of a
// thread_pool behind a reference count that Asio 1.81 releases with a
// standalone acquire fence, which ThreadSanitizer does not model: it reports
// the last owner's delete as racing with another owner's earlier read (seen
// here; timeout/detail/race.hpp's serial_executor notes the same). The
// io_context case above, whose strand is held inline, runs under it.
#if defined(__SANITIZE_THREAD__)
#define LEVEE_TEST_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define LEVEE_TEST_TSAN 1
#endif
#endif

#ifndef LEVEE_TEST_TSAN
TEST_CASE("hedge threads: calls on a 4-thread thread_pool, strands taken from its pool") {
  asio::thread_pool pool(threads);
  levee::hedge h(pool, {.max_attempts = 2, .delay = std::chrono::microseconds(200)});
  std::atomic<int> started{0}, ended{0}, ok{0}, done{0};
  for (int c = 0; c < coroutines; ++c) {
    asio::co_spawn(
        pool.get_executor(),
        [&, c]() -> asio::awaitable<void> {
          for (int r = 0; r < rounds; ++r) {
            const auto latency = std::chrono::microseconds(((c * 7 + r * 13) % 5) * 100);
            auto [ec, v] = co_await h([&] { return attempt(latency, started, ended); });
            if (!ec && v == 7) ok.fetch_add(1);
          }
          done.fetch_add(1);
        },
        asio::detached);
  }
  pool.join();
  const auto m = h.metrics();
  CHECK(done == coroutines);
  CHECK(ok == coroutines * rounds);
  CHECK(started == ended);
  CHECK(m.attempts == m.calls + m.hedges);
}
#endif

TEST_CASE("hedge threads: an attempt's executor outlives its call on a thread_pool") {
  // A thread_pool's strand is too large for an any_io_executor's inline
  // storage: its copies share one heap object. Giving the call's strand back
  // to the pool moved it out of that object, and a copy the attempt kept
  // then held a null strand (a crash when used; review finding).
  asio::thread_pool pool(1);
  levee::hedge h(pool, {.max_attempts = 2, .delay = std::chrono::seconds(10)});
  std::optional<asio::any_io_executor> saved;
  std::atomic<bool> answered{false}, ran{false};
  asio::co_spawn(
      pool.get_executor(),
      [&]() -> asio::awaitable<void> {
        auto [ec, v] = co_await h([&]() -> asio::awaitable<std::tuple<ec_t, int>> {
          saved = co_await asio::this_coro::executor;
          co_return std::tuple(ec_t(), 7);
        });
        answered = !ec && v == 7;
        asio::post(*saved, [&] { ran = true; });
      },
      asio::detached);
  pool.join();
  CHECK(answered);
  CHECK(ran);
}

namespace {

/// An attempt on `Executor`: a step, a wait of `latency`, a step.
template <class Executor>
asio::awaitable<std::tuple<ec_t, int>, Executor> stepped_attempt(call_steps& s,
                                                                 std::chrono::nanoseconds latency) {
  s.step();
  asio::basic_waitable_timer<std::chrono::steady_clock,
                             asio::wait_traits<std::chrono::steady_clock>, Executor>
      t(co_await asio::this_coro::executor, latency);
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable_t<Executor>{}));
  s.step();
  co_return std::tuple(ec, ec ? 0 : 7);
}

/// 16 callers on a 4-thread io_context, each making 30 hedged calls whose
/// attempts' awaitables are on `Executor` (the callers' executors, from
/// `make`): the first attempt answers after 300 µs, the hedges (after
/// 100 µs) after 50 µs, so that a hedge wins while the first attempt is
/// cancelled, around the same time.
template <class Executor, class Make>
void check_serial_calls(asio::io_context& ioc, Make make) {
  levee::hedge h(ioc, {.max_attempts = 3,
                       .delay = std::chrono::microseconds(100),
                       .max_extra_ratio = 1.0,
                       .min_extra = 100000});
  constexpr int callers = 16, calls = 30;
  std::atomic<int> overlaps{0}, answered{0};
  for (int c = 0; c < callers; ++c) {
    asio::co_spawn(
        make(),
        [&]() -> asio::awaitable<void, Executor> {
          for (int r = 0; r < calls; ++r) {
            call_steps s{.overlaps = overlaps};
            int n = 0;
            auto [ec, v] = co_await h([&] {
              s.step();
              const auto latency =
                  n++ == 0 ? std::chrono::microseconds(300) : std::chrono::microseconds(50);
              return stepped_attempt<Executor>(s, latency);
            });
            if (!ec && v == 7) answered.fetch_add(1);
          }
        },
        asio::detached);
  }
  run_threads(ioc, threads);
  CHECK(overlaps == 0);
  CHECK(answered == callers * calls);
  CHECK(h.metrics().hedges > 0);
}

}  // namespace

TEST_CASE("hedge threads: a call's handlers never overlap, attempts on any_io_executor") {
  asio::io_context ioc;
  check_serial_calls<asio::any_io_executor>(
      ioc, [&] { return asio::any_io_executor(ioc.get_executor()); });
}

TEST_CASE("hedge threads: a call's handlers never overlap, attempts on a concrete strand") {
  using io_strand = asio::strand<asio::io_context::executor_type>;
  asio::io_context ioc;
  check_serial_calls<io_strand>(ioc, [&] { return asio::make_strand(ioc); });
}

// A hedged call's first attempt starts inside the call's strand, as Asio
// starts a coroutine inside its executor: work the attempt puts on its
// executor (a post, a timer's handler, a coroutine it spawns there) runs
// only once the attempt waits, never beside its start, on a 4-thread
// io_context. Starting the attempt outside the strand (2026-12-07, not
// kept: bench/README.md, "Tried: the first attempt outside the strand")
// failed this: the posted step overlapped the attempt's start. The attempt
// then hops once onto its strand, so it goes on on another thread while its
// launch unwinds; a quarter of the calls have a breaker inside, a quarter
// a deadline outside.
TEST_CASE(
    "hedge threads: work an attempt posts onto its executor never runs beside the attempt's "
    "start") {
  asio::io_context ioc;
  levee::hedge h(ioc, {.max_attempts = 2, .delay = std::chrono::microseconds(50)});
  levee::circuit_breaker b(ioc);
  constexpr int callers = 16, calls = 50;
  std::atomic<int> overlaps{0}, answered{0}, deadline{0};
  for (int c = 0; c < callers; ++c) {
    asio::co_spawn(
        ioc.get_executor(),
        [&, c]() -> asio::awaitable<void> {
          for (int r = 0; r < calls; ++r) {
            call_steps s{.overlaps = overlaps};
            auto hop = [&s]() -> asio::awaitable<std::tuple<ec_t, int>> {
              const asio::any_io_executor ex = co_await asio::this_coro::executor;
              asio::post(ex, [&s] { s.step(); });  // runs before the hop below ends
              s.step();
              co_await asio::post(ex, asio::use_awaitable);
              s.step();
              co_return std::tuple(ec_t{}, 7);
            };
            std::tuple<ec_t, int> res;
            switch ((c + r) % 4) {
              case 0:
                res = co_await h([&] { return b(hop()); });
                break;
              case 1:
                res = co_await levee::with_deadline(std::chrono::milliseconds(50), h(hop));
                break;
              default:
                res = co_await h(hop);
            }
            const auto [ec, v] = res;
            if (!ec && v == 7)
              answered.fetch_add(1);
            else if (ec == levee::error::deadline_exceeded)
              deadline.fetch_add(1);
          }
        },
        asio::detached);
  }
  run_threads(ioc, threads);
  CHECK(overlaps == 0);
  INFO("deadlines " << deadline);
  CHECK(answered + deadline == callers * calls);
  CHECK(h.metrics().calls == callers * calls);
}

TEST_CASE(
    "hedge threads: attempts on io_context::executor_type, which cannot be serialised, are "
    "refused") {
  // Before the refusal, the attempts of one call and its own handlers ran
  // on any of the 4 threads, unserialised: run as the two cases above, this
  // case ended the process (std::terminate: a `co_await: Operation canceled`
  // escaping Asio's co_spawn, a loser's cancellation emitted from another
  // thread while it ended).
  using io_ex = asio::io_context::executor_type;
  STATIC_REQUIRE(!levee::detail::hedge_can_serialize<io_ex>);
  STATIC_REQUIRE(!levee::detail::hedge_can_serialize<asio::thread_pool::executor_type>);
  STATIC_REQUIRE(levee::detail::hedge_can_serialize<asio::strand<io_ex>>);
  STATIC_REQUIRE(levee::detail::hedge_can_serialize<asio::any_io_executor>);
  asio::io_context ioc;
  levee::hedge h(ioc, {.max_attempts = 3, .delay = std::chrono::microseconds(100)});
  constexpr int callers = 16, calls = 30;
  std::atomic<int> overlaps{0}, refused{0}, once{0}, made{0};
  for (int c = 0; c < callers; ++c) {
    asio::co_spawn(
        ioc.get_executor(),
        [&]() -> asio::awaitable<void, io_ex> {
          for (int r = 0; r < calls; ++r) {
            call_steps s{.overlaps = overlaps};
            auto factory = [&] {
              made.fetch_add(1);
              return stepped_attempt<io_ex>(s, std::chrono::microseconds(50));
            };
            try {
              co_await h(factory);
            } catch (const std::invalid_argument& e) {
              if (std::string_view(e.what()).find("io_context::executor_type") !=
                  std::string_view::npos)
                refused.fetch_add(1);
            }
            // One attempt (not idempotent): the factory's awaitable alone, as before.
            auto [ec, v] = co_await h(factory, levee::hedge_call{.idempotent = false});
            if (!ec && v == 7) once.fetch_add(1);
          }
        },
        asio::detached);
  }
  run_threads(ioc, threads);
  CHECK(refused == callers * calls);
  CHECK(once == callers * calls);
  CHECK(made == callers * calls);  // no attempt of a refused call started
  CHECK(overlaps == 0);
  CHECK(h.metrics().calls == callers * calls);  // the one-attempt calls only
}

TEST_CASE("hedge threads: the token form on io_context::executor_type completes with the refusal") {
  using io_ex = asio::io_context::executor_type;
  asio::io_context ioc;
  levee::hedge h(ioc, {.max_attempts = 3, .delay = std::chrono::microseconds(100)});
  std::atomic<int> overlaps{0};
  call_steps s{.overlaps = overlaps};
  int made = 0;
  auto factory = [&] {
    ++made;
    return stepped_attempt<io_ex>(s, std::chrono::microseconds(50));
  };
  std::exception_ptr refusal;
  bool completed = false;
  h.async_execute(factory, [&](std::exception_ptr e, std::tuple<ec_t, int>) {
    completed = true;
    refusal = e;
  });
  ioc.run();
  REQUIRE(completed);
  REQUIRE(refusal);
  CHECK_THROWS_AS(std::rethrow_exception(refusal), std::invalid_argument);
  CHECK(made == 0);
  // One attempt (not idempotent) through the token form runs as before.
  std::optional<int> got;
  ioc.restart();
  h.async_execute(factory, levee::hedge_call{.idempotent = false},
                  [&](std::exception_ptr e, std::tuple<ec_t, int> r) {
                    CHECK(!e);
                    got = std::get<1>(r);
                  });
  ioc.run();
  CHECK(got == 7);
  CHECK(made == 1);
}
