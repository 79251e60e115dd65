// The events of the throttle, the rate limiter and the HTTP deadline reader
// (core/detail/event_hub.hpp): each refusal or wait posted once to the
// listeners that want it, in order, never inside the layer; nothing posted
// while nobody listens; nothing after unlisten. Virtual time.
#include <levee/http/deadline.hpp>
#include <levee/limit/rate_limiter.hpp>
#include <levee/limit/throttle.hpp>
#include <levee/timeout/timeout.hpp>

#include "support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/deferred.hpp>

#include <string>
#include <vector>

using namespace levee_test;
namespace http = levee::http;

namespace {

using result = std::tuple<boost::system::error_code, int>;

asio::awaitable<result> ok_call() {
  co_return result{boost::system::error_code(), 1};
}

boost::system::error_code code(const std::shared_ptr<pending<result>>& p) {
  REQUIRE(p->done);
  if (p->error) return p->thrown_code();
  return std::get<0>(*p->value);
}

/// Fills the throttle's window with `n` failed requests: it sheds from then on.
template <class Throttle>
void fail_requests(Throttle& t, int n) {
  for (int i = 0; i < n; ++i) t.record(levee::outcome::failure);
}

}  // namespace

TEST_CASE("throttle events: each rejection once, with the probability it was drawn against") {
  virtual_time vt;
  asio::io_context ioc;
  levee::basic_throttle<vclock> t(ioc, {.max_rejection_probability = 1.0});
  fail_requests(t, 20);  // p = 20/21, below minimum_requests nothing is shed
  std::vector<levee::throttle_event> seen;
  bool inside = false;  // a listener never runs inside the throttle
  const auto id = t.listen(levee::all_throttle_events, [&](const levee::throttle_event& e) {
    CHECK_FALSE(inside);
    seen.push_back(e);
  });
  int rejected = 0;
  std::vector<double> expected;
  for (int i = 0; i < 200; ++i) {
    const double p = t.metrics().rejection_probability;
    inside = true;
    const bool admitted = t.try_acquire();
    inside = false;
    if (admitted) {
      t.record(levee::outcome::failure);
    } else {
      ++rejected;
      expected.push_back(p);
    }
  }
  REQUIRE(rejected > 100);
  CHECK(seen.empty());  // posted, not run
  settle(ioc);
  REQUIRE(seen.size() == static_cast<std::size_t>(rejected));
  for (std::size_t i = 0; i < seen.size(); ++i) {
    CHECK(seen[i].kind == levee::throttle_event_kind::rejected);
    CHECK(seen[i].probability == Approx(expected[i]));
    CHECK(seen[i].accepts == 0);
    CHECK(seen[i].requests >= 20);
  }
  CHECK(t.metrics().events_lost == 0);
  // The way back: after unlisten nothing is posted, rejections go on.
  t.unlisten(id);
  t.unlisten(id);  // unknown now: nothing
  const auto before = t.metrics().rejected;
  for (int i = 0; i < 50; ++i) (void)t.try_acquire();
  CHECK(t.metrics().rejected > before);
  CHECK(ioc.poll() == 0);
  CHECK(seen.size() == static_cast<std::size_t>(rejected));
}

TEST_CASE("throttle events: nobody listening, or a mask without the kind, posts nothing") {
  virtual_time vt;
  asio::io_context ioc;
  levee::basic_throttle<vclock> t(ioc, {.max_rejection_probability = 1.0});
  fail_requests(t, 20);
  int rejected = 0;
  for (int i = 0; i < 50; ++i) rejected += !t.try_acquire();
  REQUIRE(rejected > 0);
  CHECK(ioc.poll() == 0);
  int seen = 0;
  t.listen(0, [&](const levee::throttle_event&) { ++seen; });
  for (int i = 0; i < 50; ++i) (void)t.try_acquire();
  CHECK(ioc.poll() == 0);
  CHECK(seen == 0);
  // The coroutine form's rejections are events too.
  asio::io_context other;
  t.listen(
      levee::all_throttle_events, [&](const levee::throttle_event&) { ++seen; },
      other.get_executor());
  int done = 0;
  for (int i = 0; i < 50; ++i) done += code(run(ioc, t(ok_call()))) == levee::error::throttled;
  REQUIRE(done > 0);
  other.poll();
  CHECK(seen == done);
}

TEST_CASE("rate limiter events: rejected, waited and cancelled, with their times") {
  virtual_time vt;
  asio::io_context ioc;
  levee::basic_rate_limiter<vclock> l(ioc,
                                      {.rate = 10, .period = 1s, .burst = 1, .max_wait = 250ms});
  std::vector<levee::rate_limiter_event> seen;
  l.listen(levee::all_rate_limiter_events,
           [&](const levee::rate_limiter_event& e) { seen.push_back(e); });
  CHECK(l.try_acquire());
  settle(ioc);
  CHECK(seen.empty());  // an admission is no event
  // The caller's time left is the bound (its token comes in 100 ms, within
  // max_wait): `deadline`.
  CHECK(code(run(ioc, l(50ms, ok_call()))) == levee::error::rate_limited);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].kind == levee::rate_limiter_event_kind::rejected);
  CHECK(seen[0].wait == 100ms);
  CHECK(seen[0].allowed == 50ms);
  CHECK(seen[0].deadline);
  auto a = run(ioc, l(ok_call()));  // token at 100 ms
  auto b = run(ioc, l(ok_call()));  // at 200 ms
  auto c = run(ioc, l(ok_call()));  // at 300 ms: beyond 250 ms
  CHECK(code(c) == levee::error::rate_limited);
  REQUIRE(seen.size() == 2);
  CHECK(seen[1].kind == levee::rate_limiter_event_kind::rejected);
  CHECK(seen[1].wait == 300ms);
  CHECK(seen[1].allowed == 250ms);
  CHECK_FALSE(seen[1].deadline);
  // try_acquire never waits: never `deadline`.
  CHECK_FALSE(l.try_acquire());
  settle(ioc);
  REQUIRE(seen.size() == 3);
  CHECK(seen[2].allowed == 0ns);
  CHECK_FALSE(seen[2].deadline);
  elapse(ioc, 100ms);
  CHECK(!code(a));
  REQUIRE(seen.size() == 4);
  CHECK(seen[3].kind == levee::rate_limiter_event_kind::waited);
  CHECK(seen[3].wait == 100ms);
  // A wait cancelled after 30 ms (b's token at 200 ms, this one at 300 ms).
  asio::cancellation_signal sig;
  auto p = std::make_shared<pending<result>>();
  asio::co_spawn(ioc, l(ok_call()),
                 asio::bind_cancellation_slot(sig.slot(), [p](std::exception_ptr e, result r) {
                   p->done = true;
                   p->error = e;
                   if (!e) p->value = r;
                 }));
  settle(ioc);  // it starts waiting now, at 100 ms
  elapse(ioc, 30ms);
  sig.emit(asio::cancellation_type::terminal);
  settle(ioc);
  CHECK(code(p) == asio::error::operation_aborted);
  REQUIRE(seen.size() == 5);
  CHECK(seen[4].kind == levee::rate_limiter_event_kind::cancelled);
  CHECK(seen[4].wait == 30ms);
  elapse(ioc, 70ms);
  CHECK(!code(b));
  REQUIRE(seen.size() == 6);
  CHECK(seen[5].kind == levee::rate_limiter_event_kind::waited);
  CHECK(seen[5].wait == 200ms);
  const auto m = l.metrics();
  CHECK(m.rejected == 3);
  CHECK(m.waited == 2);
  CHECK(m.cancelled == 1);
  CHECK(m.events_lost == 0);
  settle(ioc);
  CHECK(ioc.stopped());
}

TEST_CASE("rate limiter events: the token form's, a mask, and nothing after unlisten") {
  virtual_time vt;
  asio::io_context ioc;
  levee::basic_rate_limiter<vclock> l(ioc,
                                      {.rate = 10, .period = 1s, .burst = 1, .max_wait = 150ms});
  int waited = 0, rejected = 0;
  const auto id = l.listen(static_cast<std::uint32_t>(levee::rate_limiter_event_kind::waited),
                           [&](const levee::rate_limiter_event&) { ++waited; });
  l.listen(static_cast<std::uint32_t>(levee::rate_limiter_event_kind::rejected),
           [&](const levee::rate_limiter_event& e) {
             ++rejected;
             CHECK(e.wait == 200ms);
           });
  timer t(ioc, 0ns);
  std::vector<boost::system::error_code> ends;
  auto op = [&] { return t.async_wait(asio::deferred); };
  for (int i = 0; i < 3; ++i)
    l.async_execute(op(), [&](boost::system::error_code ec) { ends.push_back(ec); });
  settle(ioc);
  CHECK(rejected == 1);
  CHECK(waited == 0);
  elapse(ioc, 100ms);
  REQUIRE(ends.size() == 3);
  CHECK(waited == 1);
  l.unlisten(id);
  l.async_execute(op(), [&](boost::system::error_code ec) { ends.push_back(ec); });
  elapse(ioc, 100ms);
  REQUIRE(ends.size() == 4);
  CHECK(waited == 1);  // unlistened
  CHECK(l.metrics().waited == 2);
}

TEST_CASE("rate limiter: the coarse clock's fast path never admits more than the bucket") {
  // A full bucket's refill of 5 s: far above the coarse clock's line, so the
  // steady_clock limiter admits on the coarse clock; the precise one rejects.
  asio::io_context ioc;
  levee::rate_limiter l(ioc, {.rate = 1, .period = 1s, .burst = 5});
  for (int i = 0; i < 5; ++i) CHECK(l.try_acquire());
  CHECK_FALSE(l.try_acquire());
  auto m = l.metrics();
  CHECK(m.admitted == 5);
  CHECK(m.rejected == 1);
  // The bucket alone: below the line the fast path declines and changes nothing.
  levee::detail::rate_bucket b({.rate = 10, .period = 1s, .burst = 1});
  CHECK_FALSE(b.admit_now(0, std::int64_t{200'000'000}));  // full in 100 ms < 200 ms
  CHECK(b.metrics(0).tokens == 1);
  CHECK(b.admit_now(0, std::int64_t{100'000'000}));  // at the line: coarse enough
  CHECK_FALSE(b.admit_now(0, 1));                    // empty: declines, counts no rejection
  m = b.metrics(0);
  CHECK(m.tokens == 0);
  CHECK(m.admitted == 1);
  CHECK(m.rejected == 0);
  CHECK(b.admit_now(100'000'000, 1));  // its next token
}

TEST_CASE("deadline reader events: refusals posted to the executor given, in order") {
  asio::io_context ioc;
  http::deadline_reader reader({.margin = 5ms});
  auto req = [](std::initializer_list<std::string> values) {
    boost::beast::http::request<boost::beast::http::string_body> r(boost::beast::http::verb::get,
                                                                   "/", 11);
    for (const auto& v : values) r.insert("Levee-Deadline-Ms", v);
    return r;
  };
  const auto now = std::chrono::steady_clock::now();
  CHECK(reader.read(req({"0"}), now).error);  // nobody listens: nothing posted
  CHECK(ioc.poll() == 0);
  std::vector<http::deadline_event> seen;
  const auto id = reader.listen(
      http::all_deadline_events, [&](const http::deadline_event& e) { seen.push_back(e); },
      ioc.get_executor());
  CHECK(reader.read(req({"4"}), now).error == http::error::deadline_expired);
  CHECK_FALSE(reader.read(req({"100"}), now).error);  // accepted: no event
  CHECK_FALSE(reader.read(req({}), now).error);       // absent: no event
  CHECK(reader.read(req({"soon"}), now).error == http::error::malformed_deadline);
  CHECK(reader.read(req({"100", "200"}), now).error == http::error::malformed_deadline);
  const std::string longer(100, 'x');
  CHECK(reader.read(req({longer}), now).error == http::error::malformed_deadline);
  CHECK(seen.empty());  // posted, never run inside read
  settle(ioc);
  REQUIRE(seen.size() == 4);
  CHECK(seen[0].kind == http::deadline_event_kind::expired);
  CHECK(seen[0].asked == 4ms);
  CHECK(seen[0].value.empty());
  CHECK(seen[1].kind == http::deadline_event_kind::malformed);
  CHECK(seen[1].value == "soon");
  CHECK(seen[2].value == "100");
  CHECK(seen[3].value == std::string(64, 'x'));
  CHECK(reader.stats().events_lost == 0);
  reader.unlisten(id);
  CHECK(reader.read(req({"0"}), now).error);
  CHECK(ioc.poll() == 0);
  CHECK(seen.size() == 4);
  const auto s = reader.stats();
  CHECK(s.expired == 3);
  CHECK(s.malformed == 3);
}
