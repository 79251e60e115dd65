/// \file
/// The HTTP client's vocabulary: requests, responses, options, counters
/// and URLs (included by levee/http/client.hpp).
#pragma once

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
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

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace levee::http {

/// A request: Beast's, with a string body.
using request = boost::beast::http::request<boost::beast::http::string_body>;
/// A response: Beast's, with a string body.
using response = boost::beast::http::response<boost::beast::http::string_body>;

/// The completion signature of every request operation: `response` is empty
/// when the error_code is set.
using request_signature = void(boost::system::error_code, response);

/// What the error_code form of a request yields, `co_await
/// async_get(client, url, asio::as_tuple(asio::use_awaitable))`: `{ec,
/// response}`.
using result = std::tuple<boost::system::error_code, response>;

/// A client's limits. Plain struct, a default on every member.
struct client_options {
  /// Connections per origin (scheme, host and port), open or opening. In
  /// [1, 100000]. A request that finds them all busy waits, first come first
  /// served, within its deadline.
  std::size_t max_connections_per_host = 64;
  /// Deadline of one request, covering everything: the wait for a pooled
  /// connection, name resolution, connect, the TLS handshake, write and read.
  /// > 0; `nanoseconds::max()` (or anything beyond the clock's range) means
  /// no deadline. A request past its deadline ends with
  /// `boost::beast::error::timeout`.
  std::chrono::nanoseconds timeout = std::chrono::seconds(10);
  /// Largest response body accepted; a larger one ends the request with
  /// `boost::beast::http::error::body_limit`. >= 1.
  std::size_t body_limit = std::size_t{1} << 20;
  /// Largest response header accepted (`header_limit`). In [64, 1 MiB]. The
  /// read buffer holds at most `header_limit + 64 KiB`: a chunk header line
  /// (with its extensions) or a trailer section that does not fit ends the
  /// request with `boost::beast::http::error::buffer_overflow`.
  std::uint32_t header_limit = 8 * 1024;
  /// A kept-alive connection idle this long is never reused; it is closed
  /// lazily, when the client's pools are next used (no timer: an idle client
  /// leaves no pending work), or by `client::close_idle()`. > 0; `max()` keeps
  /// them.
  std::chrono::nanoseconds idle_timeout = std::chrono::seconds(30);
  /// Idle kept-alive connections over all origins; a connection that would
  /// be one more is closed instead. In [0, 1000000].
  std::size_t max_idle_connections = 256;
  /// The User-Agent header sent when the request has none. No control
  /// characters.
  std::string user_agent = "levee";
  /// TLS for `https://` origins. Empty: the client makes a context that
  /// verifies peers against the system's default trust store (TLS 1.2 or
  /// later). Give your own to trust a private CA or to present a client
  /// certificate; the client always adds SNI and checks that the
  /// certificate names the host, whatever the context says.
  std::shared_ptr<boost::asio::ssl::context> tls{};
  /// DNS servers, as c-ares reads them (`"127.0.0.1:5353,[::1]:53"`). Empty:
  /// the system's (`/etc/hosts`, then `/etc/resolv.conf`).
  std::string dns_servers{};
  /// Send the remaining time of the caller's `with_deadline` downstream, in
  /// the header `deadline_header` (README, "Deadlines across services").
  /// Also when off, a request never outlives that deadline.
  bool send_deadline = true;
  /// The header that carries it: the whole milliseconds left, a decimal
  /// integer, rounded down (`Levee-Deadline-Ms: 180`). A token (RFC 9110),
  /// not a header the client sets itself; the request's own value, if it has
  /// one, is replaced.
  std::string deadline_header = "Levee-Deadline-Ms";
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const client_options& options);

/// Counters of one client, summed over its origins.
struct client_stats {
  std::uint64_t requests = 0;            ///< requests started
  std::uint64_t connections_opened = 0;  ///< TCP connections established
  std::uint64_t connections_reused = 0;  ///< requests served on a kept-alive connection
  /// Idle connections found closed by the server, or with bytes nobody asked
  /// for, when taken from the pool: closed, never used.
  std::uint64_t connections_stale = 0;
  /// Requests sent again on a new connection after a pooled one failed before
  /// any byte of a response (the server closed it as the request went out).
  std::uint64_t retried_on_new_connection = 0;
  /// Requests sent with the deadline header (`client_options::send_deadline`).
  std::uint64_t deadlines_sent = 0;
  std::size_t connections_open = 0;  ///< open now (busy or idle)
  std::size_t connections_idle = 0;  ///< idle in the pool now
  std::size_t origins = 0;           ///< origins with a pool now
  std::size_t waiting = 0;           ///< requests waiting for a connection now
  std::size_t peak_waiting = 0;      ///< most requests ever waiting at once
};

/// `scheme://host[:port]/target` split into its parts (RFC 3986).
struct url_parts {
  std::string scheme = "http";  ///< "http" or "https", lower case
  /// A name (lower case), an IPv4 address, or an IPv6 address without its
  /// brackets.
  std::string host;
  std::uint16_t port = 80;   ///< the scheme's default when the URL has none
  std::string target = "/";  ///< path and query ("/" when empty); never the fragment
};

/// Splits `url` (`http[s]://host[:port][/path][?query][#fragment]`): IPv6
/// literals in brackets (without a zone), an empty port as the default, a
/// query or fragment without a path. Everything else (user information, a
/// zone such as `[fe80::1%25eth0]`), and any space, control or non-ASCII
/// character, is `levee::http::error::invalid_url` (equal to
/// `errc::invalid_argument`): percent-encode them.
/// \param url The URL.
/// \param out Its parts; set only when the URL is valid.
/// \return zero, or `error::invalid_url`.
boost::system::error_code parse_url(std::string_view url, url_parts& out);

/// `levee::http::error::invalid_url` unless `origin` is what `parse_url`
/// makes: scheme "http" or "https", a lower-case name, an IPv4 address or an
/// IPv6 address without brackets, a port in [1, 65535]. The client checks
/// every origin this way (a scheme "HTTPS" is refused, never sent in the clear).
/// \param origin The origin to check (its `target` is not read).
/// \return zero, or `error::invalid_url`.
boost::system::error_code validate_origin(const url_parts& origin);

/// The Host header for `origin`: `host`, `[v6]`, with `:port` unless it is the
/// scheme's default.
/// \param origin A valid origin.
/// \return the header's value.
std::string host_header(const url_parts& origin);

/// `levee::http::error::invalid_request` when sending `req` would split or
/// change it: a target with a space or control character, a method or header
/// name that is not a token, a header value with CR, LF, NUL or another
/// control character; or when it is not a request at all: a TRACE with a
/// body (RFC 9110, 9.3.8). The client checks every request this way before
/// sending anything, and also refuses a Transfer-Encoding that
/// `prepare_payload` leaves (docs/http.md).
/// \param req The request to check.
/// \return zero, or `error::invalid_request`.
boost::system::error_code validate_request(const request& req);

}  // namespace levee::http
