// levee: the HTTP client's inside, shared by its compiled parts:
// http/impl/connection.ipp (one connection: connect, TLS, one exchange),
// http/impl/pool.ipp (the per-origin pools: slots, waiters, idle connections)
// and http/impl/request.ipp (one request, and the public entry points).
#pragma once

#include <levee/core/detail/block_cache.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/slot_waiter.hpp>
#include <levee/core/detail/string_hash.hpp>
#include <levee/http/client.hpp>
#include <levee/http/detail/origin.hpp>
#include <levee/http/detail/resolver.hpp>
#include <levee/http/detail/response_reader.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace levee::http::client_detail {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;
using steady = std::chrono::steady_clock;

/// `now + d`, saturating at the clock's end (a timeout of `max()` is "never").
steady::time_point deadline_after(steady::time_point now, std::chrono::nanoseconds d) noexcept;

/// The client's counters (`client_stats`), shared with its connections.
struct counters {
  std::atomic<std::uint64_t> requests{0}, opened{0}, reused{0}, stale{0}, retried{0},
      deadlines_sent{0};
  std::atomic<std::size_t> open{0}, waiting{0}, peak_waiting{0};
};

/// A strand of its own for a connection or a request (see http_connection.ipp).
asio::any_io_executor new_strand(const asio::any_io_executor& ex);
/// The executor under `ex`: a strand's inner io_context executor, or `ex`.
asio::any_io_executor unstranded(const asio::any_io_executor& ex);

/// One TCP connection, plain or TLS, on a strand: Beast's stream and its
/// timeout handler are not thread-safe, so every operation on a connection,
/// its timeout and its close run there. A strand of its own, or that of the
/// request that opened it (`on_strand_t`): a strand serves one connection at
/// a time, the request's, whose coroutine runs on it.
struct connection {
  connection(const asio::any_io_executor& ex, ssl::context* tls, std::shared_ptr<counters> c);
  /// On `strand` itself (a strand already), not a new one: a
  /// request's new connection on the strand its coroutine runs on, which
  /// then does the connection's I/O without a hop (`client::impl::run`).
  struct on_strand_t {};
  connection(on_strand_t, const asio::any_io_executor& strand, ssl::context* tls,
             std::shared_ptr<counters> c);
  ~connection();
  beast::tcp_stream& tcp() { return secure ? secure->next_layer() : *plain; }

  /// Taken from the pool: still open, and nothing arrived while it was idle.
  bool usable();
  /// TLS bytes already read off the socket but not yet returned.
  bool tls_leftover();

  asio::any_io_executor executor;  // the connection's strand
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  steady::time_point idle_since{};
  /// The request's start line and fields, written here (`write_head`) and
  /// kept for the next request: no allocation once it has grown.
  std::string head;
  /// The response reader of the connection's requests, one at a time:
  /// restarted for each (`response_reader::restart`), so that its read
  /// buffer is allocated once per connection, and kept out of the request's
  /// coroutine frame.
  std::optional<detail::response_reader> reader;
  // ---- the deadline of an exchange (exchange.ipp) ------------------------
  // Beast's TCP stream, given an expiry, arms and cancels a timer for every
  // read and write and runs the cancelled timer's handler through the
  // strand. Its expiry is used for the connect and the TLS handshake only;
  // the exchange sets one timer for its deadline instead (`watch`, on the
  // io_context itself when there is one) and cancels it at its end, and
  // the cancelled handler runs off the strand and does nothing. Only a
  // timer that fires goes to the strand, to close the socket (bench/
  // README.md, "One timer an exchange"). A plain connection's response is
  // read from its socket, not through Beast's stream.
  /// What the timer's handlers hold: the connection (null once it is gone,
  /// read on the strand only) and the strand, which does not change.
  struct watch_link {
    connection* c;
    asio::any_io_executor strand;
  };
  std::optional<asio::steady_timer> watch;
  std::shared_ptr<watch_link> watched;
  std::uint64_t watch_generation = 0;  // a handler of an earlier exchange does nothing
  bool watching = false;               // `watch` is set for the exchange in progress
  bool timed_out = false;              // the timer closed the socket in this exchange
  bool established = false;
  bool leftover = false;  // TLS records after the response (set on the strand)
  /// The response was complete before the request was written whole (set on
  /// the strand): the connection is never pooled, the request never sent again.
  bool early = false;
  std::shared_ptr<counters> stats;  // closed on its strand, perhaps after the client
};

/// Closes a connection on its strand, wherever its last owner lets it go
/// (a post: never under the pool's lock).
struct connection_closer {
  void operator()(connection* c) const;
};
using connection_ptr = std::unique_ptr<connection, connection_closer>;

/// A request waiting for one of its origin's connection slots. Queued
/// intrusively (`levee::detail::waiter_queue`): no allocation under the lock.
struct slot_waiter final : levee::detail::slot_waiter {
  // (Boost 1.81's any_completion_handler move assignment recurses: the
  // handler is only ever move-constructed.)
  slot_waiter(const asio::any_io_executor& ex,
              asio::any_completion_handler<void(boost::system::error_code)> h,
              asio::any_io_executor w)
      : handler(std::move(h)), work(std::move(w)), timer(ex) {}
  /// Posts the completion to the waiter's executor; outside the pool's lock.
  void complete(boost::system::error_code ec) override;

  enum class state { waiting, granted, timed_out, cancelled } st = state::waiting;
  asio::any_completion_handler<void(boost::system::error_code)> handler;
  asio::any_io_executor work;
  asio::steady_timer timer;
};

/// One origin's pool. Guarded by `client::impl::pools_mutex`.
struct host_pool {
  explicit host_pool(std::string k) : key(std::move(k)) {}
  // The origin's key in `client::impl::pools`: the scheme, "://" and the
  // Host value. A request's added Host is a view of it (the request holds
  // its pool), so no request copies it (bench/README.md, "The pool's key
  // made once per origin").
  const std::string key;
  std::size_t busy = 0;  // connections in use or opening (slots taken)
  std::vector<connection_ptr> idle;
  levee::detail::waiter_queue waiters;
};

/// Whether a request may be sent again after its connection failed.
bool idempotent(beast::http::verb v) noexcept;

/// The Host and User-Agent fields the client adds to a request that has
/// none of its own. They are written first in the head, right after the
/// start line (a Host the client adds is the first field, as RFC 9112, 3.2
/// asks), and never inserted in the request's fields: two allocations and
/// two lookups a request fewer (bench/README.md, "Host and User-Agent
/// written, not inserted"). Unset: the request has its own.
struct added_fields {
  std::optional<std::string_view> host;
  std::optional<std::string_view> user_agent;
};

/// `s` without the spaces and tabs before and after it (RFC 9110, 5.5: not
/// part of a field's value), as Beast's fields store a value.
inline std::string_view trim_ows(std::string_view s) noexcept {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

/// `req`'s start line, then `added`, then `req`'s fields, byte for byte as
/// Beast's serializer writes fields, into `out` (cleared first). The body
/// follows as it is: the request is never chunked (`client::impl::prepare`
/// refuses a Transfer-Encoding that `prepare_payload` left).
void write_head(const request& req, const added_fields& added, std::string& out);

struct request_plan;
/// A request's plan (on levee's block cache: `request_plan::operator new`),
/// handed from the initiation to the request's coroutine as a pointer (the
/// plan itself, its request and its origin, is never moved), and freed with
/// the coroutine's frame.
using plan_ptr = std::unique_ptr<request_plan>;

}  // namespace levee::http::client_detail

namespace levee::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;

/// The client's state, shared with its requests (which hold a shared_ptr).
struct client::impl : std::enable_shared_from_this<client::impl> {
  using steady = client_detail::steady;
  using connection = client_detail::connection;
  using connection_ptr = client_detail::connection_ptr;
  using host_pool = client_detail::host_pool;
  using slot_waiter = client_detail::slot_waiter;

  impl(executor_type e, client_options o);

  // ---- the pools (http_pool.ipp) ----------------------------------------------
  /// At a request's initiation: the pool of the origin `key` into `pool`;
  /// a slot (`slot` set) if one is free and nobody waits for one; with it,
  /// a pooled connection that still looks open, or none.
  connection_ptr acquire(std::string_view key, steady::time_point now,
                         std::shared_ptr<host_pool>& pool, bool& slot);
  /// Waits for a slot of `pool` in FIFO order until `deadline`; completes
  /// with `void(error_code)`: success, `beast::error::timeout`, or
  /// `operation_aborted` (cancelled, or the client destroyed).
  template <BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code)) Token>
  auto async_acquire(std::shared_ptr<host_pool> pool, steady::time_point deadline, Token&& token) {
    return asio::async_initiate<Token, void(boost::system::error_code)>(
        [this](auto handler, std::shared_ptr<host_pool> p, steady::time_point d) {
          asio::any_io_executor hex = asio::get_associated_executor(handler, ex);
          start_wait(
              std::move(p), d,
              asio::any_completion_handler<void(boost::system::error_code)>(std::move(handler)),
              std::move(hex));
        },
        token, std::move(pool), deadline);
  }
  void start_wait(std::shared_ptr<host_pool> pool, steady::time_point deadline,
                  asio::any_completion_handler<void(boost::system::error_code)> handler,
                  asio::any_io_executor handler_ex);
  void end_wait(host_pool& pool, slot_waiter& w, slot_waiter::state why);
  /// A request ends: gives back its slot (`slot`) to the first waiter or to
  /// `pool`, and forgets its origin if the pool is left empty and unused.
  void release(const std::shared_ptr<host_pool>& pool, bool slot);
  connection_ptr take_idle(host_pool& pool);
  connection_ptr pop_idle(host_pool& pool, steady::time_point now,
                          std::vector<connection_ptr>& expired,
                          std::vector<std::shared_ptr<host_pool>>& forgotten);
  void put_idle(host_pool& pool, connection_ptr c);
  void sweep(steady::time_point now, std::vector<connection_ptr>& expired,
             std::vector<std::shared_ptr<host_pool>>& forgotten);
  void close_idle();
  /// The client is gone: waiters end with `operation_aborted`.
  void close();

  // ---- one connection (http/impl/connection.ipp) -----------------------------
  // The request's coroutines take their frames from levee's block cache
  // (`own_frame`): a request has five frames alive at once, and Asio's cache
  // keeps two (bench/README.md, "The client's frames from levee's cache").
  asio::awaitable<boost::system::error_code> connect(levee::detail::own_frame_t, connection& c,
                                                     const url_parts& origin,
                                                     steady::time_point deadline);
  asio::awaitable<boost::system::error_code> converse(
      levee::detail::own_frame_t, connection& c, const url_parts& origin, bool reused, request& req,
      const client_detail::added_fields& added, detail::response_reader& reader,
      steady::time_point deadline, std::optional<steady::time_point> carried);

  // ---- one request (http/impl/request.ipp) -----------------------------------
  /// Prepares a request at its initiation: its deadlines (its own
  /// `timeout`, capped by the caller's with_deadline, `until`, read from the
  /// handler's executor), its fields, validation, its origin's pool, and a
  /// slot and a connection when one is free now. `built`: the request is
  /// the client's own, made from `origin` as parse_url returned it (neither
  /// is validated again).
  client_detail::plan_ptr prepare(url_parts&& origin, request&& req,
                                  std::chrono::nanoseconds timeout,
                                  std::optional<steady::time_point> until, bool built = false);
  /// The request's one coroutine: waits for a slot if the plan has none,
  /// then sends the request (and once more on a fresh connection when a
  /// pooled one failed before any byte of a response came back). Each
  /// attempt carries what is left until the caller's deadline in the
  /// deadline header. Its result goes into `out`: every way out of it
  /// writes `out` (which starts as success with an empty response). Spawned
  /// only by its `request_op` (http/impl/request_op.ipp), whose `slot()`
  /// `out` is and which is alive while the coroutine's body runs.
  asio::awaitable<void> run(levee::detail::own_frame_t, client_detail::plan_ptr owned, result& out);
  executor_type ex;
  client_options options;
  std::shared_ptr<ssl::context> tls;
  std::shared_ptr<client_detail::counters> stats_ptr = std::make_shared<client_detail::counters>();
  client_detail::counters& stats = *stats_ptr;
  detail::dns_resolver resolver;

  // Guards the pools below (and each host_pool). A std::mutex, not a
  // spinlock: a new origin's map node, a pool's idle vector and the lists of
  // expired connections are allocated under it, and `next_expiry` changes
  // under it. The client keeps no timer for idle connections: they are
  // closed lazily, when a pool is used past `next_expiry` (or by
  // `close_idle`), so an idle client leaves no pending work. The waiters' queue is
  // intrusive (no allocation); waiters' timers, completions, clock reads and
  // connection closes (posts) happen outside it.
  std::mutex pools_mutex;
  // Searched by a view (`acquire`): no key string a request.
  std::unordered_map<std::string, std::shared_ptr<host_pool>, levee::detail::string_hash,
                     std::equal_to<>>
      pools;
  std::size_t idle_total = 0;
  /// When the earliest idle connection expires (`max()`: none pooled).
  steady::time_point next_expiry = steady::time_point::max();
  bool closed = false;
};

}  // namespace levee::http

namespace levee::http::client_detail {

/// A request as its initiation prepared it (`client::impl::prepare`): the
/// request, its deadlines, its origin's pool, and, when one was free at
/// once, a connection slot and a connection (idle or new). What it holds is
/// given back when the request ends, or when it never starts (its coroutine
/// destroyed unstarted): the slot, then the pool if it is left empty.
struct request_plan {
  request_plan(url_parts&& o, request&& r) : origin(std::move(o)), req(std::move(r)) {}
  request_plan(const request_plan&) = delete;  // held by a plan_ptr, never moved
  request_plan& operator=(const request_plan&) = delete;
  ~request_plan();
  // From levee's block cache, as its frames are (core/detail/own_frame.hpp).
  static void* operator new(std::size_t n) { return levee::detail::block_cache::allocate(n); }
  static void operator delete(void* p, std::size_t n) noexcept {
    levee::detail::block_cache::deallocate(p, n);
  }

  boost::system::error_code refused;  // the request is not sent: why
  std::shared_ptr<client::impl> owner;
  url_parts origin;
  request req;
  steady::time_point deadline{};
  std::optional<steady::time_point> carried;  // the caller's deadline, sent on
  bool capped = false;                        // `deadline` is the caller's
  std::shared_ptr<host_pool> pool;            // its key is the origin's
  bool slot = false;                          // a connection slot of `pool` is held
  connection_ptr conn;
  bool reused = false;  // `conn` came from the pool
  // The Host (the pool's key after its scheme) and the User-Agent are
  // written by `write_head`, the request having none (`added_fields`).
  bool add_host = false;
  bool add_user_agent = false;
};
static_assert(alignof(request_plan) <= levee::detail::block_cache::granule);

}  // namespace levee::http::client_detail
