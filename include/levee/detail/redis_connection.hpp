// levee: one hiredis async connection driven by Asio (levee::fleet's adapter).
//
// hiredis's async context asks its event library to watch its socket through
// five hooks (addRead, delRead, addWrite, delWrite, cleanup); here they start
// `async_wait(wait_read / wait_write)` on an `asio::posix::stream_descriptor`
// that does NOT own the socket (hiredis does: the descriptor is `release()`d
// before hiredis closes it), and the completions call
// `redisAsyncHandleRead/Write`. Every member function, every hiredis call and
// every completion runs on the strand given at construction.
//
// Lifetime: hiredis frees its context by itself when the connection fails;
// `close()` and the destructor free it otherwise. Either way every reply
// handler still pending is invoked once with a null reply, so that a handler
// always runs exactly once. Completions hold the connection (shared_ptr).
//
// Only included by levee's fleet implementation: hiredis stays out of the
// public headers.
#pragma once

#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>

#include <functional>
#include <memory>
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

class redis_connection : public std::enable_shared_from_this<redis_connection> {
 public:
  /// A reply, or null: the connection ended before the reply came.
  using reply_handler = std::function<void(redisReply*)>;

  /// `strand`: every call and completion is on it.
  explicit redis_connection(boost::asio::any_io_executor strand);
  ~redis_connection();
  redis_connection(const redis_connection&) = delete;
  redis_connection& operator=(const redis_connection&) = delete;

  /// Starts connecting to `ip` (a numeric address) and `port`, or to the Unix
  /// socket `path` when `path` is not empty. `on_connect(ok)` runs once when
  /// the connection is established or failed; `on_close()` runs once (posted)
  /// when it ends for any reason after `start` returned true.
  bool start(const std::string& ip, int port, const std::string& path,
             std::function<void(bool)> on_connect, std::function<void()> on_close);

  /// Queues a command; `h` runs exactly once, with the reply or null. False
  /// (and `h` never runs) when the connection is closed or closing.
  bool command(const std::vector<std::string>& argv, reply_handler h);

  /// SUBSCRIBE `channel`: `h` runs for the confirmation and for every
  /// message, and once more with null when the connection ends.
  bool subscribe(const std::string& channel, reply_handler h);

  /// Ends the connection now: pending handlers run with null.
  void close() noexcept;

  bool open() const noexcept { return ac_ != nullptr; }
  /// Commands sent and not answered yet.
  std::size_t pending() const noexcept { return pending_; }

 private:
  struct request;
  static void on_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_sub_reply(redisAsyncContext* ac, void* reply, void* privdata);
  static void on_connected(const redisAsyncContext* ac, int status);
  static void add_read(void* p);
  static void del_read(void* p);
  static void add_write(void* p);
  static void del_write(void* p);
  static void cleanup(void* p);

  void wait_read();
  void wait_write();
  void released() noexcept;  // hiredis is freeing the context

  boost::asio::any_io_executor strand_;
  redisAsyncContext* ac_ = nullptr;
  std::unique_ptr<boost::asio::posix::stream_descriptor> fd_;
  bool want_read_ = false, want_write_ = false;
  bool reading_ = false, writing_ = false;
  std::size_t pending_ = 0;
  std::function<void(bool)> on_connect_;
  std::function<void()> on_close_;
  reply_handler subscription_;
};

}  // namespace levee::detail
