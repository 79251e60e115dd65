// levee: the HTTP client, compiled once in lib/ (with Beast, OpenSSL, c-ares).
#pragma once

#include <levee/detail/run_on.hpp>
#include <levee/detail/validate.hpp>
#include <levee/http/client.hpp>
#include <levee/http/detail/resolver.hpp>
#include <levee/http/detail/response_reader.hpp>
#include <levee/http/error.hpp>

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <sys/socket.h>

#include <atomic>
#include <cerrno>
#include <deque>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace levee::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

void validate(const client_options& o) {
  auto reject = [](const char* member, const char* rule) {
    levee::detail::reject_option("client_options", member, rule);
  };
  if (o.max_connections_per_host < 1 || o.max_connections_per_host > 100000)
    reject("max_connections_per_host", "must be in [1, 100000]");
  if (o.timeout <= std::chrono::nanoseconds::zero()) reject("timeout", "must be greater than zero");
  if (o.body_limit < 1) reject("body_limit", "must be at least 1");
  if (o.header_limit < 64 || o.header_limit > (1u << 20))
    reject("header_limit", "must be in [64, 1 MiB]");
  if (o.idle_timeout <= std::chrono::nanoseconds::zero())
    reject("idle_timeout", "must be greater than zero");
  if (o.max_idle_connections > 1000000) reject("max_idle_connections", "must be in [0, 1000000]");
  for (char c : o.user_agent) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f)
      reject("user_agent", "must not hold control characters");
  }
}

namespace client_detail {

/// `now + d`, saturating at the clock's end (a timeout of `max()` is "never").
steady::time_point deadline_after(steady::time_point now, std::chrono::nanoseconds d) noexcept {
  const auto room = steady::time_point::max() - now;
  if (d >= std::chrono::duration_cast<std::chrono::nanoseconds>(room))
    return steady::time_point::max();
  return now + std::chrono::duration_cast<steady::duration>(d);
}

void set_expiry(beast::tcp_stream& s, steady::time_point deadline) {
  if (deadline == steady::time_point::max()) {
    s.expires_never();
  } else {
    s.expires_at(deadline);
  }
}

struct counters {
  std::atomic<std::uint64_t> requests{0}, opened{0}, reused{0}, stale{0}, retried{0};
  std::atomic<std::size_t> open{0}, waiting{0}, peak_waiting{0};
};

/// A strand of its own for each connection: Beast's stream and its timeout
/// handler are not thread-safe, so every operation on a connection, its
/// timeout and its close run there. Built on the io_context's own executor
/// when there is one (stored inline; a strand of the type-erased executor would
/// hide behind a reference count that ThreadSanitizer misreads).
asio::any_io_executor new_strand(const asio::any_io_executor& ex) {
  using io_executor = asio::io_context::executor_type;
  if (const auto* io = ex.target<io_executor>()) return asio::make_strand(*io);
  if (const auto* s = ex.target<asio::strand<io_executor>>())
    return asio::make_strand(s->get_inner_executor());
  return asio::make_strand(ex);
}

struct connection {
  connection(const asio::any_io_executor& ex, ssl::context* tls, std::shared_ptr<counters> c)
      : executor(new_strand(ex)), stats(std::move(c)) {
    if (tls) {
      secure.emplace(executor, *tls);
    } else {
      plain.emplace(executor);
    }
  }
  ~connection() {
    if (established) stats->open.fetch_sub(1, std::memory_order_relaxed);
  }
  beast::tcp_stream& tcp() { return secure ? secure->next_layer() : *plain; }

  // Taken from the pool: still open, and nothing arrived while it was idle (a
  // server's close, a 408 it wrote before closing, a stray response, a TLS
  // alert). One non-blocking peek.
  bool usable() {
    if (tls_leftover()) return false;
    char byte = 0;
    const auto n = ::recv(tcp().socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0) return false;  // 0: closed by the server; > 0: bytes nobody asked for
    return errno == EAGAIN || errno == EWOULDBLOCK;
  }

  // TLS bytes already read off the socket but not yet returned: a decrypted
  // record, or records still in the engine's buffer (two records in one TCP
  // segment: the peek on the socket cannot see the second).
  bool tls_leftover() {
    if (!secure) return false;
    SSL* ssl = secure->native_handle();
    return SSL_pending(ssl) > 0 || SSL_has_pending(ssl) || BIO_ctrl_pending(SSL_get_rbio(ssl)) > 0;
  }

  asio::any_io_executor executor;  // the connection's strand
  std::optional<beast::tcp_stream> plain;
  std::optional<beast::ssl_stream<beast::tcp_stream>> secure;
  steady::time_point idle_since{};
  bool established = false;
  bool leftover = false;            // TLS records after the response (set on the strand)
  std::shared_ptr<counters> stats;  // closed on its strand, perhaps after the client
};

/// Closes a connection on its strand, wherever its last owner lets it go.
struct connection_closer {
  void operator()(connection* c) const {
    // Counted closed now; the socket closes a moment later.
    if (std::exchange(c->established, false))
      c->stats->open.fetch_sub(1, std::memory_order_relaxed);
    const asio::any_io_executor ex = c->executor;
    // Destroyed unrun with the io_context at shutdown: the closure still owns it.
    asio::post(ex, [owned = std::unique_ptr<connection>(c)] {});
  }
};
using connection_ptr = std::unique_ptr<connection, connection_closer>;

// A request waiting for one of its origin's connection slots.
struct slot_waiter {
  // (Boost 1.81's any_completion_handler move assignment recurses: the
  // handler is only ever move-constructed.)
  slot_waiter(const asio::any_io_executor& ex,
              asio::any_completion_handler<void(boost::system::error_code)> h,
              asio::any_io_executor w)
      : handler(std::move(h)), work(std::move(w)), timer(ex) {}
  enum class state { waiting, granted, timed_out, cancelled } st = state::waiting;
  asio::any_completion_handler<void(boost::system::error_code)> handler;
  asio::any_io_executor work;
  asio::steady_timer timer;
};

// One origin's pool. Guarded by the client's mutex.
struct host_pool {
  std::size_t busy = 0;  // connections in use or opening (slots taken)
  std::vector<connection_ptr> idle;
  std::deque<std::shared_ptr<slot_waiter>> waiters;
};

// Hands a waiter's completion to its executor (outside the client's lock).
void finish_waiter(const std::shared_ptr<slot_waiter>& w, boost::system::error_code ec) {
  auto ex = std::move(w->work);
  asio::post(ex, [h = std::move(w->handler), ec]() mutable {
    asio::get_associated_cancellation_slot(h).clear();
    std::move(h)(ec);
  });
}

// Forgets the origin's pool, if it is left empty, when a request ends.
template <class Impl>
struct forget_guard {
  Impl& self;
  const std::string& key;
  std::shared_ptr<host_pool>& pool;
  ~forget_guard() { self.maybe_forget(key, pool); }
};

// Gives the connection slot back when a request ends.
template <class Impl>
struct slot_guard {
  Impl& self;
  host_pool& pool;
  ~slot_guard() { self.release_slot(pool); }
};

bool idempotent(beast::http::verb v) noexcept {
  using beast::http::verb;
  return v == verb::get || v == verb::head || v == verb::options || v == verb::trace ||
         v == verb::put || v == verb::delete_;
}

}  // namespace client_detail
using namespace client_detail;

struct client::impl : std::enable_shared_from_this<client::impl> {
  impl(executor_type e, client_options o)
      : ex(std::move(e)),
        options(std::move(o)),
        resolver(ex, options.dns_servers, std::chrono::milliseconds(2000)),
        reaper(ex) {
    if (options.tls) {
      tls = options.tls;
    } else {
      tls = std::make_shared<ssl::context>(ssl::context::tls_client);
      tls->set_default_verify_paths();
      tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                       ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
    }
  }

  // ---- the pool ---------------------------------------------------------------

  std::shared_ptr<host_pool> pool_for(const std::string& key) {
    std::lock_guard g(mutex);
    auto& p = pools[key];
    if (!p) p = std::make_shared<host_pool>();
    return p;
  }

  // Forgets an origin whose pool is empty and unused (the caller holds one
  // reference, the map the other).
  void maybe_forget(const std::string& key, const std::shared_ptr<host_pool>& pool) {
    std::lock_guard g(mutex);
    if (pool.use_count() == 2 && pool->busy == 0 && pool->idle.empty() && pool->waiters.empty()) {
      auto it = pools.find(key);
      if (it != pools.end() && it->second == pool) pools.erase(it);
    }
  }

  bool try_acquire(host_pool& pool) {
    std::lock_guard g(mutex);
    if (pool.busy >= options.max_connections_per_host || !pool.waiters.empty()) return false;
    ++pool.busy;
    return true;
  }

  // A slot now, or a wait in FIFO order until `deadline`.
  template <class Token>
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
                  asio::any_io_executor handler_ex) {
    auto w = std::make_shared<slot_waiter>(
        ex, std::move(handler),
        asio::prefer(handler_ex, asio::execution::outstanding_work.tracked));
    std::weak_ptr<impl> weak_self = weak_from_this();
    auto slot = asio::get_associated_cancellation_slot(w->handler);
    if (slot.is_connected()) {
      std::weak_ptr<slot_waiter> weak = w;
      slot.assign([weak, weak_self, pool](asio::cancellation_type type) {
        if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                     asio::cancellation_type::total)) == asio::cancellation_type::none)
          return;
        auto self = weak_self.lock();
        auto waiter = weak.lock();
        if (self && waiter) self->end_wait(*pool, waiter, slot_waiter::state::cancelled);
      });
    }
    {
      std::lock_guard g(mutex);
      if (closed) {  // the client is gone
        w->st = slot_waiter::state::cancelled;
      } else if (pool->busy < options.max_connections_per_host && pool->waiters.empty()) {
        ++pool->busy;
        w->st = slot_waiter::state::granted;
      } else {
        pool->waiters.push_back(w);
        // The timer is started under the lock, before anyone can cancel it.
        if (deadline != steady::time_point::max()) {
          w->timer.expires_at(deadline);
          w->timer.async_wait([weak_self, pool, w](boost::system::error_code ec) {
            if (ec) return;
            if (auto self = weak_self.lock())
              self->end_wait(*pool, w, slot_waiter::state::timed_out);
          });
        }
      }
    }
    if (w->st == slot_waiter::state::granted) finish_waiter(w, {});
    if (w->st == slot_waiter::state::cancelled) finish_waiter(w, asio::error::operation_aborted);
  }

  // The deadline or a cancellation ends a wait that was not granted.
  void end_wait(host_pool& pool, const std::shared_ptr<slot_waiter>& w, slot_waiter::state why) {
    {
      std::lock_guard g(mutex);
      if (w->st != slot_waiter::state::waiting) return;
      w->st = why;
      std::erase(pool.waiters, w);
      w->timer.cancel();
    }
    finish_waiter(w, why == slot_waiter::state::timed_out
                         ? boost::system::error_code(beast::error::timeout)
                         : boost::system::error_code(asio::error::operation_aborted));
  }

  // A slot comes back: to the first waiter, or to the pool.
  void release_slot(host_pool& pool) {
    std::shared_ptr<slot_waiter> next;
    {
      std::lock_guard g(mutex);
      while (!pool.waiters.empty() && !next) {
        next = std::move(pool.waiters.front());
        pool.waiters.pop_front();
        if (next->st != slot_waiter::state::waiting) next.reset();
      }
      if (next) {
        next->st = slot_waiter::state::granted;
        next->timer.cancel();
      } else {
        --pool.busy;
      }
    }
    if (next) finish_waiter(next, {});
  }

  // A pooled connection that still looks open, or nothing.
  connection_ptr take_idle(host_pool& pool) {
    for (;;) {
      connection_ptr c;
      std::vector<connection_ptr> expired;  // closed outside the lock
      {
        std::lock_guard g(mutex);
        const auto now = steady::now();
        while (!pool.idle.empty() && !c) {
          auto candidate = std::move(pool.idle.back());
          pool.idle.pop_back();
          --idle_total;
          if (now - candidate->idle_since < options.idle_timeout) {
            c = std::move(candidate);
          } else {
            expired.push_back(std::move(candidate));
          }
        }
      }
      if (!c) return nullptr;
      if (c->usable()) return c;
      stats.stale.fetch_add(1, std::memory_order_relaxed);
    }
  }

  void put_idle(host_pool& pool, connection_ptr c) {
    c->idle_since = steady::now();
    std::lock_guard g(mutex);
    if (closed || idle_total >= options.max_idle_connections) return;  // `c` closes here
    pool.idle.push_back(std::move(c));
    ++idle_total;
    if (!reaper_armed && options.idle_timeout != std::chrono::nanoseconds::max()) {
      reaper_armed = true;
      arm_reaper(deadline_after(steady::now(), options.idle_timeout));
    }
  }

  // Under the lock.
  void arm_reaper(steady::time_point at) {
    reaper.expires_at(at);
    reaper.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      if (ec) return;
      if (auto self = weak.lock()) self->reap();
    });
  }

  // Closes the idle connections past their idle timeout, forgets the origins
  // left empty, and sleeps until the next expiry (or for good).
  void reap() {
    std::vector<connection_ptr> expired;
    std::lock_guard g(mutex);
    const auto now = steady::now();
    auto next = steady::time_point::max();
    for (auto it = pools.begin(); it != pools.end();) {
      auto& idle = it->second->idle;
      for (auto c = idle.begin(); c != idle.end();) {
        if (now - (*c)->idle_since >= options.idle_timeout) {
          expired.push_back(std::move(*c));
          c = idle.erase(c);
          --idle_total;
        } else {
          next = std::min(next, deadline_after((*c)->idle_since, options.idle_timeout));
          ++c;
        }
      }
      const auto& p = it->second;
      if (p.use_count() == 1 && p->busy == 0 && p->idle.empty() && p->waiters.empty()) {
        it = pools.erase(it);
      } else {
        ++it;
      }
    }
    reaper_armed = next != steady::time_point::max() && !closed;
    if (reaper_armed) arm_reaper(next);
  }

  void close_idle() {
    std::vector<connection_ptr> idle;
    std::lock_guard g(mutex);
    for (auto it = pools.begin(); it != pools.end();) {
      for (auto& c : it->second->idle) idle.push_back(std::move(c));
      it->second->idle.clear();
      const auto& p = it->second;
      if (p.use_count() == 1 && p->busy == 0 && p->waiters.empty()) {
        it = pools.erase(it);
      } else {
        ++it;
      }
    }
    idle_total = 0;
    reaper.cancel();
    reaper_armed = false;
  }

  // ---- one connection ---------------------------------------------------------

  asio::awaitable<boost::system::error_code> connect(connection& c, const url_parts& origin,
                                                     steady::time_point deadline) {
    std::vector<tcp::endpoint> endpoints;
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(origin.host, ec);
    const bool ip_literal = !ec;
    if (ip_literal) {
      endpoints.emplace_back(address, origin.port);  // an IP literal: no resolver
    } else {
      auto [rec, found] = co_await resolver.async_resolve(origin.host, origin.port, deadline,
                                                          asio::as_tuple(asio::use_awaitable));
      if (rec) co_return rec;
      endpoints = std::move(found);
    }
    set_expiry(c.tcp(), deadline);
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

  // Writes `req` and reads the final response. `got_some` says whether any
  // byte of a response came back.
  template <class Stream>
  asio::awaitable<boost::system::error_code> exchange(Stream& s, request& req,
                                                      detail::response_reader& reader) {
    auto [wec, written] =
        co_await beast::http::async_write(s, req, asio::as_tuple(asio::use_awaitable));
    (void)written;
    if (wec) co_return wec;
    for (;;) {
      boost::system::error_code ec;
      if (reader.parse(ec)) co_return boost::system::error_code();
      if (ec) co_return ec;
      const auto space = reader.prepare(ec);
      if (ec) co_return ec;
      auto [rec, n] = co_await s.async_read_some(space, asio::as_tuple(asio::use_awaitable));
      reader.commit(n);
      if (rec == asio::error::eof) {
        // The peer closed: what came before may be a response delimited by
        // the close.
        reader.finish(ec);
        co_return ec;
      }
      if (rec == ssl::error::stream_truncated) {
        // A TLS peer closed without close_notify before the response was
        // complete. A body delimited by the close cannot be told from one cut
        // by an attacker's FIN: an error (a response with a length that was
        // complete never gets here). Nothing at all: as a plain close.
        if (!reader.got_some()) {
          reader.finish(ec);
          co_return ec;
        }
        co_return rec;
      }
      if (rec) co_return rec;
    }
  }

  // On the connection's strand: connects a new connection, writes the
  // request, reads the response; a connection that goes back to the pool has
  // its timeout cleared here.
  asio::awaitable<boost::system::error_code> converse(connection& c, const url_parts& origin,
                                                      bool reused, request& req,
                                                      detail::response_reader& reader,
                                                      steady::time_point deadline) {
    if (!reused) {
      if (auto ec = co_await connect(c, origin, deadline)) co_return ec;
    }
    set_expiry(c.tcp(), deadline);
    const auto ec = c.secure ? co_await exchange(*c.secure, req, reader)
                             : co_await exchange(*c.plain, req, reader);
    c.tcp().expires_never();
    c.leftover = c.tls_leftover();
    co_return ec;
  }

  asio::awaitable<result> run(url_parts origin, request req, std::chrono::nanoseconds timeout);

  executor_type ex;
  client_options options;
  std::shared_ptr<ssl::context> tls;
  std::shared_ptr<counters> stats_ptr = std::make_shared<counters>();
  counters& stats = *stats_ptr;
  detail::dns_resolver resolver;

  std::mutex mutex;  // guards everything below
  std::unordered_map<std::string, std::shared_ptr<host_pool>> pools;
  std::size_t idle_total = 0;
  asio::steady_timer reaper;
  bool reaper_armed = false;
  bool closed = false;
};

asio::awaitable<result> client::impl::run(url_parts origin, request req,
                                          std::chrono::nanoseconds timeout) {
  std::shared_ptr<impl> self = shared_from_this();  // alive while the request is
  const auto deadline = deadline_after(steady::now(), timeout);
  stats.requests.fetch_add(1, std::memory_order_relaxed);

  if (req.version() == 0) req.version(11);
  if (req.find(beast::http::field::host) == req.end())
    req.set(beast::http::field::host, host_header(origin));
  if (req.find(beast::http::field::user_agent) == req.end())
    req.set(beast::http::field::user_agent, options.user_agent);
  req.keep_alive(true);
  req.prepare_payload();
  // Nothing leaves before the request is known to say only what it says, to
  // whom it says (an origin given as url_parts is checked as parse_url would).
  if (auto ec = validate_origin(origin)) co_return result(ec, response());
  if (auto ec = validate_request(req)) co_return result(ec, response());

  const bool secure = origin.scheme == "https";
  const std::string key =
      origin.scheme + "://" + host_header(origin) + "/" + std::to_string(origin.port);
  std::shared_ptr<host_pool> pool = pool_for(key);
  forget_guard<impl> forget{*this, key, pool};

  // A connection slot, within the deadline.
  if (!try_acquire(*pool)) {
    const auto now_waiting = stats.waiting.fetch_add(1) + 1;
    for (auto peak = stats.peak_waiting.load();
         now_waiting > peak && !stats.peak_waiting.compare_exchange_weak(peak, now_waiting);) {
    }
    auto [ec] = co_await async_acquire(pool, deadline, asio::as_tuple(asio::use_awaitable));
    stats.waiting.fetch_sub(1);
    if (ec) co_return result(ec, response());
  }
  slot_guard<impl> slot{*this, *pool};
  if (steady::now() >= deadline) co_return result(beast::error::timeout, response());

  const detail::response_limits limits{options.body_limit, options.header_limit,
                                       std::size_t{options.header_limit} + 64 * 1024, 8};
  const bool head = req.method() == beast::http::verb::head;
  bool fresh_only = false;
  for (;;) {
    connection_ptr conn = fresh_only ? nullptr : take_idle(*pool);
    const bool reused = conn != nullptr;
    if (reused) {
      stats.reused.fetch_add(1, std::memory_order_relaxed);
    } else {
      conn = connection_ptr(new connection(ex, secure ? tls.get() : nullptr, stats_ptr));
    }
    // The connection's own strand does its I/O (see `new_strand`).
    detail::response_reader reader(limits, head);
    // (Not co_spawn's own forwarding of the caller's cancellation: see run_on.)
    const auto ec = co_await levee::detail::run_on(
        conn->executor, converse(*conn, origin, reused, req, reader, deadline));
    if (ec) {
      // A pooled connection the server closed as the request went out: no
      // byte of a response came back, so an idempotent request is sent again,
      // once, on a new connection (never another pooled one).
      if (reused && !reader.got_some() && idempotent(req.method()) && ec != beast::error::timeout &&
          ec != asio::error::operation_aborted && steady::now() < deadline) {
        stats.retried.fetch_add(1, std::memory_order_relaxed);
        fresh_only = true;
        continue;
      }
      co_return result(ec, response());  // the connection is closed with `conn`
    }
    const bool clean = reader.clean() && !conn->leftover;
    response res = reader.release();
    // A 408 that closes a pooled connection answers no request of ours: the
    // server gave up on the idle connection just as this request went out.
    if (reused && res.result_int() == 408 && !res.keep_alive() && idempotent(req.method()) &&
        steady::now() < deadline) {
      stats.retried.fetch_add(1, std::memory_order_relaxed);
      fresh_only = true;
      continue;
    }
    if (res.keep_alive() && clean) put_idle(*pool, std::move(conn));
    co_return result(boost::system::error_code(), std::move(res));
  }
}

client::client(executor_type ex, client_options options) {
  validate(options);
  impl_ = std::make_shared<impl>(std::move(ex), std::move(options));
}

client::~client() {
  // Requests waiting for a connection and lookups in flight end now with
  // operation_aborted (posted): their coroutines hold the client's state, so
  // if the io_context is destroyed rather than run, they are destroyed with
  // it instead of keeping each other alive. Requests on a connection finish.
  std::vector<std::shared_ptr<slot_waiter>> waiting;
  {
    std::lock_guard g(impl_->mutex);
    impl_->closed = true;
    for (auto& [key, pool] : impl_->pools) {
      for (auto& w : pool->waiters) {
        if (w->st != slot_waiter::state::waiting) continue;
        w->st = slot_waiter::state::cancelled;
        w->timer.cancel();
        waiting.push_back(w);
      }
      pool->waiters.clear();
    }
  }
  for (auto& w : waiting) finish_waiter(w, asio::error::operation_aborted);
  impl_->resolver.shutdown();
  impl_->close_idle();
}

client::executor_type client::get_executor() const noexcept {
  return impl_->ex;
}
const client_options& client::options() const noexcept {
  return impl_->options;
}

client_stats client::stats() const noexcept {
  const counters& c = *impl_->stats_ptr;
  client_stats s{c.requests.load(),
                 c.opened.load(),
                 c.reused.load(),
                 c.stale.load(),
                 c.retried.load(),
                 c.open.load(),
                 0,
                 0,
                 c.waiting.load(),
                 c.peak_waiting.load()};
  std::lock_guard g(impl_->mutex);
  s.connections_idle = impl_->idle_total;
  s.origins = impl_->pools.size();
  return s;
}

void client::close_idle() {
  impl_->close_idle();
}

asio::awaitable<result> client::async_request(url_parts origin, request req,
                                              std::chrono::nanoseconds timeout) {
  return impl_->run(std::move(origin), std::move(req), timeout);
}

asio::awaitable<result> client::async_request(url_parts origin, request req) {
  return impl_->run(std::move(origin), std::move(req), impl_->options.timeout);
}

asio::awaitable<result> client::async_request(std::string host, std::uint16_t port, request req,
                                              std::chrono::nanoseconds timeout) {
  url_parts origin;
  origin.host = std::move(host);
  origin.port = port;
  return impl_->run(std::move(origin), std::move(req), timeout);
}

asio::awaitable<result> client::async_request(std::string host, std::uint16_t port, request req) {
  return async_request(std::move(host), port, std::move(req), impl_->options.timeout);
}

namespace {

asio::awaitable<result> request_url(client& c, std::string url, beast::http::verb method) {
  url_parts parts;
  if (auto ec = parse_url(url, parts)) co_return result(ec, response());
  request req(method, parts.target, 11);
  co_return co_await c.async_request(std::move(parts), std::move(req));
}

response value_or_throw(result r) {
  auto& [ec, res] = r;
  if (ec) throw boost::system::system_error(ec);
  return std::move(res);
}

}  // namespace

asio::awaitable<result> http_get(client& c, std::string url, nothrow_t) {
  return request_url(c, std::move(url), beast::http::verb::get);
}

asio::awaitable<response> http_get(client& c, std::string url) {
  co_return value_or_throw(co_await request_url(c, std::move(url), beast::http::verb::get));
}

asio::awaitable<result> http_head(client& c, std::string url, nothrow_t) {
  return request_url(c, std::move(url), beast::http::verb::head);
}

asio::awaitable<result> send(client& c, std::string host, std::uint16_t port, request req,
                             nothrow_t) {
  return c.async_request(std::move(host), port, std::move(req));
}

asio::awaitable<response> send(client& c, std::string host, std::uint16_t port, request req) {
  co_return value_or_throw(co_await c.async_request(std::move(host), port, std::move(req)));
}

asio::awaitable<result> send(client& c, std::string origin, request req, nothrow_t) {
  url_parts parts;
  if (auto ec = parse_url(origin, parts)) co_return result(ec, response());
  if (parts.target != "/")  // an origin has no path nor query
    co_return result(make_error_code(error::invalid_url), response());
  co_return co_await c.async_request(std::move(parts), std::move(req));
}

asio::awaitable<response> send(client& c, std::string origin, request req) {
  co_return value_or_throw(co_await send(c, std::move(origin), std::move(req), nothrow));
}

}  // namespace levee::http
