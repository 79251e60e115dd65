// The sans-I/O core, step by step, with no event loop: time is a number the
// test passes in.
#include <levee/breaker/detail/breaker_core.hpp>

#include <catch2/catch.hpp>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

using namespace std::chrono_literals;
using levee::circuit_state;
using levee::outcome;
using levee::transition_reason;
using levee::detail::breaker_core;
using levee::detail::permit;
using levee::detail::transition;

namespace {

struct harness {
  breaker_core core;
  std::chrono::nanoseconds now{0};

  explicit harness(const levee::breaker_options& o, unsigned shards = 1) : core(o, shards) {}

  // Admits and completes one call; returns the transition it caused.
  transition call(outcome o, std::chrono::nanoseconds elapsed = 0ns) {
    const permit p = core.try_acquire();
    REQUIRE(p);
    return core.complete(p, o, now, elapsed);
  }
  transition fail() { return call(outcome::failure); }
  transition succeed() { return call(outcome::success); }
  bool admits() {
    const permit p = core.try_acquire();
    if (p) core.release(p);
    return static_cast<bool>(p);
  }
  // Plays the timer: the shell calls open_elapsed when the open timer fires.
  transition fire_timer() { return core.open_elapsed(core.generation()); }
};

levee::breaker_options small(std::size_t minimum = 10) {
  levee::breaker_options o;
  o.minimum_calls = minimum;
  return o;
}

}  // namespace

TEST_CASE("core: a new breaker is CLOSED and admits calls") {
  harness h(small());
  CHECK(h.core.state() == circuit_state::closed);
  CHECK(h.core.generation() == 1);
  const permit p = h.core.try_acquire();
  REQUIRE(p);
  CHECK_FALSE(p.is_probe());
  CHECK(p.generation() == 1);
}

TEST_CASE("core: below minimum_calls it never opens") {
  harness h(small(10));
  for (int i = 0; i < 9; ++i) CHECK_FALSE(h.fail());
  CHECK(h.core.state() == circuit_state::closed);
  CHECK(h.core.window(h.now).calls == 9);
  CHECK(h.core.window(h.now).failures == 9);
  const transition t = h.fail();  // the tenth call: 10 of 10 failed
  REQUIRE(t);
  CHECK(t.from == circuit_state::closed);
  CHECK(t.to == circuit_state::open);
  CHECK(t.reason == transition_reason::failure_rate);
  CHECK(t.open_for == 30s);
  CHECK(t.generation == 2);
  CHECK(h.core.state() == circuit_state::open);
}

TEST_CASE("core: opens when the failure rate reaches the threshold, not before") {
  harness h(small(10));
  for (int i = 0; i < 6; ++i) h.succeed();
  for (int i = 0; i < 4; ++i) CHECK_FALSE(h.fail());  // 4 of 10: 40 %
  CHECK(h.core.state() == circuit_state::closed);
  h.succeed();
  h.succeed();  // 4 of 12
  CHECK_FALSE(h.fail());
  CHECK(h.core.state() == circuit_state::closed);     // 5 of 13 = 38 %
  for (int i = 0; i < 2; ++i) CHECK_FALSE(h.fail());  // 7 of 15 = 47 %
  CHECK(h.fail());                                    // 8 of 16 = 50 %: at the threshold
  CHECK(h.core.state() == circuit_state::open);
}

TEST_CASE("core: a success that brings the window to minimum_calls can open it") {
  // The seed's point 5: the rate is checked after a success too.
  harness h(small(10));
  for (int i = 0; i < 9; ++i) h.fail();
  const transition t = h.succeed();  // 9 failures of 10 calls
  REQUIRE(t);
  CHECK(t.to == circuit_state::open);
}

TEST_CASE("core: failures older than the window are forgotten") {
  harness h(small(10));
  for (int i = 0; i < 9; ++i) h.fail();
  h.now += 10s;  // a whole window later
  CHECK(h.core.window(h.now).calls == 0);
  CHECK_FALSE(h.fail());  // 1 failure of 1 call: below minimum_calls
  CHECK(h.core.state() == circuit_state::closed);
  for (int i = 0; i < 8; ++i) CHECK_FALSE(h.succeed());
  CHECK(h.core.window(h.now).calls == 9);
}

TEST_CASE("core: bucket granularity decides when a call leaves the window") {
  // window 10 s, 10 buckets of 1 s: a call at t sits in bucket floor(t / 1 s)
  // and leaves when the current bucket is 10 buckets later.
  harness h(small(100));
  h.now = 500ms;  // bucket 0
  h.fail();
  h.now = 1999ms;  // bucket 1
  h.fail();
  h.now = 9999ms;  // bucket 9: both still in
  CHECK(h.core.window(h.now).failures == 2);
  h.now = 10s;  // bucket 10: the call of bucket 0 left (9.5 s after it finished)
  CHECK(h.core.window(h.now).failures == 1);
  h.now = 10999ms;  // still bucket 10
  CHECK(h.core.window(h.now).failures == 1);
  h.now = 11s;  // bucket 11: the call at 1.999 s left, 9.001 s after it finished
  CHECK(h.core.window(h.now).failures == 0);
}

TEST_CASE("core: one bucket per window forgets everything at each boundary") {
  levee::breaker_options o = small(3);
  o.window_buckets = 1;
  harness h(o);
  h.now = 9s;
  h.fail();
  h.fail();
  h.now = 10s;
  CHECK(h.core.window(h.now).calls == 0);
  h.fail();
  CHECK(h.core.state() == circuit_state::closed);
}

TEST_CASE("core: a late finisher goes in its own, older bucket") {
  // Two threads: one finishes at 5.2 s and records first; another finished at
  // 4.9 s (read its clock earlier) and records second.
  harness h(small(100));
  h.now = 5200ms;
  h.succeed();
  h.now = 4900ms;
  h.fail();
  CHECK(h.core.window(5200ms).failures == 1);
  CHECK(h.core.window(14999ms).failures == 0);  // bucket 4 left at 14 s
  CHECK(h.core.window(14999ms).calls == 1);     // bucket 5 is still in
}

TEST_CASE("core: OPEN rejects and counts the rejections") {
  harness h(small(1));
  REQUIRE(h.fail());
  for (int i = 0; i < 5; ++i) CHECK_FALSE(h.core.try_acquire());
  CHECK(h.core.counters().rejected == 5);
  CHECK(h.core.counters().failures == 1);
}

TEST_CASE("core: the timer turns OPEN into HALF_OPEN - a stale timer does nothing") {
  harness h(small(1));
  const transition opened = h.fail();
  REQUIRE(opened);
  CHECK_FALSE(h.core.open_elapsed(opened.generation - 1));
  CHECK(h.core.state() == circuit_state::open);
  const transition t = h.core.open_elapsed(opened.generation);
  REQUIRE(t);
  CHECK(t.from == circuit_state::open);
  CHECK(t.to == circuit_state::half_open);
  CHECK(t.reason == transition_reason::open_elapsed);
  CHECK(h.core.state() == circuit_state::half_open);
  CHECK_FALSE(h.core.open_elapsed(opened.generation));  // fired twice: ignored
}

TEST_CASE("core: HALF_OPEN admits one probe - a second call is rejected") {
  harness h(small(1));
  h.fail();
  h.fire_timer();
  const permit probe = h.core.try_acquire();
  REQUIRE(probe);
  CHECK(probe.is_probe());
  CHECK(h.core.probes_in_flight() == 1);
  CHECK_FALSE(h.core.try_acquire());
  const transition t = h.core.complete(probe, outcome::success, h.now);
  REQUIRE(t);
  CHECK(t.to == circuit_state::closed);
  CHECK(t.reason == transition_reason::probes_succeeded);
  CHECK(h.core.probes_in_flight() == 0);
  CHECK(h.core.window(h.now).calls == 0);  // a fresh window
}

TEST_CASE("core: successes_to_close consecutive probe successes close it") {
  levee::breaker_options o = small(1);
  o.successes_to_close = 2;
  harness h(o);
  h.fail();
  h.fire_timer();
  CHECK_FALSE(h.succeed());  // first probe: still HALF_OPEN, slot freed
  CHECK(h.core.state() == circuit_state::half_open);
  CHECK(h.core.probe_successes() == 1);
  CHECK(h.core.probes_in_flight() == 0);
  const transition t = h.succeed();
  REQUIRE(t);
  CHECK(t.to == circuit_state::closed);
}

TEST_CASE("core: a failed probe reopens and asks for the timer again") {
  levee::breaker_options o = small(1);
  o.successes_to_close = 2;
  harness h(o);
  h.fail();
  h.fire_timer();
  h.succeed();
  const transition t = h.fail();
  REQUIRE(t);
  CHECK(t.from == circuit_state::half_open);
  CHECK(t.to == circuit_state::open);
  CHECK(t.reason == transition_reason::probe_failed);
  CHECK(t.open_for == 30s);
  h.fire_timer();
  CHECK(h.core.probe_successes() == 0);  // the count starts again
}

TEST_CASE("core: a cancelled or abandoned probe frees its slot and is not counted") {
  levee::breaker_options o = small(1);
  o.successes_to_close = 2;
  harness h(o);
  h.fail();
  h.fire_timer();
  h.succeed();
  const permit cancelled = h.core.try_acquire();
  REQUIRE(cancelled);
  CHECK_FALSE(h.core.complete(cancelled, outcome::ignored, h.now));
  CHECK(h.core.probes_in_flight() == 0);
  CHECK(h.core.probe_successes() == 1);
  const permit abandoned = h.core.try_acquire();
  REQUIRE(abandoned);
  h.core.release(abandoned);
  CHECK(h.core.probes_in_flight() == 0);
  CHECK(h.core.probe_successes() == 1);
  CHECK(h.succeed());  // the next probe still closes it
  CHECK(h.core.state() == circuit_state::closed);
}

TEST_CASE("core: several probes at once, and an abandoned one after a transition") {
  levee::breaker_options o = small(1);
  o.half_open_probes = 3;
  o.successes_to_close = 3;
  harness h(o);
  h.fail();
  h.fire_timer();
  permit p[3];
  for (auto& x : p) x = h.core.try_acquire();
  for (auto& x : p) REQUIRE(x);
  CHECK_FALSE(h.core.try_acquire());
  CHECK(h.core.probes_in_flight() == 3);
  CHECK(h.core.complete(p[0], outcome::failure, h.now));  // reopens
  CHECK(h.core.probes_in_flight() == 0);
  h.core.release(p[1]);                                         // stale: nothing to free
  CHECK_FALSE(h.core.complete(p[2], outcome::success, h.now));  // stale: ignored
  CHECK(h.core.state() == circuit_state::open);
}

TEST_CASE("core: outcomes of calls admitted before a transition change nothing after it") {
  harness h(small(2));
  const permit old = h.core.try_acquire();
  h.fail();
  h.fail();  // opens
  h.fire_timer();
  h.succeed();  // closes, fresh window
  REQUIRE(h.core.state() == circuit_state::closed);
  CHECK_FALSE(h.core.complete(old, outcome::failure, h.now));
  CHECK(h.core.window(h.now).calls == 0);
  CHECK(h.core.counters().failures == 3);  // still counted as an outcome
}

TEST_CASE("core: ignored outcomes are not counted in the window") {
  harness h(small(2));
  for (int i = 0; i < 5; ++i) h.call(outcome::ignored);
  CHECK(h.core.window(h.now).calls == 0);
  CHECK(h.core.counters().ignored == 5);
  h.fail();
  CHECK(h.core.state() == circuit_state::closed);
}

TEST_CASE("core: count window keeps the last window_calls calls") {
  levee::breaker_options o = small(4);
  o.window_type = levee::window_kind::count;
  o.window_calls = 4;
  harness h(o);
  h.fail();
  h.succeed();
  h.succeed();
  CHECK_FALSE(h.succeed());  // 1 of 4
  h.now += 1h;               // time does not matter
  CHECK_FALSE(h.fail());     // evicts the first failure: 1 of 4
  CHECK(h.core.window(h.now).failures == 1);
  CHECK_FALSE(h.succeed());  // 1 of 4
  CHECK(h.fail());           // 2 of 4: opens
}

// Issue 22, window kinds: a count window's stamp is always the same (a
// success cannot raise its rates), but a success that brings the window to
// minimum_calls must still be checked (the last check found too few calls).
TEST_CASE("core: a count window's success that reaches minimum_calls can open it") {
  levee::breaker_options o = small(4);
  o.window_type = levee::window_kind::count;
  o.window_calls = 4;
  harness h(o);
  CHECK_FALSE(h.fail());
  CHECK_FALSE(h.fail());
  CHECK_FALSE(h.fail());  // 3 calls: under minimum_calls
  const transition t = h.succeed();
  REQUIRE(t);  // 3 failures of 4
  CHECK(t.reason == transition_reason::failure_rate);
  CHECK(h.core.trip_basis(t).calls == 4);
  CHECK(h.core.trip_basis(t).failures == 3);
  // The way back: a fresh window after a reset, and the same again.
  REQUIRE(h.core.set_state(circuit_state::closed).to == circuit_state::closed);
  CHECK(h.core.window(h.now).calls == 0);
  for (int i = 0; i < 4; ++i) CHECK_FALSE(h.succeed());
  for (int i = 0; i < 10; ++i) CHECK_FALSE(h.succeed());  // checked once, then skipped
  CHECK_FALSE(h.fail());                                  // 1 of 4
  CHECK(h.fail());                                        // 2 of 4: opens
}

namespace toy {
// A third kind, only to see the list dispatch to it and name it.
struct toy_window {
  static constexpr auto kind = static_cast<levee::window_kind>(7);
  static constexpr const char* name = "toy";
};
}  // namespace toy

TEST_CASE("core: the window kinds, one list and one dispatch") {
  using levee::window_kind;
  using levee::detail::count_window;
  using levee::detail::time_window;
  using levee::detail::window_kinds;
  using levee::detail::window_list;
  const auto name = []<class W>(std::type_identity<W>) { return std::string(W::name); };
  CHECK(window_kinds::known(window_kind::time));
  CHECK(window_kinds::known(window_kind::count));
  CHECK_FALSE(window_kinds::known(static_cast<window_kind>(2)));
  CHECK(window_kinds::visit(window_kind::time, name) == "time");
  CHECK(window_kinds::visit(window_kind::count, name) == "count");
  CHECK(window_kinds::rule() == "must be window_kind::time or window_kind::count");
  using three = window_list<time_window, count_window, toy::toy_window>;
  CHECK(three::known(static_cast<window_kind>(7)));
  CHECK(three::visit(static_cast<window_kind>(7), name) == "toy");
  CHECK(three::visit(window_kind::count, name) == "count");
  CHECK(three::rule() == "must be window_kind::time, window_kind::count or window_kind::toy");
  static_assert(std::is_same_v<window_kinds::inline_kind, time_window>);  // the default
  // What the core keeps of each kind fits its 12 bytes.
  static_assert(sizeof(time_window) <= 12 && sizeof(count_window) <= 12);
}

TEST_CASE("core: a large count window wraps its ring correctly") {
  levee::breaker_options o = small(100);
  o.window_type = levee::window_kind::count;
  o.window_calls = 130;
  o.failure_rate_threshold = 0.9;
  harness h(o);
  for (int i = 0; i < 1000; ++i) {
    REQUIRE_FALSE((i % 2 ? h.succeed() : h.fail()));
  }
  CHECK(h.core.window(h.now).calls == 130);
  CHECK(h.core.window(h.now).failures == 65);
}

TEST_CASE("core: consecutive failures open it, a success resets the count") {
  levee::breaker_options o = small(1000);
  o.consecutive_failures = 3;
  harness h(o);
  h.fail();
  h.fail();
  h.succeed();
  h.fail();
  h.fail();
  CHECK(h.core.state() == circuit_state::closed);
  const transition t = h.fail();
  REQUIRE(t);
  CHECK(t.reason == transition_reason::consecutive_failures);
}

TEST_CASE("core: slow calls open it when their rate reaches the threshold") {
  levee::breaker_options o = small(4);
  o.slow_call_duration = 100ms;
  o.slow_call_rate_threshold = 0.5;
  harness h(o);
  h.call(outcome::success, 99ms);
  h.call(outcome::success, 100ms);  // slow
  h.call(outcome::success, 10ms);
  const transition t = h.call(outcome::success, 250ms);  // 2 slow of 4
  REQUIRE(t);
  CHECK(t.reason == transition_reason::slow_call_rate);
  CHECK(h.core.counters().slow == 2);
}

TEST_CASE("core: a slow probe counts as a failed probe") {
  levee::breaker_options o = small(1);
  o.slow_call_duration = 100ms;
  harness h(o);
  h.fail();
  h.fire_timer();
  const transition t = h.call(outcome::success, 150ms);
  REQUIRE(t);
  CHECK(t.to == circuit_state::open);
}

TEST_CASE("core: slow-call detection off ignores durations") {
  harness h(small(2));
  h.call(outcome::success, 1h);
  h.call(outcome::success, 1h);
  CHECK(h.core.counters().slow == 0);
  CHECK(h.core.state() == circuit_state::closed);
}

TEST_CASE("core: shards written by different threads add up in one window") {
  // Each std::thread gets its own thread slot, so with 4 shards these calls
  // land on different shards; the decision must see them all.
  harness h(small(8), 4);
  REQUIRE(h.core.shard_count() == 4);
  for (int t = 0; t < 7; ++t) {
    std::thread([&] { CHECK_FALSE(h.fail()); }).join();
  }
  CHECK(h.core.window(h.now).failures == 7);
  transition last;
  std::thread([&] { last = h.succeed(); }).join();  // 7 of 8
  CHECK(last.to == circuit_state::open);
}

// Issue 23: a count window is recorded under shard 0's lock (its only lock),
// whichever shard the calling thread has: calls from every shard at once all
// land in the one ring, and a fresh window (a manual close) empties it.
TEST_CASE("core: a count window takes calls from every shard at once") {
  levee::breaker_options o = small(8);
  o.window_type = levee::window_kind::count;
  o.window_calls = 100;
  harness h(o, 4);
  REQUIRE(h.core.shard_count() == 4);
  constexpr int threads = 4, calls = 5000;
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      for (int i = 0; i < calls; ++i) {
        const permit p = h.core.try_acquire();
        // One failure in 10 on one thread: under the threshold (0.5).
        h.core.complete(p, t == 0 && i % 10 == 0 ? outcome::failure : outcome::success, h.now);
      }
    });
  }
  for (auto& t : pool) t.join();
  CHECK(h.core.state() == circuit_state::closed);
  const levee::window_totals w = h.core.window(h.now);
  CHECK(w.calls == 100);
  CHECK(w.failures <= 100 / 10 + 1);
  const levee::breaker_counters c = h.core.counters();
  CHECK(c.successes + c.failures == std::uint64_t{threads * calls});
  CHECK(c.failures == std::uint64_t{calls / 10});
  // The way back: a fresh window holds nothing, then the next call only.
  h.core.set_state(circuit_state::closed);
  CHECK(h.core.window(h.now).calls == 0);
  std::thread([&] { CHECK_FALSE(h.fail()); }).join();
  const levee::window_totals after = h.core.window(h.now);
  CHECK(after.calls == 1);
  CHECK(after.failures == 1);
}

TEST_CASE("core: a new bucket re-checks the window on success") {
  // The validation short-cut must not survive a bucket change: old successes
  // leave, and a success must then see the failures that remain.
  levee::breaker_options o = small(4);
  harness h(o);
  h.now = 0s;
  for (int i = 0; i < 10; ++i) h.succeed();
  h.now = 9s;
  h.fail();
  h.fail();
  h.fail();
  CHECK(h.core.state() == circuit_state::closed);  // 3 of 13
  h.now = 10s;                                     // the ten successes leave
  const transition t = h.succeed();                // 3 of 4
  REQUIRE(t);
  CHECK(t.to == circuit_state::open);
}

TEST_CASE("core: generation counts every transition") {
  harness h(small(1));
  h.fail();
  h.fire_timer();
  h.fail();
  h.fire_timer();
  h.succeed();
  CHECK(h.core.generation() == 6);
  CHECK(h.core.state() == circuit_state::closed);
}

TEST_CASE("core: open-duration backoff grows with each reopening, caps, and resets on close") {
  levee::breaker_options o = small(1);
  o.open_duration = 1s;
  o.open_duration_multiplier = 2;
  o.max_open_duration = 5s;
  harness h(o);
  CHECK(h.fail().open_for == 1s);
  CHECK(h.core.open_streak() == 1);
  h.fire_timer();
  CHECK(h.fail().open_for == 2s);  // a failed probe: the second opening in a row
  h.fire_timer();
  CHECK(h.fail().open_for == 4s);
  h.fire_timer();
  CHECK(h.fail().open_for == 5s);  // capped
  h.fire_timer();
  CHECK(h.fail().open_for == 5s);
  CHECK(h.core.open_streak() == 5);
  h.fire_timer();
  REQUIRE(h.succeed());  // closes
  CHECK(h.core.open_streak() == 0);
  CHECK(h.fail().open_for == 1s);  // reset
}

TEST_CASE("core: open-duration jitter stays in its band and is reproducible with a seed") {
  levee::breaker_options o = small(1);
  o.open_duration = 10s;
  o.open_duration_jitter = 0.2;
  o.jitter_seed = 99;
  harness a(o), b(o);
  bool varied = false;
  std::chrono::nanoseconds first{};
  for (int i = 0; i < 50; ++i) {
    const auto d = a.fail().open_for;
    CHECK(d >= 8s);
    CHECK(d <= 12s);
    CHECK(b.fail().open_for == d);  // same seed, same sequence
    if (i == 0) first = d;
    varied = varied || d != first;
    a.fire_timer();
    b.fire_timer();
  }
  CHECK(varied);
}

// Issue 11, defect 8: a rate exactly at the threshold opens (README: `>=`),
// whatever floating point makes of the decimal threshold.
TEST_CASE("core: a failure or slow-call rate exactly at the threshold opens it") {
  struct exact_case {
    int failures;
    int calls;
    double threshold;
  };
  const exact_case cases[] = {{7, 25, 0.28},   {55, 100, 0.55}, {7, 100, 0.07}, {7, 50, 0.14},
                              {1, 3, 1.0 / 3}, {3, 10, 0.3},    {1, 10, 0.1},   {29, 100, 0.29}};
  for (const auto& c : cases) {
    for (const auto kind : {levee::window_kind::time, levee::window_kind::count}) {
      INFO(c.failures << "/" << c.calls << " at " << c.threshold << " window "
                      << static_cast<int>(kind));
      levee::breaker_options o = small(static_cast<std::size_t>(c.calls));
      o.window_type = kind;
      o.window_calls = static_cast<std::size_t>(c.calls);
      {
        o.failure_rate_threshold = c.threshold;
        harness h(o);
        // One failure short of the threshold stays CLOSED...
        for (int i = 0; i < c.calls - c.failures + 1; ++i) CHECK_FALSE(h.succeed());
        for (int i = 0; i < c.failures - 1; ++i) CHECK_FALSE(h.fail());
        CHECK(h.core.state() == circuit_state::closed);
        // ...and exactly at it opens (a count window: the oldest success leaves).
        harness g(o);
        for (int i = 0; i < c.calls - c.failures; ++i) CHECK_FALSE(g.succeed());
        for (int i = 0; i < c.failures - 1; ++i) CHECK_FALSE(g.fail());
        const transition t = g.fail();
        CHECK(t);
        CHECK(t.reason == transition_reason::failure_rate);
      }
      {  // the slow-call rate
        o.failure_rate_threshold = 1.0;
        o.slow_call_duration = 100ns;
        o.slow_call_rate_threshold = c.threshold;
        harness g(o);
        for (int i = 0; i < c.calls - c.failures; ++i) CHECK_FALSE(g.succeed());
        for (int i = 0; i < c.failures - 1; ++i) CHECK_FALSE(g.call(outcome::success, 100ns));
        const transition t = g.call(outcome::success, 100ns);
        CHECK(t);
        CHECK(t.reason == transition_reason::slow_call_rate);
      }
    }
  }
}

// Issue 11, defect 9: the failure that trips `consecutive_failures` is in the
// window like any other.
TEST_CASE("core: the call that trips consecutive_failures is counted in the window") {
  for (const auto kind : {levee::window_kind::time, levee::window_kind::count}) {
    levee::breaker_options o = small(100);
    o.window_type = kind;
    o.consecutive_failures = 11;
    harness h(o);
    h.succeed();
    for (int i = 0; i < 10; ++i) CHECK_FALSE(h.fail());
    const transition t = h.fail();
    REQUIRE(t);
    CHECK(t.reason == transition_reason::consecutive_failures);
    CHECK(h.core.window(h.now).calls == 12);
    CHECK(h.core.window(h.now).failures == 11);
    CHECK(h.core.counters().failures == 11);
  }
}

TEST_CASE("core: a manual move to the current state is no transition") {
  harness h(small(100));
  for (const auto s :
       {circuit_state::forced_open, circuit_state::disabled, circuit_state::metrics_only}) {
    REQUIRE(h.core.set_state(s));
    const auto generation = h.core.generation();
    CHECK_FALSE(h.core.set_state(s));
    CHECK(h.core.generation() == generation);
  }
  h.succeed();
  REQUIRE(h.core.window(h.now).calls == 1);
  CHECK_FALSE(h.core.set_state(circuit_state::metrics_only));
  CHECK(h.core.window(h.now).calls == 1);  // METRICS_ONLY keeps its window
  REQUIRE(h.core.set_state(circuit_state::closed));
  h.succeed();
  CHECK_FALSE(h.core.set_state(circuit_state::closed));  // a reset in CLOSED...
  CHECK(h.core.window(h.now).calls == 0);                // ...clears the window
  CHECK(h.core.state() == circuit_state::closed);
}

// Issue 11, defect 7: durations up to nanoseconds::max() mean "for ever";
// nothing wraps.
TEST_CASE("core: open durations at the limit of their type saturate, never wrap") {
  constexpr auto forever = std::chrono::nanoseconds::max();
  SECTION("open_duration = max()") {
    levee::breaker_options o = small(1);
    o.open_duration = forever;
    harness h(o);
    CHECK(h.fail().open_for == forever);
  }
  SECTION("a very long open_duration with jitter stays in its band") {
    levee::breaker_options o = small(1);
    o.open_duration = forever - 1h;
    o.open_duration_jitter = 0.5;
    for (std::uint64_t seed = 1; seed <= 20; ++seed) {
      o.jitter_seed = seed;
      harness h(o);
      const auto d = h.fail().open_for;
      CHECK(d >= (forever - 1h) / 2);
      CHECK(d <= forever);
    }
  }
  SECTION("backoff up to max_open_duration = max()") {
    levee::breaker_options o = small(1);
    o.open_duration = 1h;
    o.open_duration_multiplier = 1000;
    o.max_open_duration = forever;
    harness h(o);
    std::chrono::nanoseconds last{};
    for (int i = 0; i < 12; ++i) {
      const auto d = h.fail().open_for;
      CHECK(d >= last);
      last = d;
      h.fire_timer();
    }
    CHECK(last == forever);
  }
  SECTION("backoff with jitter at the cap") {
    levee::breaker_options o = small(1);
    o.open_duration = 1h;
    o.open_duration_multiplier = 1000;
    o.max_open_duration = forever;
    o.open_duration_jitter = 0.9;
    o.jitter_seed = 5;
    harness h(o);
    for (int i = 0; i < 12; ++i) {
      const auto d = h.fail().open_for;
      CHECK(d >= 6min);  // 1h * (1 - 0.9)
      h.fire_timer();
    }
  }
  SECTION("window = max()") {
    levee::breaker_options o = small(3);
    o.window = forever;
    harness h(o);
    h.fail();
    h.now = forever / 2;
    h.fail();
    CHECK(h.core.window(h.now).calls == 2);
    CHECK(h.fail());
  }
}

// Issue 11, defect 10: the multiplier and the jitter keep a double's
// precision: exact to the nanosecond's rounding.
TEST_CASE("core: open-duration multiplier and jitter are exact to the nanosecond") {
  SECTION("a multiplier of 1.1") {
    levee::breaker_options o = small(1);
    o.open_duration = 10s;
    o.open_duration_multiplier = 1.1;
    o.max_open_duration = 1h;
    harness h(o);
    CHECK(h.fail().open_for == 10s);
    h.fire_timer();
    CHECK(h.fail().open_for == 11s);
    h.fire_timer();
    CHECK(h.fail().open_for == 12100ms);
  }
  SECTION("a multiplier of 1.00000001 still backs off") {
    levee::breaker_options o = small(1);
    o.open_duration = 10s;
    o.open_duration_multiplier = 1.00000001;
    harness h(o);
    h.fail();
    h.fire_timer();
    CHECK(h.fail().open_for == 10'000'000'100ns);
  }
  SECTION("jitter: d * (1 - j + 2 j u), u from the seeded splitmix64") {
    levee::breaker_options o = small(1);
    o.open_duration = 10s;
    o.open_duration_jitter = 0.1;
    o.jitter_seed = 7;
    harness h(o);
    std::uint64_t state = 7;
    for (int i = 0; i < 20; ++i) {
      std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
      z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      z ^= z >> 31;
      const long double unit = static_cast<long double>(z >> 11) * 0x1.0p-53L;
      const auto expected = std::llround(1e10L * (1.0L - 0.1L + 0.2L * unit));
      const auto d = h.fail().open_for.count();
      CHECK(std::abs(d - expected) <= 1);
      h.fire_timer();  // HALF_OPEN, then a probe: back to CLOSED for a fresh first opening
      REQUIRE(h.succeed());
    }
  }
}

// Issue 11, defect 6: a bucket's counters never wrap: near 2^32 calls the
// bucket is halved (calls, failures and slow alike), so failures <= calls and
// the rate are kept.
TEST_CASE("core: a bucket near 2^32 calls does not wrap") {
  constexpr std::uint32_t limit = std::numeric_limits<std::uint32_t>::max();
  levee::breaker_options o = small(10);
  o.slow_call_duration = 1s;
  o.slow_call_rate_threshold = 0.5;
  harness h(o);
  h.core.test_preload(h.now, limit - 1, 1000, 1000);  // a tiny failure rate
  for (int i = 0; i < 20; ++i) CHECK_FALSE(h.call(outcome::failure, 1s));
  const auto w = h.core.window(h.now);
  CHECK(w.failures <= w.calls);
  CHECK(w.slow <= w.calls);
  CHECK(w.calls > (std::uint64_t{1} << 31));
  CHECK(h.core.state() == circuit_state::closed);

  // A bucket at the limit with a rate over the threshold keeps it.
  harness g(o);
  g.core.test_preload(g.now, limit, limit / 2 + 1, 0);
  const transition t = g.fail();
  CHECK(t);
  CHECK(t.reason == transition_reason::failure_rate);
}

// Issue 11, feature: a hung probe does not hold HALF_OPEN for ever.
TEST_CASE(
    "core: past max_half_open_duration the breaker reopens, and a later probe gets the slot") {
  levee::breaker_options o = small(1);
  o.open_duration = 1s;
  o.max_half_open_duration = 1min;
  harness h(o);
  h.fail();
  REQUIRE(h.fire_timer().to == circuit_state::half_open);
  const permit hung = h.core.try_acquire();
  REQUIRE(hung.is_probe());
  CHECK_FALSE(h.admits());                                         // the only slot is held
  CHECK_FALSE(h.core.half_open_elapsed(h.core.generation() - 1));  // a stale timer
  const transition t = h.core.half_open_elapsed(h.core.generation());
  REQUIRE(t);
  CHECK(t.from == circuit_state::half_open);
  CHECK(t.to == circuit_state::open);
  CHECK(t.reason == transition_reason::half_open_timeout);
  CHECK(t.open_for == 1s);
  CHECK(h.core.open_streak() == 2);
  CHECK(h.core.probes_in_flight() == 0);
  REQUIRE(h.fire_timer().to == circuit_state::half_open);
  const permit next = h.core.try_acquire();
  CHECK(next.is_probe());  // a later probe gets the slot
  // The hung probe's late outcome changes nothing.
  CHECK_FALSE(h.core.complete(hung, outcome::success, h.now));
  CHECK_FALSE(h.core.complete(hung, outcome::failure, h.now));
  CHECK(h.core.state() == circuit_state::half_open);
  CHECK(h.core.probes_in_flight() == 1);
  CHECK(h.core.complete(next, outcome::success, h.now).to == circuit_state::closed);
  CHECK_FALSE(h.core.half_open_elapsed(h.core.generation()));  // not HALF_OPEN: nothing
}

// Issue 22, the half-open timer: the core says which probe starts a round
// (the shell arms `max_half_open_duration` for it, and for no other permit).
TEST_CASE("core: the round's first probe, and only it, says so") {
  levee::breaker_options o = small(1);
  o.open_duration = 1s;
  o.half_open_probes = 3;
  o.successes_to_close = 4;
  harness h(o);
  CHECK_FALSE(h.core.try_acquire().first_probe());  // CLOSED: no probe at all
  h.fail();
  REQUIRE(h.core.state() == circuit_state::open);
  CHECK_FALSE(h.core.try_acquire());  // OPEN: rejected

  // Round 1: three probes at once; only the first is flagged.
  REQUIRE(h.fire_timer().to == circuit_state::half_open);
  const std::uint64_t round1 = h.core.generation();
  const permit a = h.core.try_acquire();
  const permit b = h.core.try_acquire();
  const permit c = h.core.try_acquire();
  REQUIRE(a.is_probe());
  REQUIRE(b.is_probe());
  REQUIRE(c.is_probe());
  CHECK(a.first_probe());
  CHECK(a.generation() == round1);
  CHECK_FALSE(b.first_probe());
  CHECK_FALSE(c.first_probe());
  CHECK_FALSE(h.core.try_acquire());  // every slot taken
  // A slot given back, by a success or an abandoned probe, starts no new round.
  CHECK_FALSE(h.core.complete(a, outcome::success, h.now));
  h.core.release(b);
  const permit d = h.core.try_acquire();
  REQUIRE(d.is_probe());
  CHECK_FALSE(d.first_probe());
  CHECK(d.generation() == round1);

  // A probe fails: the breaker reopens; the next round has a first probe again.
  REQUIRE(h.core.complete(c, outcome::failure, h.now).to == circuit_state::open);
  CHECK_FALSE(h.core.complete(d, outcome::success, h.now));  // late: changes nothing
  REQUIRE(h.fire_timer().to == circuit_state::half_open);
  const permit e = h.core.try_acquire();
  const permit f = h.core.try_acquire();
  CHECK(e.first_probe());
  CHECK(e.generation() == h.core.generation());
  CHECK(e.generation() != round1);
  CHECK_FALSE(f.first_probe());

  // The half-open timer reopens it (a round that never settled): again.
  REQUIRE(h.core.half_open_elapsed(h.core.generation()).to == circuit_state::open);
  h.core.release(e);
  h.core.release(f);
  REQUIRE(h.fire_timer().to == circuit_state::half_open);
  const permit g = h.core.try_acquire();
  CHECK(g.first_probe());
  CHECK_FALSE(h.core.try_acquire().first_probe());

  // Closed by its probes, then tripped again: a new round, a new first probe.
  h.core.release(g);
  for (int i = 0; i < 4; ++i) {
    const permit p = h.core.try_acquire();
    REQUIRE(p.is_probe());
    CHECK(p.first_probe() == false);  // the round started with g
    h.core.complete(p, outcome::success, h.now);
  }
  REQUIRE(h.core.state() == circuit_state::closed);
  const permit closed_call = h.core.try_acquire();
  CHECK_FALSE(closed_call.first_probe());
  REQUIRE(h.core.complete(closed_call, outcome::failure, h.now).to == circuit_state::open);
  REQUIRE(h.fire_timer().to == circuit_state::half_open);
  CHECK(h.core.try_acquire().first_probe());
}

// The flag costs the permit nothing: still one trivially copyable word.
static_assert(sizeof(permit) == 8);
static_assert(std::is_trivially_copyable_v<permit>);

TEST_CASE("core: what a trip was decided on stays readable after the state moved on") {
  // The shell reads it after the core's lock is released; another thread may
  // have moved the breaker on by then (its open timer fired, a reset).
  harness h({.failure_rate_threshold = 0.5, .minimum_calls = 4});
  h.succeed();
  h.succeed();
  h.fail();
  const transition t = h.fail();
  REQUIRE(t.to == circuit_state::open);
  CHECK(h.core.trip_basis(t).calls == 4);
  CHECK(h.core.trip_basis(t).failures == 2);
  REQUIRE(h.core.open_elapsed(t.generation));  // OPEN -> HALF_OPEN
  const levee::window_totals basis = h.core.trip_basis(t);
  CHECK(basis.calls == 4);
  CHECK(basis.failures == 2);
  CHECK(h.core.trip_basis(transition()).calls == 0);  // not a transition to OPEN
}
