// The registry of named breakers.
#include <levee/registry/registry.hpp>

#include "support.hpp"

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

using namespace levee_test;
using levee::circuit_state;

namespace {

using registry = levee::basic_breaker_registry<vclock>;

asio::awaitable<std::tuple<boost::system::error_code, int>> failing() {
  co_return std::tuple(make_error_code(boost::system::errc::connection_reset), 0);
}

}  // namespace

TEST_CASE("registry: get or create by key, named after the key") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc);
  auto a = r.get("a:80");
  auto a2 = r.get("a:80");
  auto b = r.get("b:80");
  CHECK(a == a2);
  CHECK(a != b);
  CHECK(a->name() == "a:80");
  CHECK(r.size() == 2);
  CHECK(r.remove("a:80"));
  CHECK_FALSE(r.remove("a:80"));
  CHECK(r.get("a:80") != a);  // a new one; the old one lives on with its holder
}

TEST_CASE("registry: shared defaults, per-key overrides") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.defaults = {.minimum_calls = 7}});
  r.set_options("special:80", {.minimum_calls = 2});
  CHECK(r.get("plain:80")->options().minimum_calls == 7);
  CHECK(r.get("special:80")->options().minimum_calls == 2);
  auto before = r.get("plain:80");
  r.set_options("plain:80", {.minimum_calls = 3});  // reconfigures the existing breaker
  CHECK(r.get("plain:80") == before);
  CHECK(r.get("plain:80")->options().minimum_calls == 3);
  CHECK_THROWS_WITH(r.set_options("x", {.minimum_calls = 0}),
                    "breaker_options::minimum_calls must be at least 1");
  CHECK_THROWS_WITH(registry(ioc, {.idle_timeout = -1s}),
                    "registry_options::idle_timeout must not be negative");
}

TEST_CASE("registry: one sick endpoint opens only its own breaker") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.defaults = {.minimum_calls = 1}});
  run(ioc, (*r.get("sick:80"))(failing()));
  CHECK(r.get("sick:80")->state() == circuit_state::open);
  CHECK(r.get("healthy:80")->state() == circuit_state::closed);
}

TEST_CASE("registry: idle breakers are evicted, open ones too, held ones are kept") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.defaults = {.minimum_calls = 1, .open_duration = 1h}, .idle_timeout = 10min});
  r.get("idle:80");
  run(ioc, (*r.get("open:80"))(failing()));
  auto held = r.get("held:80");
  r.get("busy:80");
  vclock::advance(9min);
  r.get("busy:80");  // still in use
  CHECK(r.evict_idle() == 0);
  vclock::advance(1min);  // idle:80 and held:80 idle for 10 min, busy:80 for 1 min
  // Evicted no sooner than 10 min, and no later than 10 min + 10 min / 64.
  vclock::advance(std::chrono::nanoseconds(10min) / 64);
  CHECK(r.evict_idle() == 2);  // idle:80 and open:80 (open or not): held:80 is held
  CHECK(r.size() == 2);
  held.reset();
  CHECK(r.evict_idle() == 1);
  vclock::advance(10min);
  // Sweeps also happen on get, at most every idle_timeout / 4.
  r.get("new:80");
  CHECK(r.size() == 1);  // busy:80 evicted by that sweep
  CHECK(r.evictions() == 4);
  settle(ioc);
}

TEST_CASE("registry: a breaker is never evicted before idle_timeout since its last get") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.idle_timeout = 64s});  // the time of use is written when it moved by > 1 s
  auto first = r.get("x:80");
  first.reset();
  vclock::advance(500ms);
  r.get("x:80");  // within the slack: the stored time stays at 0
  vclock::advance(64s - 500ms);
  CHECK(r.evict_idle() == 0);  // 64 s after the first get, but 63.5 s after the last
  vclock::advance(500ms - 1ns);
  CHECK(r.evict_idle() == 0);  // 1 ns short of 64 s after the last get
  vclock::advance(500ms + 1ns);
  CHECK(r.evict_idle() == 1);  // 65 s after the stored time: 64 s + the slack
  CHECK(r.size() == 0);
}

TEST_CASE("registry: a tripped breaker nobody calls again is evicted, open or half-open") {
  // A dead host: its breaker opened, then half-opened, and nobody asked for it
  // again. It must not stay for ever (2,000 dead hosts: 2,000 breakers).
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.defaults = {.minimum_calls = 1, .open_duration = 30s},
                   .idle_timeout = 10min,
                   .max_breakers = 5000});
  for (int i = 0; i < 2000; ++i) run(ioc, (*r.get("dead" + std::to_string(i) + ":80"))(failing()));
  run(ioc, (*r.get("forced:80"))(failing()));
  r.get("forced:80")->force_open();  // an operator's decision: kept
  CHECK(r.get("dead0:80")->state() == circuit_state::open);
  elapse(ioc, 30s);
  CHECK(r.get("dead0:80")->state() == circuit_state::half_open);
  CHECK(r.size() == 2001);
  vclock::advance(10min + std::chrono::nanoseconds(10min) / 64);
  settle(ioc);
  CHECK(r.evict_idle() == 2000);
  CHECK(r.size() == 1);
  CHECK(r.get("forced:80")->state() == circuit_state::forced_open);
  CHECK(r.prometheus_text().find("dead") == std::string::npos);
}

TEST_CASE("registry: idle_timeout = nanoseconds::max() never evicts (no overflow)") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.idle_timeout = std::chrono::nanoseconds::max()});
  r.get("x:80");
  vclock::advance(1s);
  CHECK(r.evict_idle() == 0);
  vclock::advance(std::chrono::hours(24 * 365 * 100));
  r.get("y:80");  // a sweep on get does not evict either
  CHECK(r.evict_idle() == 0);
  CHECK(r.size() == 2);
}

TEST_CASE("registry: max_breakers bounds it: the least recently used unheld breaker goes") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.defaults = {.minimum_calls = 1}, .max_breakers = 3});
  auto a = r.get("a:80");
  vclock::advance(1min);
  auto b = r.get("b:80");  // held below
  vclock::advance(1min);
  r.get("c:80");
  vclock::advance(1min);
  a.reset();
  r.get("d:80");  // full: a:80 is the least recently used unheld breaker
  CHECK(r.size() == 3);
  CHECK(r.evictions() == 1);
  vclock::advance(1min);
  auto a2 = r.get("a:80");  // full again: c:80 goes (b:80 is held, older or not)
  CHECK(a2 != a);
  CHECK(r.size() == 3);
  auto names = [&] {
    std::vector<std::string> n;
    for (const auto& m : r.metrics()) n.push_back(m.name);
    return n;
  };
  CHECK(names() == std::vector<std::string>{"a:80", "b:80", "d:80"});

  // Every breaker held (or forced by an operator): a new key gets a breaker of
  // its own, named after it, that the registry does not keep.
  r.get("d:80")->force_open();
  auto e = r.get("e:80");
  CHECK(e->name() == "e:80");
  CHECK(e->options().minimum_calls == 1);
  CHECK(r.get("e:80") != e);
  CHECK(r.size() == 3);
  CHECK(r.overflows() == 2);
  CHECK(names() == std::vector<std::string>{"a:80", "b:80", "d:80"});
  CHECK_THROWS_WITH(registry(ioc, {.max_breakers = 0}),
                    "registry_options::max_breakers must be at least 1");
}

TEST_CASE(
    "registry: guards(key)(call) reads the clock once when the call starts and once when "
    "it ends, for the breaker and the limit together") {
  virtual_time vt;
  asio::io_context ioc;
  levee::registry_options o;
  o.defaults.slow_call_duration = 50ms;  // the breaker needs the call's duration
  o.limits = levee::adaptive_limit_options{};
  registry r(ioc, o);
  const auto g = r.guards("a:80");
  REQUIRE(g.limit);
  fake_service api;  // a call without latency reads no clock itself

  const auto before = vclock::read_count();
  auto shared = run(ioc, g(api.call(true)));
  const auto shared_reads = vclock::read_count() - before;
  REQUIRE(shared->done);
  CHECK(shared_reads == 2);

  // The same layers nested read it once per layer and end, and the time
  // window once more.
  const auto before_nested = vclock::read_count();
  auto nested = run(ioc, (*g.breaker)((*g.limit)(api.call(true))));
  const auto nested_reads = vclock::read_count() - before_nested;
  REQUIRE(nested->done);
  CHECK(nested_reads > shared_reads);
}

TEST_CASE(
    "registry: guards(key)(call) is breaker(limit(call)): the shared duration makes a slow "
    "call for the breaker and a sample for the limit, a refusal is ignored") {
  virtual_time vt;
  asio::io_context ioc;
  levee::registry_options o;
  o.defaults.slow_call_duration = 50ms;
  o.limits = levee::adaptive_limit_options{.initial_limit = 1, .min_limit = 1, .max_limit = 1};
  registry r(ioc, o);
  const auto g = r.guards("a:80");
  fake_service api;

  auto slow = spawn(ioc, g(api.call_ec({}, 100ms)));
  settle(ioc);
  CHECK(g.limit->in_flight() == 1);
  auto refused = run(ioc, g(api.call_ec({}, 1ms)));  // the limit is full
  REQUIRE(refused->done);
  CHECK(std::get<0>(*refused->value) == levee::error::limit_exceeded);
  CHECK(api.started == 1);
  elapse(ioc, 100ms);
  REQUIRE(slow->done);
  CHECK(!std::get<0>(*slow->value));

  const auto m = g.breaker->metrics();
  CHECK(m.successes == 1);
  CHECK(m.slow == 1);      // 100 ms >= slow_call_duration, measured once for both
  CHECK(m.ignored == 1);   // the refused call never reached the downstream
  CHECK(m.rejected == 0);  // the limit refused it, not the breaker
  CHECK(m.window_calls == 1);
  const auto lm = g.limit->metrics();
  CHECK(lm.samples == 1);
  CHECK(lm.limited == 1);
  CHECK(lm.in_flight == 0);

  // Rejected by an open breaker: the limit is not asked.
  g.breaker->force_open();
  auto rejected = run(ioc, g(api.call_ec({}, 1ms)));
  REQUIRE(rejected->done);
  CHECK(std::get<0>(*rejected->value) == levee::error::circuit_open);
  CHECK(g.limit->metrics().admitted == 1);
}

namespace {

/// What a registry listener saw, in order: "key kind" (an event_kind's or a
/// registry_event_kind's name) and, for a transition, "-> state".
struct seen_events {
  std::vector<std::string> lines;
  levee::registry_listener listener() {
    return [this](const levee::registry_event& e) {
      std::string line(e.key);
      switch (e.kind) {
        case static_cast<levee::event_mask>(levee::registry_event_kind::added):
          line += " added";
          break;
        case static_cast<levee::event_mask>(levee::registry_event_kind::evicted):
          line += " evicted";
          break;
        case static_cast<levee::event_mask>(levee::registry_event_kind::removed):
          line += " removed";
          break;
        default:
          line += std::string(" ") + levee::to_string(e.breaker.kind);
          if (e.breaker.kind == levee::event_kind::transition)
            line += std::string(" -> ") + (e.breaker.to == circuit_state::open ? "open" : "other");
      }
      lines.push_back(std::move(line));
    };
  }
  std::vector<std::string> take() { return std::exchange(lines, {}); }
};

using lines = std::vector<std::string>;

}  // namespace

TEST_CASE("registry: listen receives every breaker's events now and later plus added and evicted") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.defaults = {.minimum_calls = 1, .open_duration = 1h}, .idle_timeout = 10min});
  r.get("before:80");  // kept before the listener exists
  seen_events seen;
  const auto id = r.listen(levee::transition_events | levee::registry_events, seen.listener());
  run(ioc, (*r.get("before:80"))(failing()));
  CHECK(seen.take() == lines{"before:80 transition -> open"});
  run(ioc, (*r.get("after:80"))(failing()));
  CHECK(seen.take() == lines{"after:80 added", "after:80 transition -> open"});

  // Evicted, then created again: the new breaker reports to the listener too.
  vclock::advance(11min);
  CHECK(r.evict_idle() == 2);
  settle(ioc);
  auto evicted = seen.take();
  std::sort(evicted.begin(), evicted.end());
  CHECK(evicted == lines{"after:80 evicted", "before:80 evicted"});
  run(ioc, (*r.get("before:80"))(failing()));
  CHECK(seen.take() == lines{"before:80 added", "before:80 transition -> open"});

  // The mask filters: no call events were asked for. Unlisten ends it all.
  r.unlisten(id);
  run(ioc, (*r.get("third:80"))(failing()));
  CHECK(r.get("third:80")->state() == circuit_state::open);
  CHECK(seen.take().empty());
}

TEST_CASE(
    "registry: listen reports removed and reconfigured, and a dropped breaker stops reporting") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc, {.defaults = {.minimum_calls = 1, .open_duration = 1h}});
  seen_events seen;
  r.listen(levee::all_events | levee::registry_events, seen.listener());
  auto held = r.get("a:80");
  CHECK(r.remove("a:80"));
  settle(ioc);
  CHECK(seen.take() == lines{"a:80 added", "a:80 removed"});
  run(ioc, (*held)(failing()));  // the caller's old breaker: no longer the registry's
  CHECK(held->state() == circuit_state::open);
  CHECK(seen.take().empty());

  run(ioc, (*r.get("b:80"))(failing()));
  CHECK(seen.take() == lines{"b:80 added", "b:80 failure", "b:80 transition -> open"});
  // New options reconfigure the same breaker in place (issue 21): no new
  // breaker, so no added; the breaker's own reconfigured event.
  r.set_options("b:80", {.minimum_calls = 5, .open_duration = 1h});
  settle(ioc);
  CHECK(seen.take() == lines{"b:80 reconfigured"});
  r.get("b:80")->reset();  // closed, empty window: 1 failure of 5 keeps it closed
  settle(ioc);
  seen.take();
  run(ioc, (*r.get("b:80"))(failing()));
  CHECK(seen.take() == lines{"b:80 failure"});

  // A listener of the registry's events only attaches nothing to breakers.
  seen_events only_registry;
  r.listen(levee::registry_events, only_registry.listener());
  run(ioc, (*r.get("b:80"))(failing()));
  r.remove("b:80");
  settle(ioc);
  CHECK(only_registry.take() == lines{"b:80 removed"});
  seen.take();
}

TEST_CASE("registry: a listener on its own executor and the way back after unlisten") {
  virtual_time vt;
  asio::io_context ioc;
  asio::io_context elsewhere;
  registry r(ioc, {.defaults = {.minimum_calls = 1, .open_duration = 1h}});
  seen_events seen;
  const auto id = r.listen(levee::registry_events, seen.listener(), elsewhere.get_executor());
  r.get("a:80");
  settle(ioc);
  CHECK(seen.lines.empty());  // posted to `elsewhere`
  elsewhere.poll();
  CHECK(seen.take() == lines{"a:80 added"});
  r.unlisten(id);
  r.unlisten(id);  // unknown now: nothing
  r.get("b:80");
  elsewhere.poll();
  CHECK(seen.lines.empty());
  // The breakers themselves are as before: their own listeners still work.
  int calls = 0;
  r.get("b:80")->listen(levee::call_events, [&](const levee::breaker_event&) { ++calls; });
  run(ioc, (*r.get("b:80"))(failing()));
  CHECK(calls == 1);
}

// Issue 23, "how the cost grows": the cost of eviction is counted in entries
// examined, not timed.

TEST_CASE("registry: making breakers asks for the number of hardware threads once per process") {
  virtual_time vt;
  asio::io_context ioc;
  registry r(ioc);
  r.get("first:80");  // the shard count: read by now, whichever test ran first
  const auto reads = levee::detail::hardware_concurrency_reads();
  for (int i = 0; i < 10; ++i) r.get(std::to_string(i) + ":80");
  CHECK(levee::detail::hardware_concurrency_reads() == reads);
  CHECK(reads == 1);
}

TEST_CASE(
    "registry: at max_breakers a new key examines a sample of the breakers, not all of them, "
    "and evicts the oldest of its sample") {
  virtual_time vt;
  asio::io_context ioc;
  constexpr int n = 2000;
  registry r(ioc, {.idle_timeout = 0s, .max_breakers = n});  // no idle sweep
  for (int i = 0; i < n; ++i) {
    r.get(std::to_string(i));  // key i last used at i seconds
    vclock::advance(1s);
  }
  const auto& work = r.detail_work();
  const auto searches = work.victim_searches.load();
  const auto examined = work.victim_examined.load();
  constexpr int extra = 100;
  for (int i = 0; i < extra; ++i) r.get("new" + std::to_string(i));
  CHECK(r.size() == n);
  CHECK(r.evictions() == extra);
  CHECK(work.victim_searches.load() - searches == extra);
  // Every breaker is evictable: one sample each, not the whole registry.
  CHECK(work.victim_examined.load() - examined == extra * levee::detail::registry_victim_sample);
  // The victims are old: none of the 1000 most recently used breakers went
  // (the oldest of 16 drawn at random: in the newer half with probability
  // 2^-16; the draws are deterministic).
  std::vector<std::string> kept;
  for (const auto& m : r.metrics()) kept.push_back(m.name);
  for (int i = n / 2; i < n; ++i)
    CHECK(std::binary_search(kept.begin(), kept.end(), std::to_string(i)));
}

TEST_CASE("registry: the idle sweep examines at most a batch of breakers per hold of its lock") {
  virtual_time vt;
  asio::io_context ioc;
  constexpr int n = 3000;
  registry r(ioc, {.idle_timeout = 10min, .max_breakers = n});
  std::vector<std::shared_ptr<registry::breaker_type>> held;
  for (int i = 0; i < n; ++i) {
    auto b = r.get(std::to_string(i));
    if (i % 10 == 0) held.push_back(std::move(b));
  }
  vclock::advance(11min);
  const auto& work = r.detail_work();
  const auto holds = work.sweep_holds.load();
  CHECK(r.evict_idle() == n - n / 10);  // the same as before: all idle, unheld ones
  CHECK(r.size() == n / 10);
  CHECK(work.sweep_most_per_hold.load() <= levee::detail::registry_sweep_batch);
  CHECK(work.sweep_holds.load() - holds >= n / levee::detail::registry_sweep_batch);
  held.clear();
  CHECK(r.evict_idle() == n / 10);
  CHECK(r.size() == 0);
}

TEST_CASE(
    "registry: a get runs one batch of the idle sweep at most, and the gets after it finish it") {
  virtual_time vt;
  asio::io_context ioc;
  constexpr int n = 3000;
  constexpr auto batch = levee::detail::registry_sweep_batch;
  registry r(ioc, {.idle_timeout = 10min, .max_breakers = n + 1});
  for (int i = 0; i < n; ++i) r.get(std::to_string(i));
  vclock::advance(11min);  // every key idle, and a sweep is due
  const auto& work = r.detail_work();
  // Each get examines one batch at most: none pays for the whole registry
  // (before, the get that began the sweep ran all of it: 3,000 entries).
  std::uint64_t most = 0;
  int gets = 0;
  while (r.size() > 1 && gets < 100) {
    const auto before = work.sweep_examined.load();
    r.get("hot");
    most = std::max(most, work.sweep_examined.load() - before);
    ++gets;
  }
  CHECK(most <= batch);
  CHECK(gets >= n / static_cast<int>(batch));
  CHECK(r.size() == 1);  // "hot", made by the first get
  CHECK(r.evictions() == n);
  // The way back: the sweep is over; the next begins a quarter of the idle
  // timeout after this one began, and evicts by the same rules.
  const auto examined = work.sweep_examined.load();
  r.get("a");
  r.get("b");
  CHECK(work.sweep_examined.load() == examined);
  vclock::advance(11min);
  r.get("c");  // a, b and hot idle for 11 min: one batch sweeps them all
  CHECK(r.evictions() == n + 3);
  CHECK(r.size() == 1);
  CHECK(r.evict_idle() == 0);
  settle(ioc);
}
