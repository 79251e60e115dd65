// The HTTP client against a real server nobody here wrote: nginx on
// 127.0.0.1, plain and TLS, started and stopped by the test.
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/http/classify.hpp>
#include <levee/http/client.hpp>

#include "http_support.hpp"
#include "nginx_fixture.hpp"

#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>

using namespace levee_test;
namespace http = levee::http;

namespace {

http::result get(asio::io_context& ioc, http::client& c, const std::string& url) {
  return finish(ioc, http::async_get(c, url, asio::as_tuple(asio::use_awaitable)));
}

std::vector<http::result> burst(asio::io_context& ioc, http::client& c, const std::string& url,
                                int n) {
  std::vector<std::shared_ptr<pending<http::result>>> ps;
  for (int i = 0; i < n; ++i)
    ps.push_back(spawn(ioc, http::async_get(c, url, asio::as_tuple(asio::use_awaitable))));
  for (auto& p : ps) run_until(ioc, p, 3000ms);
  std::vector<http::result> out;
  for (auto& p : ps) {
    REQUIRE(p->done);
    out.push_back(*p->value);
  }
  return out;
}

}  // namespace

TEST_CASE("nginx: keep-alive connections are reused") {
  nginx_fixture nginx;
  asio::io_context ioc;
  http::client client(ioc.get_executor(), {.timeout = 2s});
  for (int i = 0; i < 5; ++i) {
    const auto [ec, res] = get(ioc, client, nginx.http_url("/"));
    REQUIRE_FALSE(ec);
    CHECK(res.result_int() == 200);
    CHECK(res.body() == "ok\n");
  }
  CHECK(client.stats().connections_opened == 1);
  CHECK(client.stats().connections_reused == 4);
}

TEST_CASE("nginx: every request succeeds across keepalive_requests closes") {
  nginx_fixture nginx({.keepalive_requests = 3});
  asio::io_context ioc;
  http::client client(ioc.get_executor(), {.timeout = 2s});
  for (int i = 0; i < 10; ++i) {
    const auto [ec, res] = get(ioc, client, nginx.http_url("/"));
    CHECK_FALSE(ec);
    CHECK(res.result_int() == 200);
  }
  CHECK(client.stats().connections_opened == 4);  // nginx says "close" on every third
}

TEST_CASE("nginx: a burst after nginx closed the idle connections all succeeds") {
  nginx_fixture nginx({.keepalive_timeout = 200ms});
  asio::io_context ioc;
  http::client client(ioc.get_executor(), {.timeout = 2s});
  for (const auto& [ec, res] : burst(ioc, client, nginx.http_url("/"), 8)) CHECK_FALSE(ec);
  const auto idle = client.stats().connections_idle;
  CHECK(idle >= 1);
  run_for(ioc, 500ms);  // past nginx's keepalive_timeout: it closed them all
  for (int i = 0; i < 3; ++i) {
    const auto [ec, res] = get(ioc, client, nginx.http_url("/"));
    CHECK_FALSE(ec);
    CHECK(res.result_int() == 200);
  }
  for (const auto& [ec, res] : burst(ioc, client, nginx.http_url("/"), 8)) CHECK_FALSE(ec);
  CHECK(client.stats().connections_stale >= 1);  // found closed, never used
}

TEST_CASE("nginx: 503s open the breaker, which then fails fast") {
  nginx_fixture nginx;
  virtual_time vt;
  asio::io_context ioc;
  http::client client(ioc.get_executor(), {.timeout = 2s});
  levee::breaker_options o{.minimum_calls = 3, .open_duration = 1h};
  o.classifier = http::classify;
  breaker cb(ioc, o);
  for (int i = 0; i < 3; ++i) {
    const auto [ec, res] = finish(ioc, cb(http::async_get(client, nginx.http_url("/503"),
                                                          asio::as_tuple(asio::use_awaitable))));
    CHECK(res.result_int() == 503);
  }
  CHECK(cb.state() == levee::circuit_state::open);
  const auto [fast, none] = finish(ioc, cb(http::async_get(client, nginx.http_url("/503"),
                                                           asio::as_tuple(asio::use_awaitable))));
  CHECK(fast == levee::error::circuit_open);
}

TEST_CASE("nginx: HTTPS with a context trusting the test CA, kept alive") {
  nginx_fixture nginx;
  asio::io_context ioc;
  http::client_options o{.timeout = 2s};
  o.tls = flaky::make_client_context(nginx.certificates().ca_pem);
  http::client client(ioc.get_executor(), o);
  for (int i = 0; i < 3; ++i) {
    const auto [ec, res] = get(ioc, client, nginx.https_url("localhost", "/"));
    REQUIRE_FALSE(ec);
    CHECK(res.result_int() == 200);
    CHECK(res.body() == "ok\n");
  }
  CHECK(client.stats().connections_opened == 1);
  // HEAD over TLS: no body, no wait.
  const auto [hec, head] = finish(ioc, http::async_head(client, nginx.https_url("localhost", "/"),
                                                        asio::as_tuple(asio::use_awaitable)));
  CHECK_FALSE(hec);
  CHECK(head.result_int() == 200);
  CHECK(head.body().empty());
  // `send` to an https origin.
  http::request req(boost::beast::http::verb::get, "/x", 11);
  const auto [sec, sent] = finish(ioc, http::async_send(client, nginx.https_url("localhost", ""),
                                                        req, asio::as_tuple(asio::use_awaitable)));
  CHECK_FALSE(sec);
  CHECK(sent.result_int() == 200);
}

TEST_CASE("nginx: HTTPS fails with the default context (the test CA is not trusted)") {
  nginx_fixture nginx;
  asio::io_context ioc;
  http::client client(ioc.get_executor(), {.timeout = 2s});
  const auto [ec, res] = get(ioc, client, nginx.https_url("localhost", "/"));
  CHECK(ec);
  CHECK(ec.category() == asio::error::get_ssl_category());
  CHECK(client.stats().connections_idle == 0);  // a failed TLS stream is never reused
}

TEST_CASE("nginx: HTTPS fails for a host name the certificate does not carry") {
  nginx_fixture nginx;  // the certificate names localhost, not 127.0.0.1
  asio::io_context ioc;
  http::client_options o{.timeout = 2s};
  o.tls = flaky::make_client_context(nginx.certificates().ca_pem);
  http::client client(ioc.get_executor(), o);
  const auto [ec, res] = get(ioc, client, nginx.https_url("127.0.0.1", "/"));
  CHECK(ec);
  CHECK(ec.category() == asio::error::get_ssl_category());
}

TEST_CASE("nginx: HEAD over plain HTTP") {
  nginx_fixture nginx;
  asio::io_context ioc;
  http::client client(ioc.get_executor(), {.timeout = 2s});
  for (int i = 0; i < 2; ++i) {
    const auto [ec, res] = finish(
        ioc, http::async_head(client, nginx.http_url("/"), asio::as_tuple(asio::use_awaitable)));
    CHECK_FALSE(ec);
    CHECK(res.result_int() == 200);
  }
  CHECK(client.stats().connections_opened == 1);
}

TEST_CASE("nginx: a 413 to an upload over client_max_body_size arrives, plain and HTTPS") {
  nginx_fixture nginx;
  asio::io_context ioc;
  http::client_options o{.timeout = 2s};
  o.tls = flaky::make_client_context(nginx.certificates().ca_pem);
  http::client client(ioc.get_executor(), o);
  for (const auto& origin : {nginx.http_url(""), nginx.https_url("localhost", "")}) {
    CAPTURE(origin);
    client.close_idle();
    http::request req(boost::beast::http::verb::put, "/small", 11);
    req.body().assign(std::size_t{16} << 20, 'u');
    const auto [ec, res] =
        finish(ioc, http::async_send(client, origin, req, asio::as_tuple(asio::use_awaitable)));
    CHECK_FALSE(ec);
    CHECK(res.result_int() == 413);
    CHECK(client.stats().connections_idle == 0);  // closed, never reused
    // The way back: the next request gets its 200, on a new connection.
    http::request get(boost::beast::http::verb::get, "/", 11);
    const auto [gec, got] =
        finish(ioc, http::async_send(client, origin, get, asio::as_tuple(asio::use_awaitable)));
    CHECK_FALSE(gec);
    CHECK(got.result_int() == 200);
  }
  CHECK(client.stats().connections_opened == 4);
  CHECK(client.stats().retried_on_new_connection == 0);
}
