// Support for the HTTP tests: real sockets on 127.0.0.1, bounded in time.
#pragma once

#include "support.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/streambuf.hpp>
#include <boost/asio/write.hpp>

#include <flaky/server.hpp>

#include <functional>
#include <string>

namespace levee_test {

using tcp = asio::ip::tcp;

/// Runs the io_context until `p` is done or `limit` of real time passed.
template <class T>
void run_until(asio::io_context& ioc, const std::shared_ptr<pending<T>>& p,
               std::chrono::milliseconds limit = std::chrono::milliseconds(2000)) {
  const auto end = std::chrono::steady_clock::now() + limit;
  ioc.restart();
  while (!p->done && std::chrono::steady_clock::now() < end)
    ioc.run_one_for(std::chrono::milliseconds(10));
}

/// Runs the io_context for `d` of real time (short waits against real
/// servers only).
inline void run_for(asio::io_context& ioc, std::chrono::milliseconds d) {
  const auto end = std::chrono::steady_clock::now() + d;
  ioc.restart();
  while (std::chrono::steady_clock::now() < end) ioc.run_one_for(std::chrono::milliseconds(5));
}

std::vector<flaky::phase> phases(std::initializer_list<const char*> specs);

/// Runs one request to completion (3 s at most) and returns its result.
template <class T>
T finish(asio::io_context& ioc, asio::awaitable<T> aw) {
  auto p = spawn(ioc, std::move(aw));
  run_until(ioc, p, std::chrono::milliseconds(3000));
  REQUIRE(p->done);
  REQUIRE(p->value);
  return std::move(*p->value);
}

/// A server that runs a script per accepted connection: whatever bytes a test
/// wants, whenever it wants them.
struct script_server {
  using script = std::function<asio::awaitable<void>(tcp::socket, int index)>;
  script_server(asio::io_context& context, script s)
      : script_server(
            context, std::move(s),
            tcp::acceptor(context, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0))) {}
  /// On an acceptor the test opened itself (another address, e.g. [::1]).
  script_server(asio::io_context& context, script s, tcp::acceptor listening)
      : ioc(context), run_script(std::move(s)), acceptor(std::move(listening)) {}
  asio::io_context& ioc;
  script run_script;
  tcp::acceptor acceptor;
  int accepted = 0;

  std::uint16_t port() const { return acceptor.local_endpoint().port(); }
  std::string url(const std::string& target = "/") const {
    return "http://127.0.0.1:" + std::to_string(port()) + target;
  }
  void start() { asio::co_spawn(ioc, accept_loop(), asio::detached); }
  void stop() {
    boost::system::error_code ignored;
    acceptor.close(ignored);
  }
  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(ioc, run_script(std::move(socket), accepted++), asio::detached);
    }
  }
};

/// Reads one request head ("...\r\n\r\n"); empty when the peer closed. On a
/// TCP socket or a TLS stream.
template <class Stream>
asio::awaitable<std::string> read_head(Stream& s, asio::streambuf& in) {
  auto [ec, n] =
      co_await asio::async_read_until(s, in, "\r\n\r\n", asio::as_tuple(asio::use_awaitable));
  if (ec) co_return std::string();
  std::string head(asio::buffers_begin(in.data()), asio::buffers_begin(in.data()) + n);
  in.consume(n);
  co_return head;
}

/// Writes `bytes`; false when the peer is gone.
inline asio::awaitable<bool> write_all(tcp::socket& s, const std::string& bytes) {
  auto [ec, n] =
      co_await asio::async_write(s, asio::buffer(bytes), asio::as_tuple(asio::use_awaitable));
  (void)n;
  co_return !ec;
}

/// Answers every request on `s` with `reply` until the peer closes. True
/// when the peer closed (false when a write failed).
inline asio::awaitable<bool> answer_each(tcp::socket& s, std::string reply) {
  asio::streambuf in;
  while (!(co_await read_head(s, in)).empty())
    if (!co_await write_all(s, reply)) co_return false;
  co_return true;
}

/// A script for `script_server`: a kept-alive "200 ok" to every request.
inline asio::awaitable<void> serve_ok(tcp::socket s, int) {
  co_await answer_each(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
}

}  // namespace levee_test
