// A breaker's events are delivered in batches (docs/observability.md,
// "Events"): the events emitted between two runs of a listener's executor
// reach it in one post per 64, in order, every one of them, including when
// the listener throws; and every one exactly once when it runs on other
// threads while calls go on.
#include <levee/breaker/observe.hpp>

#include "support.hpp"

#include <boost/asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace levee_test;
using levee::breaker_event;
using levee::circuit_state;
using levee::event_kind;

namespace {

asio::awaitable<std::tuple<boost::system::error_code, int>> outcome_of(bool ok) {
  co_return std::tuple(
      ok ? boost::system::error_code() : make_error_code(boost::system::errc::connection_reset), 1);
}

// Call i fails when i % 3 == 0: a third of the calls, under the default
// failure-rate threshold (50 %), so the breaker stays CLOSED.
bool fails(int i) {
  return i % 3 == 0;
}

// Runs calls [from, to) on `ioc`, one after the other, without running
// anything else in between (`run` settles the breaker's executor only).
void calls(asio::io_context& ioc, levee::basic_circuit_breaker<vclock>& cb, int from, int to) {
  for (int i = from; i < to; ++i) run(ioc, cb(outcome_of(!fails(i))));
}

event_kind expected(int i) {
  return fails(i) ? event_kind::failure : event_kind::success;
}

}  // namespace

TEST_CASE("event batches: a burst is one post per 64 events, every event in order") {
  virtual_time vt;
  asio::io_context ioc, listener_ioc;
  breaker cb(ioc, {.minimum_calls = 1000}, "batched");
  std::vector<event_kind> seen;
  std::vector<std::string> names;
  cb.listen(
      levee::call_events,
      [&](const breaker_event& e) {
        seen.push_back(e.kind);
        names.emplace_back(e.breaker);
        CHECK(e.from == circuit_state::closed);
        CHECK(e.when.time_since_epoch().count() != 0);
      },
      listener_ioc.get_executor());
  calls(ioc, cb, 0, 200);
  CHECK(seen.empty());  // not one delivered yet: its executor has not run
  const std::size_t posts = listener_ioc.poll();
  CHECK(posts == 4);  // 64 + 64 + 64 + 8 (one post per event: 200)
  REQUIRE(seen.size() == 200);
  for (int i = 0; i < 200; ++i) CHECK(seen[static_cast<std::size_t>(i)] == expected(i));
  CHECK(names.front() == "batched");
  CHECK(names.back() == "batched");

  // The way back: once delivered, the next event is one post of its own.
  calls(ioc, cb, 200, 201);
  listener_ioc.restart();
  CHECK(listener_ioc.poll() == 1);
  CHECK(seen.size() == 201);
  CHECK(cb.metrics().events_lost == 0);
}

TEST_CASE("event batches: a transition keeps its place among the calls' events") {
  virtual_time vt;
  asio::io_context ioc, listener_ioc;
  breaker cb(ioc, {.minimum_calls = 10, .open_duration = 30s});
  std::vector<breaker_event> seen;
  cb.listen(
      levee::all_events, [&](const breaker_event& e) { seen.push_back(e); },
      listener_ioc.get_executor());
  for (int i = 0; i < 10; ++i) run(ioc, cb(outcome_of(false)));  // the 10th opens it
  for (int i = 0; i < 3; ++i) run(ioc, cb(outcome_of(true)));    // rejected
  REQUIRE(cb.state() == circuit_state::open);
  CHECK(listener_ioc.poll() == 1);  // 14 events, one post
  REQUIRE(seen.size() == 14);
  for (std::size_t i = 0; i < 10; ++i) CHECK(seen[i].kind == event_kind::failure);
  CHECK(seen[10].kind == event_kind::transition);
  CHECK(seen[10].to == circuit_state::open);
  CHECK(seen[10].calls == 10);
  CHECK(seen[10].open_for == 30s);
  for (std::size_t i = 11; i < 14; ++i) {
    CHECK(seen[i].kind == event_kind::rejected);
    CHECK(seen[i].from == circuit_state::open);
  }
}

TEST_CASE("event batches: a listener that throws gets the rest of its batch, in order") {
  virtual_time vt;
  asio::io_context ioc, listener_ioc;
  breaker cb(ioc, {.minimum_calls = 1000});
  std::vector<event_kind> seen;
  std::vector<std::size_t> throw_at{10, 12, 150};  // 10 and 12: the same batch
  cb.listen(
      levee::call_events,
      [&](const breaker_event& e) {
        seen.push_back(e.kind);
        if (std::find(throw_at.begin(), throw_at.end(), seen.size()) != throw_at.end())
          throw std::runtime_error("listener " + std::to_string(seen.size()));
      },
      listener_ioc.get_executor());
  // Four batches pending: 64, 64, 64 and 8 (the last one open).
  calls(ioc, cb, 0, 200);
  // Something posted after them must not overtake them.
  std::size_t seen_by_later = 0;
  asio::post(listener_ioc, [&] { seen_by_later = seen.size(); });
  std::string what;
  try {
    listener_ioc.poll();
  } catch (const std::runtime_error& e) {
    what = e.what();
  }
  CHECK(what == "listener 10");  // the first of the batch; the one at 12 is dropped
  CHECK(seen.size() == 64);      // the whole first batch, then the exception
  listener_ioc.restart();
  CHECK_THROWS_AS(listener_ioc.poll(), std::runtime_error);  // at 150, in the third
  CHECK(seen.size() == 192);
  listener_ioc.restart();
  listener_ioc.poll();
  REQUIRE(seen.size() == 200);
  for (int i = 0; i < 200; ++i) CHECK(seen[static_cast<std::size_t>(i)] == expected(i));
  CHECK(seen_by_later == 200);

  // The way back: the next burst is delivered as before.
  calls(ioc, cb, 200, 210);
  listener_ioc.restart();
  CHECK(listener_ioc.poll() == 1);
  CHECK(seen.size() == 210);
  CHECK(cb.metrics().events_lost == 0);
}

TEST_CASE("event batches: unlisten with a batch pending delivers what was emitted before it") {
  virtual_time vt;
  asio::io_context ioc, listener_ioc;
  breaker cb(ioc, {.minimum_calls = 1000});
  std::size_t seen = 0;
  const auto id = cb.listen(
      levee::call_events, [&](const breaker_event&) { ++seen; }, listener_ioc.get_executor());
  calls(ioc, cb, 0, 10);
  cb.unlisten(id);
  calls(ioc, cb, 10, 20);  // after unlisten: none of these
  listener_ioc.poll();
  CHECK(seen == 10);
}

TEST_CASE("event batches: 4 threads call while two threads deliver") {
  // The listener's batches are taken while other threads append to them:
  // every event arrives exactly once, and the listener, on a strand of an
  // io_context that two threads run, never runs twice at once.
  asio::io_context ioc(4), listener_ioc(2);
  auto work = asio::make_work_guard(listener_ioc);
  std::thread listener_a([&] { listener_ioc.run(); });
  std::thread listener_b([&] { listener_ioc.run(); });
  levee::circuit_breaker cb(ioc, {.minimum_calls = 1u << 30});
  std::atomic<int> successes{0}, failures{0}, running{0};
  std::atomic<bool> overlapped{false};
  auto strand = asio::make_strand(listener_ioc);
  cb.listen(
      levee::call_events,
      [&](const breaker_event& e) {
        if (running.fetch_add(1) != 0) overlapped = true;
        (e.kind == event_kind::success ? successes : failures).fetch_add(1);
        running.fetch_sub(1);
      },
      strand);
  // A second listener, added and removed while the calls run; its events
  // run on the listener's io_context without a strand.
  std::atomic<int> other{0};
  constexpr int coroutines = 32, per = 500;
  for (int c = 0; c < coroutines; ++c) {
    asio::co_spawn(
        ioc,
        [&, c]() -> asio::awaitable<void> {
          for (int i = 0; i < per; ++i) {
            if (c == 0 && i == per / 4) {
              const auto id = cb.listen(
                  levee::call_events, [&](const breaker_event&) { other.fetch_add(1); },
                  listener_ioc.get_executor());
              for (int j = 0; j < 50; ++j) co_await cb(outcome_of(true));
              cb.unlisten(id);
            }
            co_await cb(outcome_of(!fails(i)));
            if (i % 16 == 0) co_await asio::post(ioc, asio::use_awaitable);
          }
        },
        asio::detached);
  }
  run_threads(ioc, 4);
  work.reset();
  listener_a.join();
  listener_b.join();
  int expected_failures = 0;
  for (int i = 0; i < per; ++i) expected_failures += fails(i);
  CHECK(failures.load() == coroutines * expected_failures);
  CHECK(successes.load() == coroutines * (per - expected_failures) + 50);
  CHECK(other.load() >= 50);  // its own 50, and others' calls in the meantime
  CHECK(!overlapped.load());
  CHECK(cb.metrics().events_lost == 0);
}

TEST_CASE("event batches: a listener's times never go back, a call's coarse time included") {
  // A call event's time is read from the coarse wall clock (up to a tick
  // old); a transition's from the precise one. A call right after the
  // breaker opened reads a time before the opening's, unless the queue
  // holds it at the time of the event before it.
  virtual_time vt;
  asio::io_context ioc, listener_ioc;
  breaker cb(ioc, {.failure_rate_threshold = 0.5, .minimum_calls = 4}, "times");
  std::vector<breaker_event> seen;
  cb.listen(
      levee::all_events, [&](const breaker_event& e) { seen.push_back(e); },
      listener_ioc.get_executor());
  const auto before = std::chrono::system_clock::now();
  for (int round = 0; round < 20; ++round) {
    for (int i = 0; i < 4; ++i) run(ioc, cb(outcome_of(false)));  // opens
    for (int i = 0; i < 3; ++i) run(ioc, cb(outcome_of(true)));   // rejected
    cb.reset();
  }
  listener_ioc.poll();
  const auto after = std::chrono::system_clock::now();
  REQUIRE(seen.size() >= 20 * 6);
  std::size_t transitions = 0, rejected = 0;
  for (std::size_t i = 0; i < seen.size(); ++i) {
    transitions += seen[i].kind == event_kind::transition;
    rejected += seen[i].kind == event_kind::rejected;
    // Within a tick (at most 10 ms here) of the test's own precise reads.
    CHECK(seen[i].when >= before - std::chrono::milliseconds(10));
    CHECK(seen[i].when <= after);
    if (i > 0 && seen[i].when < seen[i - 1].when) {
      FAIL_CHECK("event " << i << " (" << levee::to_string(seen[i].kind) << ") is "
                          << (seen[i - 1].when - seen[i].when).count()
                          << " ticks before the one before it ("
                          << levee::to_string(seen[i - 1].kind) << ")");
    }
  }
  CHECK(transitions >= 20);
  CHECK(rejected == 20 * 3);
  CHECK(cb.metrics().events_lost == 0);
}
