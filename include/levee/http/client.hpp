/// \file
/// An HTTP/1.1 client over Beast, plain and TLS, made to be guarded.
#pragma once

#include <levee/http/options.hpp>

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

namespace levee::http {

class client;

namespace detail {
struct client_access;  // the non-template entry points (http/impl/request.ipp)
}  // namespace detail
namespace client_detail {
struct request_plan;  // a request its initiation prepared (http/impl/client_impl.hpp)
}  // namespace client_detail

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
/// - Inside `with_deadline` (read from the handler's associated executor,
///   `levee::remaining_deadline`), the request's deadline is capped by the
///   caller's and what is left is sent in `client_options::deadline_header`;
///   with less than 1 ms left nothing is sent. Cut short by it, a request
///   ends with `levee::error::deadline_exceeded` (docs/deadlines.md).
///
/// The two forms of every operation follow Asio's rule: the completion token
/// makes the shape. `co_await async_get(c, url, asio::use_awaitable)` yields
/// the response and throws `system_error`; `asio::as_tuple(asio::use_awaitable)`
/// yields `{ec, response}` and `asio::redirect_error(asio::use_awaitable, ec)`
/// sets `ec`, neither throwing.
///
/// Thread safety: a client may be shared by coroutines on any threads.
/// Lifetime: it must outlive its requests. Executor: connections and the
/// resolver run on the client's executor; each request completes on its
/// handler's associated executor. Pending work: only while requests are in
/// flight, and while c-ares finishes a lookup a request gave up on (bounded
/// by c-ares' own timeout: 2 tries of 2 s per server). Pooled idle
/// connections are no pending work (the client keeps no idle timer), so
/// `io_context::run()` returns when the last request is done; they are
/// closed lazily, when the pools are next used past `idle_timeout`, or at
/// once by `close_idle` or the client's destruction.
class client {
 public:
  /// The type of `get_executor()`.
  using executor_type = boost::asio::any_io_executor;

  /// A client with no connection yet.
  /// \param ex Where its connections and resolver run.
  /// \param options Its limits; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  explicit client(executor_type ex, client_options options = {});
  /// Requests waiting for a connection end with `operation_aborted`; requests
  /// on a connection finish normally; idle connections are closed.
  ~client();
  client(const client&) = delete;
  client& operator=(const client&) = delete;

  /// The client's executor.
  /// \return the executor given at construction.
  executor_type get_executor() const noexcept;
  /// The options it was constructed with.
  /// \return them, as validated.
  const client_options& options() const noexcept;
  /// The client's counters.
  /// \return them, summed over its origins now.
  client_stats stats() const noexcept;

  /// Closes every idle connection now, instead of at the pools' next use past
  /// `client_options::idle_timeout` (for example before a long quiet period,
  /// so that their sockets do not wait open).
  void close_idle();

  /// Sends `req` to `origin` (its scheme, host and port; the request's own
  /// target is sent) and reads the response. `timeout` overrides the
  /// client's. The Host and User-Agent headers are added when missing
  /// (right after the start line); the Connection header is the caller's
  /// (none: HTTP/1.1 keep-alive).
  ///
  /// Completion signature: `void(error_code, response)` (`request_signature`);
  /// the response is empty when the error_code is set. Never completes
  /// inside the call.
  ///
  /// Cancellation: terminal cancellation of the handler's slot ends the
  /// request with `operation_aborted` and closes its connection. Partial and
  /// total do that too before anything was sent: a request waiting for a
  /// connection leaves the queue, and one cancelled before it started sends
  /// nothing and keeps no connection from the pool.
  ///
  /// Executor: the request's I/O runs on strands of the client's executor;
  /// the handler runs on its associated executor (default: the client's).
  ///
  /// Lifetime: `origin` and `req` are moved in; the client must outlive the
  /// operation.
  ///
  /// Thread safety: any thread, concurrently with other requests.
  ///
  /// \param origin Where to send it (`parse_url` makes one); an invalid
  /// origin completes with `error::invalid_url`.
  /// \param req The request; one that `validate_request` refuses, or with a
  /// Transfer-Encoding left after `prepare_payload` (docs/http.md), completes
  /// with `error::invalid_request`, nothing sent.
  /// \param timeout The request's deadline.
  /// \param token The completion token.
  /// \return what `token` makes of the operation (as `asio::async_initiate`).
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_request(
      url_parts origin, request req, std::chrono::nanoseconds timeout,
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());
  /// The same with the client's timeout.
  /// \param origin Where to send it.
  /// \param req The request.
  /// \param token The completion token.
  /// \return what `token` makes of the operation.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_request(
      url_parts origin, request req,
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());
  /// The same to `http://host:port`.
  /// \param host A host name or an IP address (IPv6 without brackets).
  /// \param port The port.
  /// \param req The request.
  /// \param timeout The request's deadline.
  /// \param token The completion token.
  /// \return what `token` makes of the operation.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_request(
      std::string host, std::uint16_t port, request req, std::chrono::nanoseconds timeout,
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());
  /// The same to `http://host:port` with the client's timeout.
  /// \param host A host name or an IP address (IPv6 without brackets).
  /// \param port The port.
  /// \param req The request.
  /// \param token The completion token.
  /// \return what `token` makes of the operation.
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
                CompletionToken = boost::asio::default_completion_token_t<executor_type>>
  auto async_request(
      std::string host, std::uint16_t port, request req,
      CompletionToken&& token = boost::asio::default_completion_token_t<executor_type>());

 private:
  friend struct detail::client_access;
  friend struct client_detail::request_plan;
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
/// Executor: the request runs on the client's executor (on a strand of it
/// when the handler can be cancelled) and its I/O on strands of it; the
/// handler on its associated executor (default: the client's).
///
/// Lifetime: `url` is moved in; `c` is borrowed and must outlive the
/// operation.
///
/// Thread safety: any thread, concurrently with other requests.
///
/// \param c The client.
/// \param url The URL.
/// \param token The completion token.
/// \return what `token` makes of the operation (as `asio::async_initiate`).
template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
              CompletionToken = boost::asio::default_completion_token_t<client::executor_type>>
auto async_get(
    client& c, std::string url,
    CompletionToken&& token = boost::asio::default_completion_token_t<client::executor_type>());

/// HEAD `url`: as `async_get` in every section; the response has no body.
/// \param c The client.
/// \param url The URL.
/// \param token The completion token.
/// \return what `token` makes of the operation.
template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
              CompletionToken = boost::asio::default_completion_token_t<client::executor_type>>
auto async_head(
    client& c, std::string url,
    CompletionToken&& token = boost::asio::default_completion_token_t<client::executor_type>());

/// Any request to `origin` (`"https://api.example.com"`, `"http://[::1]:8080"`:
/// a scheme and an authority, no path); the request's own target is sent.
/// As `async_get` in every section, and: an origin with a path or query
/// completes with `error::invalid_url`; `req` is moved in.
/// \param c The client.
/// \param origin The origin.
/// \param req The request.
/// \param token The completion token.
/// \return what `token` makes of the operation.
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
///
/// \param c The client; borrowed.
/// \param url The URL.
/// \return the awaitable: `async_get(c, url, asio::use_awaitable)`.
boost::asio::awaitable<response> http_get(client& c, std::string url);
/// `async_head(c, url, asio::use_awaitable)`, as `http_get`.
/// \param c The client; borrowed.
/// \param url The URL.
/// \return the awaitable.
boost::asio::awaitable<response> http_head(client& c, std::string url);
/// `async_send(c, origin, req, asio::use_awaitable)`, as `http_get`.
/// \param c The client; borrowed.
/// \param origin The origin.
/// \param req The request.
/// \return the awaitable.
boost::asio::awaitable<response> send(client& c, std::string origin, request req);
/// `c.async_request(host, port, req, asio::use_awaitable)`: plain HTTP, as
/// `http_get`.
/// \param c The client; borrowed.
/// \param host A host name or an IP address.
/// \param port The port.
/// \param req The request.
/// \return the awaitable.
boost::asio::awaitable<response> send(client& c, std::string host, std::uint16_t port, request req);

}  // namespace levee::http

#include <levee/http/impl/client.hpp>
