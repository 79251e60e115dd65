#include "metrics_endpoint.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http.hpp>

#include <chrono>
#include <utility>

#include <unistd.h>

namespace demo {

namespace asio = boost::asio;
namespace beast = boost::beast;
using namespace std::chrono_literals;

metrics_endpoint::metrics_endpoint(std::uint16_t port) {
  asio::ip::tcp::acceptor acceptor(home_);
  const asio::ip::tcp::endpoint at(asio::ip::make_address("127.0.0.1"), port);
  acceptor.open(at.protocol());
  acceptor.set_option(asio::socket_base::reuse_address(true));
  acceptor.bind(at);
  acceptor.listen();
  port_ = acceptor.local_endpoint().port();
  socket_ = acceptor.release();
}

metrics_endpoint::~metrics_endpoint() {
  if (!acceptor_) ::close(socket_);  // else the acceptor owns it and closes it
}

void metrics_endpoint::start(asio::io_context& ioc, std::function<std::string()> text) {
  text_ = std::move(text);
  acceptor_.emplace(ioc, asio::ip::tcp::v4(), socket_);
  asio::co_spawn(ioc, serve(), asio::detached);
}

void metrics_endpoint::stop() {
  if (!acceptor_) return;
  acceptor_->release();
  acceptor_.reset();  // before its io_context goes
}

asio::awaitable<void> metrics_endpoint::serve() {
  for (;;) {
    auto [ec, socket] = co_await acceptor_->async_accept(asio::as_tuple(asio::use_awaitable));
    if (ec) co_return;
    beast::tcp_stream stream(std::move(socket));
    stream.expires_after(2s);
    beast::flat_buffer buffer;
    beast::http::request<beast::http::string_body> req;
    auto [rec, n] =
        co_await beast::http::async_read(stream, buffer, req, asio::as_tuple(asio::use_awaitable));
    if (rec) continue;
    const bool metrics = req.target() == "/metrics";
    beast::http::response<beast::http::string_body> res(
        metrics ? beast::http::status::ok : beast::http::status::not_found, req.version());
    res.set(beast::http::field::content_type, "text/plain; version=0.0.4");
    res.body() = metrics ? text_() : "try /metrics\n";
    res.keep_alive(false);
    res.prepare_payload();
    (void)co_await beast::http::async_write(stream, res, asio::as_tuple(asio::use_awaitable));
  }
}

}  // namespace demo
