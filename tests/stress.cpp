// Concurrency: one breaker shared by coroutines on two threads. Runs under
// ThreadSanitizer in CI (label "concurrency").
#include <levee/breaker/circuit_breaker.hpp>

#include <levee/limit/bulkhead.hpp>
#include <levee/registry/registry.hpp>

#include "support.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <map>
#include <mutex>
#include <optional>
#include <random>
#include <thread>
#include <vector>

using namespace levee_test;
using levee::circuit_state;

namespace {

struct tally {
  std::atomic<std::uint64_t> succeeded{0}, failed{0}, cancelled{0}, rejected{0}, calls{0};
  // Probes whose deadline passed: the breaker counts each as a failure and its
  // caller gets error::timeout, whatever the downstream did.
  std::atomic<std::uint64_t> timed_out{0};
  // Suspend on a due timer of the virtual clock rather than a post: the call
  // then resumes from the reactor, as the probe's own deadline does, so that
  // the two race (a post to the race's strand runs before its timer can).
  bool suspend_on_timer = false;
  std::atomic<std::size_t> max_probes_seen{0};

  void saw_probes(std::size_t n) {
    std::size_t m = max_probes_seen.load();
    while (n > m && !max_probes_seen.compare_exchange_weak(m, n)) {
    }
  }
};

enum class result_kind { success, failure, cancelled };

asio::awaitable<std::tuple<boost::system::error_code, int>> finished(bool fail) {
  co_return std::tuple(
      fail ? make_error_code(boost::system::errc::connection_reset) : boost::system::error_code(),
      1);
}

// The downstream: decides its own outcome, sometimes suspends so that calls
// interleave across the two threads, and moves virtual time forward. `ran`
// says which counter it went to, if it got that far (a probe cancelled at its
// deadline stops at its suspension).
asio::awaitable<std::tuple<boost::system::error_code, int>> downstream_ec(
    breaker& cb, tally& t, result_kind kind, bool suspend, std::optional<result_kind>& ran) {
  t.saw_probes(cb.probes_in_flight());
  if (suspend && t.suspend_on_timer) {
    // Past a 1 ns probe deadline armed at the call's start: both timers are
    // then due, the deadline first in the queue's order, and the two race in
    // the same pass of the reactor. (Due at the unmoved `now`, this call's
    // timer fired before the deadline unless another worker happened to move
    // the clock: 4 to 10 timeouts in a million calls, and none at all in
    // some runs of an optimized build under load.)
    vclock::advance(std::chrono::nanoseconds(2));
    timer due(co_await asio::this_coro::executor, vclock::now());
    co_await due.async_wait(asio::use_awaitable);
  } else if (suspend) {
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  }
  t.saw_probes(cb.probes_in_flight());
  ran = kind;
  switch (kind) {
    case result_kind::success:
      t.succeeded++;
      co_return std::tuple(boost::system::error_code(), 1);
    case result_kind::failure:
      t.failed++;
      co_return std::tuple(make_error_code(boost::system::errc::connection_reset), 0);
    case result_kind::cancelled:
      t.cancelled++;
      co_return std::tuple(make_error_code(boost::asio::error::operation_aborted), 0);
  }
  co_return std::tuple(boost::system::error_code(), 0);
}

asio::awaitable<int> downstream_throw(breaker& cb, tally& t, result_kind kind, bool suspend,
                                      std::optional<result_kind>& ran) {
  auto [ec, v] = co_await downstream_ec(cb, t, kind, suspend, ran);
  if (ec) throw boost::system::system_error(ec);
  co_return v;
}

asio::awaitable<void> worker(breaker& cb, tally& t, std::uint64_t seed, int calls) {
  std::mt19937_64 rng(seed);
  for (int i = 0; i < calls; ++i) {
    // Requests arrive one after another: yield between them, so that a worker
    // whose calls are rejected (and so never suspend) does not run alone.
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    t.calls++;
    vclock::advance(1us);  // virtual time moves with every call offered
    const auto r = rng() % 100;
    // Phases of health and sickness, so that the breaker keeps moving.
    const bool sick = (i / 500) % 2 == 1;
    const auto kind = r < 10                 ? result_kind::cancelled
                      : r < (sick ? 80 : 25) ? result_kind::failure
                                             : result_kind::success;
    const bool suspend = rng() % 2 == 0;
    std::optional<result_kind> ran;
    boost::system::error_code seen;
    if (rng() % 2 == 0) {
      auto [ec, v] = co_await cb(downstream_ec(cb, t, kind, suspend, ran));
      seen = ec;
    } else {
      try {
        (void)co_await cb(downstream_throw(cb, t, kind, suspend, ran));
      } catch (const boost::system::system_error& e) {
        seen = e.code();
      }
    }
    if (seen == levee::error::circuit_open) t.rejected++;
    if (seen == levee::error::timeout) {
      // A probe's deadline won: what the downstream did (if it got that far)
      // is not what the breaker and the caller saw.
      t.timed_out++;
      if (ran == result_kind::success) t.succeeded--;
      if (ran == result_kind::failure) t.failed--;
      if (ran == result_kind::cancelled) t.cancelled--;
    }
  }
}

}  // namespace

TEST_CASE("stress: 2 threads, 1,000,000 guarded calls, no outcome lost, probes bounded") {
  // The probe deadline: automatic (4 x the sampled p99), and so tight that
  // thousands of probes time out while their downstream runs or has just
  // returned: the breaker then counts a failure and the caller gets
  // error::timeout, whatever the downstream did.
  const auto probe_timeout =
      GENERATE(levee::breaker_options{}.probe_timeout, std::chrono::nanoseconds(1));
  CAPTURE(probe_timeout.count());
  virtual_time vt;
  asio::io_context ioc(2);
  levee::breaker_options o{.window = 1ms,
                           .minimum_calls = 20,
                           .open_duration = 20us,
                           .half_open_probes = 2,
                           .successes_to_close = 2,
                           .probe_timeout = probe_timeout};
  breaker cb(ioc, o);
  tally t;
  t.suspend_on_timer = probe_timeout == 1ns;
  constexpr int workers = 200, per_worker = 5000;
  std::atomic<int> remaining{workers};
  for (int w = 0; w < workers; ++w) {
    asio::co_spawn(ioc, worker(cb, t, 1000 + w, per_worker), [&](std::exception_ptr e) {
      if (e) std::rethrow_exception(e);
      if (--remaining == 0) ioc.stop();  // the open timer may still be pending
    });
  }
  std::thread other([&] { ioc.run(); });
  ioc.run();
  other.join();
  REQUIRE(remaining == 0);

  const auto c = cb.counters();
  INFO("succeeded " << t.succeeded << " failed " << t.failed << " cancelled " << t.cancelled
                    << " rejected " << t.rejected << " timed out " << t.timed_out);
  CHECK(t.calls == std::uint64_t{workers} * per_worker);
  CHECK(t.succeeded + t.failed + t.cancelled + t.rejected + t.timed_out == t.calls);
  CHECK(c.successes == t.succeeded);
  CHECK(c.failures == t.failed + t.timed_out);
  CHECK(c.ignored == t.cancelled);
  CHECK(c.rejected == t.rejected);
  CHECK(t.max_probes_seen <= o.half_open_probes);
  CHECK(cb.probes_in_flight() == 0);
  // It really moved between states under load.
  CHECK(t.rejected > 1000);
  CHECK(t.succeeded > 200000);
  // About a tenth of the admitted calls are cancelled and a sixth fail, and
  // about half are rejected: ~50,000 cancelled (49,577 to 50,607 on the code
  // before issue 11 as well), so the bounds sit well below the spread.
  CHECK(t.failed > 20000);
  CHECK(t.cancelled > 20000);
  if (probe_timeout == 1ns) CHECK(t.timed_out > 0);
}

TEST_CASE("stress: probes admitted at once never exceed half_open_probes (core, 2 threads)") {
  // The core hands out permits that say whether they are probes, so here the
  // test counts live probes itself, per generation, independently of the
  // breaker's own counter.
  levee::breaker_options o{
      .window = 1ms, .minimum_calls = 4, .half_open_probes = 3, .successes_to_close = 2};
  levee::detail::breaker_core core(o, 2);
  std::mutex m;
  std::map<std::uint64_t, std::size_t> live_probes;  // generation -> probes held
  std::size_t worst = 0;
  std::atomic<std::uint64_t> clock_ns{0};
  std::atomic<std::uint64_t> probes_admitted{0};

  auto run = [&](std::uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::vector<levee::detail::permit> held;
    // Until both threads together saw enough probes (bounded, in case of a bug
    // that stops admitting them: the checks below then fail).
    for (int i = 0; i < 20'000'000 && (i < 300'000 || probes_admitted < 20'000); ++i) {
      const auto now = std::chrono::nanoseconds(clock_ns.fetch_add(1) / 4);
      if (rng() % 8 == 0 && core.state() == circuit_state::open) {
        (void)core.open_elapsed(core.generation());  // the open timer fires
      }
      if (held.size() < 4 && rng() % 2 == 0) {
        if (auto p = core.try_acquire()) {
          if (p.is_probe()) {
            std::lock_guard g(m);
            worst = std::max(worst, ++live_probes[p.generation()]);
            probes_admitted++;
          }
          held.push_back(p);
        }
        continue;
      }
      if (held.empty()) continue;
      const auto p = held.front();
      held.erase(held.begin());
      const auto r = rng() % 10;
      auto finish = [&] {
        if (r == 0) {
          core.release(p);
        } else {
          (void)core.complete(p,
                              r < 5   ? levee::outcome::failure
                              : r < 9 ? levee::outcome::success
                                      : levee::outcome::ignored,
                              now);
        }
      };
      if (p.is_probe()) {
        // The test's count drops only after the core freed the slot, and an
        // admission is counted after this lock: the count never exceeds the
        // core's, so a count above the limit is a real over-admission.
        std::lock_guard g(m);
        finish();
        --live_probes[p.generation()];
      } else {
        finish();
      }
    }
    // The permits still held are released as above: a probe's count drops
    // under the lock, after the core freed its slot. (Released without the
    // lock, the other thread, still running, saw new probes admitted into
    // the freed slots while the old ones were still counted: 4 <= 3 in
    // Release builds, a fault of the test, not of the core.)
    for (auto p : held) {
      if (!p.is_probe()) {
        core.release(p);
        continue;
      }
      std::lock_guard g(m);
      core.release(p);
      --live_probes[p.generation()];
    }
  };
  std::thread a(run, 1), b(run, 2);
  a.join();
  b.join();
  CHECK(worst <= o.half_open_probes);
  CHECK(worst == o.half_open_probes);  // the limit was reached, so the bound was tested
  CHECK(probes_admitted >= 20'000);
  CHECK(core.probes_in_flight() == 0);
}

TEST_CASE("stress: a bulkhead shared by 2 threads never exceeds its limit") {
  asio::io_context ioc(2);
  levee::bulkhead b(ioc, {.max_concurrent = 3, .max_queue = 8});
  std::atomic<int> running{0}, most{0}, ran{0}, full{0};
  auto body = [&]() -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
    const int now = ++running;
    int m = most.load();
    while (now > m && !most.compare_exchange_weak(m, now)) {
    }
    co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
    --running;
    ++ran;
    co_return std::tuple(boost::system::error_code(), 0);
  };
  constexpr int workers = 50, per_worker = 2000;
  std::atomic<int> remaining{workers};
  for (int w = 0; w < workers; ++w) {
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < per_worker; ++i) {
            auto [ec, v] = co_await b(body());
            if (ec == levee::error::bulkhead_full) ++full;
          }
        },
        [&](std::exception_ptr e) {
          if (e) std::rethrow_exception(e);
          --remaining;
        });
  }
  std::thread other([&] { ioc.run(); });
  ioc.run();
  other.join();
  CHECK(remaining == 0);
  CHECK(most <= 3);
  CHECK(most == 3);
  CHECK(ran + full == workers * per_worker);
  CHECK(full > 0);
  CHECK(b.in_flight() == 0);
  CHECK(b.queued() == 0);
}

TEST_CASE("stress: registry, many threads get and create breakers safely") {
  asio::io_context ioc;
  levee::breaker_registry r(ioc, {.idle_timeout = 1ns});  // sweeps run all the time
  std::atomic<int> created{0};
  auto work = [&](int seed) {
    for (int i = 0; i < 20000; ++i) {
      const std::string key = "host" + std::to_string((i * 7 + seed) % 50) + ":80";
      auto b = r.get(key);
      if (b->name() != key) created = -1000000;
      created++;
    }
  };
  std::thread t1(work, 1), t2(work, 2);
  t1.join();
  t2.join();
  CHECK(created == 40000);
  CHECK(r.size() <= 50);
}

TEST_CASE("stress: events, metrics and listeners while calls run on two threads") {
  // Real time: a short open duration makes the breaker cycle through its states
  // while two threads call it; a third takes metrics snapshots and adds and
  // removes a listener. Checks: every event is delivered exactly once, and the
  // snapshots' counters and times never go backwards.
  asio::io_context timer_ioc(1);
  auto guard = asio::make_work_guard(timer_ioc);
  std::thread timer_thread([&] { timer_ioc.run(); });
  levee::circuit_breaker cb(timer_ioc,
                            {.failure_rate_threshold = 0.3,
                             .minimum_calls = 5,
                             .open_duration = std::chrono::microseconds(50)},
                            "stress");
  asio::io_context events_ioc(1);  // run once the calls are done
  std::map<levee::event_kind, std::uint64_t> seen;
  cb.listen(
      levee::all_events, [&](const levee::breaker_event& e) { ++seen[e.kind]; },
      events_ioc.get_executor());

  constexpr int per_thread = 20000;
  auto worker = [&](int seed) {
    asio::io_context ioc(1);
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          for (int i = 0; i < per_thread; ++i) {
            const bool fail = (i * 7 + seed) % 3 == 0;
            auto [ec, v] = co_await cb(finished(fail));
            (void)ec;
            (void)v;
          }
        },
        asio::detached);
    ioc.run();
  };
  std::atomic<bool> done{false};
  std::thread observer([&] {
    levee::breaker_metrics last;
    std::chrono::nanoseconds last_total{};
    bool monotonic = true;
    asio::io_context scratch(1);
    while (!done.load()) {
      const auto id = cb.listen(
          levee::transition_events, [](const levee::breaker_event&) {}, scratch.get_executor());
      const levee::breaker_metrics m = cb.metrics();
      std::chrono::nanoseconds total{};
      for (auto t : m.time_in_state) total += t;
      monotonic = monotonic && m.successes >= last.successes && m.failures >= last.failures &&
                  m.rejected >= last.rejected && total >= last_total;
      for (std::size_t s = 0; s < levee::circuit_state_count; ++s)
        monotonic = monotonic && m.time_in_state[s] >= last.time_in_state[s];
      last = m;
      last_total = total;
      cb.unlisten(id);
    }
    CHECK(monotonic);
  });
  std::thread t1(worker, 1), t2(worker, 2);
  t1.join();
  t2.join();
  done = true;
  observer.join();
  guard.reset();
  timer_ioc.stop();
  timer_thread.join();

  events_ioc.run();
  const levee::breaker_metrics m = cb.metrics();
  CHECK(m.successes + m.failures + m.rejected == 2 * per_thread);
  CHECK(seen[levee::event_kind::success] == m.successes);
  CHECK(seen[levee::event_kind::failure] == m.failures);
  CHECK(seen[levee::event_kind::rejected] == m.rejected);
  std::uint64_t transitions = 0;
  for (const auto& row : m.transitions)
    for (auto n : row) transitions += n;
  CHECK(seen[levee::event_kind::transition] == transitions);
  CHECK(transitions > 0);
}

// Issue 11, defect 2 under threads: the breaker object goes while calls it
// admitted finish on four other threads (their outcomes recorded, a trip
// arming no timer, the shared state freed by whichever call ends last).
TEST_CASE("stress: a breaker destroyed while its calls finish on 4 threads") {
  for (int round = 0; round < 20; ++round) {
    asio::io_context ioc(4);
    auto guard = asio::make_work_guard(ioc);
    asio::steady_timer gate(ioc, std::chrono::steady_clock::time_point::max());
    auto cb = std::make_unique<levee::circuit_breaker>(
        ioc, levee::breaker_options{.minimum_calls = 8, .open_duration = 1h});
    constexpr int calls = 64;
    std::atomic<int> started{0}, finished_calls{0};
    auto inner = [&](int i) -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
      ++started;
      (void)co_await gate.async_wait(asio::as_tuple(asio::use_awaitable));
      for (int k = 0; k < i % 4; ++k)
        co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
      co_return std::tuple(i % 2 ? make_error_code(boost::system::errc::connection_reset)
                                 : boost::system::error_code(),
                           i);
    };
    for (int i = 0; i < calls; ++i) {
      asio::co_spawn(ioc, (*cb)(inner(i)),
                     [&](std::exception_ptr, std::tuple<boost::system::error_code, int>) {
                       ++finished_calls;
                     });
    }
    while (started.load() < calls) ioc.poll_one();  // admitted, waiting at the gate
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i) threads.emplace_back([&] { ioc.run(); });
    asio::post(gate.get_executor(), [&] { gate.cancel(); });  // the calls finish...
    cb.reset();                                               // ...as the breaker goes
    while (finished_calls.load() < calls) std::this_thread::yield();
    guard.reset();
    for (auto& t : threads) t.join();
    CHECK(ioc.stopped());  // nothing of the breaker left pending
  }
}
