// The upstream's sans-I/O part (levee/upstream/detail/endpoint_set.hpp), step
// by step: time and random bits are numbers the test passes in.
#include <levee/core/detail/random.hpp>
#include <levee/upstream/detail/endpoint_set.hpp>

#include <catch2/catch.hpp>

#include <array>
#include <cstdint>
#include <deque>
#include <stdexcept>
#include <string>
#include <vector>

using namespace std::chrono_literals;
using levee::outcome;
using levee::outlier_options;
using levee::detail::endpoint_change;
using levee::detail::endpoint_choice;
using levee::detail::endpoint_set;
using levee::detail::endpoint_state;

namespace {

outlier_options three_strikes() {
  outlier_options o;
  o.consecutive_failures = 3;
  o.base_ejection_time = 30s;
  o.max_ejection_time = 300s;
  return o;
}

/// Picks until endpoint `i` is chosen at `now` (the others released).
endpoint_choice pick_on(endpoint_set& set, std::chrono::nanoseconds now, std::size_t i) {
  for (std::uint64_t r = 1;; ++r) {
    const auto c = set.pick(now, r * 0x9e3779b97f4a7c15ull);
    if (c.index == i) return c;
    set.release(c);
  }
}

struct harness {
  endpoint_set set;
  std::chrono::nanoseconds now{0};
  levee::detail::splitmix64 rng{42};

  harness(std::size_t n, const outlier_options& o) : set(n, o) {}

  /// A call that the set picks, completed at once with `o`.
  endpoint_choice call(outcome o, std::span<const std::size_t> tried = {}) {
    const endpoint_choice c = set.pick(now, rng.next(), tried);
    REQUIRE(c);
    last = set.complete(c, o, now);
    return c;
  }
  /// Picks until endpoint `i` is chosen (the others are released uncounted).
  endpoint_choice pick_exactly(std::size_t i) {
    for (int n = 0; n < 1000; ++n) {
      const endpoint_choice c = set.pick(now, rng.next());
      REQUIRE(c);
      if (c.index == i) return c;
      set.release(c);
    }
    FAIL("endpoint " << i << " never picked");
    return {};
  }
  /// Drives endpoint `i` to `k` failures in a row; returns the last change.
  endpoint_change fail(std::size_t i, std::size_t k) {
    endpoint_change ch;
    for (std::size_t n = 0; n < k; ++n) ch = set.complete(pick_exactly(i), outcome::failure, now);
    return ch;
  }
  /// Which endpoints `calls` picks (each completed with success) reach.
  std::vector<int> spread(int calls) {
    std::vector<int> picked(set.size());
    for (int n = 0; n < calls; ++n) ++picked[call(outcome::success).index];
    return picked;
  }
  endpoint_change last;
};

}  // namespace

TEST_CASE("upstream core: power of two choices goes to the least outstanding", "[upstream]") {
  endpoint_set set(3, three_strikes());
  // random 0: ranks 0 and 1; a tie goes to the first.
  const auto a = set.pick(0ns, 0);
  CHECK(a.index == 0);
  const auto b = set.pick(0ns, 0);  // 0 has one outstanding, 1 none
  CHECK(b.index == 1);
  const auto c = set.pick(0ns, 0);
  CHECK(c.index == 0);
  CHECK(set.view(0).outstanding == 2);
  CHECK(set.view(1).outstanding == 1);
  set.complete(a, outcome::success, 0ns);
  set.complete(c, outcome::success, 0ns);
  set.complete(b, outcome::success, 0ns);
  CHECK(set.view(0).outstanding == 0);
  CHECK(set.view(1).outstanding == 0);
}

TEST_CASE("upstream core: idle endpoints share the calls evenly", "[upstream]") {
  harness h(3, three_strikes());
  const auto picked = h.spread(3000);
  for (int n : picked) {
    CHECK(n > 850);
    CHECK(n < 1150);
  }
}

TEST_CASE("upstream core: a slow endpoint is picked less (no EWMA: outstanding calls)",
          "[upstream]") {
  // A discrete simulation: 3 calls per tick; endpoints 1 and 2 answer in 1
  // tick, endpoint 0 in 10. Least outstanding sends less to the slow one.
  endpoint_set set(3, three_strikes());
  levee::detail::splitmix64 rng{7};
  std::deque<std::pair<int, endpoint_choice>> running;  // (due tick, call)
  std::array<int, 3> picked{};
  for (int tick = 0; tick < 2000; ++tick) {
    while (!running.empty() && running.front().first <= tick) {
      set.complete(running.front().second, outcome::success, 0ns);
      running.pop_front();
    }
    for (int n = 0; n < 3; ++n) {
      const auto c = set.pick(0ns, rng.next());
      ++picked[c.index];
      const int due = tick + (c.index == 0 ? 10 : 1);
      auto at = running.begin();
      while (at != running.end() && at->first <= due) ++at;
      running.insert(at, {due, c});
    }
  }
  const int total = picked[0] + picked[1] + picked[2];
  CHECK(picked[0] * 10 < total);  // under 10 %, from 33 % with round-robin
  CHECK(picked[1] * 10 > total * 4);
  CHECK(picked[2] * 10 > total * 4);
}

namespace {

/// Ticks of 1 ms from `*tick` for `ticks`, 3 calls started per tick; a call
/// to endpoint i lasts `ms[i]` ticks. Returns the calls each endpoint got.
std::array<int, 3> simulate(endpoint_set& set, int& tick, int ticks, std::array<int, 3> ms,
                            levee::detail::splitmix64& rng) {
  std::deque<std::pair<int, endpoint_choice>> running;  // (due tick, call), by due
  std::array<int, 3> picked{};
  const auto at = [](int t) { return std::chrono::nanoseconds(std::chrono::milliseconds(t)); };
  for (const int end = tick + ticks; tick < end || !running.empty(); ++tick) {
    while (!running.empty() && running.front().first <= tick) {
      set.complete(running.front().second, outcome::success, at(tick));
      running.pop_front();
    }
    if (tick >= end) continue;  // draining
    for (int n = 0; n < 3; ++n) {
      const auto c = set.pick(at(tick), rng.next());
      ++picked[c.index];
      const int due = tick + ms[c.index];
      auto it = running.begin();
      while (it != running.end() && it->first <= due) ++it;
      running.insert(it, {due, c});
    }
  }
  return picked;
}

}  // namespace

TEST_CASE(
    "upstream core: with the latency estimate a slow endpoint gets almost nothing, "
    "and its share comes back when it heals",
    "[upstream]") {
  endpoint_set set(3, three_strikes(), 1s);
  levee::detail::splitmix64 rng{7};
  int tick = 0;
  // Endpoint 0 answers in 20 ms, the others in 1 ms: 30 s of calls.
  auto picked = simulate(set, tick, 30000, {20, 1, 1}, rng);
  int total = picked[0] + picked[1] + picked[2];
  CAPTURE(picked[0], picked[1], picked[2]);
  CHECK(picked[0] * 200 < total);  // under 0.5 % (about 7 % on outstanding calls alone)
  CHECK(set.view(0).latency >= 10ms);
  CHECK(set.view(1).latency <= 2ms);

  // It heals: within a few time constants its estimate is retried and falls,
  // and then it gets its third again, as before it was slow.
  simulate(set, tick, 10000, {1, 1, 1}, rng);
  picked = simulate(set, tick, 10000, {1, 1, 1}, rng);
  total = picked[0] + picked[1] + picked[2];
  CAPTURE(picked[0], picked[1], picked[2]);
  CHECK(set.view(0).latency <= 2ms);
  CHECK(picked[0] * 10 > total * 3);  // over 30 %
}

TEST_CASE(
    "upstream core: without samples, or with the estimate off, picking is on outstanding "
    "calls",
    "[upstream]") {
  for (const auto decay : {0ns, std::chrono::nanoseconds(1s)}) {
    endpoint_set set(3, three_strikes(), decay);
    levee::detail::splitmix64 rng{11};
    int tick = 0;
    // Every call ends in the tick it started: no latency, no preference.
    const auto picked = simulate(set, tick, 3000, {0, 0, 0}, rng);
    for (int n : picked) {
      CHECK(n > 2700);
      CHECK(n < 3300);
    }
  }
}

TEST_CASE("upstream core: one call at a time, an endpoint that stalled once gets its share back",
          "[upstream]") {
  // Light load: every call ends before the next starts, so outstanding calls
  // never break a tie. One slow answer (a stall) must not exclude the
  // endpoint for ever, nor a hair's difference in the estimates send every
  // call to one endpoint.
  endpoint_set set(3, three_strikes(), 1s);
  levee::detail::splitmix64 rng{3};
  std::chrono::nanoseconds now{0};
  levee::detail::splitmix64 jitter{5};
  // A call of 80 to 120 us (the same for every endpoint), then 10 ms idle.
  const auto call = [&]() {
    const auto c = set.pick(now, rng.next());
    set.complete(c, outcome::success, now + 80us + std::chrono::nanoseconds(jitter.next() % 40000));
    now += 10ms;
    return c.index;
  };
  std::array<int, 3> picked{};
  for (int i = 0; i < 3000; ++i) ++picked[call()];
  CAPTURE(picked[0], picked[1], picked[2]);
  for (int n : picked) CHECK(n > 800);  // 30 s: shared

  // Endpoint 0 stalls once, for 50 ms.
  for (;;) {
    const auto c = set.pick(now, rng.next());
    const bool stall = c.index == 0;
    set.complete(c, outcome::success, now + (stall ? 50ms : 100us));
    now += 10ms;
    if (stall) break;
  }
  CHECK(set.view(0).latency >= 50ms);
  picked = {};
  for (int i = 0; i < 1000; ++i) ++picked[call()];
  CHECK(picked[0] < 100);  // 10 s: avoided at first
  picked = {};
  for (int i = 0; i < 3000; ++i) ++picked[call()];
  CAPTURE(picked[0], picked[1], picked[2]);
  CHECK(picked[0] > 800);  // the next 30 s: its share again, as before the stall
}

TEST_CASE("upstream core: an estimate of 0 still counts the outstanding calls", "[upstream]") {
  // Calls that end within one clock tick make an estimate of 0: weighed by
  // it, three outstanding calls cost nothing and beat an idle endpoint whose
  // calls took 1 ns. An estimate counts as at least 1 ns.
  endpoint_set set(2, three_strikes(), 1s);
  std::chrono::nanoseconds now{0};
  const auto on = [&](std::size_t i) { return pick_on(set, now, i); };
  set.complete(on(0), outcome::success, now);        // 0 ns
  set.complete(on(1), outcome::success, now + 1ns);  // 1 ns
  REQUIRE(set.view(0).latency == 0ns);
  std::vector<endpoint_choice> held;
  const std::array<std::size_t, 1> not_one{1};
  for (int k = 0; k < 3; ++k) {  // 3 outstanding on endpoint 0 (endpoint 1 avoided)
    held.push_back(set.pick(now, 7, not_one));
    REQUIRE(held.back().index == 0);
  }
  for (std::uint64_t r = 1; r <= 20; ++r) {
    const auto c = set.pick(now, r * 0x9e3779b97f4a7c15ull);
    CHECK(c.index == 1);  // 1 ns x 1 against at least 1 ns x 4
    set.release(c);
  }
  for (const auto& c : held) set.release(c);
  // The way back: its calls ended, endpoint 0 gets picked again.
  int zero = 0;
  for (std::uint64_t r = 1; r <= 20; ++r) {
    const auto c = set.pick(now, r * 0x9e3779b97f4a7c15ull);
    zero += c.index == 0;
    set.release(c);
  }
  CHECK(zero > 0);
}

TEST_CASE("upstream core: a cancelled attempt raises the latency estimate, never lowers it",
          "[upstream]") {
  // A hedge cancels the slow attempt it beat: that endpoint's calls all end
  // `ignored`, and the estimate must still learn it is slow.
  endpoint_set set(3, three_strikes(), 1s);
  std::chrono::nanoseconds now{0};
  const auto on = [&](std::size_t i) { return pick_on(set, now, i); };
  set.complete(on(0), outcome::success, now + 1ms);
  CHECK(set.view(0).latency == 1ms);
  now += 10ms;
  set.complete(on(0), outcome::ignored, now + 50ms);  // cut off after 50 ms
  CHECK(set.view(0).latency == 50ms);
  now += 100ms;
  set.complete(on(0), outcome::ignored, now + 2ms);  // a quick cancellation says nothing
  CHECK(set.view(0).latency == 50ms);
}

TEST_CASE("upstream core: consecutive failures eject, a success in between resets", "[upstream]") {
  harness h(3, three_strikes());
  CHECK(h.fail(1, 2).kind == endpoint_change::nothing);
  CHECK(h.set.complete(h.pick_exactly(1), outcome::success, h.now).kind ==
        endpoint_change::nothing);
  CHECK(h.fail(1, 2).kind == endpoint_change::nothing);
  // Ignored outcomes (a cancellation) neither count nor reset.
  CHECK(h.set.complete(h.pick_exactly(1), outcome::ignored, h.now).kind ==
        endpoint_change::nothing);
  CHECK(h.set.view(1).consecutive_failures == 2);
  const auto ch = h.fail(1, 1);
  CHECK(ch.kind == endpoint_change::ejected);
  CHECK(ch.ejected_for == 30s);
  CHECK(ch.level == 1);
  CHECK(h.set.view(1).state == endpoint_state::ejected);
  CHECK(h.set.ejected_count() == 1);
  // Skipped by every pick while ejected.
  h.now = 29s;
  const auto picked = h.spread(1000);
  CHECK(picked[1] == 0);
  CHECK(picked[0] + picked[2] == 1000);
}

TEST_CASE("upstream core: the way back is one probe after the ejection time", "[upstream]") {
  harness h(3, three_strikes());
  h.fail(2, 3);
  h.now = 30s;
  const auto probe = h.pick_exactly(2);
  CHECK(probe.probe);
  CHECK(h.set.view(2).state == endpoint_state::probing);
  // One probe at a time: the others never get 2 meanwhile.
  const auto picked = h.spread(500);
  CHECK(picked[2] == 0);
  const auto back = h.set.complete(probe, outcome::success, h.now);
  CHECK(back.kind == endpoint_change::returned);
  CHECK(h.set.view(2).state == endpoint_state::in_service);
  CHECK(h.set.view(2).returns == 1);
  CHECK(h.set.ejected_count() == 0);
  // As before the fault: picked like the others, one failure is not enough.
  const auto after = h.spread(3000);
  CHECK(after[2] > 850);
  CHECK(h.fail(2, 2).kind == endpoint_change::nothing);
}

TEST_CASE("upstream core: an abandoned probe frees its slot", "[upstream]") {
  harness h(2, three_strikes());
  h.fail(0, 3);
  h.now = 31s;
  auto probe = h.pick_exactly(0);
  REQUIRE(probe.probe);
  h.set.release(probe);
  CHECK(h.set.view(0).state == endpoint_state::ejected);
  probe = h.pick_exactly(0);
  CHECK(probe.probe);
  CHECK(h.set.complete(probe, outcome::ignored, h.now).kind == endpoint_change::nothing);
  CHECK(h.pick_exactly(0).probe);
}

TEST_CASE("upstream core: each ejection in a row lasts longer, up to the cap", "[upstream]") {
  auto o = three_strikes();
  o.max_ejection_time = 75s;
  harness h(3, o);
  CHECK(h.fail(0, 3).ejected_for == 30s);
  h.now = 30s;
  auto ch = h.set.complete(h.pick_exactly(0), outcome::failure, h.now);  // the probe fails
  CHECK(ch.kind == endpoint_change::ejected);
  CHECK(ch.ejected_for == 60s);
  CHECK(ch.level == 2);
  h.now = 89s;
  CHECK(h.spread(300)[0] == 0);  // not yet
  h.now = 90s;
  ch = h.set.complete(h.pick_exactly(0), outcome::failure, h.now);
  CHECK(ch.ejected_for == 75s);  // 90 s, capped
  CHECK(h.set.view(0).ejections == 3);
  CHECK(h.set.ejected_count() == 1);
}

TEST_CASE("upstream core: the ejection level decays while the endpoint serves", "[upstream]") {
  harness h(3, three_strikes());
  h.fail(1, 3);  // level 1, 30 s
  h.now = 30s;
  h.set.complete(h.pick_exactly(1), outcome::success, h.now);  // back at 30 s
  SECTION("ejected again soon: longer") {
    h.now = 59s;  // less than one base_ejection_time in service
    const auto ch = h.fail(1, 3);
    CHECK(ch.level == 2);
    CHECK(ch.ejected_for == 60s);
  }
  SECTION("ejected again after a base_ejection_time in service: as the first time") {
    h.now = 60s;
    const auto ch = h.fail(1, 3);
    CHECK(ch.level == 1);
    CHECK(ch.ejected_for == 30s);
  }
}

TEST_CASE("upstream core: the maximum ejected share, and at least one", "[upstream]") {
  auto o = three_strikes();
  SECTION("50 % of 3: one endpoint") {
    o.max_ejected_share = 0.5;
    harness h(3, o);
    CHECK(h.set.max_ejected() == 1);
    CHECK(h.fail(0, 3).kind == endpoint_change::ejected);
    CHECK(h.fail(1, 3).kind == endpoint_change::nothing);  // over the share: stays
    CHECK(h.set.ejected_count() == 1);
    CHECK_FALSE(h.set.panicking());
    const auto picked = h.spread(1000);
    CHECK(picked[0] == 0);
    CHECK(picked[1] > 300);  // the second sick one still gets its share
  }
  SECTION("10 % of 3: still one (Envoy's rule)") {
    o.max_ejected_share = 0.1;
    harness h(3, o);
    CHECK(h.set.max_ejected() == 1);
  }
  SECTION("100 % of 2: never the last one") {
    o.max_ejected_share = 1.0;
    harness h(2, o);
    CHECK(h.set.max_ejected() == 1);
    CHECK(h.fail(0, 3).kind == endpoint_change::ejected);
    CHECK(h.fail(1, 3).kind == endpoint_change::nothing);
  }
  SECTION("0: ejection off") {
    o.max_ejected_share = 0;
    harness h(3, o);
    CHECK(h.fail(0, 3).kind == endpoint_change::nothing);
  }
  SECTION("one endpoint: never ejected") {
    harness h(1, o);
    CHECK(h.fail(0, 3).kind == endpoint_change::nothing);
  }
}

TEST_CASE("upstream core: below the panic threshold, ejection is ignored", "[upstream]") {
  auto o = three_strikes();
  o.max_ejected_share = 0.7;  // two of three
  o.panic_threshold = 0.5;
  harness h(3, o);
  CHECK(h.fail(0, 3).kind == endpoint_change::ejected);
  CHECK_FALSE(h.set.panicking());  // 2 of 3 in service
  CHECK(h.fail(1, 3).kind == endpoint_change::ejected);
  CHECK(h.set.panicking());  // 1 of 3 < 50 %
  const auto c = h.set.pick(h.now, h.rng.next());
  CHECK(c.panic);
  h.set.release(c);
  const auto picked = h.spread(3000);
  CHECK(picked[0] > 850);  // every endpoint, as if none were ejected
  CHECK(picked[1] > 850);
  // Panic calls change no ejection: the ejected stay ejected.
  CHECK(h.set.view(0).state == endpoint_state::ejected);
  SECTION("the way back: a probe returns one, and the panic ends") {
    h.now = 30s;
    const auto back = h.set.complete(h.pick_exactly(0), outcome::success, h.now);
    REQUIRE(back.kind == endpoint_change::returned);
    CHECK_FALSE(h.set.panicking());
  }
  SECTION("with a threshold of 0 there is no panic") {
    auto o2 = o;
    o2.panic_threshold = 0;
    harness h2(3, o2);
    h2.fail(0, 3);
    h2.fail(1, 3);
    CHECK_FALSE(h2.set.panicking());
    const auto only = h2.spread(500);
    CHECK(only[2] == 500);
  }
}

TEST_CASE("upstream core: a retry avoids the endpoints this call already tried", "[upstream]") {
  harness h(3, three_strikes());
  const std::array<std::size_t, 1> one{0};
  std::array<int, 3> n{};
  for (int k = 0; k < 600; ++k) ++n[h.call(outcome::success, one).index];
  CHECK(n[0] == 0);
  CHECK(n[1] > 200);
  CHECK(n[2] > 200);
  // Every endpoint tried: one of them all the same (a healthy one first).
  h.fail(2, 3);
  const std::array<std::size_t, 2> two{0, 1};
  for (int k = 0; k < 100; ++k) CHECK(h.call(outcome::success, two).index != 2);
  const std::array<std::size_t, 3> all{0, 1, 2};
  for (int k = 0; k < 100; ++k) CHECK(h.call(outcome::success, all).index != 2);
}

namespace {

outlier_options success_rate_only() {
  outlier_options o;
  o.consecutive_failures = 0;  // only the success rate ejects here
  o.base_ejection_time = 30s;
  o.success_rate_interval = 10s;
  o.success_rate_minimum_hosts = 5;
  o.success_rate_request_volume = 100;
  o.success_rate_stdev_factor = 1.9;
  return o;
}

/// Endpoint `i` finishes `calls` calls, `failures` of them failed.
void finish_calls(harness& h, std::size_t i, int calls, int failures) {
  for (int n = 0; n < calls; ++n)
    h.set.complete(h.pick_exactly(i), n < failures ? outcome::failure : outcome::success, h.now);
}

}  // namespace

TEST_CASE("upstream core: a success rate that is an outlier ejects at the interval's end",
          "[upstream]") {
  harness h(5, success_rate_only());
  CHECK(h.set.sweep(0s).empty());                                  // the first interval starts
  for (std::size_t i = 1; i < 5; ++i) finish_calls(h, i, 100, 1);  // 99 %
  finish_calls(h, 0, 100, 30);                                     // 70 %
  h.now = 9s;
  CHECK(h.set.sweep(h.now).empty());  // not over yet
  CHECK(h.set.view(0).state == endpoint_state::in_service);
  h.now = 10s;
  const auto out = h.set.sweep(h.now);
  REQUIRE(out.size() == 1);
  CHECK(out[0].index == 0);
  CHECK(out[0].change.kind == endpoint_change::ejected);
  CHECK(out[0].change.cause == levee::upstream_cause::success_rate);
  CHECK(out[0].change.ejected_for == 30s);
  const auto v = h.set.view(0);
  CHECK(v.state == endpoint_state::ejected);
  CHECK(v.success_rate == Approx(0.7));
  CHECK(v.ejections_by[std::size_t(levee::upstream_cause::success_rate)] == 1);
  CHECK(h.set.view(1).success_rate == Approx(0.99));
  CHECK(h.set.sweep(h.now).empty());  // a new interval began: nothing twice

  SECTION("the way back: its probe returns it, and a healthy interval ejects nobody") {
    h.now = 40s;
    const auto back = h.set.complete(h.pick_exactly(0), outcome::success, h.now);
    CHECK(back.kind == endpoint_change::returned);
    CHECK(back.cause == levee::upstream_cause::probe);
    h.set.sweep(h.now);  // ends the interval that began at 10 s
    for (std::size_t i = 0; i < 5; ++i) finish_calls(h, i, 100, 1);
    h.now = 50s;
    CHECK(h.set.sweep(h.now).empty());
    for (std::size_t i = 0; i < 5; ++i) {
      CHECK(h.set.view(i).state == endpoint_state::in_service);
      CHECK(h.set.view(i).success_rate == Approx(0.99));
    }
  }
}

TEST_CASE("upstream core: success-rate ejection needs the volume and the hosts", "[upstream]") {
  auto o = success_rate_only();
  SECTION("an endpoint under the request volume has no rate") {
    harness h(5, o);
    h.set.sweep(0s);
    for (std::size_t i = 1; i < 5; ++i) finish_calls(h, i, 100, 0);
    finish_calls(h, 0, 99, 99);
    h.now = 10s;
    CHECK(h.set.sweep(h.now).empty());
    CHECK(h.set.view(0).success_rate == -1);
  }
  SECTION("fewer endpoints with a rate than the minimum: no verdict") {
    harness h(5, o);
    h.set.sweep(0s);
    for (std::size_t i = 1; i < 4; ++i) finish_calls(h, i, 100, 0);
    finish_calls(h, 0, 100, 50);
    h.now = 10s;
    CHECK(h.set.sweep(h.now).empty());  // 4 rated, 5 needed
  }
  SECTION("three endpoints: one outlier is sqrt(2) deviations out, at most") {
    o.success_rate_minimum_hosts = 3;
    harness h(3, o);
    h.set.sweep(0s);
    finish_calls(h, 1, 100, 0);
    finish_calls(h, 2, 100, 0);
    finish_calls(h, 0, 100, 100);  // 0 % against 100 %
    h.now = 10s;
    CHECK(h.set.sweep(h.now).empty());  // 1.9 > 1.41: never
    o.success_rate_stdev_factor = 1.4;
    harness h2(3, o);
    h2.set.sweep(0s);
    finish_calls(h2, 1, 100, 0);
    finish_calls(h2, 2, 100, 0);
    finish_calls(h2, 0, 100, 10);
    h2.now = 10s;
    const auto out = h2.set.sweep(h2.now);
    REQUIRE(out.size() == 1);
    CHECK(out[0].index == 0);
  }
  SECTION("0 turns it off") {
    o.success_rate_interval = 0s;
    harness h(5, o);
    h.set.sweep(0s);
    for (std::size_t i = 1; i < 5; ++i) finish_calls(h, i, 100, 0);
    finish_calls(h, 0, 100, 100);
    h.now = 10s;
    CHECK(h.set.sweep(h.now).empty());
    CHECK(h.set.view(0).success_rate == -1);
  }
}

TEST_CASE("upstream core: success-rate ejection stays within the share, the worst first",
          "[upstream]") {
  auto o = success_rate_only();
  o.max_ejected_share = 0.2;  // one of six
  o.success_rate_stdev_factor = 1.0;
  harness h(6, o);
  h.set.sweep(0s);
  for (std::size_t i = 2; i < 6; ++i) finish_calls(h, i, 100, 0);
  finish_calls(h, 0, 100, 40);
  finish_calls(h, 1, 100, 60);  // the worst
  h.now = 10s;
  const auto out = h.set.sweep(h.now);
  REQUIRE(out.size() == 1);
  CHECK(out[0].index == 1);
  CHECK(h.set.view(0).state == endpoint_state::in_service);
  CHECK(h.set.ejected_count() == 1);
}

TEST_CASE("upstream core: options are validated by name", "[upstream]") {
  const auto message = [](auto mutate) {
    levee::upstream_options o;
    mutate(o);
    try {
      levee::validate(o);
    } catch (const std::invalid_argument& e) {
      return std::string(e.what());
    }
    return std::string("valid");
  };
  CHECK(message([](auto&) {}) == "valid");
  CHECK(message([](auto& o) { o.outlier.base_ejection_time = 0s; }) ==
        "outlier_options::base_ejection_time must be greater than zero");
  CHECK(message([](auto& o) { o.outlier.max_ejection_time = 1s; }) ==
        "outlier_options::max_ejection_time must be at least base_ejection_time");
  CHECK(message([](auto& o) { o.outlier.max_ejected_share = 1.5; }) ==
        "outlier_options::max_ejected_share must be in [0, 1]");
  CHECK(message([](auto& o) { o.outlier.panic_threshold = -0.1; }) ==
        "outlier_options::panic_threshold must be in [0, 1]");
  CHECK(message([](auto& o) { o.outlier.success_rate_interval = -1s; }) ==
        "outlier_options::success_rate_interval must not be negative");
  CHECK(message([](auto& o) { o.outlier.success_rate_minimum_hosts = 1; }) ==
        "outlier_options::success_rate_minimum_hosts must be at least 2");
  CHECK(message([](auto& o) { o.outlier.success_rate_request_volume = 0; }) ==
        "outlier_options::success_rate_request_volume must be at least 1");
  CHECK(message([](auto& o) { o.outlier.success_rate_stdev_factor = -1; }) ==
        "outlier_options::success_rate_stdev_factor must be finite and not negative");
  CHECK(message([](auto& o) { o.max_attempts = 0; }) ==
        "upstream_options::max_attempts must be at least 1");
  CHECK(message([](auto& o) {
          o.endpoint_breaker.window = 0s;
        }).starts_with("upstream_options::endpoint_breaker: breaker_options::window"));
}
