// levee: one connection to Redis on Asio (levee::fleet's adapter).
//
// Asio owns the socket: TCP (every resolved address tried in turn), a Unix
// socket, or TLS over TCP (`asio::ssl::stream`, SNI and the host name
// checked). hiredis only formats commands (`redisFormatCommandArgv`) and
// parses replies (its `redisReader`), and its reader sees only bytes that
// `redis_reply_bound` let through: a reply bigger than `max_reply_size`
// ends the connection with a clear error before it is buffered.
//
// Commands may be queued as soon as `start` returned true: they are written
// once the connection (and the TLS handshake) is up. Replies are matched to
// commands in order; after SUBSCRIBE, pub/sub messages go to the
// subscription's handler. With a `timeout`, a command unanswered that long
// ends the connection, and an idle connection sends PING every
// `timeout / 4`, so that a silent server is noticed within about `timeout`
// even when nothing else is sent.
//
// Every member function, every handler and every completion runs on the
// strand given at construction. Handlers run exactly once: with the reply,
// or with null when the connection ends first. Completions hold the
// connection (shared_ptr).
//
// Only included by levee's fleet implementation: hiredis and OpenSSL stay
// out of the public headers.
#pragma once

#include <levee/fleet/detail/redis_reply_bound.hpp>

#include <hiredis/hiredis.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/local/stream_protocol.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/stream.hpp>
#include <boost/asio/steady_timer.hpp>

#include <array>
#include <chrono>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

namespace levee::detail {

/// Where a Redis server listens: "host:port", "[v6]:port" or a Unix socket
/// path (starting with '/').
struct redis_address {
  std::string host;  ///< empty for a Unix socket
  int port = 0;
  std::string path;  ///< the Unix socket

  /// False when `text` is neither form.
  static bool parse(const std::string& text, redis_address& out);
};

/// What `redis_connection::start` connects to, and how.
struct redis_target {
  /// Tried in order until one accepts (TCP).
  std::vector<boost::asio::ip::tcp::endpoint> endpoints;
  /// A Unix socket instead, when not empty.
  std::string path;
  /// TLS over TCP when set; the certificate must name `host` (SNI is sent
  /// when `host` is a name, not an IP literal).
  std::shared_ptr<boost::asio::ssl::context> tls;
  std::string host;
  /// The largest reply accepted (redis_reply_bound's charge).
  std::size_t max_reply_size = 4 * 1024 * 1024;
  /// 0: none. Otherwise a command unanswered this long ends the connection,
  /// and an idle connection sends PING every `timeout / 4`.
  std::chrono::nanoseconds timeout{0};
};

/// A client context verifying peers against the system's default trust
/// store, TLS 1.2 or later (`fleet_options::tls_context` left empty).
std::shared_ptr<boost::asio::ssl::context> default_tls_context();

class redis_connection : public std::enable_shared_from_this<redis_connection> {
 public:
  /// A reply, or null: the connection ended before the reply came.
  using reply_handler = std::function<void(redisReply*)>;

  /// `strand`: every call and completion is on it.
  explicit redis_connection(boost::asio::any_io_executor strand);
  ~redis_connection();
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  /// Starts connecting. `on_connect(error)` runs once, when the connection
  /// (and its TLS handshake) is up (`error` empty) or failed (then nothing
  /// else runs but the pending handlers, with null). `on_close(why)` runs
  /// once if an established connection ends by itself (the server closed
  /// it, an error, a timeout, a reply too large), before the pending
  /// handlers; never after `close()`. False when `target` is empty or the
  /// connection was started already.
  bool start(redis_target target, std::function<void(const std::string&)> on_connect,
             std::function<void(const std::string&)> on_close);

  /// Queues a command; `h` runs exactly once, with the reply or null. False
  /// (and `h` never runs) when the connection is closed.
  bool command(const std::vector<std::string>& argv, reply_handler h);

  /// SUBSCRIBE `channel`: `h` runs for the confirmation and for every
  /// message, and once more with null when the connection ends.
  bool subscribe(const std::string& channel, reply_handler h);

  /// Ends the connection now: pending handlers run with null.
  void close() noexcept;

  bool open() const noexcept { return state_ == state::connecting || state_ == state::up; }
  /// Commands sent and not answered yet.
  std::size_t pending() const noexcept { return pending_.size(); }
  /// When the oldest command not answered yet was queued (a PING or a
  /// SUBSCRIBE included); none when nothing is pending. The timeout ends the
  /// connection `timeout` after it.
  std::optional<std::chrono::steady_clock::time_point> oldest_pending() const noexcept {
    if (pending_.empty()) return std::nullopt;
    return pending_.front().sent;
  }
  /// Why the connection ended ("" while open or after `close()`).
  const std::string& error() const noexcept { return error_; }

 private:
  using tcp = boost::asio::ip::tcp;
  using steady = std::chrono::steady_clock;
  enum class state { idle, connecting, up, closed };
  struct request {
    reply_handler handler;  // empty: a heartbeat
    steady::time_point sent;
    bool subscribe = false;
  };

  template <class F>
  void with_stream(F&& f);
  void connect_next(std::size_t i);
  void established();
  void flush();
  void read();
  void received(std::size_t n);
  void dispatch(redisReply* reply);
  void beat();
  /// The connection ended by itself: on_close, then the pending handlers.
  void fail(std::string why);
  /// Closes the socket and runs every pending handler with null.
  void end() noexcept;
  bool queue(const std::vector<std::string>& argv, request r);

  boost::asio::any_io_executor strand_;
  redis_target target_;
  state state_ = state::idle;
  std::optional<tcp::socket> tcp_;
  std::optional<boost::asio::local::stream_protocol::socket> unix_;
  std::optional<boost::asio::ssl::stream<tcp::socket>> tls_;
  boost::asio::steady_timer timer_;
  std::deque<request> pending_;
  reply_handler subscription_;
  std::string out_, writing_;
  std::array<char, 16 * 1024> in_{};
  std::unique_ptr<redisReader, void (*)(redisReader*)> reader_;
  std::optional<redis_reply_bound> bound_;
  steady::time_point last_reply_{};
  std::function<void(const std::string&)> on_connect_, on_close_;
  std::string error_;
};

}  // namespace levee::detail
