// The demo's /metrics endpoint: the running breaker's Prometheus exposition,
// served on 127.0.0.1 while a mode runs.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>

namespace demo {

/// Serves the current mode's Prometheus exposition at /metrics on 127.0.0.1.
/// The socket listens from construction to the end of the program (a scrape
/// between two modes waits in the backlog); each mode serves it on its own
/// io_context, between `start` and `stop`.
class metrics_endpoint {
 public:
  /// Listens on `port` (0: any free port).
  explicit metrics_endpoint(std::uint16_t port);
  ~metrics_endpoint();
  metrics_endpoint(const metrics_endpoint&) = delete;
  metrics_endpoint& operator=(const metrics_endpoint&) = delete;

  /// Serves `text()` on `ioc` until `stop`.
  void start(boost::asio::io_context& ioc, std::function<std::string()> text);

  /// Ends the pending accept; the socket stays open for the next mode.
  void stop();

  std::uint16_t port() const { return port_; }

 private:
  boost::asio::awaitable<void> serve();

  boost::asio::io_context home_;  // only to open the socket
  boost::asio::ip::tcp::acceptor::native_handle_type socket_;
  std::uint16_t port_;
  std::function<std::string()> text_;
  std::optional<boost::asio::ip::tcp::acceptor> acceptor_;
};

}  // namespace demo
