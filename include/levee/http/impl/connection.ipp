// levee: one connection of the HTTP client: connect (resolution, TCP, TLS
// with SNI and host name verification), then one exchange (write the
// request, read the final response: http/impl/exchange.ipp). Compiled once
// in lib/.
#pragma once

#include <levee/core/error.hpp>
#include <levee/http/deadline.hpp>
#include <levee/http/impl/client_impl.hpp>
#include <levee/http/impl/exchange.ipp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/assert.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <sys/socket.h>

#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>
#include <vector>

namespace levee::http {
namespace client_detail {

using tcp = asio::ip::tcp;

/// `now + d`, saturating at the clock's end (a timeout of `max()` is "never").
steady::time_point deadline_after(steady::time_point now, std::chrono::nanoseconds d) noexcept {
  const auto room = steady::time_point::max() - now;
  if (d >= std::chrono::duration_cast<std::chrono::nanoseconds>(room))
    return steady::time_point::max();
  return now + std::chrono::duration_cast<steady::duration>(d);
}

inline void set_expiry(beast::tcp_stream& s, steady::time_point deadline) {
  if (deadline == steady::time_point::max()) {
    s.expires_never();
  } else {
    s.expires_at(deadline);
  }
}

/// A new strand, for a request and the connections it opens (see
/// `connection`): Beast's stream and its timeout handler are not
/// thread-safe, so every operation on a connection, its timeout and its
/// close run there. Built on the io_context's own executor
/// when there is one (stored inline; a strand of the type-erased executor would
/// hide behind a reference count that ThreadSanitizer misreads).
asio::any_io_executor new_strand(const asio::any_io_executor& ex) {
  using io_executor = asio::io_context::executor_type;
  if (const auto* io = ex.target<io_executor>()) return asio::make_strand(*io);
  if (const auto* s = ex.target<asio::strand<io_executor>>())
    return asio::make_strand(s->get_inner_executor());
  return asio::make_strand(ex);
}

asio::any_io_executor unstranded(const asio::any_io_executor& ex) {
  using io_executor = asio::io_context::executor_type;
  if (const auto* s = ex.target<asio::strand<io_executor>>()) return s->get_inner_executor();
  return ex;
}

connection::connection(const asio::any_io_executor& ex, ssl::context* tls,
                       std::shared_ptr<counters> c)
    : connection(on_strand_t{}, new_strand(ex), tls, std::move(c)) {}

connection::connection(on_strand_t, const asio::any_io_executor& strand, ssl::context* tls,
                       std::shared_ptr<counters> c)
    : executor(strand), stats(std::move(c)) {
  if (tls) {
    secure.emplace(executor, *tls);
    // Asio's engine sets SSL_MODE_RELEASE_BUFFERS on every SSL object:
    // OpenSSL then frees its record buffers (a record's maximum each way,
    // 16 KiB of data and its overhead) whenever they are empty, and
    // allocates them again for the next record: three large allocations and
    // frees a request on a kept-alive connection. The client keeps them for
    // the connection's life instead, as OpenSSL does by default, idle
    // connections included (docs/http.md; bench/README.md, "TLS record
    // buffers kept").
    SSL_clear_mode(secure->native_handle(), SSL_MODE_RELEASE_BUFFERS);
  } else {
    plain.emplace(executor);
  }
}

connection::~connection() {
  if (established) stats->open.fetch_sub(1, std::memory_order_relaxed);
  if (watched) watched->c = nullptr;  // on the strand, as the timer's handlers
}

// Taken from the pool: still open, and nothing arrived while it was idle (a
// server's close, a 408 it wrote before closing, a stray response, a TLS
// alert). One non-blocking peek.
bool connection::usable() {
  if (tls_leftover()) return false;
  char byte = 0;
  const auto n = ::recv(tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n >= 0) return false;  // 0: closed by the server; > 0: bytes nobody asked for
  return errno == EAGAIN || errno == EWOULDBLOCK;
}

// TLS bytes already read off the socket but not yet returned: a decrypted
// record, or records still in the engine's buffer (two records in one TCP
// segment: the peek on the socket cannot see the second).
bool connection::tls_leftover() {
  if (!secure) return false;
  SSL* ssl = secure->native_handle();
  return SSL_pending(ssl) > 0 || SSL_has_pending(ssl) || BIO_ctrl_pending(SSL_get_rbio(ssl)) > 0;
}

void connection_closer::operator()(connection* c) const {
  // Counted closed now; the socket closes a moment later.
  if (std::exchange(c->established, false)) c->stats->open.fetch_sub(1, std::memory_order_relaxed);
  const asio::any_io_executor ex = c->executor;
  // Destroyed unrun with the io_context at shutdown: the closure still owns it.
  asio::post(ex, [owned = std::unique_ptr<connection>(c)] {});
}

bool idempotent(beast::http::verb v) noexcept {
  using beast::http::verb;
  return v == verb::get || v == verb::head || v == verb::options || v == verb::trace ||
         v == verb::put || v == verb::delete_;
}

void write_head(const request& req, const added_fields& added, std::string& out) {
  // Measured, then written into `out` (the connection's, which keeps its
  // capacity) through a pointer: one resize instead of an append per piece
  // (bench/README.md, "The URL split in one pass").
  const auto method = req.method_string();
  const auto target = req.target();
  constexpr std::string_view crlf = "\r\n", host_name = "Host: ", agent_name = "User-Agent: ";
  std::size_t size = method.size() + 1 + target.size() + 9 + 2 + 2;  // " HTTP/1.1" CRLF ... CRLF
  if (added.host) size += host_name.size() + added.host->size() + 2;
  if (added.user_agent) size += agent_name.size() + added.user_agent->size() + 2;
  for (const auto& field : req) size += field.name_string().size() + 2 + field.value().size() + 2;
  out.resize(size);
  char* at = out.data();
  const auto put = [&at](std::string_view piece) noexcept {
    if (!piece.empty()) std::memcpy(at, piece.data(), piece.size());
    at += piece.size();
  };
  put({method.data(), method.size()});
  *at++ = ' ';
  put({target.data(), target.size()});
  const unsigned version = req.version();
  put(" HTTP/");
  *at++ = static_cast<char>('0' + version / 10);  // as Beast: 11 is "1.1"
  *at++ = '.';
  *at++ = static_cast<char>('0' + version % 10);
  put(crlf);
  if (added.host) {
    put(host_name);
    put(*added.host);
    put(crlf);
  }
  if (added.user_agent) {
    put(agent_name);
    put(*added.user_agent);
    put(crlf);
  }
  for (const auto& field : req) {
    const auto name = field.name_string();
    const auto value = field.value();
    put({name.data(), name.size()});
    put(": ");
    put({value.data(), value.size()});
    put(crlf);
  }
  put(crlf);
  BOOST_ASSERT(at == out.data() + out.size());
}

}  // namespace client_detail

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;

asio::awaitable<boost::system::error_code> client::impl::connect(levee::detail::own_frame_t,
                                                                 connection& c,
                                                                 const url_parts& origin,
                                                                 steady::time_point deadline) {
  std::vector<tcp::endpoint> endpoints;
  boost::system::error_code ec;
  const auto address = asio::ip::make_address(origin.host, ec);
  const bool ip_literal = !ec;
  if (ip_literal) {
    endpoints.emplace_back(address, origin.port);  // an IP literal: no resolver
  } else {
    auto [rec, found, ttl] = co_await resolver.async_resolve(origin.host, origin.port, deadline,
                                                             asio::as_tuple(asio::use_awaitable));
    (void)ttl;  // the client resolves per connection; levee::http::basic_name_watch uses it
    if (rec) co_return rec;
    endpoints = std::move(found);
  }
  client_detail::set_expiry(c.tcp(), deadline);
  auto [cec, endpoint] =
      co_await c.tcp().async_connect(endpoints, asio::as_tuple(asio::use_awaitable));
  (void)endpoint;
  if (cec) co_return cec;
  c.established = true;
  stats.open.fetch_add(1, std::memory_order_relaxed);
  stats.opened.fetch_add(1, std::memory_order_relaxed);
  boost::system::error_code ignored;
  c.tcp().socket().set_option(tcp::no_delay(true), ignored);
  if (c.secure) {
    auto& s = *c.secure;
    // SNI for names (not for IP literals, RFC 6066), and the certificate
    // must name the host, whatever the context's own callback says.
    ::ERR_clear_error();
    if (!ip_literal && !SSL_set_tlsext_host_name(s.native_handle(), origin.host.c_str())) {
      const auto err = ::ERR_get_error();
      co_return err
          ? boost::system::error_code(static_cast<int>(err), asio::error::get_ssl_category())
          : boost::system::error_code(asio::error::invalid_argument);
    }
    s.set_verify_mode(ssl::verify_peer);
    s.set_verify_callback(ssl::host_name_verification(origin.host));
    auto [hec] =
        co_await s.async_handshake(ssl::stream_base::client, asio::as_tuple(asio::use_awaitable));
    if (hec) co_return hec;
  }
  co_return boost::system::error_code();
}

// On the connection's strand: connects a new connection, writes the
// request, reads the response.
asio::awaitable<boost::system::error_code> client::impl::converse(
    levee::detail::own_frame_t, connection& c, const url_parts& origin, bool reused, request& req,
    const client_detail::added_fields& added, detail::response_reader& reader,
    steady::time_point deadline, std::optional<steady::time_point> carried) {
  if (!reused) {
    if (auto ec = co_await connect(levee::detail::own_frame, c, origin, deadline)) co_return ec;
    // The exchange's deadline is its own timer's (`watch_begin`), not the
    // stream's, which would arm a timer for every read and write.
    c.tcp().expires_never();
  }
  // What is left of the caller's deadline, once connected, goes with each
  // attempt; with less than 1 ms left, the attempt is not sent.
  if (carried && options.send_deadline) {
    auto value = format_deadline(*carried - steady::now());
    if (!value) co_return levee::error::deadline_exceeded;
    req.set(options.deadline_header, *value);
    stats.deadlines_sent.fetch_add(1, std::memory_order_relaxed);
  }
  const auto ec = c.secure
                      ? co_await client_detail::exchange(levee::detail::own_frame, c, *c.secure,
                                                         req, added, reader, deadline)
                      : co_await client_detail::exchange(levee::detail::own_frame, c, *c.plain, req,
                                                         added, reader, deadline);
  c.leftover = c.tls_leftover();
  co_return ec;
}

}  // namespace levee::http
