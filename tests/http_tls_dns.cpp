// HTTPS against the flaky upstream and a raw TLS server, and name resolution
// against a DNS server of the test's own (c-ares, deadlines, no lookup
// waiting for another).
#include <levee/breaker/circuit_breaker.hpp>
#include <levee/http/classify.hpp>
#include <levee/http/client.hpp>

#include "dns_support.hpp"
#include "http_support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/read.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/error.hpp>

#include <flaky/tls.hpp>

#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

using namespace levee_test;
namespace http = levee::http;

TEST_CASE("https: a guarded http_get against the flaky upstream over TLS, kept alive") {
  asio::io_context ioc;
  const auto certs = flaky::make_test_certificates({"DNS:localhost", "IP:127.0.0.1"});
  flaky::server_options so;
  so.tls = flaky::make_server_context(certs);
  flaky::server upstream(ioc.get_executor(), phases({"ok 1h latency=0"}), so);
  const std::string url = "https://127.0.0.1:" + std::to_string(upstream.start()) + "/rec";
  http::client_options o{.timeout = 2s};
  o.tls = flaky::make_client_context(certs.ca_pem);
  http::client client(ioc.get_executor(), o);
  levee::breaker_options bo{.minimum_calls = 3};
  bo.classifier = http::classify;
  breaker cb(ioc, bo);
  for (int i = 0; i < 3; ++i) {
    auto r = spawn(ioc, cb(http::http_get(client, url)));  // the line every user writes first
    run_until(ioc, r);
    REQUIRE(r->done);
    REQUIRE(r->value);
    CHECK(r->value->result_int() == 200);
  }
  CHECK(client.stats().connections_opened == 1);
  CHECK(client.stats().connections_reused == 2);
  upstream.stop();
}

TEST_CASE(
    "https: a close without close_notify after a complete response is fine, before it is not") {
  asio::io_context ioc;
  const auto certs = flaky::make_test_certificates({"IP:127.0.0.1"});
  auto server_ctx = flaky::make_server_context(certs);
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  // Connection 0: a response with a length, then a close without close_notify.
  // Connection 1: a body delimited by the close, closed without close_notify:
  // a truncation an attacker's FIN could cause, so an error.
  const std::string replies[] = {
      "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 5\r\n\r\nwhole",
      "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil-close"};
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        for (int i = 0; i < 2; ++i) {
          auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
          asio::ssl::stream<tcp::socket> s(std::move(socket), *server_ctx);
          auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::server,
                                                  asio::as_tuple(asio::use_awaitable));
          if (hec) co_return;
          asio::streambuf in;
          auto [rec, n] = co_await asio::async_read_until(s, in, "\r\n\r\n",
                                                          asio::as_tuple(asio::use_awaitable));
          if (rec) co_return;
          co_await asio::async_write(s, asio::buffer(replies[i]),
                                     asio::as_tuple(asio::use_awaitable));
          s.next_layer().close();  // no close_notify
        }
      },
      asio::detached);
  http::client_options o{.timeout = 2s};
  o.tls = flaky::make_client_context(certs.ca_pem);
  http::client client(ioc.get_executor(), o);
  const auto url = "https://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/";
  const auto [ec, res] =
      finish(ioc, http::async_get(client, url, asio::as_tuple(asio::use_awaitable)));
  CHECK_FALSE(ec);
  CHECK(res.body() == "whole");
  const auto [cut, none] =
      finish(ioc, http::async_get(client, url, asio::as_tuple(asio::use_awaitable)));
  CHECK(cut == asio::ssl::error::stream_truncated);
}

TEST_CASE("https: a stray response in a second TLS record is never the next answer") {
  asio::io_context ioc;
  const auto certs = flaky::make_test_certificates({"IP:127.0.0.1"});
  auto server_ctx = flaky::make_server_context(certs);
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        for (int i = 0;; ++i) {
          auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
          // (Parameters, not captures: the lambda is gone once the coroutine suspends.)
          asio::co_spawn(
              ioc,
              [](tcp::socket sock, std::shared_ptr<asio::ssl::context> ctx,
                 int index) -> asio::awaitable<void> {
                asio::ssl::stream<tcp::socket> s(std::move(sock), *ctx);
                auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::server,
                                                        asio::as_tuple(asio::use_awaitable));
                if (hec) co_return;
                asio::streambuf in;
                for (;;) {
                  auto [rec, n] = co_await asio::async_read_until(
                      s, in, "\r\n\r\n", asio::as_tuple(asio::use_awaitable));
                  if (rec) co_return;
                  in.consume(n);
                  // The answer's head first; then, corked into one TCP segment,
                  // the answer's last byte and a stray response as two more
                  // TLS records: the client reads both off the socket at once,
                  // and the stray one waits, undecrypted, in its TLS engine.
                  const std::string body = "c" + std::to_string(index);
                  co_await asio::async_write(
                      s,
                      asio::buffer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n" +
                                   body.substr(0, 1)),
                      asio::as_tuple(asio::use_awaitable));
                  asio::steady_timer pause(s.get_executor(), std::chrono::milliseconds(30));
                  co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
                  const int fd = s.next_layer().native_handle();
                  int on = 1, off = 0;
                  ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &on, sizeof on);
                  co_await asio::async_write(s, asio::buffer(body.substr(1)),
                                             asio::as_tuple(asio::use_awaitable));
                  co_await asio::async_write(
                      s,
                      asio::buffer(
                          std::string("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nstray")),
                      asio::as_tuple(asio::use_awaitable));
                  ::setsockopt(fd, IPPROTO_TCP, TCP_CORK, &off, sizeof off);
                }
              }(std::move(socket), server_ctx, i),
              asio::detached);
        }
      },
      asio::detached);
  http::client_options o{.timeout = 2s};
  o.tls = flaky::make_client_context(certs.ca_pem);
  http::client client(ioc.get_executor(), o);
  const auto url = "https://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/";
  for (int i = 0; i < 3; ++i) {
    const auto [ec, res] =
        finish(ioc, http::async_get(client, url, asio::as_tuple(asio::use_awaitable)));
    CHECK_FALSE(ec);
    CHECK(res.body() == "c" + std::to_string(i));  // never "stray"
  }
  acceptor.close();
}

TEST_CASE("https: an early 401 to an upload arrives, and a normal upload is kept alive") {
  asio::io_context ioc;
  const auto certs = flaky::make_test_certificates({"IP:127.0.0.1"});
  auto server_ctx = flaky::make_server_context(certs);
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  int accepted = 0, requests = 0;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
          // Connection 0: a 401 after the head, then nothing more is read.
          // Later ones: every body read whole, its length the answer, kept alive.
          asio::co_spawn(
              ioc,
              [](tcp::socket sock, std::shared_ptr<asio::ssl::context> ctx, int index,
                 int& count) -> asio::awaitable<void> {
                asio::ssl::stream<tcp::socket> s(std::move(sock), *ctx);
                auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::server,
                                                        asio::as_tuple(asio::use_awaitable));
                if (hec) co_return;
                asio::streambuf in;
                for (;;) {
                  const std::string head = co_await read_head(s, in);
                  if (head.empty()) co_return;
                  ++count;
                  if (index == 0) {
                    co_await asio::async_write(
                        s,
                        asio::buffer(
                            std::string("HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n")),
                        asio::as_tuple(asio::use_awaitable));
                    asio::steady_timer hold(s.get_executor(), 5s);
                    co_await hold.async_wait(asio::as_tuple(asio::use_awaitable));
                    co_return;
                  }
                  const auto at = head.find("Content-Length: ");
                  const std::size_t length =
                      at == std::string::npos ? 0 : std::stoul(head.substr(at + 16));
                  if (in.size() < length) {
                    auto [bec, got] =
                        co_await asio::async_read(s, in, asio::transfer_exactly(length - in.size()),
                                                  asio::as_tuple(asio::use_awaitable));
                    if (bec) co_return;
                  }
                  in.consume(length);
                  const auto body = std::to_string(length);
                  auto [wec, w] = co_await asio::async_write(
                      s,
                      asio::buffer("HTTP/1.1 200 OK\r\nContent-Length: " +
                                   std::to_string(body.size()) + "\r\n\r\n" + body),
                      asio::as_tuple(asio::use_awaitable));
                  if (wec) co_return;
                }
              }(std::move(socket), server_ctx, accepted++, requests),
              asio::detached);
        }
      },
      asio::detached);
  http::client_options o{.timeout = 2500ms};  // far beyond what the answers need
  o.tls = flaky::make_client_context(certs.ca_pem);
  http::client client(ioc.get_executor(), o);
  const auto origin = "https://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  auto put = [](std::size_t bytes) {
    http::request req(boost::beast::http::verb::put, "/upload", 11);
    req.body().assign(bytes, 'u');
    return req;
  };
  const auto [ec, res] = finish(ioc, http::async_send(client, origin, put(std::size_t{32} << 20),
                                                      asio::as_tuple(asio::use_awaitable)));
  CHECK(ec != boost::beast::error::timeout);
  CHECK_FALSE(ec);
  CHECK(res.result_int() == 401);
  CHECK(requests == 1);
  CHECK(client.stats().connections_idle == 0);  // never reused
  for (const std::size_t size : {std::size_t{4} << 20, std::size_t{4} << 20}) {
    const auto [uec, ures] = finish(
        ioc, http::async_send(client, origin, put(size), asio::as_tuple(asio::use_awaitable)));
    CHECK_FALSE(uec);
    CHECK(ures.body() == std::to_string(size));
  }
  CHECK(accepted == 2);
  CHECK(requests == 3);
  CHECK(client.stats().connections_reused == 1);
  acceptor.close();
}

TEST_CASE("dns: the deadline bounds resolution, and a slow lookup holds no other") {
  asio::io_context ioc;
  dns_server dns(ioc);
  script_server server(ioc, serve_ok);
  server.start();
  http::client_options o{.timeout = 300ms};
  o.dns_servers = dns.address();
  http::client client(ioc.get_executor(), o);
  const auto port = std::to_string(server.port());
  const auto start = std::chrono::steady_clock::now();
  auto slow = spawn(ioc, http::async_get(client, "http://slow.test:" + port + "/",
                                         asio::as_tuple(asio::use_awaitable)));
  auto fast = spawn(ioc, http::async_get(client, "http://fast.test:" + port + "/",
                                         asio::as_tuple(asio::use_awaitable)));
  run_until(ioc, fast);
  REQUIRE(fast->done);
  const auto fast_took = std::chrono::steady_clock::now() - start;
  CHECK_FALSE(std::get<0>(*fast->value));
  CHECK(std::get<1>(*fast->value).body() == "ok");
  CHECK_FALSE(slow->done);  // still resolving, and it held nothing
  CHECK(fast_took < 250ms);
  run_until(ioc, slow);
  REQUIRE(slow->done);
  const auto slow_took = std::chrono::steady_clock::now() - start;
  CHECK(std::get<0>(*slow->value) == boost::beast::error::timeout);
  CHECK(slow_took >= 300ms);
  CHECK(slow_took < 1000ms);  // the request's deadline, not c-ares' own timeouts

  auto missing = spawn(ioc, http::async_get(client, "http://missing.test:" + port + "/",
                                            asio::as_tuple(asio::use_awaitable)));
  run_until(ioc, missing);
  REQUIRE(missing->done);
  CHECK(std::get<0>(*missing->value) == asio::error::host_not_found);

  const int before = dns.queries;
  auto literal =
      spawn(ioc, http::async_get(client, server.url(), asio::as_tuple(asio::use_awaitable)));
  run_until(ioc, literal);
  REQUIRE(literal->done);
  CHECK_FALSE(std::get<0>(*literal->value));
  CHECK(dns.queries == before);  // an IP literal never touches the resolver
}

TEST_CASE("dns: a caller's cancellation ends a lookup at once") {
  asio::io_context ioc;
  dns_server dns(ioc);
  http::client_options o{.timeout = 5s};
  o.dns_servers = dns.address();
  http::client client(ioc.get_executor(), o);
  asio::cancellation_signal cancel;
  auto p = std::make_shared<pending<http::result>>();
  asio::co_spawn(
      ioc, http::async_get(client, "http://slow.test:1/", asio::as_tuple(asio::use_awaitable)),
      asio::bind_cancellation_slot(cancel.slot(), [p](std::exception_ptr e, http::result r) {
        p->done = true;
        p->error = e;
        if (!e) p->value = std::move(r);
      }));
  run_for(ioc, 50ms);
  REQUIRE_FALSE(p->done);
  const auto start = std::chrono::steady_clock::now();
  cancel.emit(asio::cancellation_type::terminal);
  run_until(ioc, p);
  REQUIRE(p->done);
  CHECK(std::chrono::steady_clock::now() - start < 200ms);
  if (p->value) CHECK(std::get<0>(*p->value) == asio::error::operation_aborted);
}

TEST_CASE("https: a response that never comes ends at the request's deadline, then the way back") {
  // Over TLS the exchange's deadline is its own timer's, as over plain TCP
  // (the TCP stream under TLS has no expiry during the exchange): a
  // request the server never answers ends with beast::error::timeout at
  // its deadline, its connection closed, and the next request is served on
  // a new one.
  asio::io_context ioc;
  const auto certs = flaky::make_test_certificates({"IP:127.0.0.1"});
  auto server_ctx = flaky::make_server_context(certs);
  tcp::acceptor acceptor(ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0));
  int accepted = 0;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        for (;;) {
          auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
          if (ec) co_return;
          ++accepted;
          asio::co_spawn(
              ioc,
              [](tcp::socket sock,
                 std::shared_ptr<asio::ssl::context> ctx) -> asio::awaitable<void> {
                asio::ssl::stream<tcp::socket> s(std::move(sock), *ctx);
                auto [hec] = co_await s.async_handshake(asio::ssl::stream_base::server,
                                                        asio::as_tuple(asio::use_awaitable));
                if (hec) co_return;
                asio::streambuf in;
                for (;;) {
                  const std::string head = co_await read_head(s, in);
                  if (head.empty()) co_return;
                  if (head.rfind("GET /hang ", 0) == 0) {
                    // Never answered: the connection is held past the deadline.
                    asio::steady_timer hold(s.get_executor(), std::chrono::seconds(3));
                    co_await hold.async_wait(asio::as_tuple(asio::use_awaitable));
                    co_return;
                  }
                  co_await asio::async_write(
                      s,
                      asio::buffer(std::string("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")),
                      asio::as_tuple(asio::use_awaitable));
                }
              }(std::move(socket), server_ctx),
              asio::detached);
        }
      },
      asio::detached);
  http::client_options o{.timeout = 300ms};
  o.tls = flaky::make_client_context(certs.ca_pem);
  http::client client(ioc.get_executor(), o);
  const auto base = "https://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  {
    const auto [ec, res] =
        finish(ioc, http::async_get(client, base + "/", asio::as_tuple(asio::use_awaitable)));
    CHECK_FALSE(ec);
    CHECK(res.body() == "ok");
  }
  const auto start = std::chrono::steady_clock::now();
  {
    const auto [ec, res] =
        finish(ioc, http::async_get(client, base + "/hang", asio::as_tuple(asio::use_awaitable)));
    CHECK(ec == boost::beast::error::timeout);
  }
  const auto took = std::chrono::steady_clock::now() - start;
  CHECK(took >= 300ms);
  CHECK(took < 1500ms);
  CHECK(client.stats().connections_opened == 1);
  CHECK(client.stats().connections_idle == 0);  // the timed-out connection is closed
  // The way back: a new connection, served.
  {
    const auto [ec, res] =
        finish(ioc, http::async_get(client, base + "/", asio::as_tuple(asio::use_awaitable)));
    CHECK_FALSE(ec);
    CHECK(res.body() == "ok");
  }
  CHECK(client.stats().connections_opened == 2);
  CHECK(accepted == 2);
  acceptor.close();
}
