// An HTTP upstream against three replicas on 127.0.0.1: one answers 503 (or
// 429, or refuses connections), is ejected, the calls keep succeeding on the
// other two, and it comes back after it heals. Ejection runs on virtual
// time; the sockets are real.
#include <levee/upstream/http.hpp>

#include "http_support.hpp"

#include <array>
#include <string>
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
  int requests = 0;

  std::string origin() const { return "http://127.0.0.1:" + std::to_string(server.port()); }
  asio::awaitable<void> serve(tcp::socket s) {
    asio::streambuf in;
    while (!(co_await read_head(s, in)).empty()) {
      ++requests;
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
