// The layers (timeouts, deadlines, the bulkhead's and the rate limiter's
// waits; the layers' event listeners; a throttle shared by 4 threads and
// destroyed while they end its calls; deadlines that never leak between
// coroutines) on a 4-thread
// io_context, without strands: timers race the operations they bound, some
// operations finishing just before their limit and some just after. Runs under
// ThreadSanitizer and AddressSanitizer in CI (label "concurrency").
//
// Real time, short and bounded: the race between a timer and an operation
// completing on another thread is the point, and virtual time would serialise
// it away.
#include <levee/http/deadline.hpp>
#include <levee/limit/bulkhead.hpp>
#include <levee/limit/rate_limiter.hpp>
#include <levee/limit/throttle.hpp>
#include <levee/timeout/deadline.hpp>
#include <levee/timeout/timeout.hpp>

#include "support.hpp"

#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>
#include <vector>

using namespace levee_test;

namespace {

constexpr int threads = 4;
constexpr int coroutines = 32;
constexpr int rounds = 100;

/// A call that takes `latency` of real time (0: completes without waiting, 1 ns:
/// one trip through the executor), tuple form.
asio::awaitable<std::tuple<boost::system::error_code, int>> call_ec(
    std::chrono::nanoseconds latency) {
  auto ex = co_await asio::this_coro::executor;
  if (latency == 1ns) {
    co_await asio::post(ex, asio::use_awaitable);
  } else if (latency > 0ns) {
    asio::steady_timer t(ex, latency);
    auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return std::tuple(ec, 0);
  }
  co_return std::tuple(boost::system::error_code(), 7);
}

/// The same, exception form; some calls throw.
asio::awaitable<int> call(std::chrono::nanoseconds latency, bool fail) {
  auto [ec, v] = co_await call_ec(latency);
  if (ec) throw boost::system::system_error(ec);
  if (fail) throw service_error("boom");
  co_return v;
}

/// Latencies around a limit of 200 us: well before, just before, at, just
/// after, well after.
std::chrono::nanoseconds latency_of(int i) {
  constexpr std::chrono::nanoseconds choices[] = {0ns,   1ns,   50us,  180us, 195us,
                                                  200us, 205us, 220us, 400us, 2ms};
  return choices[static_cast<std::size_t>(i) % std::size(choices)];
}

struct counts {
  std::atomic<int> ok{0}, timed_out{0}, threw{0}, other{0}, finished{0};
};

}  // namespace

TEST_CASE("threads: with_timeout and with_deadline race their timers on 4 threads") {
  asio::io_context ioc(threads);
  counts c;
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc,
        [&c, k]() -> asio::awaitable<void> {
          for (int r = 0; r < rounds; ++r) {
            const auto lat = latency_of(k + r);
            const int mode = (k + r) % 4;
            if (mode == 0) {
              auto [ec, v] = co_await levee::with_timeout(200us, call_ec(lat));
              if (!ec && v == 7) {
                c.ok++;
              } else if (ec == levee::error::timeout) {
                c.timed_out++;
              } else {
                c.other++;
              }
            } else if (mode == 1) {
              try {
                const int v = co_await levee::with_deadline(200us, call(lat, r % 3 == 0));
                v == 7 ? c.ok++ : c.other++;
              } catch (const boost::system::system_error& e) {
                e.code() == levee::error::deadline_exceeded ? c.timed_out++ : c.other++;
              } catch (const service_error&) {
                c.threw++;
              }
            } else if (mode == 2) {
              // A deadline around a timeout: the outer cancellation passes into
              // the inner race while its own timer may fire.
              auto [ec, v] = co_await levee::with_deadline(
                  200us, levee::with_timeout(lat < 200us ? 1s : 190us, call_ec(lat)));
              if (!ec && v == 7) {
                c.ok++;
              } else if (ec == levee::error::timeout || ec == levee::error::deadline_exceeded ||
                         ec == asio::error::operation_aborted) {
                c.timed_out++;
              } else {
                c.other++;
              }
            } else {
              auto [ec, v] =
                  co_await levee::with_timeout(std::chrono::nanoseconds::max(), call_ec(lat / 4));
              (!ec && v == 7) ? c.ok++ : c.other++;
            }
          }
          c.finished++;
        },
        asio::detached);
  }
  run_threads(ioc, threads);
  CHECK(c.finished == coroutines);
  CHECK(c.other == 0);
  CHECK(c.ok + c.timed_out + c.threw == coroutines * rounds);
  CHECK(c.ok > 0);
  CHECK(c.timed_out > 0);
}

TEST_CASE("threads: a bulkhead's max_wait races grants on 4 threads") {
  asio::io_context ioc(threads);
  levee::bulkhead b(ioc, {.max_concurrent = 3, .max_queue = coroutines, .max_wait = 200us});
  counts c;
  std::atomic<int> running{0}, most{0};
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc,
        [&, k]() -> asio::awaitable<void> {
          auto guarded = [&](std::chrono::nanoseconds lat)
              -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
            const int now = ++running;
            int m = most.load();
            while (now > m && !most.compare_exchange_weak(m, now)) {
            }
            auto r = co_await call_ec(lat);
            --running;
            co_return r;
          };
          for (int r = 0; r < rounds; ++r) {
            // Every other round, a timeout around the bulkhead cancels waits
            // and calls through the waiter's slot, from the race's strand.
            auto [ec, v] =
                r % 2 == 0 ? co_await b(guarded(latency_of(k + r) / 4))
                           : co_await levee::with_timeout(150us, b(guarded(latency_of(k + r) / 4)));
            if (!ec && v == 7) {
              c.ok++;
            } else if (ec == levee::error::bulkhead_full || ec == levee::error::timeout) {
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
  CHECK(c.finished == coroutines);
  CHECK(c.other == 0);
  CHECK(c.ok + c.timed_out == coroutines * rounds);
  CHECK(c.ok > 0);
  CHECK(most <= 3);
  CHECK(b.in_flight() == 0);
  CHECK(b.queued() == 0);
}

TEST_CASE("threads: a rate limiter's waits race their timers and cancellations on 4 threads") {
  asio::io_context ioc(threads);
  // A token every 50 us, 4 at once, a wait of at most 200 us.
  levee::rate_limiter l(ioc, {.rate = 20'000, .period = 1s, .burst = 4, .max_wait = 200us});
  counts c;
  std::atomic<int> started{0}, token_ok{0};
  // Every event once, on the io_context's threads, never under a lock of the
  // limiter (the listener calls it).
  std::atomic<std::uint64_t> rejected_events{0}, waited_events{0}, cancelled_events{0};
  l.listen(levee::all_rate_limiter_events, [&](const levee::rate_limiter_event& e) {
    (void)l.metrics();
    auto& n = e.kind == levee::rate_limiter_event_kind::rejected ? rejected_events
              : e.kind == levee::rate_limiter_event_kind::waited ? waited_events
                                                                 : cancelled_events;
    n.fetch_add(1, std::memory_order_relaxed);
  });
  const auto begin = std::chrono::steady_clock::now();
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc,
        [&, k]() -> asio::awaitable<void> {
          auto guarded = [&](std::chrono::nanoseconds lat)
              -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
            ++started;
            co_return co_await call_ec(lat);
          };
          for (int r = 0; r < rounds; ++r) {
            const auto lat = latency_of(k + r) / 8;
            boost::system::error_code ec;
            int v = 0;
            if (r % 3 == 0) {
              // A timeout around the limiter cancels waits from the race's strand.
              std::tie(ec, v) = co_await levee::with_timeout(120us, l(guarded(lat)));
            } else if (r % 3 == 1) {
              std::tie(ec, v) = co_await l(guarded(lat));
            } else {
              // The token form, on the same bucket.
              asio::steady_timer t(co_await asio::this_coro::executor, lat);
              std::tie(ec) = co_await l.async_execute(t.async_wait(asio::deferred),
                                                      asio::as_tuple(asio::use_awaitable));
              if (!ec) {
                v = 7;
                ++started;
                ++token_ok;
              }
            }
            if (!ec && v == 7) {
              c.ok++;
            } else if (ec == levee::error::rate_limited || ec == levee::error::timeout) {
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
  const auto elapsed = std::chrono::steady_clock::now() - begin;
  CHECK(c.finished == coroutines);
  CHECK(c.other == 0);
  CHECK(c.ok + c.timed_out == coroutines * rounds);
  CHECK(c.ok > 0);
  CHECK(c.timed_out > 0);
  CHECK(token_ok > 0);
  const auto m = l.metrics();
  CHECK(m.waiting == 0);
  CHECK(m.admitted == static_cast<std::uint64_t>(started.load()));
  CHECK(m.admitted + m.rejected + m.cancelled == static_cast<std::uint64_t>(coroutines * rounds));
  // Never more than the burst plus one token per 50 us since the start.
  CHECK(m.admitted <= 4 + static_cast<std::uint64_t>(elapsed / 50us) + 1);
  CHECK(rejected_events == m.rejected);
  CHECK(waited_events == m.waited);
  CHECK(cancelled_events == m.cancelled);
  CHECK(m.waited > 0);
  CHECK(m.events_lost == 0);
}

TEST_CASE("threads: throttle and deadline reader listeners see each event once on 4 threads") {
  asio::io_context ioc(threads);
  levee::throttle t(ioc, {.max_rejection_probability = 1.0});
  for (int i = 0; i < 20; ++i) t.record(levee::outcome::failure);  // it sheds from the start
  levee::http::deadline_reader reader({.margin = 5ms});
  std::atomic<std::uint64_t> throttle_events{0}, churn_events{0}, expired{0}, malformed{0};
  t.listen(levee::all_throttle_events, [&](const levee::throttle_event& e) {
    (void)t.metrics();  // never under the throttle's lock
    if (e.probability > 0) throttle_events.fetch_add(1, std::memory_order_relaxed);
  });
  reader.listen(
      levee::http::all_deadline_events,
      [&](const levee::http::deadline_event& e) {
        (e.kind == levee::http::deadline_event_kind::expired ? expired : malformed)++;
      },
      ioc.get_executor());
  std::atomic<int> throttled{0}, finished{0};
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc,
        [&, k]() -> asio::awaitable<void> {
          namespace bh = boost::beast::http;
          for (int r = 0; r < rounds; ++r) {
            if (k == 0) {  // listeners come and go while events are emitted
              const auto id =
                  t.listen(levee::all_throttle_events, [&](const levee::throttle_event&) {
                    churn_events.fetch_add(1, std::memory_order_relaxed);
                  });
              co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
              t.unlisten(id);
            }
            auto [ec, v] = co_await t(call_ec(latency_of(k + r) / 100));
            if (ec == levee::error::throttled) throttled++;
            if (!ec) t.record(levee::outcome::failure);  // keeps it shedding
            bh::request<bh::string_body> req(bh::verb::get, "/", 11);
            req.set("Levee-Deadline-Ms", (k + r) % 3 == 0 ? "1" : (k + r) % 3 == 1 ? "x" : "90");
            (void)reader.read(req);
          }
          finished++;
        },
        asio::detached);
  }
  run_threads(ioc, threads);
  CHECK(finished == coroutines);
  const auto m = t.metrics();
  CHECK(m.rejected == static_cast<std::uint64_t>(throttled.load()));
  CHECK(m.rejected > 0);
  CHECK(throttle_events == m.rejected);
  CHECK(churn_events <= m.rejected);
  CHECK(m.events_lost == 0);
  const auto s = reader.stats();
  CHECK(expired == s.expired);
  CHECK(malformed == s.malformed);
  CHECK(s.expired > 0);
  CHECK(s.malformed > 0);
  CHECK(s.events_lost == 0);
}

// Moved from tests/throttle.cpp and tests/http_deadline.cpp (2026-12-07), so
// that CI runs them under ThreadSanitizer too (this program is labelled
// "concurrency"; those are "unit" and ASan only).

namespace {
// Starts, then yields 1 to 8 times on its executor, then ends (a failure
// for odd `i`). A function, not a capturing lambda: its frame owns its
// parameters.
asio::awaitable<std::tuple<boost::system::error_code, int>> yielding_call(std::atomic<int>& started,
                                                                          int i) {
  ++started;
  for (int k = 0; k < 1 + i % 8; ++k) co_await asio::post(asio::use_awaitable);
  co_return std::tuple(i % 2 ? asio::error::eof : boost::system::error_code(), 1);
}
asio::awaitable<void> count_done(std::atomic<int>& done,
                                 asio::awaitable<std::tuple<boost::system::error_code, int>> aw) {
  (void)co_await std::move(aw);
  ++done;
}
}  // namespace

TEST_CASE("throttle: destroyed on one thread while 4 others end its calls", "[threads]") {
  for (int round = 0; round < 20; ++round) {
    asio::thread_pool pool(4);
    // Never sheds: every call starts (this is about the window's lifetime).
    auto t = std::make_unique<levee::throttle>(
        pool, levee::throttle_options{.max_rejection_probability = 0.0});
    std::atomic<int> started{0}, done{0};
    constexpr int calls = 64;
    for (int i = 0; i < calls; ++i) {
      asio::co_spawn(pool, count_done(done, (*t)(yielding_call(started, i))), asio::detached);
    }
    // Every call started (its frame counted in) while the throttle lived;
    // now it goes while they end on the pool's threads.
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (started.load() < calls && std::chrono::steady_clock::now() < give_up)
      std::this_thread::yield();
    REQUIRE(started.load() == calls);
    t.reset();
    pool.join();
    CHECK(done == calls);
  }
}

// The rate limiter's frames hold its bucket by address until they have their
// token, and a waiting call holds a share of it (rate_limiter.hpp,
// "Lifetime"): its last copy goes on one thread while 4 others run the calls
// it admitted and grant the waits, a listener on the waits in half the rounds.
TEST_CASE("rate limiter: destroyed on one thread while 4 others run and grant its calls",
          "[threads]") {
  int waits_seen = 0;
  for (int round = 0; round < 20; ++round) {
    asio::thread_pool pool(4);
    // 16 calls at once, the other 48 waiting 1 ms apart (none rejected).
    auto l = std::make_unique<levee::rate_limiter>(
        pool,
        levee::rate_limiter_options{.rate = 1'000, .period = 1s, .burst = 16, .max_wait = 10s});
    std::atomic<int> waited{0};
    if (round % 2)
      l->listen(static_cast<std::uint32_t>(levee::rate_limiter_event_kind::waited),
                [&](const levee::rate_limiter_event&) { ++waited; });
    std::atomic<int> started{0}, done{0};
    constexpr int calls = 64;
    for (int i = 0; i < calls; ++i) {
      asio::co_spawn(pool, count_done(done, (*l)(yielding_call(started, i))), asio::detached);
    }
    // Every call entered while the limiter lived: started (past the bucket),
    // or waiting for its token, which `waiting` counts once the wait holds its
    // share of the bucket (rate_wait.hpp). `started` read first: a call counted
    // there no longer waits, so none is counted twice.
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    bool entered = false;
    while (!entered && std::chrono::steady_clock::now() < give_up) {
      const int s = started.load();
      entered = s + static_cast<int>(l->metrics().waiting) >= calls;
      if (!entered) std::this_thread::yield();
    }
    if (!entered) pool.join();  // with the limiter alive, before the REQUIRE ends the test
    REQUIRE(entered);
    l.reset();
    pool.join();
    CHECK(done == calls);
    CHECK(started == calls);
    waits_seen += waited.load();
  }
  CHECK(waits_seen > 0);  // the listener's events came from the shares
}

TEST_CASE("throttle: 4 threads share one throttle", "[threads]") {
  asio::thread_pool pool(4);
  levee::throttle t(pool, {.k = 1.5});
  std::atomic<int> started{0}, done{0}, rejected{0};
  constexpr int calls = 4000;
  for (int i = 0; i < calls; ++i) {
    asio::co_spawn(
        pool,
        [&, i]() -> asio::awaitable<void> {
          auto [ec, v] =
              co_await t([&, i]() -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
                ++started;
                co_return std::tuple(i % 3 ? asio::error::eof : boost::system::error_code(), 1);
              }());
          if (ec == levee::error::throttled) ++rejected;
          ++done;
        },
        asio::detached);
  }
  pool.join();
  CHECK(done == calls);
  const auto m = t.metrics();
  CHECK(m.admitted + m.rejected == static_cast<std::uint64_t>(calls));
  CHECK(m.rejected == static_cast<std::uint64_t>(rejected.load()));
  CHECK(m.admitted == static_cast<std::uint64_t>(started.load()));
  CHECK(m.rejected > 0);  // a third accepted with k = 1.5: some are shed
}

// The awaitable form's accepts are counted without the window's lock while
// the probability is 0 (throttle_window.hpp, accept_until_), in the word that
// also keeps the window, and folded into the sums by the next holder of the
// lock. Read from a fifth thread while 4 run the calls: the admitted count
// never goes back, no accept is counted before its call was admitted, and
// at the end every call and accept is counted once.
TEST_CASE("throttle: accepts counted without the lock on 4 threads, read while they run",
          "[threads]") {
  for (int round = 0; round < 10; ++round) {
    asio::thread_pool pool(4);
    // Never sheds (the formula alone would, whenever the first calls to end
    // are mostly failures): this is about the counts.
    levee::throttle t(pool, {.window = std::chrono::hours(1), .max_rejection_probability = 0.0});
    std::atomic<int> started{0}, done{0};
    constexpr int calls = 2000;
    std::atomic<bool> running{true};
    std::atomic<int> reads{0};
    int backwards = 0, ahead = 0, midway = 0;
    std::thread reader([&] {
      std::uint64_t last = 0;
      do {
        const auto m = t.metrics();
        backwards += m.admitted < last ? 1 : 0;
        ahead += m.accepted > m.admitted ? 1 : 0;
        midway += m.admitted > 0 && m.admitted < std::uint64_t{calls} ? 1 : 0;
        last = m.admitted;
        ++reads;
      } while (running.load());
    });
    // The reader has read once before the first call starts.
    while (reads.load() == 0) std::this_thread::yield();
    for (int i = 0; i < calls; ++i) {
      // Even i succeeds: 1,000 accepts, 1,000 failures.
      asio::co_spawn(pool, count_done(done, t(yielding_call(started, i))), asio::detached);
    }
    pool.join();
    running = false;
    reader.join();
    CHECK(done == calls);
    CHECK(backwards == 0);
    CHECK(ahead == 0);
    INFO("reads: " << reads.load() << ", while calls ran: " << midway);
    const auto m = t.metrics();
    CHECK(m.rejected == 0);
    CHECK(m.admitted == static_cast<std::uint64_t>(calls));
    CHECK(m.accepted == static_cast<std::uint64_t>(calls / 2));
    CHECK(m.requests == static_cast<std::uint64_t>(calls));
    CHECK(m.accepts == static_cast<std::uint64_t>(calls / 2));
  }
}

namespace {

using ns = std::chrono::nanoseconds;

asio::awaitable<std::optional<ns>> left_here() {
  co_return levee::remaining_deadline(co_await asio::this_coro::executor);
}

// Hops between threads several times, and checks that the deadline it sees is
// its own each time.
asio::awaitable<int> own_deadline_only(ns mine) {
  int wrong = 0;
  for (int i = 0; i < 20; ++i) {
    asio::steady_timer t(co_await asio::this_coro::executor, 0ms);
    co_await t.async_wait(asio::use_awaitable);
    const auto left = co_await left_here();
    if (!left || *left > mine || *left < mine - 5s) ++wrong;
  }
  co_return wrong;
}

}  // namespace

TEST_CASE("deadlines never leak between coroutines on a 4-thread io_context", "[deadline]") {
  asio::io_context ioc(4);
  std::atomic<int> wrong{0}, done{0}, leaked{0};
  constexpr int n = 64;
  for (int i = 0; i < n; ++i) {
    const ns mine = std::chrono::hours(1) * (i + 1);
    asio::co_spawn(ioc, levee::with_deadline(mine, own_deadline_only(mine)),
                   [&](std::exception_ptr e, int w) {
                     wrong += e ? 100 : w;
                     ++done;
                   });
    // Beside them, coroutines with no deadline must see none.
    asio::co_spawn(
        ioc,
        []() -> asio::awaitable<int> {
          int seen = 0;
          for (int k = 0; k < 20; ++k) {
            asio::steady_timer t(co_await asio::this_coro::executor, 0ms);
            co_await t.async_wait(asio::use_awaitable);
            if (co_await left_here()) ++seen;
          }
          co_return seen;
        }(),
        [&](std::exception_ptr e, int seen) {
          leaked += e ? 100 : seen;
          ++done;
        });
  }
  std::vector<std::thread> runners;
  for (int t = 0; t < threads; ++t) runners.emplace_back([&] { ioc.run(); });
  for (auto& t : runners) t.join();
  CHECK(done == 2 * n);
  CHECK(wrong == 0);
  CHECK(leaked == 0);
}
