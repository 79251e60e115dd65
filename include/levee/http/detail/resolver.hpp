// levee: name resolution for the HTTP client, on c-ares.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace levee::http::detail {

/// An asynchronous resolver on c-ares (the one curl, gRPC and Node use),
/// driven by the executor it is given: lookups run side by side, none waits
/// for another, each ends at its deadline or at the caller's cancellation.
/// Asio's own resolver runs lookups one at a time on a background thread and
/// cannot cancel them: a slow lookup for one host would hold every other.
///
/// Thread safety: `async_resolve` may be called from any thread; c-ares runs
/// on a strand of the executor.
class dns_resolver {
 public:
  using endpoints = std::vector<boost::asio::ip::tcp::endpoint>;
  /// `(ec, endpoints, ttl)`: `ttl` is the smallest TTL of the records the
  /// answer was made of (addresses and CNAMEs), 0 on an error.
  using signature = void(boost::system::error_code, endpoints, std::chrono::seconds);

  /// `servers`: c-ares' "host:port,host:port" list of DNS servers; empty: the
  /// system's (/etc/resolv.conf, and /etc/hosts first). `attempt_timeout`:
  /// c-ares' timeout for one try of one server; it tries twice.
  dns_resolver(boost::asio::any_io_executor ex, const std::string& servers,
               std::chrono::milliseconds attempt_timeout);
  /// Pending lookups complete with `operation_aborted`.
  ~dns_resolver();
  /// The same, now; later lookups too.
  void shutdown();
  dns_resolver(const dns_resolver&) = delete;
  dns_resolver& operator=(const dns_resolver&) = delete;

  /// Resolves `host` (a name) for `port`. Completes with `(ec, endpoints, ttl)`:
  /// `beast::error::timeout` at `deadline`, `operation_aborted` on
  /// cancellation (terminal, partial or total), `asio::error::host_not_found`
  /// and friends from DNS. Completes on the handler's associated executor.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(signature) Token>
  auto async_resolve(std::string host, std::uint16_t port,
                     std::chrono::steady_clock::time_point deadline, Token&& token) {
    return boost::asio::async_initiate<Token, signature>(
        [this](auto handler, std::string h, std::uint16_t p,
               std::chrono::steady_clock::time_point d) {
          boost::asio::any_io_executor ex =
              boost::asio::get_associated_executor(handler, get_executor());
          start(std::move(h), p, d,
                boost::asio::any_completion_handler<signature>(std::move(handler)), std::move(ex));
        },
        token, std::move(host), port, deadline);
  }

 private:
  boost::asio::any_io_executor get_executor() const noexcept;
  void start(std::string host, std::uint16_t port, std::chrono::steady_clock::time_point deadline,
             boost::asio::any_completion_handler<signature> handler,
             boost::asio::any_io_executor handler_ex);

  struct state;
  std::shared_ptr<state> state_;
};

}  // namespace levee::http::detail
