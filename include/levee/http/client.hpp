// levee: an HTTP/1.1 client over Beast, plain and TLS, made to be guarded.
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

using request = boost::beast::http::request<boost::beast::http::string_body>;
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
  /// A kept-alive connection idle this long is closed (by a timer that runs
  /// only while idle connections exist). > 0; `max()` keeps them.
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
};

/// Throws `std::invalid_argument` naming the first invalid member.
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
/// literals in brackets, an empty port as the default, a query or fragment
/// without a path. Everything else, and any space, control or non-ASCII
/// character, is `levee::http::error::invalid_url` (equal to
/// `errc::invalid_argument`): percent-encode them.
boost::system::error_code parse_url(std::string_view url, url_parts& out);

/// `levee::http::error::invalid_url` unless `origin` is what `parse_url`
/// makes: scheme "http" or "https", a lower-case name, an IPv4 address or an
/// IPv6 address without brackets, a port in [1, 65535]. The client checks
/// every origin this way (a scheme "HTTPS" is refused, never sent in the clear).
boost::system::error_code validate_origin(const url_parts& origin);

/// The Host header for `origin`: `host`, `[v6]`, with `:port` unless it is the
/// scheme's default.
std::string host_header(const url_parts& origin);

/// `levee::http::error::invalid_request` when sending `req` would split or
/// change it: a target with a space or control character, a method or header
/// name that is not a token, a header value with CR, LF, NUL or another
/// control character. The client checks every request this way before
/// sending anything.
boost::system::error_code validate_request(const request& req);

class client;

namespace detail {
struct client_access;  // the non-template entry points (impl/http_request.ipp)
}  // namespace detail

/// An HTTP/1.1 client with a bounded keep-alive pool per origin, plain or TLS.
///
/// - Every request has one deadline (`client_options::timeout`, or the
///   request's own) covering the pool wait, resolution (c-ares: no lookup
///   waits for another, and IP literals never touch the resolver), connect,
///   the TLS handshake, write and read.
/// - At most `max_connections_per_host` connections per origin; requests
///   beyond that wait in a FIFO queue, each until its deadline.
/// - A connection goes back to the pool only after a complete response that
///   allows keep-alive, to a request that allows it too (the caller's
///   `Connection: close` is kept; HTTP/1.0 is not given keep-alive), with
///   nothing after it; one whose request failed or timed out is closed,
///   never reused. Taken from the pool, a connection the server closed, or
///   on which bytes arrived while it was idle (a `408`, a stray response, a
///   TLS alert), is closed unused. An idempotent request on a pooled
///   connection that fails before any byte of a response is sent again once,
///   on a new connection.
/// - The response is read while the request is written (RFC 9112, 9.6): a
///   final response that completes before the body is all sent (a 413, a
///   401 from a server that stops reading) is delivered, the rest of the
///   body is not sent, the connection is closed, and the request is never
///   sent again.
/// - Interim responses (`100 Continue`, `103 Early Hints`, any 1xx but 101)
///   are skipped; a response to HEAD has no body, nor have 204 and 304.
/// - Malformed input (a bad status line, oversized header, body, chunk header
///   or trailers, an early close, garbage) ends the request with an
///   error_code; memory stays bounded by the limits.
///
/// The two forms of every operation follow Asio's rule: the completion token
/// makes the shape. `co_await async_get(c, url, asio::use_awaitable)` yields
/// the response and throws `system_error`; `asio::as_tuple(asio::use_awaitable)`
/// yields `{ec, response}` and `asio::redirect_error(asio::use_awaitable, ec)`
/// sets `ec`, neither throwing.
///
/// Thread safety: a client may be shared by coroutines on any threads.
/// Lifetime: it must outlive its requests. Executor: connections, the
/// resolver and the idle timer run on the client's executor; each request
/// completes on its handler's associated executor. Pending work: only while
/// requests are in flight or idle connections are pooled (`close_idle` ends
/// it at once), and while c-ares finishes a lookup a request gave up on
/// (bounded by c-ares' own timeout: 2 tries of 2 s per server).
class client {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// Throws `std::invalid_argument` naming the member when `options` is invalid.
  explicit client(executor_type ex, client_options options = {});
  /// Requests waiting for a connection end with `operation_aborted`; requests
  /// on a connection finish normally; idle connections are closed.
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  executor_type get_executor() const noexcept;
  const client_options& options() const noexcept;
  client_stats stats() const noexcept;

  /// Closes every idle connection now (and stops the idle timer).
  void close_idle();

  /// Sends `req` to `origin` (its scheme, host and port; the request's own
  /// target is sent) and reads the response. `timeout` overrides the
  /// client's. The Host and User-Agent headers are added when missing; the
  /// Connection header is the caller's (none: HTTP/1.1 keep-alive).
  ///
  /// Completion signature: `void(error_code, response)` (`request_signature`);
  /// the response is empty when the error_code is set. Never completes
  /// inside the call.
  ///
  /// Cancellation: terminal cancellation of the handler's slot ends the
  /// request with `operation_aborted` and closes its connection (a request
  /// waiting for a connection leaves the queue; partial and total do that
  /// too).
  ///
  /// Executor: the request's I/O runs on strands of the client's executor;
  /// the handler runs on its associated executor (default: the client's).
  ///
  /// Lifetime: `origin` and `req` are moved in; the client must outlive the
  /// operation.
  ///
  /// Thread safety: any thread, concurrently with other requests.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_request(
      url_parts origin, request req, std::chrono::nanoseconds timeout,
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());
  /// The same with the client's timeout.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_request(
      url_parts origin, request req,
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());
  /// The same to `http://host:port`.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_request(
      std::string host, std::uint16_t port, request req, std::chrono::nanoseconds timeout,
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());
  /// The same to `http://host:port` with the client's timeout.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_request(
      std::string host, std::uint16_t port, request req,
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());

 private:
  friend struct detail::client_access;
  struct impl;
  std::shared_ptr<impl> impl_;
};

/// GET `url` (`http[s]://host[:port][/target]`).
///
/// Completion signature: `void(error_code, response)` (`request_signature`);
/// a URL that `parse_url` refuses completes with `error::invalid_url`. Never
/// completes inside the call.
///
/// Cancellation: as `client::async_request` (terminal: `operation_aborted`,
/// the connection closed).
///
/// Executor: the request runs on strands of the client's executor; the
/// handler on its associated executor (default: the client's).
///
/// Lifetime: `url` is moved in; `c` is borrowed and must outlive the
/// operation.
///
/// Thread safety: any thread, concurrently with other requests.
template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
              CompletionToken = boost::asio::default_completion_token_t<client::executor_type>>
auto async_get(
    client& c, std::string url,
    CompletionToken&& token = boost::asio::default_completion_token_t<client::executor_type>());

/// HEAD `url`: as `async_get` in every section; the response has no body.
template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
              CompletionToken = boost::asio::default_completion_token_t<client::executor_type>>
auto async_head(
    client& c, std::string url,
    CompletionToken&& token = boost::asio::default_completion_token_t<client::executor_type>());

/// Any request to `origin` (`"https://api.example.com"`, `"http://[::1]:8080"`:
/// a scheme and an authority, no path); the request's own target is sent.
/// As `async_get` in every section, and: an origin with a path or query
/// completes with `error::invalid_url`; `req` is moved in.
template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
              CompletionToken = boost::asio::default_completion_token_t<client::executor_type>>
auto async_send(
    client& c, std::string origin, request req,
    CompletionToken&& token = boost::asio::default_completion_token_t<client::executor_type>());

/// The awaitable helpers: the operations above with `asio::use_awaitable`,
/// so, by the same rule, they yield the response and throw
/// `boost::system::system_error` (signature: `asio::awaitable<response>`;
/// cancellation, executor, lifetime and thread safety: the operation's; the
/// awaiting coroutine resumes on its own executor). The line every user
/// writes first:
/// `co_await breaker(http_get(client, url))`. For the error_code form, give
/// the operation a token: `async_get(client, url, asio::as_tuple(asio::use_awaitable))`.
/// Like every awaitable, nothing happens until it is awaited; the arguments
/// are copied, so temporaries are fine.
boost::asio::awaitable<response> http_get(client& c, std::string url);
/// `async_head(c, url, asio::use_awaitable)`.
boost::asio::awaitable<response> http_head(client& c, std::string url);
/// `async_send(c, origin, req, asio::use_awaitable)`.
boost::asio::awaitable<response> send(client& c, std::string origin, request req);
/// `c.async_request(host, port, req, asio::use_awaitable)`: plain HTTP.
boost::asio::awaitable<response> send(client& c, std::string host, std::uint16_t port, request req);

}  // namespace levee::http

#include <levee/http/impl/client.hpp>
