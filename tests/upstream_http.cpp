// An HTTP upstream against three replicas on 127.0.0.1: one answers 503 (or
// 429, or refuses connections), is ejected, the calls keep succeeding on the
// other two, and it comes back after it heals. Ejection runs on virtual
// time; the sockets are real.
#include <levee/upstream/health_check.hpp>
#include <levee/upstream/http.hpp>

#include "http_support.hpp"

#include <boost/asio/thread_pool.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

using namespace levee_test;
namespace http = levee::http;
using vupstream = levee::basic_upstream<vclock>;

namespace {

/// A replica: answers 200, or `sick_reply` while `sick`; counts requests.
struct replica {
  explicit replica(asio::io_context& ioc)
      : server(ioc, [this](tcp::socket s, int) { return serve(std::move(s)); }) {
    server.start();
  }
  script_server server;
  bool sick = false;
  std::string sick_reply = "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n";
  // Before each answer other than a health check's, on the virtual clock;
  // each wait's end goes into `due` (shared by the replicas of a test) so
  // that a driver can move the clock to the next one (`virtual_gets`).
  std::chrono::milliseconds delay{0};
  std::multiset<vclock::time_point>* due = nullptr;
  int requests = 0;         // other than health checks
  int health_requests = 0;  // GET /health
  enum { pass, fail, hang } health = pass;

  std::string origin() const { return "http://127.0.0.1:" + std::to_string(server.port()); }
  asio::awaitable<void> serve(tcp::socket s) {
    asio::streambuf in;
    for (;;) {
      const std::string head = co_await read_head(s, in);
      if (head.empty()) co_return;
      if (head.starts_with("GET /health ")) {
        ++health_requests;
        if (health == hang) continue;  // never answers: the check's deadline ends it
        const std::string reply =
            health == pass ? std::string("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                           : std::string("HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n");
        const bool written = co_await write_all(s, reply);
        if (!written) co_return;
        continue;
      }
      ++requests;
      if (delay.count() > 0) {
        const auto at = vclock::now() + delay;
        const auto entry = due ? due->insert(at) : std::multiset<vclock::time_point>::iterator();
        timer t(s.get_executor(), at);
        co_await t.async_wait(asio::use_awaitable);
        if (due) due->erase(entry);
      }
      // No temporary inside co_await (GCC 12 destroys some twice).
      const std::string reply =
          sick ? sick_reply : std::string("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
      const bool written = co_await write_all(s, reply);
      if (!written) co_return;
    }
  }
};

levee::upstream_options options() {
  auto o = http::upstream_defaults();
  o.outlier.consecutive_failures = 3;
  o.outlier.base_ejection_time = 30s;
  o.max_attempts = 2;
  o.seed = 3;
  return o;
}

/// `n` GETs one after the other; returns how many got a 200.
int gets(asio::io_context& ioc, vupstream& up, http::client& c, int n) {
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    auto [ec, res] = finish(ioc, [&]() -> asio::awaitable<http::result> {
      co_return co_await http::async_upstream_get(up, c, "/item",
                                                  asio::as_tuple(asio::use_awaitable));
    }());
    ok += !ec && res.result_int() == 200;
  }
  return ok;
}

}  // namespace

TEST_CASE("http upstream: one replica of three answers 503: ejected, calls succeed, it returns",
          "[upstream][http]") {
  virtual_time vt;
  asio::io_context ioc;
  std::array<replica, 3> r{replica(ioc), replica(ioc), replica(ioc)};
  http::client c(ioc.get_executor(), {.timeout = 2s});
  SECTION("503") {}
  SECTION("429") {
    r[1].sick_reply = "HTTP/1.1 429 Too Many Requests\r\nContent-Length: 0\r\n\r\n";
  }
  SECTION("502, a gateway error") {
    r[1].sick_reply = "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n";
  }
  vupstream up(ioc, {r[0].origin(), r[1].origin(), r[2].origin()}, options(), "api");
  std::vector<levee::upstream_event> events;
  up.listen([&](const levee::upstream_event& e) { events.push_back(e); });
  CHECK(gets(ioc, up, c, 30) == 30);
  CHECK(r[1].requests > 0);  // healthy: its share
  r[1].sick = true;
  const int before = r[1].requests;
  // Every call succeeds: a 503 is retried at once on another replica.
  CHECK(gets(ioc, up, c, 200) == 200);
  CHECK(r[1].requests - before == 3);  // ejected on its third failure in a row
  REQUIRE(events.size() == 1);
  CHECK(events[0].kind == levee::upstream_event::ejected);
  CHECK(events[0].address == r[1].origin());
  CHECK(up.metrics().endpoints[1].ejected);

  // It heals; after its ejection time one probe returns it, and it gets its
  // share again.
  r[1].sick = false;
  vclock::advance(30s);
  const int healed = r[1].requests;
  CHECK(gets(ioc, up, c, 90) == 90);
  CHECK(r[1].requests - healed > 15);
  REQUIRE(events.size() == 2);
  CHECK(events[1].kind == levee::upstream_event::returned);
  const auto m = up.metrics();
  CHECK_FALSE(m.endpoints[1].ejected);
  CHECK(m.endpoints[1].returns == 1);
  CHECK(m.ejected == 0);
  CHECK(up.breaker().state() == levee::circuit_state::closed);
}

namespace {

/// `n` GETs through `up`, `width` at a time, on virtual time; returns each
/// one's latency on the virtual clock, in order, after checking that every
/// one got a 200. The clock moves only when nothing can run (a `poll` and
/// 2 ms of real time find nothing: on loopback a write is in the peer's
/// socket by the time it returns), and then straight to the next end of a
/// replica's delay in `due`: each call's latency is its replica's delay.
std::vector<std::chrono::microseconds> virtual_gets(asio::io_context& ioc, vupstream& up,
                                                    http::client& c, int n, int width,
                                                    const std::multiset<vclock::time_point>& due) {
  std::vector<std::chrono::microseconds> took;
  int next = 0, ok = 0, done = 0;
  const auto worker = [&]() -> asio::awaitable<void> {
    while (next < n) {
      ++next;
      const auto start = vclock::now();
      auto [ec, res] =
          co_await http::async_upstream_get(up, c, "/item", asio::as_tuple(asio::use_awaitable));
      took.push_back(std::chrono::duration_cast<std::chrono::microseconds>(vclock::now() - start));
      ok += !ec && res.result_int() == 200;
    }
    ++done;
  };
  for (int w = 0; w < width; ++w) asio::co_spawn(ioc, worker(), asio::detached);
  const auto end = std::chrono::steady_clock::now() + 20s;
  ioc.restart();
  while (done < width && std::chrono::steady_clock::now() < end) {
    if (ioc.poll() > 0 || ioc.run_one_for(2ms) > 0) continue;
    ioc.restart();
    const auto later = due.upper_bound(vclock::now());
    if (later != due.end()) vclock::set(*later);
  }
  REQUIRE(done == width);
  CHECK(ok == n);
  return took;
}

std::chrono::microseconds p99(std::vector<std::chrono::microseconds> v) {
  std::sort(v.begin(), v.end());
  return v[(v.size() * 99) / 100];
}

}  // namespace

TEST_CASE("http upstream: a slow replica is picked less, the p99 stays near the healthy one's",
          "[upstream][http]") {
  // Real sockets, virtual time: the replicas answer after a delay on the
  // virtual clock (1 ms, and 30 ms for the slow one), and the upstream
  // samples its latencies on that clock, so what it sees is exactly those
  // delays, however loaded the machine.
  virtual_time vt;
  asio::io_context ioc;
  std::multiset<vclock::time_point> due;
  std::array<replica, 3> r{replica(ioc), replica(ioc), replica(ioc)};
  for (auto& x : r) {
    x.delay = 1ms;
    x.due = &due;
  }
  http::client c(ioc.get_executor(), {.timeout = 5s});
  auto o = http::upstream_defaults();
  o.seed = 5;
  o.latency_decay = 300ms;
  vupstream up(ioc, {r[0].origin(), r[1].origin(), r[2].origin()}, o, "api");
  constexpr int calls = 1000, width = 6;
  const auto healthy = p99(virtual_gets(ioc, up, c, calls, width, due));
  CHECK(healthy == 1ms);
  for (const auto& x : r) CHECK(x.requests > calls / 6);  // each its share

  // Slow, not failing: nothing ejects it.
  const auto delay = 30ms;
  r[1].delay = delay;
  int before = r[1].requests;
  const auto slow = p99(virtual_gets(ioc, up, c, calls, width, due));
  const int to_slow = r[1].requests - before;
  INFO(to_slow << " of " << calls << " calls went to the slow replica; p99 " << slow.count()
               << " us");
  CHECK(to_slow > 0);            // it is still tried now and then (its estimate fades)
  CHECK(to_slow * 100 < calls);  // under 1 % (round-robin: a third)
  CHECK(slow == healthy);        // so the p99 is not the slow replica's

  // It heals: its estimate fades toward its rivals' by exp(-t / 300 ms), and
  // once near theirs it is tried again, found fast, and gets its share back:
  // ln(30 ms / 1 ms) is 3.4 time constants; 6 pass.
  r[1].delay = 1ms;
  vclock::advance(6 * o.latency_decay);
  before = r[1].requests;
  const auto healed = p99(virtual_gets(ioc, up, c, calls, width, due));
  CHECK(r[1].requests - before > calls / 6);
  CHECK(healed == healthy);  // as before the fault
  const auto m = up.metrics();
  for (const auto& e : m.endpoints) CHECK_FALSE(e.ejected);
}

TEST_CASE("http upstream: a replica that refuses connections is ejected", "[upstream][http]") {
  virtual_time vt;
  asio::io_context ioc;
  std::array<replica, 2> r{replica(ioc), replica(ioc)};
  std::string closed;
  {
    tcp::acceptor a(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
    closed = "http://127.0.0.1:" + std::to_string(a.local_endpoint().port());
  }  // closed: connecting is refused
  http::client c(ioc.get_executor(), {.timeout = 2s});
  vupstream up(ioc, {r[0].origin(), closed, r[1].origin()}, options());
  CHECK(gets(ioc, up, c, 100) == 100);
  const auto m = up.metrics();
  CHECK(m.endpoints[1].ejected);
  CHECK(m.endpoints[1].breaker.failures == 3);
}

TEST_CASE("http upstream: the exception form throws what the last attempt got",
          "[upstream][http]") {
  virtual_time vt;
  asio::io_context ioc;
  std::array<replica, 3> r{replica(ioc), replica(ioc), replica(ioc)};
  http::client c(ioc.get_executor(), {.timeout = 2s});
  vupstream up(ioc, {r[0].origin(), r[1].origin(), r[2].origin()}, options());
  auto res = finish(ioc, http::upstream_get(up, c, "/item"));
  CHECK(res.result_int() == 200);
  CHECK(res.body() == "ok");
}

namespace {

/// Runs the io_context (real time, 10 s at most: a bound, not a wait) until
/// `hc` counted `n` checks.
void wait_checks(asio::io_context& ioc, const http::basic_health_check<vclock>& hc,
                 std::uint64_t n) {
  const auto end = std::chrono::steady_clock::now() + 10s;
  ioc.restart();
  while (hc.checks() < n && std::chrono::steady_clock::now() < end)
    ioc.run_one_for(std::chrono::milliseconds(10));
  REQUIRE(hc.checks() >= n);
  settle(ioc);  // the events it posted
}

}  // namespace

TEST_CASE("http upstream: the active health check ejects and returns a replica",
          "[upstream][http]") {
  virtual_time vt;
  asio::io_context ioc;
  std::array<replica, 3> r{replica(ioc), replica(ioc), replica(ioc)};
  http::client c(ioc.get_executor(), {.timeout = 2s});
  vupstream up(ioc, {r[0].origin(), r[1].origin(), r[2].origin()}, options(), "api");
  std::vector<levee::upstream_event> events;
  up.listen([&](const levee::upstream_event& e) { events.push_back(e); });
  levee::health_check_options ho;
  ho.interval = 5s;
  // Real time: the client's deadline. Long enough that a healthy replica's
  // check never misses it on a loaded machine (a stall of 200 ms failed one
  // and counted a third failure); only the hanging replica waits it out.
  ho.timeout = 1s;
  ho.unhealthy_threshold = 2;
  SECTION("a 503 fails the check") {
    r[1].health = replica::fail;
  }
  SECTION("no answer: the check's own deadline fails it") {
    r[1].health = replica::hang;
  }
  http::basic_health_check<vclock> hc(up, c, ho);
  settle(ioc);
  CHECK(hc.checks() == 0);  // the first checks one interval after the start
  vclock::advance(5s);
  wait_checks(ioc, hc, 3);
  CHECK_FALSE(up.metrics().endpoints[1].ejected);  // one failure: not yet
  vclock::advance(5s);
  wait_checks(ioc, hc, 6);
  CHECK(hc.failures() == 2);
  const auto m = up.metrics();
  REQUIRE(m.endpoints[1].ejected);
  CHECK(m.endpoints[1].ejections_by[std::size_t(levee::upstream_cause::health_check)] == 1);
  REQUIRE(events.size() == 1);
  CHECK(events[0].cause == levee::upstream_cause::health_check);
  // Calls go elsewhere, even though the replica would answer them.
  CHECK(gets(ioc, up, c, 60) == 60);
  CHECK(r[1].requests == 0);

  // It passes again: back at once, before its ejection time, and served.
  r[1].health = replica::pass;
  vclock::advance(5s);
  wait_checks(ioc, hc, 9);
  REQUIRE(events.size() == 2);
  CHECK(events[1].kind == levee::upstream_event::returned);
  CHECK(events[1].cause == levee::upstream_cause::health_check);
  CHECK_FALSE(up.metrics().endpoints[1].ejected);
  CHECK(gets(ioc, up, c, 60) == 60);
  CHECK(r[1].requests > 10);

  // Stopped: no check starts again, and with idle connections closed the
  // io_context runs out of work (the checks were the only pending work).
  hc.stop();
  const auto checks = hc.checks();
  const int sent = r[0].health_requests + r[1].health_requests + r[2].health_requests;
  vclock::advance(20s);
  run_for(ioc, 50ms);
  CHECK(hc.checks() == checks);
  CHECK(r[0].health_requests + r[1].health_requests + r[2].health_requests == sent);
}

TEST_CASE("http upstream: the health check follows update: added replicas are checked",
          "[upstream][http]") {
  virtual_time vt;
  asio::io_context ioc;
  std::array<replica, 4> r{replica(ioc), replica(ioc), replica(ioc), replica(ioc)};
  http::client c(ioc.get_executor(), {.timeout = 2s});
  vupstream up(ioc, {r[0].origin(), r[1].origin()}, options(), "api");
  levee::health_check_options ho;
  ho.interval = 5s;
  ho.timeout = 2s;  // real time; nothing here hangs, so nothing waits it out
  ho.unhealthy_threshold = 2;
  r[2].health = replica::fail;
  http::basic_health_check<vclock> hc(up, c, ho);
  settle(ioc);
  vclock::advance(5s);
  wait_checks(ioc, hc, 2);  // r0 and r1, once each
  CHECK(r[1].health_requests == 1);

  // r1 leaves; r2 (failing its checks) and r3 come. The check notices at its
  // next turn and checks the newcomers one interval later.
  REQUIRE(up.update({r[0].origin(), r[2].origin(), r[3].origin()}));
  vclock::advance(5s);
  wait_checks(ioc, hc, 3);  // r0; r1's check ends unsent
  vclock::advance(5s);
  wait_checks(ioc, hc, 6);  // r0, r2, r3
  vclock::advance(5s);
  wait_checks(ioc, hc, 9);
  CHECK(r[1].health_requests == 1);  // no longer checked
  CHECK(r[2].health_requests == 2);
  CHECK(r[3].health_requests == 2);
  CHECK(hc.failures() == 2);
  auto m = up.metrics();
  REQUIRE(m.endpoints.size() == 3);
  CHECK(m.endpoints[1].address == r[2].origin());
  CHECK(m.endpoints[1].ejected);  // two failed checks in a row
  CHECK(m.endpoints[1].ejections_by[std::size_t(levee::upstream_cause::health_check)] == 1);
  CHECK_FALSE(m.endpoints[2].ejected);

  // The way back: r2 heals, and the list returns to what it was; r2's check
  // returns it, and r1 is checked again as before the change.
  r[2].health = replica::pass;
  vclock::advance(5s);
  wait_checks(ioc, hc, 12);
  CHECK_FALSE(up.metrics().endpoints[1].ejected);
  REQUIRE(up.update({r[0].origin(), r[1].origin()}));
  vclock::advance(5s);
  wait_checks(ioc, hc, 13);  // r0 (r2's and r3's checks end unsent)
  vclock::advance(5s);
  wait_checks(ioc, hc, 15);  // r0 and r1
  CHECK(r[1].health_requests == 2);
  const int r2_checks = r[2].health_requests, r3_checks = r[3].health_requests;
  vclock::advance(5s);
  wait_checks(ioc, hc, 17);
  CHECK(r[1].health_requests == 3);
  CHECK(r[2].health_requests == r2_checks);
  CHECK(r[3].health_requests == r3_checks);
  m = up.metrics();
  CHECK_FALSE(m.endpoints[0].ejected);
  CHECK_FALSE(m.endpoints[1].ejected);
  hc.stop();
}

TEST_CASE("http upstream: a health check stopped on another thread leaves the upstream alone",
          "[upstream][http][threads]") {
  // The checks run on a 2-thread pool while this thread stops them and then
  // destroys the upstream at once: after stop() returns no check may touch
  // it (ASan: a use after free otherwise). The addresses are not URLs, so
  // every turn fails without I/O and reports to the upstream.
  asio::thread_pool pool(2);
  asio::io_context unused;
  http::client c(unused.get_executor());
  levee::health_check_options ho;
  ho.interval = 200us;
  ho.timeout = 100us;
  ho.unhealthy_threshold = 1;
  for (int i = 0; i < 300; ++i) {
    auto up = std::make_unique<levee::upstream>(pool.get_executor(),
                                                std::vector<std::string>{"one", "two", "three"});
    auto hc = std::make_unique<http::health_check>(*up, c, ho);
    const auto end = std::chrono::steady_clock::now() + 2s;
    while (hc->checks() < std::uint64_t(1 + i % 4) && std::chrono::steady_clock::now() < end)
      std::this_thread::yield();
    REQUIRE(hc->checks() >= 1);
    hc.reset();
    up.reset();
  }
  pool.join();
}

TEST_CASE("http upstream: health check options are validated by name", "[upstream][http]") {
  virtual_time vt;
  asio::io_context ioc;
  http::client c(ioc.get_executor());
  vupstream up(ioc, {"http://127.0.0.1:1"}, options());
  levee::health_check_options o;
  o.timeout = 10s;
  CHECK_THROWS_WITH(http::basic_health_check<vclock>(up, c, o),
                    "health_check_options::timeout must not exceed interval");
  o = {};
  o.target.clear();
  CHECK_THROWS_WITH(http::basic_health_check<vclock>(up, c, o),
                    "health_check_options::target must not be empty");
  o = {};
  o.unhealthy_threshold = 0;
  CHECK_THROWS_WITH(http::basic_health_check<vclock>(up, c, o),
                    "health_check_options::unhealthy_threshold must be at least 1");
}
