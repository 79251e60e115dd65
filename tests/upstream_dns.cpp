// An upstream whose endpoints are the addresses a name resolves to
// (levee::http::basic_name_watch), against a DNS server of the test's own
// (client_options::dns_servers) and HTTP replicas on 127.0.0.1 to 127.0.0.4.
// The TTLs run on virtual time; the sockets are real.
#include <levee/registry/registry.hpp>
#include <levee/upstream/http.hpp>
#include <levee/upstream/resolve.hpp>

#include "dns_support.hpp"
#include "http_support.hpp"

#include <atomic>
#include <functional>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

using namespace levee_test;
namespace http = levee::http;
using vupstream = levee::basic_upstream<vclock>;
using vwatch = http::basic_name_watch<vclock>;

namespace {

const std::string name = "replicas.test";

/// Runs `ioc` until `done()` or 3 s of real time (DNS and sockets are real).
void run_while_not(asio::io_context& ioc, const std::function<bool()>& done) {
  const auto end = std::chrono::steady_clock::now() + 3s;
  ioc.restart();
  while (!done() && std::chrono::steady_clock::now() < end)
    ioc.run_one_for(std::chrono::milliseconds(5));
}

levee::upstream_options options() {
  auto o = http::upstream_defaults();
  o.seed = 7;
  return o;
}

http::client_options client_options(const dns_server& dns) {
  http::client_options o{.timeout = 2s};
  o.dns_servers = dns.address();
  return o;
}

/// The endpoints' addresses, from one snapshot.
std::vector<std::string> addresses(const vupstream& up) {
  std::vector<std::string> a;
  for (const auto& e : up.metrics().endpoints) a.push_back(e.address);
  return a;
}

std::vector<std::string> origins(const replica_set& r, std::initializer_list<int> hosts) {
  std::vector<std::string> a;
  for (int h : hosts)
    a.push_back("http://127.0.0." + std::to_string(h) + ":" + std::to_string(r.port));
  return a;
}

/// `n` GETs one after the other; returns how many got a 200.
int gets(asio::io_context& ioc, vupstream& up, http::client& c, int n) {
  int ok = 0;
  for (int i = 0; i < n; ++i) {
    auto [ec, res] = finish(ioc, [&]() -> asio::awaitable<http::result> {
      co_return co_await http::async_upstream_get(up, c, "/", asio::as_tuple(asio::use_awaitable));
    }());
    ok += !ec && res.result_int() == 200;
  }
  return ok;
}

/// `k` coroutines making `n` GETs each (until `stop` when `n` is 0), side by
/// side; counts the 200s and the rest.
struct load {
  std::atomic<int> ok{0}, failed{0}, running{0};
  std::atomic<bool> stop{false};
  void start(asio::io_context& ioc, vupstream& up, http::client& c, int k, int n) {
    for (int i = 0; i < k; ++i) {
      running.fetch_add(1);
      asio::co_spawn(
          ioc,
          [](load* l, vupstream* u, http::client* cl, int calls) -> asio::awaitable<void> {
            for (int j = 0; calls == 0 ? !l->stop.load() : j < calls; ++j) {
              auto [ec, res] = co_await http::async_upstream_get(
                  *u, *cl, "/", asio::as_tuple(asio::use_awaitable));
              (!ec && res.result_int() == 200 ? l->ok : l->failed).fetch_add(1);
            }
            l->running.fetch_sub(1);
          }(this, &up, &c, n),
          asio::detached);
    }
  }
};

}  // namespace

TEST_CASE("upstream dns: three records, one removed and another added: no call fails",
          "[upstream][dns]") {
  virtual_time vt;
  asio::io_context ioc;
  dns_server dns(ioc);
  replica_set r(ioc, 4);
  dns.set(name, {"127.0.0.3", "127.0.0.1", "127.0.0.2"}, 30);
  http::client c(ioc.get_executor(), client_options(dns));
  // Made with the name itself: the client resolves it per connection until
  // the watch's first answer.
  vupstream up(ioc, {"http://" + name + ":" + std::to_string(r.port)}, options(), "replicas");
  vwatch watch(up, c, {.host = name, .port = r.port});
  run_while_not(ioc, [&] { return up.metrics().resolutions == 1; });
  REQUIRE(up.metrics().resolutions == 1);
  CHECK(addresses(up) == origins(r, {1, 2, 3}));  // sorted: DNS may rotate them
  CHECK(dns.queries == 1);
  CHECK(gets(ioc, up, c, 60) == 60);
  for (int i : {0, 1, 2}) CHECK(r[i].requests > 0);
  CHECK(r[3].requests == 0);
  auto* kept = &up.endpoint_breaker(0);  // 127.0.0.1, which stays

  // The TTL holds: no lookup before 30 s, whatever the calls.
  vclock::advance(29s);
  CHECK(gets(ioc, up, c, 10) == 10);
  run_for(ioc, 30ms);
  CHECK(dns.queries == 1);

  // 127.0.0.2 is removed and 127.0.0.4 added; the answer is due. Calls run
  // side by side meanwhile: the first one starts the lookup and none waits
  // for it or fails.
  dns.set(name, {"127.0.0.1", "127.0.0.3", "127.0.0.4"}, 30);
  vclock::advance(1s);
  load l;
  l.start(ioc, up, c, 4, 40);
  run_while_not(ioc, [&] { return l.running == 0; });
  CHECK(l.running == 0);
  CHECK(l.failed == 0);
  CHECK(l.ok == 160);
  CHECK(dns.queries == 2);
  CHECK(up.metrics().resolutions == 2);
  CHECK(up.metrics().updates == 2);
  CHECK(addresses(up) == origins(r, {1, 3, 4}));
  CHECK(&up.endpoint_breaker(0) == kept);  // an endpoint that stays keeps its breaker

  // The removed replica goes away; the calls never notice, the new one serves.
  r.stop(1);
  const int removed = r[1].requests, added = r[3].requests;
  CHECK(gets(ioc, up, c, 60) == 60);
  CHECK(r[1].requests == removed);
  CHECK(r[3].requests - added > 10);
  CHECK(up.metrics().resolution_failures == 0);
}

TEST_CASE("upstream dns: SERVFAIL or no DNS server keeps the endpoints, retried, and the way back",
          "[upstream][dns]") {
  virtual_time vt;
  asio::io_context ioc;
  dns_server dns(ioc);
  replica_set r(ioc, 4);
  dns.set(name, {"127.0.0.1", "127.0.0.2", "127.0.0.3"}, 5);
  http::client c(ioc.get_executor(), client_options(dns));
  vupstream up(ioc, {"http://" + name + ":" + std::to_string(r.port)}, options(), "replicas");
  vwatch watch(up, c, {.host = name, .port = r.port, .retry_interval = 2s, .timeout = 500ms});
  const auto failures = [&] { return up.metrics().resolution_failures; };
  run_while_not(ioc, [&] { return up.metrics().resolutions == 1; });
  REQUIRE(addresses(up) == origins(r, {1, 2, 3}));

  // SERVFAIL: the endpoints stay, the calls go on, the failure is counted.
  dns.fail(name);
  vclock::advance(5s);
  CHECK(gets(ioc, up, c, 1) == 1);
  run_while_not(ioc, [&] { return failures() == 1; });
  CHECK(failures() == 1);
  CHECK(watch.last_error() == asio::error::host_not_found_try_again);
  CHECK(addresses(up) == origins(r, {1, 2, 3}));
  CHECK(gets(ioc, up, c, 30) == 30);
  // Tried again after retry_interval, not before.
  vclock::advance(1s);
  CHECK(gets(ioc, up, c, 5) == 5);
  run_for(ioc, 30ms);
  CHECK(failures() == 1);
  vclock::advance(1s);
  CHECK(gets(ioc, up, c, 1) == 1);
  run_while_not(ioc, [&] { return failures() == 2; });
  CHECK(failures() == 2);

  // The server goes away: the same.
  dns.stop();
  vclock::advance(2s);
  CHECK(gets(ioc, up, c, 1) == 1);
  run_while_not(ioc, [&] { return failures() == 3; });
  CHECK(failures() == 3);
  CHECK(watch.last_error());
  CHECK(addresses(up) == origins(r, {1, 2, 3}));
  CHECK(gets(ioc, up, c, 30) == 30);

  // The way back: it answers again (one record changed), and the upstream
  // follows at the next retry.
  dns.start();
  dns.set(name, {"127.0.0.1", "127.0.0.2", "127.0.0.4"}, 5);
  vclock::advance(2s);
  CHECK(gets(ioc, up, c, 1) == 1);
  run_while_not(ioc, [&] { return up.metrics().resolutions == 2; });
  CHECK(up.metrics().resolutions == 2);
  CHECK_FALSE(watch.last_error());
  CHECK(addresses(up) == origins(r, {1, 2, 4}));
  const int before = r[3].requests;
  CHECK(gets(ioc, up, c, 30) == 30);
  CHECK(r[3].requests > before);
  // Counted in the exposition too.
  std::ostringstream text;
  levee::write_prometheus(text, {up.metrics()});
  CHECK(text.str().find("levee_upstream_resolutions_total{upstream=\"replicas\",result=\"failed\"} "
                        "3\n") != std::string::npos);
  CHECK(text.str().find(
            "levee_upstream_resolutions_total{upstream=\"replicas\",result=\"ok\"} 2\n") !=
        std::string::npos);
}

TEST_CASE("upstream dns: the TTL, clamped between min_ttl and max_ttl, or a fixed interval",
          "[upstream][dns]") {
  struct row {
    std::uint32_t ttl;
    levee::resolve_options o;
    std::chrono::seconds due;
  };
  const row rows[] = {
      {0, {.host = name, .min_ttl = 2s}, 2s},       // below the minimum
      {3600, {.host = name, .max_ttl = 10s}, 10s},  // above the maximum
      {20, {.host = name}, 20s},                    // within: the TTL
      {60, {.host = name, .interval = 4s}, 4s},     // fixed: the TTL ignored
  };
  for (const auto& [ttl, ro, due] : rows) {
    CAPTURE(ttl, due.count());
    virtual_time vt;
    asio::io_context ioc;
    dns_server dns(ioc);
    replica_set r(ioc, 3);
    dns.set(name, {"127.0.0.1", "127.0.0.2"}, ttl);
    http::client c(ioc.get_executor(), client_options(dns));
    vupstream up(ioc, {"http://" + name + ":" + std::to_string(r.port)}, options());
    auto o = ro;
    o.port = r.port;
    vwatch watch(up, c, o);
    run_while_not(ioc, [&] { return up.metrics().resolutions == 1; });
    REQUIRE(up.size() == 2);
    dns.set(name, {"127.0.0.1", "127.0.0.2", "127.0.0.3"}, ttl);
    vclock::advance(due - 1s);
    CHECK(gets(ioc, up, c, 3) == 3);
    run_for(ioc, 20ms);
    CHECK(dns.queries == 1);
    vclock::advance(1s);
    CHECK(gets(ioc, up, c, 1) == 1);
    run_while_not(ioc, [&] { return up.metrics().resolutions == 2; });
    CHECK(dns.queries == 2);
    CHECK(up.size() == 3);
  }
}

TEST_CASE("upstream dns: an idle upstream has no pending work, refresh_when_idle keeps a timer",
          "[upstream][dns]") {
  virtual_time vt;
  // The servers run on a context of their own, on a thread: the upstream's
  // context then runs out of work exactly when the upstream has none.
  asio::io_context servers;
  dns_server dns(servers);
  dns.set(name, {"127.0.0.1", "127.0.0.2"}, 5);
  auto work = asio::make_work_guard(servers);
  std::thread thread([&] { servers.run(); });
  struct joiner {
    asio::io_context& ctx;
    std::thread& t;
    ~joiner() {
      ctx.stop();
      t.join();
    }
  } join{servers, thread};

  asio::io_context ioc;
  http::client c(ioc.get_executor(), client_options(dns));
  vupstream up(ioc, {"http://" + name + ":80"}, options());
  SECTION("lazy: the first call after the TTL re-resolves; no call, no lookup") {
    std::optional<vwatch> watch(std::in_place, up, c, levee::resolve_options{.host = name});
    ioc.run_for(2s);  // returns as soon as the first lookup is done: nothing else pending
    CHECK(ioc.stopped());
    CHECK(up.metrics().resolutions == 1);
    vclock::advance(1h);
    ioc.restart();
    ioc.run_for(50ms);
    CHECK(ioc.stopped());
    CHECK(dns.queries == 1);
  }
  SECTION("refresh_when_idle: a timer re-resolves on the TTL without calls") {
    std::optional<vwatch> watch(std::in_place, up, c,
                                levee::resolve_options{.host = name, .refresh_when_idle = true});
    run_while_not(ioc, [&] { return up.metrics().resolutions == 1; });
    REQUIRE(up.metrics().resolutions == 1);
    dns.set(name, {"127.0.0.1", "127.0.0.2", "127.0.0.3"}, 5);
    vclock::advance(5s);
    run_while_not(ioc, [&] { return up.metrics().resolutions == 2; });
    CHECK(up.metrics().resolutions == 2);
    CHECK(up.size() == 3);
    CHECK_FALSE(ioc.stopped());  // the next one's timer
    watch.reset();               // cancels it
    ioc.restart();
    ioc.run_for(2s);
    CHECK(ioc.stopped());
    CHECK(dns.queries == 2);
  }
}

TEST_CASE("upstream dns: a lookup after the client is gone fails and keeps the endpoints",
          "[upstream][dns]") {
  virtual_time vt;
  asio::io_context ioc;
  dns_server dns(ioc);
  dns.set(name, {"127.0.0.1", "127.0.0.2"}, 5);
  std::optional<http::client> c(std::in_place, ioc.get_executor(), client_options(dns));
  vupstream up(ioc, {"http://" + name + ":80"}, options());
  vwatch watch(up, *c, {.host = name});
  run_while_not(ioc, [&] { return up.metrics().resolutions == 1; });
  REQUIRE(up.size() == 2);
  c.reset();
  watch.refresh();
  run_while_not(ioc, [&] { return up.metrics().resolution_failures == 1; });
  CHECK(up.metrics().resolution_failures == 1);
  CHECK(watch.last_error() == asio::error::operation_aborted);
  CHECK(up.size() == 2);
}

TEST_CASE(
    "upstream dns: a name watch that outlives its upstream and registry makes its own breakers",
    "[upstream][dns]") {
  // ASan checks this one: the watch keeps the upstream's shared state, and
  // an update after the upstream is gone must not reach the registry it
  // borrowed, which may be gone too.
  virtual_time vt;
  asio::io_context ioc;
  dns_server dns(ioc);
  dns.set(name, {"127.0.0.1", "127.0.0.2"}, 5);
  http::client c(ioc.get_executor(), client_options(dns));
  std::optional<levee::basic_breaker_registry<vclock>> reg(std::in_place, ioc);
  std::optional<vupstream> up(std::in_place, ioc,
                              std::vector<std::string>{"http://" + name + ":80"}, *reg, options());
  vwatch watch(*up, c, {.host = name});
  run_while_not(ioc, [&] { return up->metrics().resolutions == 1; });
  REQUIRE(up->size() == 2);
  CHECK(reg->size() >= 2);
  // A failed lookup first, so that the next one's success is seen
  // (last_error is set after the answer is applied).
  dns.fail(name);
  watch.refresh();
  run_while_not(ioc, [&] { return bool(watch.last_error()); });
  REQUIRE(watch.last_error());
  up.reset();
  reg.reset();
  dns.set(name, {"127.0.0.1", "127.0.0.2", "127.0.0.3"}, 5);
  watch.refresh();
  run_while_not(ioc, [&] { return !watch.last_error(); });
  CHECK_FALSE(watch.last_error());  // applied: three endpoints, breakers of their own
}

TEST_CASE("upstream dns: a lookup in flight when the io_context is never run again leaks nothing",
          "[upstream][dns]") {
  // LeakSanitizer checks this one: the lookup must not keep the client's
  // state alive through the resolver that holds the lookup.
  virtual_time vt;
  asio::io_context ioc;
  dns_server dns(ioc);
  dns.silence(name);
  http::client c(ioc.get_executor(), client_options(dns));
  vupstream up(ioc, {"http://" + name + ":80"}, options());
  vwatch watch(up, c, {.host = name});
  run_while_not(ioc, [&] { return dns.queries == 1; });
  CHECK(dns.queries == 1);
  ioc.stop();  // the lookup waits for an answer that never comes; nothing runs again
}

TEST_CASE("upstream dns: resolve_options are validated by name", "[upstream][dns]") {
  asio::io_context ioc;
  http::client c(ioc.get_executor());
  levee::upstream up(ioc, {"http://a.test"});
  const auto rejects = [&](levee::resolve_options o, const std::string& member) {
    try {
      http::name_watch w(up, c, o);
      FAIL("accepted: " << member);
    } catch (const std::invalid_argument& e) {
      CHECK_THAT(e.what(), Catch::Matchers::Contains("resolve_options::" + member));
    }
  };
  rejects({}, "host");
  rejects({.host = "a.test", .scheme = "redis"}, "port");
  rejects({.host = "a.test", .min_ttl = 0s}, "min_ttl");
  rejects({.host = "a.test", .min_ttl = 10s, .max_ttl = 5s}, "max_ttl");
  rejects({.host = "a.test", .interval = -1s}, "interval");
  rejects({.host = "a.test", .retry_interval = 0s}, "retry_interval");
  rejects({.host = "a.test", .timeout = 0s}, "timeout");
  CHECK_NOTHROW(http::name_watch(up, c, {.host = "a.test", .port = 6379, .scheme = "redis"}));
  CHECK(http::name_watch(up, c, {.host = "a.test", .scheme = "https"}).options().port == 443);
}

TEST_CASE("upstream dns threads: the records change while calls run on 4 threads",
          "[upstream][dns][threads]") {
  virtual_time vt;
  asio::io_context ioc(4);
  dns_server dns(ioc);
  replica_set r(ioc, 4);
  dns.set(name, {"127.0.0.1", "127.0.0.2", "127.0.0.3"}, 1);
  http::client c(ioc.get_executor(), client_options(dns));
  vupstream up(ioc, {"http://" + name + ":" + std::to_string(r.port)}, options(), "replicas");
  vwatch watch(up, c, {.host = name, .port = r.port});
  load l;
  l.start(ioc, up, c, 8, 0);  // until stopped
  auto work = asio::make_work_guard(ioc);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i) threads.emplace_back([&] { ioc.run(); });
  const std::vector<std::vector<std::string>> sets = {{"127.0.0.2", "127.0.0.3", "127.0.0.4"},
                                                      {"127.0.0.1", "127.0.0.4"},
                                                      {"127.0.0.1", "127.0.0.2", "127.0.0.3"}};
  // Each round: new records, the answer due, and (every other round) an
  // explicit refresh racing the calls' own; metrics read meanwhile.
  std::uint64_t seen = 0;
  const auto until = std::chrono::steady_clock::now() + 15s;
  const auto wait_for = [&](const std::function<bool()>& done) {
    // Real lookups on real sockets: a bounded wait.
    while (!done() && std::chrono::steady_clock::now() < until)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
  };
  for (int round = 0; round < 9; ++round) {
    dns.set(name, sets[round % 3], 1);
    vclock::advance(1s);
    if (round % 2 == 1) watch.refresh();
    std::ostringstream text;
    levee::write_prometheus(text, {up.metrics()});
    // Some calls meet each list: wait for the lookup and 16 more calls.
    const int calls = l.ok + l.failed;
    wait_for([&] { return up.metrics().resolutions > seen && l.ok + l.failed >= calls + 16; });
    seen = up.metrics().resolutions;
  }
  // The last records, followed (a lookup of an earlier round may end last).
  dns.set(name, {"127.0.0.1", "127.0.0.2", "127.0.0.3", "127.0.0.4"}, 1);
  const auto followed = [&] {
    vclock::advance(1s);
    return addresses(up) == origins(r, {1, 2, 3, 4});
  };
  wait_for(followed);
  l.stop = true;
  wait_for([&] { return l.running == 0; });
  work.reset();
  ioc.stop();
  for (auto& t : threads) t.join();
  CHECK(l.running == 0);
  CHECK(l.failed == 0);
  CHECK(l.ok >= 9 * 16);
  CHECK(seen >= 9);
  CHECK(addresses(up) == origins(r, {1, 2, 3, 4}));
  CHECK(up.metrics().resolution_failures == 0);
  for (int i : {0, 1, 2, 3}) CHECK(r[i].requests > 0);
}
