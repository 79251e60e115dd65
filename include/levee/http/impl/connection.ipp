// levee: one connection of the HTTP client: connect (resolution, TCP, TLS
// with SNI and host name verification), then one exchange (write the
// request, read the final response). Compiled once in lib/.
#pragma once

#include <levee/core/error.hpp>
#include <levee/http/deadline.hpp>
#include <levee/http/impl/client_impl.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/http/error.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <array>
#include <cerrno>
#include <limits>
#include <memory>
#include <optional>
#include <type_traits>
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

connection::connection(const asio::any_io_executor& ex, ssl::context* tls,
                       std::shared_ptr<counters> c)
    : connection(on_strand_t{}, new_strand(ex), tls, std::move(c)) {}

connection::connection(on_strand_t, const asio::any_io_executor& strand, ssl::context* tls,
                       std::shared_ptr<counters> c)
    : executor(strand), stats(std::move(c)) {
  if (tls) {
    secure.emplace(executor, *tls);
  } else {
    plain.emplace(executor);
  }
}

connection::~connection() {
  if (established) stats->open.fetch_sub(1, std::memory_order_relaxed);
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

void write_head(const request& req, std::string& out) {
  out.clear();
  const auto method = req.method_string();
  const auto target = req.target();
  out.append(method.data(), method.size()).push_back(' ');
  out.append(target.data(), target.size());
  const unsigned version = req.version();
  out.append(" HTTP/", 6);
  out.push_back(static_cast<char>('0' + version / 10));  // as Beast: 11 is "1.1"
  out.push_back('.');
  out.push_back(static_cast<char>('0' + version % 10));
  out.append("\r\n", 2);
  for (const auto& field : req) {
    const auto name = field.name_string();
    const auto value = field.value();
    out.append(name.data(), name.size()).append(": ", 2);
    out.append(value.data(), value.size()).append("\r\n", 2);
  }
  out.append("\r\n", 2);
}

// Reading the final response, in steps around each read of the exchange's
// loop (`exchange`, which reads it in its own frame). Before a read: the
// response parsed so far, or the buffer to read into. Set: the read is over
// (done, or failed), with that error_code.
inline std::optional<boost::system::error_code> before_read(detail::response_reader& reader,
                                                            asio::mutable_buffer& space) {
  boost::system::error_code ec;
  if (reader.parse(ec)) return boost::system::error_code();
  if (ec) return ec;
  space = reader.prepare(ec);
  if (ec) return ec;
  return std::nullopt;
}

// After a read of `n` bytes that ended with `rec`.
inline std::optional<boost::system::error_code> after_read(detail::response_reader& reader,
                                                           boost::system::error_code rec,
                                                           std::size_t n) {
  reader.commit(n);
  boost::system::error_code ec;
  if (rec == asio::error::eof) {
    // The peer closed: what came before may be a response delimited by
    // the close.
    reader.finish(ec);
    return ec;
  }
  if (rec == ssl::error::stream_truncated) {
    // A TLS peer closed without close_notify before the response was
    // complete. A body delimited by the close cannot be told from one cut
    // by an attacker's FIN: an error (a response with a length that was
    // complete never gets here). Nothing at all: as a plain close.
    if (!reader.got_some()) {
      reader.finish(ec);
      return ec;
    }
    return rec;
  }
  if (rec) return rec;
  return std::nullopt;
}

/// A request's head and body as one buffer sequence. Not a `std::array` of
/// two: Asio's `consuming_buffers` for that type hands the stream the written
/// head as an empty first buffer, and Beast's `flat_stream` (under its
/// `ssl_stream`) then writes nothing, which ends the write: a TLS upload
/// stopped after its head (tests/http_tls_dns.cpp, the early 401). For any
/// other sequence Asio skips the buffers already written.
struct head_and_body {
  std::array<asio::const_buffer, 2> parts;
  const asio::const_buffer* begin() const noexcept { return parts.data(); }
  const asio::const_buffer* end() const noexcept { return parts.data() + parts.size(); }
};

/// Sends `head` and `body` with one non-blocking `sendmsg`: the bytes the
/// socket took, 0 when it took none or failed (the asynchronous write then
/// meets the same error and reports it).
inline std::size_t send_now(tcp::socket& s, const std::string& head,
                            const std::string& body) noexcept {
  std::array<::iovec, 2> parts{{{const_cast<char*>(head.data()), head.size()},
                                {const_cast<char*>(body.data()), body.size()}}};
  ::msghdr msg{};
  msg.msg_iov = parts.data();
  msg.msg_iovlen = body.empty() ? 1 : 2;
  const auto n = ::sendmsg(s.native_handle(), &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  return n > 0 ? static_cast<std::size_t>(n) : 0;
}

/// The request's write, which runs beside the read of the response. On the
/// connection's strand.
struct write_state {
  std::size_t size = 0;     // the request's bytes
  std::size_t written = 0;  // as the write's completion reports them
  bool done = false;
  bool stop = false;  // the reader is done with the write: no further step
  boost::system::error_code ec;
  std::optional<asio::steady_timer> wake;  // the reader waits on it when done first
  bool whole() const noexcept { return done && !ec && written == size; }
};

/// `asio::async_write`'s completion condition: everything, in write_some
/// calls as large as the stream takes, unless the reader has stopped the
/// write. (`transfer_all` hands each at most 64 KiB: a large upload over TCP
/// would cost a system call, and a timer of the stream's, per 64 KiB.)
struct transfer_whole {
  const write_state* w;
  std::size_t operator()(const boost::system::error_code& ec, std::size_t) const noexcept {
    return ec || w->stop ? 0 : std::numeric_limits<std::size_t>::max();
  }
};

/// How long the reader waits, once it has stopped the write, for the write's
/// completion before it closes the socket under it. A whole request's
/// completion is already queued by then and comes within microseconds; a
/// step of a TLS write already queued may start one more write on the
/// socket, which the close ends.
inline constexpr auto write_grace = std::chrono::milliseconds(100);

// Writes `req` and reads the final response at the same time (RFC 9112,
// 9.6): a server may answer before it has read the body (a 413, a 401) and
// then stop reading or close. A final response complete before the request
// was written whole is delivered, the rest of the body is not sent, and the
// connection is marked `early` (never pooled, the request never sent again).
// One read and one write are outstanding at once, both on the connection's
// strand, which Beast's streams (TCP and TLS) allow. The write always ends
// before this returns: the request and the stream it uses are freed soon
// after.
//
// A read that ends before the write's completion has run does not mean the
// write is unfinished: the two completions are posted in order, but two
// threads of the io_context can hand them to the strand in the other order
// (tests/http_threads.cpp, "a response that reaches the strand before its
// write's completion"). So the reader stops the write (no further step, and
// a step waiting on the socket is cancelled) and waits for its completion,
// which says how much was written: the connection is `early` only if that is
// less than the whole request.
template <class Stream>
asio::awaitable<boost::system::error_code> exchange(levee::detail::own_frame_t, connection& c,
                                                    Stream& s, request& req,
                                                    detail::response_reader& reader) {
  // A cancellation must not throw out of here with the write still running.
  co_await asio::this_coro::throw_if_cancelled(false);
  // The head and the body as they are, in one gathered write: the bytes
  // Beast's serializer writes, without its per-buffer machinery (bench/README.md,
  // "CPU per request"). Never chunked: after `prepare_payload` the request's
  // `exchange` refuses any Transfer-Encoding left, so a body is framed by its
  // Content-Length alone.
  write_head(req, c.head);
  // Plain TCP: one non-blocking send first, the one Asio's write would make
  // at once. A request the socket's buffer takes whole (nearly every one)
  // is then written, with no asynchronous write, no timer of the stream's
  // and no completion to wait for (bench/README.md, "The client's frames
  // from levee's cache, and the request sent at once"). What it did not
  // take, and every request over TLS, goes out asynchronously beside the
  // read.
  std::size_t sent = 0;
  if constexpr (std::is_same_v<Stream, beast::tcp_stream>)
    sent = send_now(s.socket(), c.head, req.body());
  std::shared_ptr<write_state> w;
  if (sent != c.head.size() + req.body().size()) {
    w = std::make_shared<write_state>();
    auto written = [w](boost::system::error_code ec, std::size_t n) {
      w->done = true;  // on the connection's strand (the stream's executor)
      w->ec = ec;
      w->written = n;
      if (w->wake) w->wake->cancel();
    };
    const std::size_t body_sent = sent > c.head.size() ? sent - c.head.size() : 0;
    w->size = c.head.size() + req.body().size() - sent;
    asio::async_write(
        s, head_and_body{{asio::buffer(c.head) + sent, asio::buffer(req.body()) + body_sent}},
        transfer_whole{w.get()}, std::move(written));
  }
  // The response, read in this frame. The caller's cancellation is checked
  // before each read, not thrown (see above).
  boost::system::error_code ec;
  for (;;) {
    asio::mutable_buffer space;
    if (auto over = before_read(reader, space)) {
      ec = *over;
      break;
    }
    const asio::cancellation_state cs = co_await asio::this_coro::cancellation_state;
    if (cs.cancelled() != asio::cancellation_type::none) {
      ec = asio::error::operation_aborted;
      break;
    }
    auto [rec, n] = co_await s.async_read_some(space, asio::as_tuple(asio::use_awaitable));
    if (auto over = after_read(reader, rec, n)) {
      ec = *over;
      break;
    }
  }
  bool closed = false;
  if (w && !w->done) {
    // The response came (or the read failed) before the write's completion
    // ran: stop the write. Its completion may already be on its way (the
    // request written whole), or a step may be waiting for a server that
    // stopped reading: the cancel ends that one. A step already queued
    // starts no next one (`stop`); past the grace, the close ends whatever
    // a TLS write still started.
    w->stop = true;
    boost::system::error_code ignored;
    c.tcp().socket().cancel(ignored);
    w->wake.emplace(s.get_executor(), steady::now() + write_grace);
    co_await w->wake->async_wait(asio::as_tuple(asio::use_awaitable));
    if (!w->done) {
      // Closed here: never pooled, even if the write's completion, late,
      // says the request went out whole.
      closed = true;
      c.tcp().close();
      w->wake->expires_at(steady::time_point::max());
      while (!w->done) co_await w->wake->async_wait(asio::as_tuple(asio::use_awaitable));
    }
  }
  c.early = w && !ec && (closed || !w->whole());
  co_await asio::this_coro::throw_if_cancelled(true);
  // The stream's deadline closes the socket under both: whichever saw it says so.
  if (w && ec && ec != asio::error::operation_aborted && w->ec == beast::error::timeout)
    ec = beast::error::timeout;
  co_return ec;
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
// request, reads the response; a connection that goes back to the pool has
// its timeout cleared here.
asio::awaitable<boost::system::error_code> client::impl::converse(
    levee::detail::own_frame_t, connection& c, const url_parts& origin, bool reused, request& req,
    detail::response_reader& reader, steady::time_point deadline,
    std::optional<steady::time_point> carried) {
  if (!reused) {
    if (auto ec = co_await connect(levee::detail::own_frame, c, origin, deadline)) co_return ec;
  }
  // What is left of the caller's deadline, once connected, goes with each
  // attempt; with less than 1 ms left, the attempt is not sent.
  if (carried && options.send_deadline) {
    auto value = format_deadline(*carried - steady::now());
    if (!value) co_return levee::error::deadline_exceeded;
    req.set(options.deadline_header, *value);
    stats.deadlines_sent.fetch_add(1, std::memory_order_relaxed);
  }
  client_detail::set_expiry(c.tcp(), deadline);
  const auto ec =
      c.secure
          ? co_await client_detail::exchange(levee::detail::own_frame, c, *c.secure, req, reader)
          : co_await client_detail::exchange(levee::detail::own_frame, c, *c.plain, req, reader);
  c.tcp().expires_never();
  c.leftover = c.tls_leftover();
  co_return ec;
}

}  // namespace levee::http
