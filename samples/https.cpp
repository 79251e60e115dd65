// HTTPS through a circuit breaker: `co_await breaker(http_get(client,
// "https://..."))`. The API here is the flaky upstream serving TLS with a
// certificate from a throwaway CA made at start, so the client is given a
// context that trusts that CA; against a public service, leave
// `client_options::tls` empty and the system's trust store is used.
#include <levee/http.hpp>
#include <levee/levee.hpp>

#include <boost/asio.hpp>
#include <boost/asio/ssl/context.hpp>

#include <flaky/server.hpp>
#include <flaky/tls.hpp>

#include <iostream>

namespace asio = boost::asio;
using namespace std::chrono_literals;

asio::awaitable<void> session(levee::circuit_breaker& breaker, levee::http::client& client,
                              std::string url) {
  for (int i = 0; i < 3; ++i) {
    // The exception form: a response, or a thrown system_error (a rejection
    // by the breaker, a TLS or verification error, a timeout).
    levee::http::response res = co_await breaker(levee::http::http_get(client, url));
    std::cout << "GET " << url << ": " << res.result_int() << " " << res.body() << "\n";
  }
  // The error_code form (the token makes it: `as_tuple`), and HEAD.
  auto [ec, head] =
      co_await breaker(levee::http::async_head(client, url, asio::as_tuple(asio::use_awaitable)));
  std::cout << "HEAD: " << (ec ? ec.message() : std::to_string(head.result_int())) << "\n";
  std::cout << "connections opened: " << client.stats().connections_opened
            << ", reused: " << client.stats().connections_reused << "\n";
  client.close_idle();  // nothing left pending: run() returns
}

int main() {
  asio::io_context ioc;
  // The stand-in API: HTTPS on 127.0.0.1 with a certificate for "localhost".
  const auto certs = flaky::make_test_certificates({"DNS:localhost"});
  flaky::server_options server_options;
  server_options.tls = flaky::make_server_context(certs);
  flaky::phase healthy;  // answers at once, 200, for as long as the sample runs
  healthy.name = "healthy";
  flaky::server api(ioc.get_executor(), {healthy}, server_options);
  const std::string url = "https://localhost:" + std::to_string(api.start()) + "/recommendations";

  levee::http::client_options options{.timeout = 2s};
  options.tls = std::make_shared<asio::ssl::context>(asio::ssl::context::tls_client);
  options.tls->add_certificate_authority(asio::buffer(certs.ca_pem));  // trust the private CA
  levee::http::client client(ioc.get_executor(), options);

  levee::breaker_options breaker_options;
  breaker_options.classifier = levee::http::classify;  // 5xx and 429 fail, other 4xx do not
  levee::circuit_breaker breaker(ioc, breaker_options);

  asio::co_spawn(ioc, session(breaker, client, url), [&](std::exception_ptr e) {
    if (e) {
      try {
        std::rethrow_exception(e);
      } catch (const std::exception& ex) {
        std::cout << "failed: " << ex.what() << "\n";
      }
    }
    api.stop();
  });
  ioc.run();
}
