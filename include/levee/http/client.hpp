// levee: an HTTP/1.1 client over Beast, made to be guarded.
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/beast/http/message.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>

namespace levee::http {

using request = boost::beast::http::request<boost::beast::http::string_body>;
using response = boost::beast::http::response<boost::beast::http::string_body>;

/// The error_code form's result: `{ec, response}`; `response` is empty when
/// `ec` is set.
using result = std::tuple<boost::system::error_code, response>;

/// Selects the error_code form of a request function:
/// `co_await http_get(client, url, levee::http::nothrow)`.
struct nothrow_t {
  explicit nothrow_t() = default;
};
inline constexpr nothrow_t nothrow{};

/// A client's limits. Plain struct, a default on every member.
struct client_options {
  /// Connections per host (host and port), open or opening. >= 1. A request
  /// that finds them all busy waits, first come first served, within its
  /// deadline.
  std::size_t max_connections_per_host = 64;
  /// Deadline of one request, covering everything: the wait for a pooled
  /// connection, resolve, connect, write and read. > 0. A request past its
  /// deadline ends with `boost::beast::error::timeout`.
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
  /// Largest response body accepted; a larger one ends the request with
  /// `boost::beast::http::error::body_limit`. >= 1.
  std::size_t body_limit = std::size_t{1} << 20;
  /// Largest response header accepted (`header_limit`). In [64, 1 MiB].
  std::uint32_t header_limit = 8 * 1024;
  /// A kept-alive connection idle longer than this is closed instead of
  /// reused. > 0.
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(30);
  /// The User-Agent header sent when the request has none.
  std::string user_agent = "levee";
};

/// Throws `std::invalid_argument` naming the first invalid member.
void validate(const client_options& options);

/// Counters of one client, summed over its hosts.
struct client_stats {
  std::uint64_t requests = 0;            ///< requests started
  std::uint64_t connections_opened = 0;  ///< TCP connections established
  std::uint64_t connections_reused = 0;  ///< requests served on a kept-alive connection
  std::size_t connections_open = 0;      ///< open now (busy or idle)
  std::size_t waiting = 0;               ///< requests waiting for a connection now
  std::size_t peak_waiting = 0;          ///< most requests ever waiting at once
};

/// An HTTP/1.1 client with a bounded keep-alive pool per host.
///
/// - Every request has one deadline (`client_options::timeout`, or the
///   request's own) covering the pool wait, resolve, connect, write and read.
/// - At most `max_connections_per_host` connections per host; requests beyond
///   that wait in a FIFO queue, each until its deadline: a waiter gets
///   `beast::error::timeout`, never waits forever.
/// - A connection goes back to the pool only after a complete response that
///   allows keep-alive; one whose request failed or timed out is closed, never
///   reused. A request on a reused connection that finds it closed by the
///   server before any response byte is sent again once on a new connection.
/// - Malformed input (a bad status line, oversized header or body, an early
///   close, garbage) ends the request with an error_code; memory stays bounded
///   by the limits.
///
/// Thread safety: a client may be shared by coroutines on any threads.
/// Lifetime: it must outlive its requests. Executor: connections are created on
/// the client's executor; each request completes on its caller's executor.
class client {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// Throws `std::invalid_argument` naming the member when `options` is invalid.
  explicit client(executor_type ex, client_options options = {});
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  executor_type get_executor() const noexcept;
  const client_options& options() const noexcept;
  client_stats stats() const noexcept;

  /// Sends `req` to `host:port` (a name or an IP address) and reads the
  /// response, in the error_code form. `timeout` overrides the client's.
  ///
  /// Cancellation: the caller's cancellation ends the request with
  /// `operation_aborted` and closes its connection.
  boost::asio::awaitable<result> async_request(std::string host, std::uint16_t port, request req,
                                               std::chrono::nanoseconds timeout);
  boost::asio::awaitable<result> async_request(std::string host, std::uint16_t port, request req);

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

/// `http://host[:port]/target` split into its parts; an error_code
/// (`boost::system::errc::invalid_argument`) for anything else (HTTPS is not
/// supported: no TLS in this client).
struct url_parts {
  std::string host;
  std::uint16_t port = 80;
  std::string target = "/";
};
boost::system::error_code parse_url(std::string_view url, url_parts& out);

/// GET `url` (`http://host[:port]/target`), exception form: the response, or
/// a thrown `system_error`. Like every awaitable, nothing happens until it is
/// awaited; the arguments are copied, so temporaries are fine.
boost::asio::awaitable<response> http_get(client& c, std::string url);
/// GET `url`, error_code form: `{ec, response}`, never throws for I/O errors.
boost::asio::awaitable<result> http_get(client& c, std::string url, nothrow_t);

/// Any request to `host:port`, exception form.
boost::asio::awaitable<response> send(client& c, std::string host, std::uint16_t port, request req);
/// Any request to `host:port`, error_code form.
boost::asio::awaitable<result> send(client& c, std::string host, std::uint16_t port, request req,
                                    nothrow_t);

}  // namespace levee::http
