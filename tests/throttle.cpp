// Client-side adaptive throttling: the SRE book's rule, graded shedding
// against a downstream of fixed capacity, the way back, the three forms.
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/limit/throttle.hpp>

#include "promtool.hpp"
#include "support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/deferred.hpp>

#include <atomic>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

using namespace levee_test;

namespace {

using throttle = levee::basic_throttle<vclock>;

/// A downstream that serves `capacity` calls per `period` and refuses the
/// rest (an overloaded server answering 503 fast).
struct capped_service {
  int capacity;
  std::chrono::nanoseconds period;
  std::int64_t current = -1;
  int served_in_period = 0;
  int received = 0;

  asio::awaitable<std::tuple<boost::system::error_code, int>> call() {
    ++received;
    const std::int64_t p = vclock::now().time_since_epoch() / period;
    if (p != current) {
      current = p;
      served_in_period = 0;
    }
    if (served_in_period < capacity) {
      ++served_in_period;
      co_return std::tuple(boost::system::error_code(), 1);
    }
    co_return std::tuple(make_error_code(boost::system::errc::resource_unavailable_try_again), 0);
  }
};

double expected(double requests, double accepts, double k) {
  return std::max(0.0, (requests - k * accepts) / (requests + 1));
}

}  // namespace

TEST_CASE("throttle: the rejection probability is the SRE book's formula") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 2.0, .minimum_requests = 0, .max_rejection_probability = 1.0});
  // By hand: a rejection is a request at once, an admitted call when recorded.
  int requests = 0, accepts = 0;
  for (int i = 0; i < 30; ++i) {
    const bool admitted = t.try_acquire();
    ++requests;
    if (admitted && i % 4 == 0) {
      t.record(levee::outcome::success);
      ++accepts;
    } else if (admitted) {
      t.record(levee::outcome::failure);
    }
    const auto m = t.metrics();
    CHECK(m.requests == static_cast<std::uint64_t>(requests));
    CHECK(m.accepts == static_cast<std::uint64_t>(accepts));
    CHECK(m.rejection_probability == Approx(expected(requests, accepts, 2.0)));
    CHECK(m.admitted + m.rejected == static_cast<std::uint64_t>(requests));
  }
}

TEST_CASE("throttle: calls in flight are not requests yet, and a cold start sheds nothing") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc);
  fake_service s;
  // 50 slow calls start together on a fresh throttle: none is shed (before,
  // requests counted at the start and accepts at the end made p = R / (R + 1)
  // until the first answer: the demo's healthy phase lost 5 % of its calls).
  std::vector<std::shared_ptr<pending<std::tuple<boost::system::error_code, int>>>> calls;
  for (int i = 0; i < 50; ++i) calls.push_back(spawn(ioc, t(s.call_ec({}, 1s))));
  settle(ioc);
  CHECK(s.started == 50);
  CHECK(t.metrics().requests == 0);
  CHECK(t.metrics().rejected == 0);
  elapse(ioc, 1s);
  for (auto& c : calls) CHECK(!std::get<0>(*c->value));
  CHECK(t.metrics().requests == 50);
  CHECK(t.metrics().accepts == 50);
}

TEST_CASE("throttle: fewer requests than minimum_requests are never shed") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.minimum_requests = 10});
  for (int i = 0; i < 9; ++i) {
    REQUIRE(t.try_acquire());
    t.record(levee::outcome::failure);
  }
  CHECK(t.metrics().rejection_probability == 0);
  CHECK(t.try_acquire());
  t.record(levee::outcome::failure);
  CHECK(t.metrics().rejection_probability == Approx(0.8));  // 10 / 11, capped at 0.8
  t.record(levee::outcome::ignored);                        // an ignored outcome counts nothing
  CHECK(t.metrics().requests == 10);
}

TEST_CASE("throttle: the accept that reaches minimum_requests can start the shedding") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 2.0, .minimum_requests = 10, .max_rejection_probability = 1.0});
  for (int i = 0; i < 9; ++i) {
    REQUIRE(t.try_acquire());
    t.record(levee::outcome::failure);
  }
  REQUIRE(t.try_acquire());
  // The 10th request, an accept: the formula now applies, (10 - 2) / 11. An
  // accept never raises the probability once it applies; this one does.
  t.record(levee::outcome::success);
  // No metrics() before these: it would decide the probability again itself.
  int refused = 0;
  for (int i = 0; i < 64; ++i) refused += t.try_acquire() ? 0 : 1;
  CHECK(refused > 0);  // each admitted with probability 3 / 11 at most
  CHECK(t.metrics().rejection_probability > 0.72);
}

// The awaitable form counts an accept without the window's lock only while
// the formula applies (minimum_requests reached) and the probability is 0
// (throttle_window.hpp, accept_until_): below minimum_requests an accept
// takes the lock, and the one that reaches it can start the shedding.
TEST_CASE("throttle: in the awaitable form too, the accept that reaches minimum_requests sheds") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 2.0, .minimum_requests = 10, .max_rejection_probability = 1.0});
  fake_service s;
  for (int i = 0; i < 9; ++i) {
    auto r = run(ioc, t(s.call_ec(asio::error::eof)));
    REQUIRE(r->done);
  }
  {
    auto r = run(ioc, t(s.call_ec({})));  // the 10th request, an accept: (10 - 2) / 11
    REQUIRE(r->done);
  }
  // No metrics() and no call ending before these: either would take the
  // lock and decide the probability again itself.
  int refused = 0;
  for (int i = 0; i < 64; ++i) refused += t.try_acquire() ? 0 : 1;
  CHECK(refused > 0);  // each admitted with probability 3 / 11 at most
  CHECK(t.metrics().rejection_probability > 0.72);
}

// An accept ended without the lock, by a thread delayed between its check
// and its add, may be folded in after an old bucket left and took the sums
// below minimum_requests: when it takes them back to it, the formula applies
// again and the probability must be decided then, not at the end of the
// bucket (found by a review: admission stayed lock-free with p = 7 / 12).
// The window itself, on its own clock in ns: that interleaving is a
// thread's, so the delayed end is the window's test hook.
TEST_CASE("throttle: accepts folded in that reach minimum_requests start the shedding") {
  using levee::outcome;
  constexpr std::int64_t s = 1'000'000'000;
  levee::detail::throttle_window w(levee::throttle_options{.k = 2.0,
                                                           .window = 10s,
                                                           .buckets = 10,
                                                           .minimum_requests = 10,
                                                           .max_rejection_probability = 1.0});
  for (int i = 0; i < 10; ++i) {  // [0, 1 s): 10 accepts
    REQUIRE(w.request_frame(0));
    w.finish_frame(0, outcome::success);
  }
  for (int i = 0; i < 9; ++i) {  // [1 s, 2 s): 9 failures; p = 0 (19 <= 2 * 10)
    REQUIRE(w.request_frame(1 * s));
    w.finish_frame(1 * s, outcome::failure);
  }
  REQUIRE(w.request_frame(1 * s));  // A: its end will be delayed
  // At 10 s the first bucket leaves: 9 requests, 0 accepts, under the minimum.
  REQUIRE(w.request_frame(10 * s));  // B
  w.end_frame_unfolded_for_test();   // A's accept, checked before 10 s, added now
  // B's accept takes the lock: A's is folded in (10 requests, 1 accept: the
  // formula applies), then B's (11, 2): p = (11 - 4) / 12.
  w.finish_frame(10 * s, outcome::success);
  int refused = 0;
  for (int i = 0; i < 64; ++i) refused += w.request(10 * s) ? 0 : 1;
  CHECK(refused > 0);  // each let through with probability 5 / 12 at most
  const auto m = w.metrics(10 * s);
  CHECK(m.accepts == 2);
  CHECK(m.rejection_probability > 0.58);
}

// Accepts counted without the lock wait in a counter until the next holder of
// the lock folds them into the newest bucket, before it moves the window: they
// leave the window with the bucket they ended in, not with a later one.
TEST_CASE("throttle: accepts counted without the lock leave with the bucket they ended in") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 2.0,
                   .window = 10s,
                   .buckets = 10,
                   .minimum_requests = 10,
                   .max_rejection_probability = 1.0});
  fake_service s;
  for (int i = 0; i < 100; ++i) {  // in the first bucket, [0, 1 s)
    auto r = run(ioc, t(s.call_ec({})));
    REQUIRE(r->done);
  }
  vclock::advance(5s);
  {
    // A failure takes the lock at 5 s: the accepts are folded into the first
    // bucket before the window moves to this one.
    auto r = run(ioc, t(s.call_ec(asio::error::eof)));
    REQUIRE(r->done);
  }
  auto m = t.metrics();
  CHECK(m.requests == 101);
  CHECK(m.accepts == 100);
  CHECK(m.accepted == 100);
  CHECK(m.admitted == 101);
  vclock::advance(5s);  // [0, 1 s) leaves the window; [5 s, 6 s) stays
  m = t.metrics();
  CHECK(m.requests == 1);
  CHECK(m.accepts == 0);
  CHECK(m.accepted == 100);  // the lifetime counters stay
  CHECK(m.admitted == 101);
  // The way back: accepts again, and the probability (1 request, 0 accepts,
  // under minimum_requests) is 0.
  for (int i = 0; i < 20; ++i) {
    auto r = run(ioc, t(s.call_ec({})));
    REQUIRE(r->done);
    CHECK(std::get<0>(*r->value) != levee::error::throttled);
  }
  m = t.metrics();
  CHECK(m.requests == 21);
  CHECK(m.accepts == 20);
  CHECK(m.rejection_probability == 0);
  CHECK(m.admitted == 121);
}

TEST_CASE("throttle: while the downstream accepts more than one call in k, nothing is shed") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 2.0});
  fake_service s;
  for (int i = 0; i < 1000; ++i) {
    // One call in three fails: 2 * accepts > requests, the probability stays 0.
    auto r = run(ioc, t(s.call_ec(i % 3 ? boost::system::error_code() : asio::error::eof)));
    REQUIRE(r->done);
    CHECK(std::get<0>(*r->value) != levee::error::throttled);
    vclock::advance(10ms);
  }
  CHECK(s.started == 1000);
  CHECK(t.metrics().rejected == 0);
}

TEST_CASE(
    "throttle: an overloaded downstream gets about k times what it serves, then all of it "
    "again once it heals") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 2.0, .window = 10s, .buckets = 10});
  capped_service s{.capacity = 100, .period = 1s};
  // Healthy: 200 calls a second, capacity 1000: nothing is shed.
  s.capacity = 1000;
  for (int i = 0; i < 2000; ++i) {
    run(ioc, t(s.call()));
    vclock::advance(5ms);
  }
  CHECK(t.metrics().rejected == 0);
  const auto before = t.metrics();
  CHECK(before.rejection_probability == 0);

  // Overload: 1,000 calls a second offered, 100 served. After the window
  // fills, the downstream receives about k * 100 = 200 a second.
  s.capacity = 100;
  for (int i = 0; i < 20'000; ++i) {
    run(ioc, t(s.call()));
    vclock::advance(1ms);
  }
  const int received_before = s.received;
  const auto m0 = t.metrics();
  for (int i = 0; i < 10'000; ++i) {  // 10 s more at 1,000 a second
    run(ioc, t(s.call()));
    vclock::advance(1ms);
  }
  const auto m1 = t.metrics();
  const double received_per_second = (s.received - received_before) / 10.0;
  CHECK(received_per_second > 150);
  CHECK(received_per_second < 260);
  // Graded: a share is shed, not all; the served calls still get through.
  CHECK(m1.rejection_probability > 0.6);
  CHECK(m1.rejection_probability < 0.9);
  CHECK(m1.accepted - m0.accepted >= 900);  // about 100 a second were served

  // Healed: within one window the probability is back to zero and every
  // call reaches the downstream again.
  s.capacity = 1'000'000;
  for (int i = 0; i < 12'000; ++i) {
    run(ioc, t(s.call()));
    vclock::advance(1ms);
  }
  const int received_healed = s.received;
  const auto r0 = t.metrics().rejected;
  for (int i = 0; i < 1000; ++i) {
    run(ioc, t(s.call()));
    vclock::advance(1ms);
  }
  CHECK(s.received - received_healed == 1000);
  CHECK(t.metrics().rejected == r0);
  CHECK(t.metrics().rejection_probability == 0);
}

TEST_CASE("throttle: a rejection in each form, never started, is a levee rejection") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 1.0, .max_rejection_probability = 1.0});
  fake_service s;
  // 1,000 failed requests: the probability is 1000/1001.
  for (int i = 0; i < 1000; ++i) {
    if (t.try_acquire()) t.record(levee::outcome::failure);
  }
  REQUIRE(t.metrics().rejection_probability > 0.99);
  int tuple_rejections = 0, thrown = 0, token = 0;
  for (int i = 0; i < 50; ++i) {
    auto a = run(ioc, t(s.call_ec({})));
    REQUIRE(a->done);
    if (std::get<0>(*a->value) == levee::error::throttled) {
      ++tuple_rejections;
      CHECK(levee::is_rejection(std::get<0>(*a->value)));
      CHECK(std::get<1>(*a->value) == 0);
    }
    auto b = run(ioc, t(s.call(true)));
    if (b->thrown_code() == levee::error::throttled) ++thrown;
    timer tm(ioc, 0ns);
    boost::system::error_code got;
    bool called = false;
    t.async_execute(tm.async_wait(asio::deferred), [&](boost::system::error_code ec) {
      got = ec;
      called = true;
    });
    CHECK(!called);  // never inside the initiation
    settle(ioc);
    REQUIRE(called);
    if (got == levee::error::throttled) ++token;
  }
  CHECK(tuple_rejections >= 45);
  CHECK(thrown >= 45);
  CHECK(token >= 45);
  CHECK(s.started <= 10);  // rejected calls never started
}

TEST_CASE("throttle: an idle throttle leaves no pending work, in each form and when shedding") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 1.0, .minimum_requests = 4, .max_rejection_probability = 1.0});
  fake_service s;
  for (int i = 0; i < 20; ++i) {
    auto a = run(ioc, t(s.call_ec(i % 2 ? asio::error::eof : boost::system::error_code())));
    REQUIRE(a->done);
    timer tm(ioc, 0ns);
    bool called = false;
    t.async_execute(tm.async_wait(asio::deferred),
                    [&](boost::system::error_code) { called = true; });
    settle(ioc);
    REQUIRE(called);
  }
  for (int i = 0; i < 200; ++i) {  // failures until it sheds
    if (t.try_acquire()) t.record(levee::outcome::failure);
  }
  REQUIRE(t.metrics().rejection_probability > 0.5);
  bool shed = false;  // calls until one is shed (each is shed with p > 0.5)
  for (int i = 0; i < 64 && !shed; ++i) {
    auto c = run(ioc, t(s.call_ec({})));
    REQUIRE(c->done);
    shed = std::get<0>(*c->value) == levee::error::throttled;
  }
  REQUIRE(shed);
  // Every call has ended: nothing of the throttle's is left to run (no
  // timer, no post), so poll() runs nothing and, with no work left, stops
  // the context.
  ioc.restart();
  CHECK(ioc.poll() == 0);
  CHECK(ioc.stopped());
}

TEST_CASE("throttle: the token form records accepts, and an inner rejection is not a request") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc);
  timer tm(ioc, 0ns);
  std::tuple<boost::system::error_code> got;
  t.async_execute(tm.async_wait(asio::deferred), asio::as_tuple([&](auto r) { got = r; }));
  settle(ioc);
  CHECK(!std::get<0>(got));
  CHECK(t.metrics().requests == 1);
  CHECK(t.metrics().accepts == 1);

  // Outside an open breaker: its rejections are ignored by default_classify,
  // so they are neither requests nor accepts (the downstream saw nothing).
  breaker b(ioc, {.minimum_calls = 1});
  fake_service s;
  auto f = run(ioc, t(b(s.call(false))));
  CHECK(f->error);
  CHECK(b.state() == levee::circuit_state::open);
  CHECK(t.metrics().requests == 2);
  for (int i = 0; i < 10; ++i) {
    auto r = run(ioc, t(b(s.call(true))));
    CHECK(r->thrown_code() == levee::error::circuit_open);
  }
  const auto m = t.metrics();
  CHECK(m.requests == 2);
  CHECK(m.accepts == 1);
  CHECK(m.rejected == 0);
  CHECK(s.started == 1);
}

TEST_CASE("throttle: the token form forwards every cancellation type to the operation") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc);
  for (auto type : {asio::cancellation_type::terminal, asio::cancellation_type::partial,
                    asio::cancellation_type::total}) {
    timer tm(ioc, 1h);
    asio::cancellation_signal sig;
    boost::system::error_code got;
    bool called = false;
    // async_compose lets only terminal cancellation through unless told
    // otherwise: partial and total once never reached the timer.
    t.async_execute(tm.async_wait(asio::deferred),
                    asio::bind_cancellation_slot(sig.slot(), [&](boost::system::error_code ec) {
                      got = ec;
                      called = true;
                    }));
    settle(ioc);
    sig.emit(type);
    settle(ioc);
    INFO(static_cast<int>(type));
    REQUIRE(called);
    CHECK(got == asio::error::operation_aborted);
  }
  CHECK(t.metrics().requests == 0);  // cancelled calls are ignored: no request
}

TEST_CASE("throttle: requests and accepts leave the window as time passes") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.window = 10s, .buckets = 10});
  for (int i = 0; i < 100; ++i) {
    if (t.try_acquire()) t.record(levee::outcome::failure);
  }
  CHECK(t.metrics().requests == 100);
  vclock::advance(5s);
  CHECK(t.metrics().requests == 100);
  vclock::advance(5s);
  CHECK(t.metrics().requests == 0);
  CHECK(t.metrics().rejection_probability == 0);
  CHECK(t.try_acquire());
}

TEST_CASE("throttle: admission without the lock ends when an old bucket's accepts expire") {
  // While the probability is 0 a call is let through without the window's
  // lock, until the end of the newest bucket (docs/shedding.md, "Cost, threads, idle").
  // Here the probability rises with no call ending: only the expiry of the
  // oldest bucket's accepts raises it, and the next requests must see it.
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc, {.k = 2.0,
                   .window = 10s,
                   .buckets = 10,
                   .minimum_requests = 0,
                   .max_rejection_probability = 1.0});
  for (int i = 0; i < 100; ++i) {
    REQUIRE(t.try_acquire());
    t.record(levee::outcome::success);
  }
  vclock::advance(5s);
  for (int i = 0; i < 100; ++i) {
    REQUIRE(t.try_acquire());  // 200 requests, 100 accepts: p = 0
    t.record(levee::outcome::failure);
  }
  for (int i = 0; i < 50; ++i) REQUIRE(t.try_acquire());  // in flight; p stays 0
  vclock::advance(5s);  // the first bucket (100 accepts) leaves the window
  int rejected = 0;
  for (int i = 0; i < 40; ++i) rejected += t.try_acquire() ? 0 : 1;
  CHECK(rejected >= 30);  // p = 100 / 101 for the first, more after each rejection
  const auto m = t.metrics();
  CHECK(m.accepts == 0);
  CHECK(m.requests == 100 + static_cast<std::uint64_t>(rejected));
  CHECK(m.rejected == static_cast<std::uint64_t>(rejected));
  CHECK(m.admitted == 250 + static_cast<std::uint64_t>(40 - rejected));
  // The way back: accepts return and the probability falls to 0 again.
  for (int i = 0; i < 50; ++i) t.record(levee::outcome::success);
  vclock::advance(10s);
  for (int i = 0; i < 100; ++i) {
    REQUIRE(t.try_acquire());
    t.record(levee::outcome::success);
  }
  CHECK(t.metrics().rejection_probability == 0);
}

TEST_CASE("throttle: invalid options name the member") {
  asio::io_context ioc;
  auto rejects = [&](levee::throttle_options o, const char* member) {
    try {
      throttle t(ioc, o);
      FAIL("accepted");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains(member));
    }
  };
  rejects({.k = 0.5}, "throttle_options::k");
  rejects({.k = std::numeric_limits<double>::quiet_NaN()}, "throttle_options::k");
  rejects({.window = 0ns}, "throttle_options::window");
  rejects({.buckets = 0}, "throttle_options::buckets");
  rejects({.window = 5ns, .buckets = 10}, "throttle_options::buckets");
  rejects({.max_rejection_probability = 1.5}, "throttle_options::max_rejection_probability");
  rejects({.minimum_requests = (std::size_t{1} << 30) + 1}, "throttle_options::minimum_requests");
  // The longest window works.
  throttle longest(ioc, {.window = std::chrono::nanoseconds::max(), .buckets = 1000});
  CHECK(longest.try_acquire());
}

TEST_CASE("throttle: the Prometheus exposition") {
  virtual_time vt;
  asio::io_context ioc;
  throttle t(ioc);
  for (int i = 0; i < 4; ++i) {
    if (t.try_acquire()) t.record(i == 0 ? levee::outcome::success : levee::outcome::failure);
  }
  std::ostringstream out;
  levee::write_throttles_prometheus(out, {{"api\"x", t.metrics()}});
  const std::string text = out.str();
  CHECK_THAT(text, Catch::Contains("# TYPE levee_throttle_rejected_calls_total counter"));
  CHECK_THAT(text, Catch::Contains("levee_throttle_window_requests{throttle=\"api\\\"x\"} 4"));
  CHECK_THAT(text, Catch::Contains("levee_throttle_window_accepts{throttle=\"api\\\"x\"} 1"));
  CHECK(promtool_clean(text));
}

TEST_CASE("throttle: destroyed while calls run, its window goes with the last of them") {
  virtual_time vt;
  asio::io_context ioc;
  fake_service s;
  std::vector<std::shared_ptr<pending<std::tuple<boost::system::error_code, int>>>> calls;
  std::uint64_t admitted = 0;
  {
    throttle t(ioc, {.minimum_requests = 0});
    throttle copy = t;  // copies share the window
    for (int i = 0; i < 3; ++i) calls.push_back(spawn(ioc, copy(s.call_ec({}, 1s))));
    calls.push_back(spawn(ioc, t(s.call_ec(asio::error::eof, 2s))));
    settle(ioc);
    CHECK(s.started == 4);
    admitted = t.metrics().admitted;
  }  // every handle is gone; the four frames still hold the window
  CHECK(admitted == 4);
  elapse(ioc, 1s);  // three end on the window (ASan: it is not freed yet)
  for (int i = 0; i < 3; ++i) {
    REQUIRE(calls[i]->done);
    CHECK(!std::get<0>(*calls[i]->value));
  }
  CHECK(!calls[3]->done);
  elapse(ioc, 1s);  // the last frees it (ASan, LeakSanitizer: once, and not leaked)
  REQUIRE(calls[3]->done);
  CHECK(std::get<0>(*calls[3]->value) == asio::error::eof);
}

TEST_CASE("throttle: frames abandoned after the throttle is gone free its window") {
  virtual_time vt;
  fake_service s;
  auto ioc = std::make_unique<asio::io_context>();
  {
    throttle t(*ioc);
    for (int i = 0; i < 2; ++i) spawn(*ioc, t(s.call_ec({}, 1s)));
    settle(*ioc);
    CHECK(s.started == 2);
  }
  ioc.reset();  // destroys the two frames: the second frees the window (LeakSanitizer)
  SUCCEED("checked by ASan and LeakSanitizer: no use after free, no leak");
}
