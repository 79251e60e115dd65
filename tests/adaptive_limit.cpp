// The adaptive concurrency limit: its algorithms against a simulated
// downstream (sans-I/O, virtual time), and the layer on virtual time.
#include <levee/limit/adaptive_limit.hpp>

#include "support.hpp"

#include <levee/registry/registry.hpp>
#include <levee/retry/retry.hpp>
#include <levee/timeout/timeout.hpp>

#include <cmath>
#include <queue>
#include <sstream>
#include <vector>

using namespace levee_test;
using levee::adaptive_limit_options;
using limiter = levee::basic_adaptive_limit<vclock>;

namespace {

/// A downstream with a capacity: a call that starts while `k` calls run
/// takes `base * max(1, k / capacity)` (beyond its capacity it queues, so by
/// Little's law its latency grows with the calls in flight). `clients`
/// callers each call again as soon as their call ends, or 10 ms after a
/// rejection. Drives the sans-I/O Gradient2 directly, one window at a time,
/// and records the limit after each window. `sampled`: calls are timed as the
/// layer times them (adaptive_limit_state::timing): every call until the
/// window holds `every_call_samples`, then one in 16 standing for 16, the
/// others only counted in flight; otherwise every call is a sample.
struct simulation {
  bool sampled = false;
  std::size_t timed = 0, untimed = 0;
  std::size_t capacity = 100;
  std::size_t clients = 400;
  std::function<double(double)> base = [](double) { return 0.1; };  // seconds, by time
  levee::detail::gradient2 algorithm;
  std::vector<double> limits;  // after each window
  std::vector<double> times;   // when each window closed
  std::size_t peak_in_flight = 0;

  explicit simulation(const adaptive_limit_options& o)
      : algorithm({static_cast<double>(o.initial_limit), static_cast<double>(o.min_limit),
                   static_cast<double>(o.max_limit), o.smoothing, o.rtt_tolerance, o.queue_size,
                   o.long_window, o.sample_window.count(), o.min_window_samples}) {}

  void run(double seconds) {
    struct call {
      double end, start;
      std::size_t in_flight;
      std::size_t weight;  // 0: not timed
      bool operator>(const call& o) const { return end > o.end; }
    };
    struct simulation_samples;
    std::priority_queue<call, std::vector<call>, std::greater<>> running;
    std::priority_queue<double, std::vector<double>, std::greater<>> ready;
    for (std::size_t i = 0; i < clients; ++i) ready.push(0);
    double now = 0;
    std::uint64_t windows = algorithm.windows();
    while (now < seconds) {
      if (!running.empty() && running.top().end <= ready.top()) {
        const call c = running.top();
        running.pop();
        now = c.end;
        if (c.weight == 0) {
          algorithm.note(c.in_flight);
        } else {
          algorithm.sample(static_cast<std::int64_t>(now * 1e9), (c.end - c.start) * 1e9,
                           c.in_flight, c.weight);
        }
        if (algorithm.windows() != windows) {
          windows = algorithm.windows();
          limits.push_back(algorithm.limit());
          times.push_back(now);
        }
        ready.push(now);
      } else {
        now = std::max(now, ready.top());
        ready.pop();
        if (running.size() < static_cast<std::size_t>(algorithm.limit())) {
          const std::size_t k = running.size() + 1;
          peak_in_flight = std::max(peak_in_flight, k);
          const double latency =
              base(now) * std::max(1.0, static_cast<double>(k) / static_cast<double>(capacity));
          using sampler = levee::detail::one_in_16<simulation_samples, false, 0x2545f4914f6cdd1du>;
          const std::size_t weight = !sampled || algorithm.times_every_call() ? 1
                                     : sampler::pick()                        ? sampler::mean_gap
                                                                              : 0;
          ++(weight == 0 ? untimed : timed);
          running.push({now + latency, now, k, weight});
        } else {
          ready.push(now + 0.01);
        }
      }
    }
  }
};

/// vclock's time, counting its reads.
struct counting_clock {
  using rep = vclock::rep;
  using period = vclock::period;
  using duration = vclock::duration;
  using time_point = std::chrono::time_point<counting_clock, duration>;
  [[maybe_unused]] static constexpr bool is_steady = true;
  static inline std::size_t reads = 0;
  static time_point now() noexcept {
    ++reads;
    return time_point(vclock::now().time_since_epoch());
  }
};

adaptive_limit_options simulated(std::size_t min_limit = 20) {
  adaptive_limit_options o;  // Netflix's defaults, a limit of up to 1000
  o.min_limit = min_limit;
  o.initial_limit = 20;
  o.max_limit = 1000;
  return o;
}

}  // namespace

TEST_CASE("adaptive limit: invalid options are refused by name") {
  auto refused = [](adaptive_limit_options o, const char* member) {
    try {
      levee::validate(o);
      FAIL("accepted, expected a complaint about " << member);
    } catch (const std::invalid_argument& e) {
      CHECK(std::string(e.what()).find(member) != std::string::npos);
    }
  };
  refused({.min_limit = 0}, "min_limit");
  refused({.initial_limit = 10}, "initial_limit");  // below min_limit (20)
  refused({.min_limit = 30, .max_limit = 25}, "max_limit");
  refused({.smoothing = 0}, "smoothing");
  refused({.rtt_tolerance = 0.9}, "rtt_tolerance");
  refused({.long_window = 0}, "long_window");
  refused({.queue_size = -1}, "queue_size");
  refused({.backoff_ratio = 1}, "backoff_ratio");
  refused({.aimd_timeout = 0s}, "aimd_timeout");
  refused({.max_wait = -1s}, "max_wait");
  refused({.sample_window = -1s}, "sample_window");
  refused({.min_window_samples = 0}, "min_window_samples");
  levee::validate(adaptive_limit_options{.max_wait = std::chrono::nanoseconds::max()});
}

TEST_CASE("gradient2: the limit converges near the downstream's capacity") {
  // Capacity 100, 400 callers: without a limit 400 calls would run, each 4
  // times slower. Windows of 1 s (about 1,000 calls each). The same bounds
  // with every call timed and with the layer's sampling (about 1 call in 7
  // timed here).
  const bool sampled = GENERATE(false, true);
  CAPTURE(sampled);
  simulation sim(simulated());
  sim.sampled = sampled;
  sim.run(600);
  if (sampled) CHECK(sim.timed * 5 < sim.untimed);
  REQUIRE(sim.limits.size() >= 500);
  // Within 100 windows the limit reaches the capacity, and from then on it
  // stays near it: above 0.9 and below 1.3 times the capacity for the next
  // 400 windows (it creeps up slowly as the long-term round trip absorbs the
  // little queueing it allows: Gradient2's known drift).
  for (std::size_t w = 100; w < 500; ++w) {
    CAPTURE(w);
    CHECK(sim.limits[w] >= 90);
    CHECK(sim.limits[w] <= 130);
  }
  CHECK(sim.peak_in_flight <= 131);
  for (double l : sim.limits) CHECK((l >= 20 && l <= 1000));
}

TEST_CASE("gradient2: the limit falls when latency rises and recovers when it drops") {
  const bool sampled = GENERATE(false, true);  // as above
  CAPTURE(sampled);
  simulation sim(simulated(5));
  sim.sampled = sampled;
  // 100 ms, then 300 ms (the downstream slows down by itself) from 150 s to
  // 300 s, then 100 ms again.
  sim.base = [](double t) { return t >= 150 && t < 300 ? 0.3 : 0.1; };
  sim.run(600);
  auto at = [&](double t) {  // the limit after the last window closed by `t`
    std::size_t i = 0;
    while (i + 1 < sim.times.size() && sim.times[i + 1] <= t) ++i;
    return sim.limits.at(i);
  };
  const double before = at(149);
  CHECK(before >= 90);
  CHECK(at(200) < before / 2);  // fell within 50 windows
  const double low = at(299);
  CHECK(at(450) > low * 3);  // recovered within 150 windows
  CHECK(at(599) >= 90);
  for (double l : sim.limits) CHECK((l >= 5 && l <= 1000));
}

TEST_CASE("adaptive limit: Gradient2 times a window's first 64 calls, then about 1 in 16") {
  // A clock read costs 25 to 35 ns on the reference machine, two a timed
  // call (bench/README.md). Time does not move: the one window stays open.
  virtual_time vt;
  asio::io_context ioc;
  const auto algorithm = GENERATE(levee::limit_algorithm::gradient2, levee::limit_algorithm::aimd);
  CAPTURE(algorithm);
  levee::basic_adaptive_limit<counting_clock> limit(ioc, {.algorithm = algorithm});
  constexpr std::size_t every = levee::detail::gradient2::every_call_samples, more = 1600;
  counting_clock::reads = 0;
  auto all = run(ioc, [&]() -> asio::awaitable<int> {
    int sum = 0;
    for (std::size_t i = 0; i < every + more; ++i)
      sum += co_await limit([]() -> asio::awaitable<int> { co_return 1; }());
    co_return sum;
  }());
  REQUIRE(all->done);
  CHECK(*all->value == static_cast<int>(every + more));
  CHECK(limit.metrics().samples == every + more);  // every outcome counts
  const std::size_t timed = counting_clock::reads / 2;
  if (algorithm == levee::limit_algorithm::gradient2) {
    CHECK(timed >= every + more / 32);
    CHECK(timed <= every + more / 8);
  } else {
    // AIMD compares every round trip with aimd_timeout: every call is timed
    // (on the coarse clock when the limit's clock is steady_clock).
    CHECK(timed == every + more);
  }
}

TEST_CASE("registry guard set: a call the limit does not time is timed by the breaker alone") {
  // Before, both reads of every call were shared: two per call. Now a call
  // the limit does not time costs what the breaker alone costs (on a clock
  // with no coarse variant: its time window's read, and its probe
  // deadline's sample).
  virtual_time vt;
  asio::io_context ioc;
  constexpr std::size_t calls = levee::detail::gradient2::every_call_samples + 1600;
  auto count_reads = [&](auto&& guard) {
    counting_clock::reads = 0;
    auto all = run(ioc, [&]() -> asio::awaitable<int> {
      int sum = 0;
      for (std::size_t i = 0; i < calls; ++i)
        sum += co_await guard([]() -> asio::awaitable<int> { co_return 1; }());
      co_return sum;
    }());
    REQUIRE(all->done);
    CHECK(*all->value == static_cast<int>(calls));
    return counting_clock::reads;
  };
  levee::basic_breaker_registry<counting_clock> alone(ioc, {});
  auto b = alone.get("a:80");
  const std::size_t breaker_reads = count_reads([&](auto aw) { return (*b)(std::move(aw)); });
  levee::basic_breaker_registry<counting_clock> both(ioc, {.limits = adaptive_limit_options{}});
  auto g = both.guards("a:80");
  const std::size_t pair_reads = count_reads([&](auto aw) { return g(std::move(aw)); });
  CAPTURE(breaker_reads, pair_reads);
  CHECK(g.limit->metrics().samples == calls);
  CHECK(g.breaker->metrics().successes == calls);
  CHECK(pair_reads < calls * 3 / 2);
  // At most the limit's timed calls' two reads more than the breaker alone.
  CHECK(pair_reads <=
        breaker_reads + 2 * (levee::detail::gradient2::every_call_samples + 1600 / 8));
}

TEST_CASE("registry guard set: a call keeps its limit after the registry removed the key") {
  // The registry forgetting a key mid-call changes nothing for the call, in
  // both forms: a set held by name, and a temporary one. (Its destruction
  // with the call abandoned: tests/pipeline.cpp, "pipeline: gone before its
  // io_context with calls in flight".)
  asio::io_context ioc;
  levee::breaker_registry reg(ioc, {.limits = adaptive_limit_options{}});
  asio::steady_timer gate(ioc, asio::steady_timer::time_point::max());
  auto call = [&]() -> asio::awaitable<int> {
    co_await gate.async_wait(asio::as_tuple(asio::use_awaitable));
    co_return 7;
  };
  std::weak_ptr<levee::adaptive_limit> named, temporary;
  int sum = 0;
  std::size_t in_flight_after = 99, samples_after = 99;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        auto g = reg.guards("a:80");
        named = g.limit;
        sum += co_await g(call());
        in_flight_after = g.limit->in_flight();
        samples_after = static_cast<std::size_t>(g.limit->metrics().samples);
      },
      asio::detached);
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        temporary = reg.guards("b:80").limit;
        sum += co_await reg.guards("b:80")(call());
      },
      asio::detached);
  ioc.poll();  // both calls wait at the gate, each holding a slot
  REQUIRE(reg.remove("a:80"));
  REQUIRE(reg.remove("b:80"));
  REQUIRE(reg.size() == 0);
  const auto held_named = named.lock(), held_temporary = temporary.lock();
  REQUIRE(held_named);  // kept by the sets, not by the registry
  REQUIRE(held_temporary);
  CHECK(held_named->in_flight() == 1);
  CHECK(held_temporary->in_flight() == 1);
  gate.cancel();
  ioc.run();
  CHECK(sum == 14);
  CHECK(in_flight_after == 0);  // the slot was given back, and the call sampled
  CHECK(samples_after == 1);
  CHECK(held_temporary->in_flight() == 0);
  CHECK(held_temporary->metrics().samples == 1);
}

TEST_CASE("aimd: drops multiply the limit down, busy successes add one, within bounds") {
  levee::detail::aimd a({20, 10, 25, 0.9, 1e9});
  CHECK(a.update(1e6, 20, false) == 21);  // busy (20 >= 21/2): +1
  CHECK(a.update(1e6, 5, false) == 21);   // idle: unchanged
  CHECK(a.update(1e6, 20, true) == 18);   // floor(21 * 0.9)
  CHECK(a.update(2e9, 20, false) == 16);  // a round trip over the timeout is a drop
  for (int i = 0; i < 20; ++i) a.update(1e6, 30, true);
  CHECK(a.limit() == 10);  // never below min_limit
  for (int i = 0; i < 40; ++i) a.update(1e6, 30, false);
  CHECK(a.limit() == 25);  // nor above max_limit
}

TEST_CASE("adaptive limit: a call over the limit fails at once, in both forms") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(ioc, {.initial_limit = 2, .min_limit = 2, .max_limit = 2});
  auto a = spawn(ioc, limit(api.call_ec({}, 1s)));
  auto b = spawn(ioc, limit(api.call_ec({}, 1s)));
  settle(ioc);
  CHECK(limit.in_flight() == 2);
  auto c = run(ioc, limit(api.call_ec({}, 1s)));  // error_code form
  REQUIRE(c->done);
  CHECK(std::get<0>(*c->value) == levee::error::limit_exceeded);
  CHECK(std::get<0>(*c->value) == levee::condition::rejected);
  CHECK(levee::is_rejection(std::get<0>(*c->value)));
  auto d = run(ioc, limit(api.call(true, 1s)));  // exception form
  REQUIRE(d->done);
  REQUIRE(d->error);
  try {
    std::rethrow_exception(d->error);
  } catch (const boost::system::system_error& e) {
    CHECK(e.code() == levee::error::limit_exceeded);
  }
  CHECK(api.started == 2);  // the rejected calls never started
  // Never retried by the default predicate.
  const auto rejected = std::tuple(boost::system::error_code(levee::error::limit_exceeded), 0);
  CHECK_FALSE(levee::default_retryable(levee::detail::make_value_result(rejected)));
  elapse(ioc, 1s);
  CHECK(a->done);
  CHECK(b->done);
  CHECK(limit.in_flight() == 0);
  const auto m = limit.metrics();
  CHECK(m.admitted == 2);
  CHECK(m.limited == 2);
  CHECK(m.peak_in_flight == 2);
}

TEST_CASE("adaptive limit: a short FIFO queue, bounded in length and in time") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(
      ioc, {.initial_limit = 1, .min_limit = 1, .max_limit = 1, .max_queue = 1, .max_wait = 500ms});
  auto first = spawn(ioc, limit(api.call_ec({}, 300ms)));
  auto queued = spawn(ioc, limit(api.call_ec({}, 300ms)));
  auto full = spawn(ioc, limit(api.call_ec({}, 300ms)));
  settle(ioc);
  REQUIRE(full->done);  // the queue holds one: rejected at once
  CHECK(std::get<0>(*full->value) == levee::error::limit_exceeded);
  CHECK(limit.metrics().queued == 1);
  elapse(ioc, 300ms);  // the first ends: the queued one starts
  CHECK(first->done);
  CHECK(api.started == 2);
  auto late = spawn(ioc, limit(api.call_ec({}, 1s)));
  settle(ioc);
  CHECK_FALSE(late->done);  // waiting
  elapse(ioc, 300ms);       // the second ends: `late` starts (it waited 300 ms)
  CHECK(queued->done);
  CHECK(api.started == 3);
  auto expired = spawn(ioc, limit(api.call_ec({}, 1s)));
  settle(ioc);
  elapse(ioc, 499ms);
  CHECK_FALSE(expired->done);
  elapse(ioc, 1ms);  // waited max_wait
  REQUIRE(expired->done);
  CHECK(std::get<0>(*expired->value) == levee::error::limit_exceeded);
  elapse(ioc, 1s);
  CHECK(late->done);
  CHECK(limit.in_flight() == 0);
}

TEST_CASE("adaptive limit: a cancelled waiter and a destroyed limiter end their waits") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  auto limit = std::make_unique<limiter>(
      ioc,
      adaptive_limit_options{.initial_limit = 1, .min_limit = 1, .max_limit = 1, .max_queue = 3});
  auto first = spawn(ioc, (*limit)(api.call_ec({}, 1s)));
  auto ahead = spawn(ioc, (*limit)(api.call_ec({}, 1s)));
  asio::cancellation_signal signal;
  bool cancelled_done = false;
  boost::system::error_code cancelled_ec;
  asio::co_spawn(
      ioc, (*limit)(api.call_ec({}, 1s)),
      asio::bind_cancellation_slot(
          signal.slot(), [&](std::exception_ptr, std::tuple<boost::system::error_code, int> r) {
            cancelled_done = true;
            cancelled_ec = std::get<0>(r);
          }));
  auto behind = spawn(ioc, (*limit)(api.call_ec({}, 1s)));
  settle(ioc);
  CHECK(limit->metrics().queued == 3);
  signal.emit(asio::cancellation_type::terminal);  // leaves the middle of the queue
  settle(ioc);
  REQUIRE(cancelled_done);
  CHECK(cancelled_ec == asio::error::operation_aborted);
  CHECK(limit->metrics().queued == 2);
  elapse(ioc, 1s);  // the first ends: the first waiter starts, FIFO
  CHECK(first->done);
  CHECK_FALSE(ahead->done);
  CHECK(api.started == 2);
  CHECK(limit->metrics().queued == 1);
  limit.reset();  // the last waiter ends with operation_aborted; the running call goes on
  settle(ioc);
  REQUIRE(behind->done);
  CHECK(std::get<0>(*behind->value) == asio::error::operation_aborted);
  elapse(ioc, 1s);
  REQUIRE(ahead->done);
  CHECK_FALSE(std::get<0>(*ahead->value));
  CHECK(api.started == 2);
}

TEST_CASE("adaptive limit: a cancelled call frees its slot and is not a sample") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(ioc, {.initial_limit = 1, .min_limit = 1, .max_limit = 1});
  auto cancelled = run(ioc, limit(api.call_ec(asio::error::operation_aborted)));
  REQUIRE(cancelled->done);
  CHECK(limit.in_flight() == 0);
  CHECK(limit.metrics().samples == 0);
  // An abandoned call (its coroutine destroyed) frees its slot too.
  {
    asio::io_context other;
    auto abandoned = spawn(other, limit(api.call_ec({}, 1h)));
    settle(other);
    CHECK(limit.in_flight() == 1);
  }  // `other` destroys the suspended coroutine
  CHECK(limit.in_flight() == 0);
  CHECK(limit.metrics().samples == 0);
  auto ok = run(ioc, limit(api.call_ec({})));
  CHECK(limit.metrics().samples == 1);
}

TEST_CASE("adaptive limit: AIMD shrinks on failures and on with_timeout's timeouts") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(ioc, {.algorithm = levee::limit_algorithm::aimd,
                      .initial_limit = 20,
                      .min_limit = 1,
                      .max_limit = 100});
  run(ioc, limit(api.call_ec(boost::asio::error::connection_reset)));  // a failure: a drop
  CHECK(limit.limit() == 18);                                          // floor(20 * 0.9)
  auto timed_out = run(ioc, limit(levee::with_timeout<vclock>(100ms, api.call_ec({}, 1s))));
  elapse(ioc, 100ms);
  REQUIRE(timed_out->done);
  CHECK(std::get<0>(*timed_out->value) == levee::error::timeout);
  CHECK(limit.limit() == 16);  // floor(18 * 0.9)
  CHECK(limit.metrics().drops == 2);
}

TEST_CASE("adaptive limit: an idle limiter leaves no pending work") {
  asio::io_context ioc;
  levee::adaptive_limit limit(ioc);
  int done = 0;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 5; ++i) {
          co_await limit([]() -> asio::awaitable<void> { co_return; }());
          ++done;
        }
      },
      asio::detached);
  ioc.run();  // returns: nothing of the limiter's is pending
  CHECK(done == 5);
  CHECK(limit.in_flight() == 0);
}

TEST_CASE("adaptive limit: events for limit changes and rejections, posted to listeners") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(ioc,
                {.algorithm = levee::limit_algorithm::aimd,
                 .initial_limit = 2,
                 .min_limit = 1,
                 .max_limit = 10},
                "recommendations");
  std::vector<levee::limit_event> seen;
  std::vector<std::string> names;
  const auto id = limit.listen(levee::all_limit_events, [&](const levee::limit_event& e) {
    seen.push_back(e);
    names.emplace_back(e.limit);
  });
  auto a = run(ioc, limit(api.call_ec({}, 1s)));
  auto b = run(ioc, limit(api.call_ec({}, 1s)));
  auto c = run(ioc, limit(api.call_ec({}, 1s)));  // over the limit of 2
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].kind == levee::limit_event_kind::limited);
  CHECK(seen[0].to == 2);
  CHECK(seen[0].in_flight == 2);
  CHECK(names[0] == "recommendations");
  elapse(ioc, 1s);  // two successes while busy: 2 -> 3 -> 4
  REQUIRE(seen.size() == 3);
  CHECK(seen[1].kind == levee::limit_event_kind::changed);
  CHECK(seen[1].from == 2);
  CHECK(seen[1].to == 3);
  CHECK(seen[2].to == 4);
  limit.unlisten(id);
  run(ioc, limit(api.call_ec(boost::asio::error::connection_reset)));
  CHECK(seen.size() == 3);  // none after unlisten
  CHECK(limit.limit() == 3);
}

TEST_CASE("adaptive limit: Prometheus exposition of limits") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(ioc, {.initial_limit = 1, .min_limit = 1, .max_limit = 1}, "api \"v2\"");
  auto running = run(ioc, limit(api.call_ec({}, 1s)));
  run(ioc, limit(api.call_ec({}, 1s)));  // limited
  std::ostringstream out;
  levee::write_limits_prometheus(out, {{limit.name(), limit.metrics()}});
  const std::string text = out.str();
  CHECK(text.find("# TYPE levee_limit gauge\nlevee_limit{limit=\"api \\\"v2\\\"\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("levee_limit_in_flight{limit=\"api \\\"v2\\\"\"} 1\n") != std::string::npos);
  CHECK(text.find("# TYPE levee_limit_rejected_calls_total counter\n"
                  "levee_limit_rejected_calls_total{limit=\"api \\\"v2\\\"\"} 1\n") !=
        std::string::npos);
  CHECK(text.find("levee_limit_admitted_calls_total{limit=\"api \\\"v2\\\"\"} 1\n") !=
        std::string::npos);
  elapse(ioc, 1s);
}

TEST_CASE("adaptive limit: a registry keeps one limit per key next to its breaker") {
  virtual_time vt;
  asio::io_context ioc;
  levee::registry_options o{.idle_timeout = 1min};
  o.limits = adaptive_limit_options{.initial_limit = 1, .min_limit = 1, .max_limit = 1};
  levee::basic_breaker_registry<vclock> registry(ioc, o);
  auto a = registry.guards("a:80");
  REQUIRE(a.breaker);
  REQUIRE(a.limit);
  CHECK(a.limit->name() == "a:80");
  CHECK(registry.guards("a:80").limit == a.limit);  // the same one
  fake_service api;
  auto held = run(ioc, (*a.breaker)((*a.limit)(api.call_ec({}, 1s))));
  auto refused = run(ioc, (*a.breaker)((*a.limit)(api.call_ec({}, 1s))));
  REQUIRE(refused->done);
  CHECK(std::get<0>(*refused->value) == levee::error::limit_exceeded);
  CHECK(a.breaker->metrics().rejected == 0);  // the limit refused it, not the breaker
  CHECK(a.breaker->metrics().failures == 0);  // and the breaker does not count it against
  CHECK(a.breaker->metrics().ignored == 1);   // the downstream
  const std::string text = registry.prometheus_text();
  CHECK(text.find("levee_limit{limit=\"a:80\"} 1\n") != std::string::npos);
  CHECK(text.find("levee_rejected_calls_total{breaker=\"a:80\"} 0\n") != std::string::npos);
  elapse(ioc, 1s);
  // Held limits keep their entry; released ones are evicted with the breaker.
  auto limit = a.limit;
  a = {};
  vclock::advance(2min);
  CHECK(registry.evict_idle() == 0);  // `limit` is still held
  limit.reset();
  CHECK(registry.evict_idle() == 1);
  CHECK(registry.limit_metrics().empty());
  CHECK_THROWS_WITH(
      levee::basic_breaker_registry<vclock>(
          ioc, levee::registry_options{.limits = adaptive_limit_options{.min_limit = 0}}),
      Catch::Contains("min_limit"));
}

namespace {

/// Issue 18's sequence on virtual time: 30 callers call through the limit in a
/// loop (again at once after an answer, 10 ms after a refusal). The dependency
/// answers in 50 ms; from 20 s to 50 s it is down and each call fails in 1 ms
/// (connection refused); then it is healthy again. Phases: 0 before the
/// outage, 1 the outage, 2 healed. (A shorter outage where its length does
/// not matter: 900,000 failed calls take seconds under the sanitizers.)
struct outage_sequence {
  static constexpr int callers = 30;
  static constexpr std::chrono::milliseconds outage_start = 20s;
  const std::chrono::milliseconds outage_end, end;

  std::uint64_t refused[3]{}, succeeded[3]{}, failed[3]{};
  std::vector<double> limit_by_second;  // the limit at the end of each second
  std::uint64_t refused_after_first_second = 0;
  double before = 0;   // the limit when the outage starts
  double at_heal = 0;  // the limit when the dependency heals
  // How long after the heal the limit was back to 0.9 times `before`, and the
  // calls refused until then.
  std::optional<std::chrono::milliseconds> back_after;
  std::uint64_t refused_until_back = 0;

  explicit outage_sequence(const adaptive_limit_options& o, std::chrono::milliseconds outage = 30s)
      : outage_end(outage_start + outage), end(outage_end + 30s) {
    virtual_time vt;
    asio::io_context ioc;
    fake_service api;
    limiter limit(ioc, o);
    bool down = false, stop = false;
    int phase = 0;
    auto caller = [&]() -> asio::awaitable<void> {
      timer wait(co_await asio::this_coro::executor);
      while (!stop) {
        const bool failing = down;
        const int in = phase;
        auto [ec, v] = co_await limit(
            api.call_ec(failing ? asio::error::connection_refused : boost::system::error_code(),
                        failing ? 1ms : 50ms));
        if (ec == levee::error::limit_exceeded) {
          ++refused[in];
          if (in == 2 && vclock::now().time_since_epoch() >= outage_end + 1s)
            ++refused_after_first_second;
          wait.expires_after(10ms);
          co_await wait.async_wait(asio::use_awaitable);
        } else if (ec) {
          ++failed[in];
        } else {
          ++succeeded[in];
        }
      }
    };
    for (int i = 0; i < callers; ++i) asio::co_spawn(ioc, caller(), asio::detached);
    for (auto t = 0ms; t < end; t += 1ms) {
      if (t == outage_start) {
        before = limit.limit();
        down = true;
        phase = 1;
      } else if (t == outage_end) {
        at_heal = limit.limit();
        down = false;
        phase = 2;
      }
      elapse(ioc, 1ms);
      if (phase == 2 && !back_after && limit.limit() >= before * 0.9) {
        back_after = t + 1ms - outage_end;
        refused_until_back = refused[2];
      }
      if ((t + 1ms) % 1s == 0ms) limit_by_second.push_back(limit.limit());
    }
    stop = true;
    elapse(ioc, 1s);
  }

  /// The limit `s` seconds after the heal.
  double healed(int s) const {
    return limit_by_second.at(static_cast<std::size_t>(
        std::chrono::duration_cast<std::chrono::seconds>(outage_end).count() + s - 1));
  }
};

}  // namespace

TEST_CASE("gradient2: failed calls are drops and not round trips: the limit survives an outage") {
  // Issue 18: the outage's 1 ms failures taught Gradient2 a round trip of
  // 1 ms; once healed, 50 ms read as queueing and the limit fell to twice
  // queue_size (8), refusing most calls for minutes (before the fix, in this
  // test: 24 ten seconds after the heal, 10 after thirty; 33,195 refusals
  // against 11,361 successes). A limit of 50, its max_limit: with 30 callers
  // Gradient2 stops growing at about 60, where fewer than half its calls are
  // in flight and it does not move at all, outage or not.
  const outage_sequence run({.initial_limit = 50, .min_limit = 4, .max_limit = 50});
  CAPTURE(run.before, run.healed(1), run.healed(10), run.healed(30));
  CAPTURE(run.refused[0], run.refused[1], run.refused[2], run.succeeded[2], run.at_heal);
  CHECK(run.before == 50);
  CHECK(run.refused[0] == 0);
  CHECK(run.failed[1] > 100000);  // the outage's fast failures reached the limit
  // Healed: the limit is where it was before the outage from the first
  // window on, and no call is refused.
  for (int s = 1; s <= 30; ++s) {
    CAPTURE(s);
    CHECK(run.healed(s) >= run.before * 0.9);
  }
  REQUIRE(run.back_after);
  CHECK(*run.back_after <= 1ms);  // it never left: 0 windows to recover
  CHECK(run.refused[2] == 0);
  CHECK(run.succeeded[2] == 30 * 20 * 30);  // 30 callers, 20 calls a second each, 30 s
}

TEST_CASE("gradient2: a call cut by with_timeout inside the limit is a drop and no round trip") {
  // A window per sample, no growth term: the limit moves by the gradient
  // alone. A 100 ms timeout taken as a round trip against a long-term 50 ms
  // would read as queueing and cut the limit to 2 * 75 / 100 = 1.5.
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(ioc, {.initial_limit = 2,
                      .min_limit = 1,
                      .max_limit = 10,
                      .smoothing = 1,
                      .queue_size = 0,
                      .sample_window = 0s,
                      .min_window_samples = 1});
  auto ok = spawn(ioc, limit(api.call_ec({}, 50ms)));
  settle(ioc);
  elapse(ioc, 50ms);
  REQUIRE(ok->done);
  CHECK(limit.limit() == 2);
  auto timed_out = spawn(ioc, limit(levee::with_timeout<vclock>(100ms, api.call_ec({}, 1s))));
  settle(ioc);
  elapse(ioc, 100ms);
  REQUIRE(timed_out->done);
  CHECK(std::get<0>(*timed_out->value) == levee::error::timeout);
  CHECK(limit.limit() == 2);
  CHECK(limit.metrics().samples == 2);
  CHECK(limit.metrics().drops == 1);
  CHECK(limit.in_flight() == 0);
  elapse(ioc, 1s);
}

TEST_CASE("aimd: failed calls are losses, and the limit comes back within a few round trips") {
  // The same sequence: every failure is a loss, so the outage takes the
  // limit to min_limit (4); once healed, each success while at least half
  // the limit is busy adds one: the limit doubles per round trip (50 ms).
  const outage_sequence run({.algorithm = levee::limit_algorithm::aimd,
                             .initial_limit = 50,
                             .min_limit = 4,
                             .max_limit = 50});
  CAPTURE(run.before, run.at_heal, run.healed(1), run.healed(10), run.healed(30));
  CAPTURE(run.refused[0], run.refused[1], run.refused[2], run.refused_after_first_second);
  CHECK(run.before == 50);
  CHECK(run.refused[0] == 0);
  CHECK(run.at_heal == 4);
  REQUIRE(run.back_after);
  // log2(50 / 4) = 3.6 doublings; each takes a round trip and up to 10 ms
  // (refused callers try again 10 ms later): 252 ms. At most 6 round trips.
  CHECK(*run.back_after <= 6 * 50ms);
  CHECK(run.refused[2] == run.refused_until_back);  // none once it is back
  for (int s = 1; s <= 30; ++s) {
    CAPTURE(s);
    CHECK(run.healed(s) >= run.before * 0.9);
  }
  // A min_limit at the concurrency the healthy dependency needs refuses none
  // (an outage of 2 s takes the limit to min_limit as well as one of 30).
  const outage_sequence floor_at_need({.algorithm = levee::limit_algorithm::aimd,
                                       .initial_limit = 50,
                                       .min_limit = 30,
                                       .max_limit = 50},
                                      2s);
  CHECK(floor_at_need.at_heal == 30);
  CHECK(floor_at_need.refused[2] == 0);
  REQUIRE(floor_at_need.back_after);
  CHECK(*floor_at_need.back_after <= 2 * 50ms);
}

namespace {

/// A classifier that rethrows the call's exception to look at it and catches
/// only the type it knows (issue 18): anything else escapes it.
levee::outcome picky_classifier(const levee::call_result& r) {
  if (r.threw()) {
    try {
      std::rethrow_exception(r.exception());
    } catch (const service_error&) {
      return levee::outcome::failure;
    }
  }
  if (r.error() && *r.error()) return levee::outcome::failure;
  return levee::outcome::success;
}

asio::awaitable<int> throws_logic_error() {
  throw std::logic_error("not a service_error");
  co_return 0;
}

adaptive_limit_options picky_aimd() {
  return {.algorithm = levee::limit_algorithm::aimd,
          .initial_limit = 20,
          .min_limit = 1,
          .max_limit = 100,
          .classifier = picky_classifier};
}

}  // namespace

TEST_CASE(
    "adaptive limit: a classifier that throws counts the call as a drop (the breaker: a failure)") {
  virtual_time vt;
  asio::io_context ioc;
  limiter limit(ioc, picky_aimd());
  auto r = run(ioc, limit(throws_logic_error()));
  REQUIRE(r->done);
  REQUIRE(r->error);  // the call's own exception reaches the caller, unchanged
  CHECK_THROWS_AS(std::rethrow_exception(r->error), std::logic_error);
  CHECK(limit.in_flight() == 0);
  CHECK(limit.metrics().samples == 1);
  CHECK(limit.metrics().drops == 1);
  CHECK(limit.limit() == 18);  // AIMD: a loss, floor(20 * 0.9)
  // The breaker, given the same classifier, counts one failure.
  breaker b(ioc, levee::breaker_options{.classifier = picky_classifier});
  auto through_breaker = run(ioc, b(throws_logic_error()));
  REQUIRE(through_breaker->error);
  CHECK(b.metrics().failures == 1);
  // The way back: the next calls are classified as before.
  fake_service api;
  auto ok = run(ioc, limit(api.call(true)));
  REQUIRE(ok->value);
  CHECK(limit.metrics().samples == 2);
  CHECK(limit.metrics().drops == 1);
  CHECK(limit.in_flight() == 0);
}

TEST_CASE("registry guard set: a classifier that throws is one breaker failure and one drop") {
  virtual_time vt;
  asio::io_context ioc;
  levee::registry_options o{.idle_timeout = 1min};
  o.defaults.classifier = picky_classifier;
  o.limits = picky_aimd();
  levee::basic_breaker_registry<vclock> registry(ioc, o);
  const auto g = registry.guards("a:80");
  auto r = run(ioc, g(throws_logic_error()));
  REQUIRE(r->done);
  REQUIRE(r->error);
  CHECK_THROWS_AS(std::rethrow_exception(r->error), std::logic_error);
  CHECK(g.breaker->metrics().failures == 1);
  CHECK(g.limit->metrics().drops == 1);
  CHECK(g.limit->in_flight() == 0);
  CHECK(g.limit->limit() == 18);
  // A classifier that throws on a returned value too.
  levee::registry_options always{.idle_timeout = 1min};
  always.defaults.classifier = [](const levee::call_result&) -> levee::outcome {
    throw std::runtime_error("classifier bug");
  };
  always.limits = picky_aimd();
  always.limits->classifier = always.defaults.classifier;
  levee::basic_breaker_registry<vclock> second(ioc, always);
  const auto h = second.guards("b:80");
  fake_service api;
  auto value = run(ioc, h(api.call_ec({})));
  REQUIRE(value->value);
  CHECK_FALSE(std::get<0>(*value->value));
  CHECK(h.breaker->metrics().failures == 1);
  CHECK(h.limit->metrics().drops == 1);
  CHECK(h.limit->in_flight() == 0);
}

TEST_CASE("adaptive limit: a limit that grows by more than 4 admits every waiter it has room for") {
  // Issue 18, check: a completion admitted at most 4 waiters, so after the
  // limit grew by more, waiters stayed queued (and newcomers were refused)
  // while fewer calls than the limit ran.
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(ioc, {.initial_limit = 4,
                      .min_limit = 4,
                      .max_limit = 100,
                      .smoothing = 1,
                      .queue_size = 20,  // one window: 4 -> 4 * 1 + 20 = 24
                      .sample_window = 0s,
                      .min_window_samples = 1,
                      .max_queue = 10});
  std::vector<std::shared_ptr<pending<std::tuple<boost::system::error_code, int>>>> calls;
  for (int i = 0; i < 3; ++i) calls.push_back(spawn(ioc, limit(api.call_ec({}, 1s))));
  // The fourth starts with 4 in flight (a sample the limit learns from).
  auto first = spawn(ioc, limit(api.call_ec({}, 100ms)));
  for (int i = 0; i < 10; ++i) calls.push_back(spawn(ioc, limit(api.call_ec({}, 1s))));
  settle(ioc);
  CHECK(limit.in_flight() == 4);
  CHECK(limit.metrics().queued == 10);
  elapse(ioc, 100ms);  // `first` ends: one window, the limit is 24
  REQUIRE(first->done);
  CHECK(limit.limit() == 24);
  CHECK(limit.metrics().queued == 0);
  CHECK(limit.in_flight() == 13);
  // Newcomers are admitted up to the limit, none refused.
  for (int i = 0; i < 11; ++i) calls.push_back(spawn(ioc, limit(api.call_ec({}, 1s))));
  settle(ioc);
  CHECK(limit.in_flight() == 24);
  CHECK(limit.metrics().limited == 0);
  elapse(ioc, 1s);
  for (const auto& c : calls) {
    REQUIRE(c->done);
    CHECK_FALSE(std::get<0>(*c->value));
  }
  CHECK(limit.in_flight() == 0);
}

TEST_CASE("adaptive limit: a granted waiter whose completion is destroyed unrun frees its slot") {
  // Issue 18, check: the slot passes to a waiter whose io_context is then
  // destroyed without running the completion.
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  limiter limit(ioc, {.initial_limit = 1, .min_limit = 1, .max_limit = 1, .max_queue = 1});
  auto first = spawn(ioc, limit(api.call_ec({}, 1s)));
  settle(ioc);
  {
    asio::io_context other;
    auto waiting = spawn(other, limit(api.call_ec({}, 1s)));
    settle(other);
    CHECK(limit.metrics().queued == 1);
    elapse(ioc, 1s);  // `first` ends: the slot passes to the waiter, completion posted to `other`
    REQUIRE(first->done);
    CHECK(limit.in_flight() == 1);
    CHECK_FALSE(waiting->done);
  }  // `other` is destroyed with the completion unrun
  CHECK(limit.in_flight() == 0);
  CHECK(limit.metrics().queued == 0);
  // The way back: the slot serves the next call.
  auto again = run(ioc, limit(api.call_ec({})));
  REQUIRE(again->value);
  CHECK_FALSE(std::get<0>(*again->value));
  CHECK(limit.in_flight() == 0);
}

// The awaitable forms' frames hold the limit's state by address, counted in
// and out under its spinlock (limit/detail/adaptive_limit_state.hpp): the
// state must outlive the limiter while calls it admitted run, and go with
// the last of them, nested (`limit(call())`) and in a registry's guard set;
// a call admitted from the queue after the limiter went counts too.
TEST_CASE("adaptive limit: destroyed while calls run, its state goes with the last of them") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service s;
  using result = std::tuple<boost::system::error_code, int>;
  std::vector<std::shared_ptr<pending<result>>> calls;
  {
    limiter limit(ioc, adaptive_limit_options{
                           .initial_limit = 3, .min_limit = 3, .max_limit = 3, .max_queue = 1});
    levee::basic_breaker_registry<vclock> reg(ioc, {.limits = adaptive_limit_options{}});
    const auto set = reg.guards("k");
    for (int i = 0; i < 2; ++i) calls.push_back(spawn(ioc, limit(s.call_ec({}, 1s))));
    calls.push_back(spawn(ioc, limit(s.call_ec(asio::error::eof, 2s))));
    calls.push_back(spawn(ioc, limit(s.call_ec({}, 1s))));  // waits in the queue
    calls.push_back(spawn(ioc, set(s.call_ec({}, 3s))));
    settle(ioc);
    CHECK(s.started == 4);
    CHECK(limit.in_flight() == 3);
    CHECK(limit.metrics().queued == 1);
    CHECK(set.limit->in_flight() == 1);
  }  // the limiter, the registry and the set are gone; the frames hold the states
  settle(ioc);
  REQUIRE(calls[3]->done);  // the waiter ends with the limiter
  CHECK(std::get<0>(*calls[3]->value) == asio::error::operation_aborted);
  elapse(ioc, 1s);  // two end on the state (ASan: it is not freed yet)
  for (int i = 0; i < 2; ++i) {
    REQUIRE(calls[i]->done);
    CHECK(!std::get<0>(*calls[i]->value));
  }
  CHECK(!calls[2]->done);
  elapse(ioc, 1s);  // the last nested call frees it (ASan, LeakSanitizer: once, not leaked)
  REQUIRE(calls[2]->done);
  CHECK(std::get<0>(*calls[2]->value) == asio::error::eof);
  CHECK(!calls[4]->done);
  elapse(ioc, 1s);  // the guard set's call frees its limit's state
  REQUIRE(calls[4]->done);
  CHECK(!std::get<0>(*calls[4]->value));
  CHECK(ioc.poll() == 0);
}

TEST_CASE("adaptive limit: a call granted from the queue after the limiter went keeps its state") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service s;
  auto limit = std::make_unique<limiter>(
      ioc,
      adaptive_limit_options{.initial_limit = 1, .min_limit = 1, .max_limit = 1, .max_queue = 1});
  auto first = spawn(ioc, (*limit)(s.call_ec({}, 1s)));
  auto queued = spawn(ioc, (*limit)(s.call_ec({}, 1s)));
  settle(ioc);
  CHECK(s.started == 1);
  // The first ends, one handler at a time, until its slot is granted to the
  // waiter: the waiter's completion is posted, not yet run.
  vclock::advance(1s);
  ioc.restart();
  while (limit->metrics().queued == 1 && ioc.poll_one() == 1) {
  }
  REQUIRE(limit->metrics().queued == 0);
  REQUIRE(limit->in_flight() == 1);
  CHECK(s.started == 1);
  limit.reset();  // between the grant and the waiter's resumption
  settle(ioc);    // it resumes, is counted in while it holds an owner, starts
  CHECK(s.started == 2);
  REQUIRE(first->done);
  elapse(ioc, 1s);  // it ends on the state and frees it (ASan, LeakSanitizer)
  REQUIRE(queued->done);
  CHECK(!std::get<0>(*queued->value));
}

// A completion that moves the limit, with a listener for it, emits its
// event and only then counts its frame out (adaptive_limit.ipp,
// `leave_impl`): with the limiter gone, the last of them frees the state
// after its event. (The race that order guards against, a limiter going on
// another thread between the two, is in tests/adaptive_limit_threads.cpp.)
TEST_CASE("adaptive limit: gone while calls run that move it, with a listener") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service s;
  using result = std::tuple<boost::system::error_code, int>;
  std::vector<std::shared_ptr<pending<result>>> calls;
  std::vector<levee::limit_event> seen;
  {
    limiter limit(ioc, {.algorithm = levee::limit_algorithm::aimd,
                        .initial_limit = 2,
                        .min_limit = 1,
                        .max_limit = 10});
    limit.listen(levee::all_limit_events, [&](const levee::limit_event& e) { seen.push_back(e); });
    for (int i = 0; i < 2; ++i) calls.push_back(spawn(ioc, limit(s.call_ec({}, 1s))));
    calls.push_back(spawn(ioc, limit(s.call_ec({}, 1s))));  // over the limit: refused
    settle(ioc);
    REQUIRE(seen.size() == 1);
    CHECK(seen[0].kind == levee::limit_event_kind::limited);
  }
  elapse(ioc, 1s);  // two successes while busy: 2 -> 3 -> 4, the last frees the state
  for (const auto& c : calls) REQUIRE(c->done);
  CHECK(!std::get<0>(*calls[0]->value));
  CHECK(!std::get<0>(*calls[1]->value));
  CHECK(std::get<0>(*calls[2]->value) == levee::error::limit_exceeded);
  REQUIRE(seen.size() == 3);  // the events posted before it went are delivered
  CHECK(seen[1].kind == levee::limit_event_kind::changed);
  CHECK(seen[2].to == 4);
}

TEST_CASE("adaptive limit: frames abandoned after the limit is gone free its state") {
  virtual_time vt;
  fake_service s;
  auto ioc = std::make_unique<asio::io_context>();
  {
    limiter limit(*ioc);
    levee::basic_breaker_registry<vclock> reg(*ioc, {.limits = adaptive_limit_options{}});
    for (int i = 0; i < 2; ++i) spawn(*ioc, limit(s.call_ec({}, 1s)));
    for (int i = 0; i < 2; ++i) spawn(*ioc, reg.guards("k")(s.call_ec({}, 1s)));
    settle(*ioc);
    CHECK(s.started == 4);
  }
  ioc.reset();  // destroys the four frames: the last of each frees its state (LeakSanitizer)
  SUCCEED("checked by ASan and LeakSanitizer: no use after free, no leak");
}
