// The token-bucket rate limiter: rate and burst, bounded waits within the
// caller's deadline, cancellation, the way back, the three forms.
#include <levee/limit/rate_limiter.hpp>
#include <levee/limit/rate_limiter_registry.hpp>
#include <levee/timeout/timeout.hpp>

#include "promtool.hpp"
#include "support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/deferred.hpp>

#include <limits>
#include <list>
#include <sstream>
#include <stdexcept>
#include <vector>

using namespace levee_test;

namespace {

using limiter = levee::basic_rate_limiter<vclock>;
using result = std::tuple<boost::system::error_code, int>;

/// A call that starts at once and counts itself.
asio::awaitable<result> counted(int& started) {
  ++started;
  co_return result{boost::system::error_code(), 1};
}

/// A call that starts at once, counts itself and answers after `d`.
asio::awaitable<result> slow(int& started, std::chrono::nanoseconds d) {
  ++started;
  timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::use_awaitable);
  co_return result{boost::system::error_code(), 1};
}

boost::system::error_code code(const std::shared_ptr<pending<result>>& p) {
  REQUIRE(p->done);
  if (p->error) return p->thrown_code();
  return std::get<0>(*p->value);
}

}  // namespace

TEST_CASE("rate_limited is a levee rejection") {
  const boost::system::error_code ec = levee::error::rate_limited;
  CHECK(ec.value() == 7);
  CHECK(ec == levee::condition::rejected);
  CHECK(levee::is_rejection(ec));
  CHECK(ec.message().find("rate limit") != std::string::npos);
}

TEST_CASE("rate limiter: the burst goes through at once, then the rate") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 10, .period = 1s, .burst = 5});
  int started = 0;
  for (int i = 0; i < 5; ++i) CHECK(!code(run(ioc, l(counted(started)))));
  CHECK(l.metrics().tokens == 0);
  CHECK(code(run(ioc, l(counted(started)))) == levee::error::rate_limited);
  CHECK(started == 5);
  // One token every 100 ms.
  elapse(ioc, 99ms);
  CHECK(code(run(ioc, l(counted(started)))) == levee::error::rate_limited);
  elapse(ioc, 1ms);
  CHECK(!code(run(ioc, l(counted(started)))));
  CHECK(code(run(ioc, l(counted(started)))) == levee::error::rate_limited);
  // Over 10 s, offered 100 calls per second: 10 per second go through.
  int admitted = 0;
  for (int ms = 0; ms < 10000; ms += 10) {
    elapse(ioc, 10ms);
    if (!code(run(ioc, l(counted(started))))) ++admitted;
  }
  CHECK(admitted == 100);
  const auto m = l.metrics();
  CHECK(m.admitted == static_cast<std::uint64_t>(started));
  CHECK(m.waited == 0);
  CHECK(m.rejected == 3 + 900);
}

TEST_CASE("rate limiter: the way back: after a quiet spell the bucket is full as before") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 4, .period = 1s, .burst = 3});
  auto drain = [&] {
    int ok = 0;
    while (l.try_acquire()) ++ok;
    return ok;
  };
  CHECK(l.metrics().tokens == 3);
  CHECK(drain() == 3);
  CHECK(l.metrics().tokens == 0);
  elapse(ioc, 250ms);
  CHECK(l.metrics().tokens == 1);
  elapse(ioc, 1h);  // never more than the burst, however long the quiet
  CHECK(l.metrics().tokens == 3);
  CHECK(drain() == 3);
  CHECK(ioc.stopped());  // nothing pending: an idle limiter has no timer
}

TEST_CASE("rate limiter: a call waits for its token within max_wait, in order") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 10, .period = 1s, .burst = 1, .max_wait = 250ms});
  int started = 0;
  CHECK(!code(run(ioc, l(counted(started)))));
  auto a = run(ioc, l(counted(started)));  // token at 100 ms
  auto b = run(ioc, l(counted(started)));  // at 200 ms
  auto c = run(ioc, l(counted(started)));  // at 300 ms: beyond 250 ms, rejected at once
  CHECK(!a->done);
  CHECK(!b->done);
  CHECK(code(c) == levee::error::rate_limited);
  CHECK(l.metrics().waiting == 2);
  elapse(ioc, 99ms);
  CHECK(!a->done);
  elapse(ioc, 1ms);
  CHECK(!code(a));
  CHECK(!b->done);
  elapse(ioc, 100ms);
  CHECK(!code(b));
  CHECK(started == 3);
  const auto m = l.metrics();
  CHECK(m.waiting == 0);
  CHECK(m.waited == 2);
  CHECK(m.admitted == 3);
  CHECK(m.rejected == 1);
  settle(ioc);
  CHECK(ioc.stopped());
}

TEST_CASE("rate limiter: the caller's time left bounds the wait, with_deadline's too") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 10, .period = 1s, .burst = 1, .max_wait = 10s});
  int started = 0;
  CHECK(l.try_acquire());
  // Its token comes in 100 ms: with 50 ms left it is rejected at once.
  CHECK(code(run(ioc, l(50ms, counted(started)))) == levee::error::rate_limited);
  CHECK(l.metrics().waiting == 0);
  // with_deadline outside: the limiter reads the time left from the call's
  // executor (timeout/deadline.hpp), so it is rejected at once too.
  auto d = run(ioc, levee::with_deadline<vclock>(50ms, l(counted(started))));
  settle(ioc);
  CHECK(code(d) == levee::error::rate_limited);
  CHECK(l.metrics().waiting == 0);
  CHECK(started == 0);
  // With time enough it waits for its token (at 100 ms) and runs.
  auto e = run(ioc, levee::with_deadline<vclock>(150ms, l(counted(started))));
  CHECK(l.metrics().waiting == 1);
  elapse(ioc, 99ms);
  CHECK(!e->done);
  elapse(ioc, 1ms);
  CHECK(!code(e));
  CHECK(started == 1);
  // The way back: the next token comes 100 ms later, as before.
  auto next = run(ioc, l(counted(started)));
  elapse(ioc, 99ms);
  CHECK(!next->done);
  elapse(ioc, 1ms);
  CHECK(!code(next));
  settle(ioc);
  CHECK(ioc.stopped());
}

TEST_CASE("rate limiter: a cancelled wait gives its token back, and leaves nothing pending") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 1, .period = 1s, .burst = 1, .max_wait = 5s});
  CHECK(l.try_acquire());
  int started = 0;
  asio::cancellation_signal sig;
  auto p = std::make_shared<pending<result>>();
  asio::co_spawn(ioc, l(counted(started)),
                 asio::bind_cancellation_slot(sig.slot(), [p](std::exception_ptr e, result r) {
                   p->done = true;
                   p->error = e;
                   if (!e) p->value = r;
                 }));
  settle(ioc);
  CHECK(!p->done);
  sig.emit(asio::cancellation_type::terminal);
  settle(ioc);
  CHECK(code(p) == asio::error::operation_aborted);
  CHECK(started == 0);
  CHECK(ioc.stopped());
  CHECK(l.metrics().cancelled == 1);
  // A later reservation keeps its time: a cancelled earlier one loses its token.
  auto first = run(ioc, l(counted(started)));   // at 1 s
  auto second = run(ioc, l(counted(started)));  // at 2 s
  asio::cancellation_signal sig2;
  auto third = std::make_shared<pending<result>>();
  asio::co_spawn(ioc, l(counted(started)),
                 asio::bind_cancellation_slot(sig2.slot(), [third](std::exception_ptr e, result r) {
                   third->done = true;
                   third->error = e;
                   if (!e) third->value = r;
                 }));  // at 3 s
  settle(ioc);
  sig2.emit(asio::cancellation_type::terminal);  // the last one: its token goes back
  settle(ioc);
  CHECK(code(third) == asio::error::operation_aborted);
  auto fourth = run(ioc, l(counted(started)));  // takes the 3 s token again
  elapse(ioc, 2s);
  CHECK(!code(first));
  CHECK(!code(second));
  CHECK(!fourth->done);
  elapse(ioc, 1s);
  CHECK(!code(fourth));
  CHECK(started == 3);
  settle(ioc);
  CHECK(ioc.stopped());
}

TEST_CASE("rate limiter: the thrown form") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 1, .period = 1s, .burst = 1});
  fake_service s;
  auto ok = run(ioc, l(s.call(true)));
  REQUIRE(ok->value);
  CHECK(*ok->value == 42);
  auto refused = run(ioc, l(s.call(true)));
  CHECK(refused->thrown_code() == levee::error::rate_limited);
  CHECK(s.started == 1);
}

TEST_CASE("rate limiter: the token form reads with_deadline's time left from its handler") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 10, .period = 1s, .burst = 1, .max_wait = 10s});
  CHECK(l.try_acquire());
  timer tm(ioc, 0ns);
  // Its token comes in 100 ms: with 50 ms left it is rejected at once.
  auto d = run(ioc, levee::with_deadline<vclock>(
                        50ms, l.async_execute(tm.async_wait(asio::deferred),
                                              asio::as_tuple(asio::use_awaitable))));
  settle(ioc);
  REQUIRE(d->done);
  CHECK(std::get<0>(*d->value) == levee::error::rate_limited);
  CHECK(l.metrics().waiting == 0);
  // The way back: with time enough, it waits for its token as before.
  auto e = run(ioc, levee::with_deadline<vclock>(
                        150ms, l.async_execute(tm.async_wait(asio::deferred),
                                               asio::as_tuple(asio::use_awaitable))));
  CHECK(l.metrics().waiting == 1);
  elapse(ioc, 100ms);
  REQUIRE(e->done);
  CHECK(!std::get<0>(*e->value));
}

TEST_CASE("rate limiter: the token form waits, rejects and is cancelled") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 10, .period = 1s, .burst = 1, .max_wait = 150ms});
  std::list<timer> timers;  // each outlives its operation
  auto start = [&](asio::cancellation_slot slot, boost::system::error_code& got, bool& called) {
    timer& tm = timers.emplace_back(ioc, 0ns);
    l.async_execute(tm.async_wait(asio::deferred),
                    asio::bind_cancellation_slot(slot, [&](boost::system::error_code ec) {
                      got = ec;
                      called = true;
                    }));
  };
  asio::cancellation_signal none;
  boost::system::error_code g1, g2, g3;
  bool c1 = false, c2 = false, c3 = false;
  start(none.slot(), g1, c1);  // a token now
  start(none.slot(), g2, c2);  // waits 100 ms
  start(none.slot(), g3, c3);  // would wait 200 ms: rejected
  CHECK(!c1);
  CHECK(!c3);  // never inside the initiation
  settle(ioc);
  CHECK(c1);
  CHECK(!g1);
  CHECK(!c2);
  CHECK(c3);
  CHECK(g3 == levee::error::rate_limited);
  elapse(ioc, 100ms);
  CHECK(c2);
  CHECK(!g2);
  // Every cancellation type ends a wait, and the token goes back each time.
  for (auto type : {asio::cancellation_type::terminal, asio::cancellation_type::partial,
                    asio::cancellation_type::total}) {
    asio::cancellation_signal sig;
    boost::system::error_code got;
    bool called = false;
    start(sig.slot(), got, called);
    settle(ioc);
    CHECK(!called);
    CHECK(l.metrics().waiting == 1);
    sig.emit(type);
    settle(ioc);
    INFO(static_cast<int>(type));
    REQUIRE(called);
    CHECK(got == asio::error::operation_aborted);
    CHECK(l.metrics().waiting == 0);
  }
  CHECK(l.metrics().cancelled == 3);
  CHECK(ioc.stopped());
  // The time left bounds the token form's wait too.
  boost::system::error_code got;
  timer tm(ioc, 0ns);
  l.async_execute(50ms, tm.async_wait(asio::deferred),
                  [&](boost::system::error_code ec) { got = ec; });
  settle(ioc);
  CHECK(got == levee::error::rate_limited);
  // The tuple shape.
  elapse(ioc, 1s);
  std::tuple<boost::system::error_code> t{levee::error::circuit_open};
  timer tm2(ioc, 0ns);
  l.async_execute(tm2.async_wait(asio::deferred), asio::as_tuple([&](auto r) { t = r; }));
  settle(ioc);
  CHECK(!std::get<0>(t));
}

TEST_CASE("rate limiter: reconfigure changes the rate and the burst in place") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 1, .period = 1s, .burst = 1});
  CHECK(l.try_acquire());
  CHECK(!l.try_acquire());
  l.reconfigure({.rate = 10, .period = 1s, .burst = 4});
  CHECK(l.options().burst == 4);
  CHECK(l.metrics().reconfigurations == 1);
  // The token owed stays owed, as a token: a bucket of 4 holds 3 now, and
  // the fourth comes at the new rate, in 100 ms, not in the old rate's 1 s.
  CHECK(l.metrics().tokens == 3);
  elapse(ioc, 99ms);
  CHECK(l.metrics().tokens == 3);
  elapse(ioc, 1ms);
  CHECK(l.metrics().tokens == 4);
  elapse(ioc, 1h);
  CHECK(l.metrics().tokens == 4);
  int ok = 0;
  while (l.try_acquire()) ++ok;
  CHECK(ok == 4);
  elapse(ioc, 100ms);
  CHECK(l.try_acquire());
  CHECK_THROWS_AS(l.reconfigure({.rate = 0}), std::invalid_argument);
  CHECK(l.options().rate == 10);
}

TEST_CASE("rate limiter: invalid options name the member, the longest durations work") {
  asio::io_context ioc;
  auto rejects = [&](levee::rate_limiter_options o, const char* member) {
    try {
      limiter l(ioc, o);
      FAIL("accepted");
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Contains(member));
    }
  };
  rejects({.rate = 0}, "rate_limiter_options::rate");
  rejects({.rate = 11, .period = 10ns}, "rate_limiter_options::rate");
  rejects({.period = 0ns}, "rate_limiter_options::period");
  rejects({.period = -1s}, "rate_limiter_options::period");
  rejects({.burst = 0}, "rate_limiter_options::burst");
  rejects({.burst = (std::uint64_t{1} << 30) + 1}, "rate_limiter_options::burst");
  rejects({.max_wait = -1ns}, "rate_limiter_options::max_wait");
  // A refill longer than 2^62 ns (146 years) is refused by name: with
  // period = nanoseconds::max() and a burst of 2, the bucket's clock used to
  // saturate and admit every call after the second.
  const auto forever = std::chrono::nanoseconds::max();
  rejects({.rate = 1, .period = forever, .burst = 2}, "rate_limiter_options::period");
  rejects({.rate = 1, .period = forever}, "rate_limiter_options::period");
  rejects({.rate = 1, .period = 365 * 24h, .burst = 300}, "rate_limiter_options::period");
  // The longest refills accepted: the burst, then rejections, for ever.
  const std::chrono::nanoseconds longest(std::int64_t{1} << 61);
  limiter two(ioc, {.rate = 1, .period = longest, .burst = 2, .max_wait = forever});
  CHECK(two.try_acquire());
  CHECK(two.try_acquire());
  for (int i = 0; i < 1000; ++i) CHECK(!two.try_acquire());
  CHECK(two.metrics().tokens == 0);
  limiter slow(ioc, {.rate = 1,
                     .period = std::chrono::nanoseconds(std::int64_t{1} << 32),
                     .burst = 1 << 30,
                     .max_wait = forever});
  CHECK(slow.try_acquire());
  limiter fast(ioc, {.rate = 1'000'000'000, .period = 1s, .burst = 1});
  CHECK(fast.try_acquire());
}

TEST_CASE("rate limiter: a clock that reads negative times") {
  virtual_time vt;
  vclock::set(vclock::time_point(-1s));
  asio::io_context ioc;
  limiter l(ioc, {.rate = 1, .period = 1s, .burst = 1});
  CHECK(l.try_acquire());
  CHECK(!l.try_acquire());  // used to be a wait: a token taken, waiting for ever 1
  CHECK(l.metrics().waiting == 0);
  elapse(ioc, 1s);
  CHECK(l.try_acquire());
}

TEST_CASE("rate limiter: the Prometheus exposition") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 1, .period = 1s, .burst = 2});
  CHECK(l.try_acquire());
  CHECK(l.try_acquire());
  CHECK(!l.try_acquire());
  std::ostringstream out;
  levee::write_rate_limiters_prometheus(out, {{"api\"x", l.metrics()}, {"b", {}}});
  const std::string text = out.str();
  CHECK_THAT(text, Catch::Contains("# TYPE levee_rate_limiter_rejected_calls_total counter"));
  CHECK_THAT(text, Catch::Contains(
                       "levee_rate_limiter_admitted_calls_total{rate_limiter=\"api\\\"x\"} 2"));
  CHECK_THAT(text,
             Catch::Contains("levee_rate_limiter_rejected_calls_total{rate_limiter=\"b\"} 0"));
  CHECK(promtool_clean(text));
}

TEST_CASE("rate limiter registry: one bucket per key, overrides, bounded, reconfigured in place") {
  virtual_time vt;
  asio::io_context ioc;
  levee::basic_rate_limiter_registry<vclock> limiters(
      ioc, {.defaults = {.rate = 1, .period = 1s, .burst = 2},
            .overrides = {{"big", {.rate = 10, .period = 1s, .burst = 5}}},
            .max_limiters = 3});
  int started = 0;
  auto spend = [&](std::string_view key) {
    int ok = 0;
    while (!code(run(ioc, limiters(key, counted(started))))) ++ok;
    return ok;
  };
  CHECK(spend("a") == 2);  // each key its own bucket
  CHECK(spend("b") == 2);
  CHECK(spend("big") == 5);
  CHECK(limiters.get("a") == limiters.get("a"));
  CHECK(limiters.size() == 3);
  // Beyond max_limiters: one shared overflow limiter with the defaults.
  CHECK(spend("c") == 2);
  CHECK(spend("d") == 0);
  CHECK(limiters.overflows() == 3 + 1);  // every lookup of c and d
  // A key with an override keeps its own quota even beyond max_limiters
  // (it used to get the overflow limiter and the defaults).
  limiters.set_options("premium", {.rate = 1, .period = 1s, .burst = 4});
  CHECK(spend("premium") == 4);
  CHECK(limiters.size() == 4);
  // The way back: after a refill every key is as it was.
  elapse(ioc, 2s);
  CHECK(spend("a") == 2);
  CHECK(spend("big") == 5);
  // set_options reconfigures the existing limiter in place (the token owed
  // is paid back at the new rate: 10 ms).
  limiters.set_options("a", {.rate = 100, .period = 1s, .burst = 10});
  elapse(ioc, 100ms);
  CHECK(spend("a") == 10);
  CHECK_THROWS_AS(limiters.set_options("a", {.burst = 0}), std::invalid_argument);
  const auto all = limiters.metrics();
  REQUIRE(all.size() == 5);
  CHECK(all[0].name == "a");
  CHECK(all[4].name == "(overflow)");
  CHECK(all[0].metrics.reconfigurations == 1);
  std::ostringstream out;
  levee::write_rate_limiters_prometheus(out, all);
  CHECK(promtool_clean(out.str()));
  try {
    levee::rate_limiter_registry r(ioc, {.overrides = {{"x", {.rate = 0}}}});
    FAIL("accepted");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(e.what(), Catch::Contains("rate_limiter_options::rate"));
  }
  try {
    levee::rate_limiter_registry r(ioc, {.max_limiters = 0});
    FAIL("accepted");
  } catch (const std::invalid_argument& e) {
    CHECK_THAT(e.what(), Catch::Contains("rate_limiter_registry_options::max_limiters"));
  }
}

TEST_CASE("rate limiter: a wait outlives its limiter, and a frame destroyed mid-wait ends it") {
  virtual_time vt;
  int started = 0;
  std::optional<limiter> keep;
  {
    asio::io_context ioc;
    auto l = std::make_unique<limiter>(
        ioc, levee::rate_limiter_options{.rate = 1, .period = 1s, .burst = 1, .max_wait = 5s});
    keep.emplace(*l);  // a copy shares the bucket
    CHECK(l->try_acquire());
    auto p = run(ioc, (*l)(counted(started)));
    l.reset();  // destroyed while a call waits: the call waits on
    elapse(ioc, 1s);
    CHECK(!code(p));
    auto q = run(ioc, (*keep)(counted(started)));  // its token at 2 s
    CHECK(keep->metrics().waiting == 1);
  }  // the io_context destroyed with q waiting: its frame goes, the wait ends
  const auto m = keep->metrics();
  CHECK(m.waiting == 0);
  CHECK(m.cancelled == 1);
  CHECK(m.admitted == 2);
  CHECK(started == 1);
}

// A call's frame holds the bucket by address until it has its token, and a
// waiting call takes a share of it (rate_limiter.hpp, "Lifetime"): the last
// copy of the limiter may go while calls it admitted run and one waits, and
// the frames may then end or be destroyed with their io_context. ASan checks
// that nothing reads the freed bucket.
TEST_CASE("rate limiter: gone with its last copy while its calls run and wait") {
  virtual_time vt;
  int started = 0;
  std::vector<std::shared_ptr<pending<result>>> calls;
  bool finish = false;
  SECTION("the calls finish") {
    finish = true;
  }
  SECTION("the calls' io_context goes first") {
    finish = false;
  }
  // In both sections:
  {
    asio::io_context ioc;
    auto l = std::make_unique<limiter>(
        ioc, levee::rate_limiter_options{.rate = 1, .period = 1s, .burst = 2, .max_wait = 5s});
    int waited = 0;
    l->listen(static_cast<std::uint32_t>(levee::rate_limiter_event_kind::waited),
              [&](const levee::rate_limiter_event&) { ++waited; });
    for (int i = 0; i < 3; ++i) calls.push_back(run(ioc, (*l)(slow(started, 2s))));
    CHECK(started == 2);  // the third waits for its token, at 1 s
    CHECK(l->metrics().waiting == 1);
    l.reset();
    if (finish) {
      elapse(ioc, 1s);
      CHECK(started == 3);
      CHECK(waited == 1);  // the wait's event, from the share it holds
      elapse(ioc, 2s);
      for (const auto& c : calls) CHECK(!code(c));
      CHECK(ioc.poll() == 0);
    }
  }
  if (!finish)
    for (const auto& c : calls) CHECK(!c->done);
}

TEST_CASE("rate limiter: inside a breaker, its rejections are no failures") {
  virtual_time vt;
  asio::io_context ioc;
  limiter l(ioc, {.rate = 1, .period = 1s, .burst = 1});
  breaker b(ioc, {.minimum_calls = 1});
  fake_service s;
  for (int i = 0; i < 10; ++i) {
    auto r = run(ioc, b(l(s.call_ec({}))));
    REQUIRE(r->value);
    if (i > 0) CHECK(std::get<0>(*r->value) == levee::error::rate_limited);
  }
  CHECK(b.state() == levee::circuit_state::closed);
  CHECK(s.started == 1);
  CHECK(l.metrics().rejected == 9);
}
