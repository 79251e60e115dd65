// The adaptive limit shared by coroutines on four threads (its queue's
// max_wait timers and callers' cancellations racing grants): calls in flight
// never exceed the limit, and every slot comes back. Run under
// ThreadSanitizer in CI (label concurrency). Real time, short and bounded: the
// race between a grant on one thread and a cancellation on another is the
// point, and virtual time would serialise it away.
#include <levee/limit/adaptive_limit.hpp>
#include <levee/registry/registry.hpp>
#include <levee/timeout/timeout.hpp>

#include "support.hpp"

#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <memory>
#include <thread>
#include <vector>

using namespace levee_test;

TEST_CASE("adaptive limit threads: in flight never exceeds the limit on 4 threads") {
  asio::io_context ioc(4);
  // A fixed limit of 8, and a queue: the bound is exact.
  levee::adaptive_limit fixed(ioc, {.initial_limit = 8,
                                    .min_limit = 8,
                                    .max_limit = 8,
                                    .max_queue = 16,
                                    .max_wait = std::chrono::milliseconds(50)});
  // A moving one: never more than max_limit.
  levee::adaptive_limit moving(ioc, {.algorithm = levee::limit_algorithm::aimd,
                                     .initial_limit = 4,
                                     .min_limit = 2,
                                     .max_limit = 12});
  std::atomic<int> running{0}, peak{0}, running_moving{0}, peak_moving{0}, ended{0};
  auto note = [](std::atomic<int>& now, std::atomic<int>& top) {
    const int n = ++now;
    for (int p = top.load(); n > p && !top.compare_exchange_weak(p, n);) {
    }
  };
  auto work = [&](std::atomic<int>& now, std::atomic<int>& top,
                  int i) -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
    note(now, top);
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::microseconds(i % 7 * 50));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    --now;
    co_return std::tuple(i % 5 == 0 ? boost::system::error_code(asio::error::connection_reset)
                                    : boost::system::error_code(),
                         i);
  };
  constexpr int coroutines = 32, calls = 50;
  for (int c = 0; c < coroutines; ++c) {
    asio::co_spawn(
        ioc,
        [&, c]() -> asio::awaitable<void> {
          for (int k = 0; k < calls; ++k) {
            co_await fixed(work(running, peak, c * calls + k));
            co_await moving(work(running_moving, peak_moving, c * calls + k));
          }
          ++ended;
        },
        asio::detached);
  }
  std::vector<std::thread> others;
  for (int t = 0; t < 3; ++t) others.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : others) t.join();
  CHECK(ended == coroutines);
  CHECK(peak <= 8);
  CHECK(peak_moving <= 12);
  CHECK(fixed.in_flight() == 0);
  CHECK(moving.in_flight() == 0);
  CHECK(moving.metrics().peak_in_flight <= 12);
}

namespace {

struct race_counts {
  std::atomic<int> started{0}, running{0}, peak{0}, ok{0}, refused{0}, timed_out{0}, other{0},
      finished{0};
};

/// `coroutines` callers, `rounds` calls each, through `limit` on a 4-thread
/// io_context; every other round a with_timeout of 150 us around the limit
/// cancels waits (and calls) through the waiter's slot, from the timeout's
/// strand, while completions on other threads grant the same waiters.
void race(levee::adaptive_limit& limit, asio::io_context& ioc, race_counts& c) {
  constexpr int coroutines = 32, rounds = 100;
  for (int k = 0; k < coroutines; ++k) {
    asio::co_spawn(
        ioc,
        [&, k]() -> asio::awaitable<void> {
          auto guarded = [&](int i) -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
            ++c.started;
            const int now = ++c.running;
            for (int p = c.peak.load(); now > p && !c.peak.compare_exchange_weak(p, now);) {
            }
            asio::steady_timer t(co_await asio::this_coro::executor,
                                 std::chrono::microseconds(i % 9 * 40));
            auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
            --c.running;
            co_return std::tuple(ec, 7);
          };
          for (int r = 0; r < rounds; ++r) {
            const int i = k * rounds + r;
            auto [ec, v] = r % 2 == 0 ? co_await limit(guarded(i))
                                      : co_await levee::with_timeout(std::chrono::microseconds(150),
                                                                     limit(guarded(i)));
            if (!ec && v == 7) {
              ++c.ok;
            } else if (ec == levee::error::limit_exceeded) {
              ++c.refused;
            } else if (ec == levee::error::timeout || ec == asio::error::operation_aborted) {
              ++c.timed_out;
            } else {
              ++c.other;
            }
          }
          ++c.finished;
        },
        asio::detached);
  }
  std::vector<std::thread> others;
  for (int t = 0; t < 3; ++t) others.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : others) t.join();
  CHECK(c.finished == coroutines);
  CHECK(c.other == 0);
  CHECK(c.ok + c.refused + c.timed_out == coroutines * rounds);
  CHECK(c.ok > 0);
  CHECK(c.timed_out > 0);  // waits were cancelled (the race took place)
  // Every slot came back. Each call the limit admitted ran, except those
  // whose caller's timeout fired between the grant and the call's start
  // (Asio's awaitable throws operation_aborted at the next co_await): their
  // slot came back too, as a cancellation.
  const auto m = limit.metrics();
  CHECK(m.in_flight == 0);
  CHECK(m.queued == 0);
  const auto started = static_cast<std::uint64_t>(c.started.load());
  CHECK(m.admitted >= started);
  CHECK(m.admitted - started <= static_cast<std::uint64_t>(c.timed_out.load()));
}

}  // namespace

TEST_CASE("adaptive limit threads: a waiter cancelled on one thread while another grants it") {
  // Issue 18, check: the bulkhead had this race, and the limit shares its
  // waiter type. A fixed limit of 3, a queue for everyone, max_wait 200 us.
  asio::io_context ioc(4);
  levee::adaptive_limit limit(ioc, {.initial_limit = 3,
                                    .min_limit = 3,
                                    .max_limit = 3,
                                    .max_queue = 32,
                                    .max_wait = std::chrono::microseconds(200)});
  race_counts c;
  race(limit, ioc, c);
  CHECK(c.peak <= 3);
}

TEST_CASE("adaptive limit threads: a limit that jumps admits many waiters at once, within bounds") {
  // Gradient2 with a window of one sample and a queue_size of 20: the limit
  // moves by up to 20 calls per completion, granting many waiters at once
  // while others are cancelled. It never exceeds max_limit.
  asio::io_context ioc(4);
  levee::adaptive_limit limit(ioc, {.initial_limit = 2,
                                    .min_limit = 2,
                                    .max_limit = 24,
                                    .smoothing = 1,
                                    .queue_size = 20,
                                    .sample_window = std::chrono::nanoseconds::zero(),
                                    .min_window_samples = 1,
                                    .max_queue = 32,
                                    .max_wait = std::chrono::microseconds(200)});
  race_counts c;
  race(limit, ioc, c);
  CHECK(c.peak <= 24);
  CHECK(limit.metrics().max_limit_seen > 4);  // it did jump
}

TEST_CASE("adaptive limit threads: changed events reach a listener in order, each from the last") {
  // Calls finish on four threads at once, and about one in five is a drop:
  // the AIMD limit moves on most completions. The listener's executor is
  // another io_context, run afterwards on one thread, so that it receives the
  // events in the order they were posted.
  asio::io_context ioc(4);
  asio::io_context events(1);
  levee::adaptive_limit limit(ioc.get_executor(), {.algorithm = levee::limit_algorithm::aimd,
                                                   .initial_limit = 20,
                                                   .min_limit = 2,
                                                   .max_limit = 400});
  std::vector<levee::limit_event> seen;
  limit.listen(
      static_cast<std::uint32_t>(levee::limit_event_kind::changed),
      [&](const levee::limit_event& e) { seen.push_back(e); }, events.get_executor());
  auto call = [](int i) -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
    co_return std::tuple(i % 5 == 0 ? boost::system::error_code(asio::error::connection_reset)
                                    : boost::system::error_code(),
                         i);
  };
  constexpr int coroutines = 16, calls = 4000;
  std::atomic<int> ended{0};
  for (int c = 0; c < coroutines; ++c) {
    asio::co_spawn(
        ioc,
        [&, c]() -> asio::awaitable<void> {
          for (int k = 0; k < calls; ++k) {
            (void)co_await limit(call(c * calls + k));
            if (k % 8 == 0) co_await asio::post(ioc, asio::use_awaitable);  // interleave
          }
          ++ended;
        },
        asio::detached);
  }
  std::vector<std::thread> others;
  for (int t = 0; t < 3; ++t) others.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : others) t.join();
  events.run();
  REQUIRE(ended == coroutines);
  REQUIRE(seen.size() > 100);
  std::size_t broken = 0;
  for (std::size_t i = 1; i < seen.size(); ++i) {
    if (seen[i].from != seen[i - 1].to) ++broken;
  }
  INFO(seen.size() << " events");
  CHECK(broken == 0);
  const auto still = std::count_if(seen.begin(), seen.end(), [](const levee::limit_event& e) {
    return std::floor(e.from) == std::floor(e.to);
  });
  CHECK(still == 0);  // every event moved the limit by at least one call
  // The last event ends where the limit is.
  CHECK(std::floor(seen.back().to) == std::floor(limit.metrics().limit));
  CHECK(limit.metrics().events_lost == 0);
}

namespace {
// Starts, yields on its executor until `go`, then 1 to 8 times more, then
// succeeds (the guard set's breaker stays closed). A function, not a
// capturing lambda: its frame owns its parameters.
asio::awaitable<std::tuple<boost::system::error_code, int>> yielding_call(
    std::atomic<int>& started, const std::atomic<bool>& go, int i) {
  ++started;
  while (!go.load()) co_await asio::post(asio::use_awaitable);
  for (int k = 0; k < 1 + i % 8; ++k) co_await asio::post(asio::use_awaitable);
  co_return std::tuple(boost::system::error_code(), 1);
}
asio::awaitable<void> count_done(std::atomic<int>& done,
                                 asio::awaitable<std::tuple<boost::system::error_code, int>> aw) {
  (void)co_await std::move(aw);
  ++done;
}
}  // namespace

// The frames hold the limit's state by address, counted in and out under its
// spinlock (limit/detail/adaptive_limit_state.hpp). A limit of 16 with a
// queue: the limiter (nested form) or the registry and its guard set go on
// this thread once every call has entered, while 4 threads end calls, grant
// waiters (counted in holding an owner) and the rest of the queue is
// aborted. In half the rounds the limit moves (AIMD) and a listener wants
// its changes: a completion then counts out after its event.
TEST_CASE("adaptive limit threads: destroyed on one thread while 4 others end its calls") {
  for (int round = 0; round < 40; ++round) {
    const bool set = round % 2;
    const bool moving = (round / 2) % 2;
    const levee::adaptive_limit_options options{
        .algorithm = moving ? levee::limit_algorithm::aimd : levee::limit_algorithm::gradient2,
        .initial_limit = 16,
        .min_limit = 16,
        .max_limit = moving ? std::size_t{64} : std::size_t{16},
        .max_queue = 64};
    asio::thread_pool pool(4);
    auto limit = std::make_unique<levee::adaptive_limit>(pool, options);
    std::atomic<int> changes{0};
    if (moving && !set)
      limit->listen(levee::all_limit_events, [&](const levee::limit_event&) { ++changes; });
    auto reg =
        std::make_unique<levee::breaker_registry>(pool, levee::registry_options{.limits = options});
    auto guards = std::make_unique<levee::breaker_registry::guard_set>(reg->guards("k"));
    if (moving && set)
      guards->limit->listen(levee::all_limit_events, [&](const levee::limit_event&) { ++changes; });
    std::atomic<int> started{0}, done{0};
    std::atomic<bool> go{false};  // the first 16 run until every call has entered
    constexpr std::uint64_t calls = 64;
    for (int i = 0; i < static_cast<int>(calls); ++i) {
      auto aw =
          set ? (*guards)(yielding_call(started, go, i)) : (*limit)(yielding_call(started, go, i));
      asio::co_spawn(pool, count_done(done, std::move(aw)), asio::detached);
    }
    // Every frame started (admitted or queued) while the limiter lived, as
    // it must; then it goes while they run, end and are granted.
    const levee::adaptive_limit& watched = set ? *guards->limit : *limit;
    const auto entered = [&] {
      const auto m = watched.metrics();
      return m.admitted + m.queued;
    };
    const auto give_up = std::chrono::steady_clock::now() + 10s;
    while (entered() < calls && std::chrono::steady_clock::now() < give_up)
      std::this_thread::yield();
    REQUIRE(entered() == calls);
    go = true;
    limit.reset();
    guards.reset();
    reg.reset();
    pool.join();
    CHECK(done == static_cast<int>(calls));
    if (moving)
      CHECK(changes > 0);  // 16 ran at once: those that started with 8 or more raise it
    else
      CHECK(changes == 0);
  }
}
