// levee: one exchange of the HTTP client on a connection: the request
// written beside the read of its final response (RFC 9112, 9.6), on the
// connection's strand. Part of http/impl/connection.ipp, compiled once in
// lib/.
#pragma once

#include <levee/core/detail/own_awaitable.hpp>
#include <levee/http/impl/client_impl.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>

#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <limits>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace levee::http {
namespace client_detail {

using tcp = asio::ip::tcp;

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
  std::size_t size = 0;     // the bytes given to the asynchronous write
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

// ---- an exchange's deadline: one timer an exchange (client_impl.hpp,
// `connection::watch`). Set and cancelled on the connection's strand.

/// The exchange begins: its deadline is watched.
inline void watch_begin(connection& c, steady::time_point deadline) {
  c.timed_out = false;
  if (deadline == steady::time_point::max()) return;
  if (!c.watch) {
    // The timer's handler runs on the io_context itself, not on the strand:
    // a cancelled one (nearly every one) does nothing there.
    c.watch.emplace(unstranded(c.executor));
    c.watched = std::make_shared<connection::watch_link>(connection::watch_link{&c, c.executor});
  }
  c.watch->expires_at(deadline);
  c.watching = true;
  c.watch->async_wait(
      [link = c.watched, generation = c.watch_generation](boost::system::error_code ec) {
        if (ec) return;  // cancelled: the exchange ended first
        asio::post(link->strand, [link, generation] {
          connection* conn = link->c;
          // Gone, or the exchange ended as the timer fired: nothing to end.
          if (!conn || conn->watch_generation != generation) return;
          // The exchange's deadline: its read (and a write still running)
          // end with the socket, which is never used again, as a Beast
          // stream's timeout does.
          conn->timed_out = true;
          conn->tcp().close();
        });
      });
}

/// The exchange ends: a timer still set is cancelled, and a handler of it
/// already on its way finds the generation moved on.
inline void watch_end(connection& c) {
  ++c.watch_generation;
  if (!std::exchange(c.watching, false)) return;
  c.watch->cancel();
}

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
                                                    const added_fields& added,
                                                    detail::response_reader& reader,
                                                    steady::time_point deadline) {
  constexpr bool plain = std::is_same_v<Stream, beast::tcp_stream>;
  // A cancellation must not throw out of here with the write still running.
  co_await asio::this_coro::throw_if_cancelled(false);
  // The head and the body as they are, in one gathered write: the bytes
  // Beast's serializer writes, without its per-buffer machinery (bench/README.md,
  // "CPU per request"). Never chunked: after `prepare_payload` the request's
  // `exchange` refuses any Transfer-Encoding left, so a body is framed by its
  // Content-Length alone.
  write_head(req, added, c.head);
  // Plain TCP: one non-blocking send first, the one Asio's write would make
  // at once. A request the socket's buffer takes whole (nearly every one)
  // is then written, with no asynchronous write, no timer of the stream's
  // and no completion to wait for (bench/README.md, "The client's frames
  // from levee's cache, and the request sent at once"). What it did not
  // take, and every request over TLS, goes out asynchronously beside the
  // read.
  watch_begin(c, deadline);
  std::size_t sent = 0;
  if constexpr (plain) sent = send_now(s.socket(), c.head, req.body());
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
    // A plain connection's read goes to its socket, a TLS connection's
    // through its stream, whose TCP stream has no expiry during the
    // exchange: the deadline is the exchange's timer's (`watch_begin`), not
    // a timer of Beast's per read.
    boost::system::error_code rec;
    std::size_t n = 0;
    if constexpr (plain) {
      std::tie(rec, n) = co_await s.socket().async_read_some(
          space, asio::as_tuple(levee::detail::use_own_awaitable));
    } else {
      std::tie(rec, n) =
          co_await s.async_read_some(space, asio::as_tuple(levee::detail::use_own_awaitable));
    }
    if (auto over = after_read(reader, rec, n)) {
      ec = *over;
      break;
    }
  }
  // The read is over: its timer too. (A write still running ends within
  // the grace below, which never reaches past the deadline.)
  watch_end(c);
  bool closed = false;
  if (w && !w->done) {
    // The response came (or the read failed) before the write's completion
    // ran: stop the write. Its completion may already be on its way (the
    // request written whole), or a step may be waiting for a server that
    // stopped reading: the cancel ends that one. A step already queued
    // starts no next one (`stop`); past the grace (or the request's
    // deadline, if it comes first), the close ends whatever a TLS write
    // still started.
    w->stop = true;
    boost::system::error_code ignored;
    c.tcp().socket().cancel(ignored);
    w->wake.emplace(s.get_executor(),
                    std::min(deadline, deadline_after(steady::now(), write_grace)));
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
  // The exchange's timer closed the socket under the read (or the write).
  if (ec && c.timed_out) co_return beast::error::timeout;
  co_return ec;
}

}  // namespace client_detail
}  // namespace levee::http
