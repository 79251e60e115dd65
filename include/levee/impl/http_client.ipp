// levee: the HTTP client, compiled once in lib/ (with Beast).
#pragma once

#include <levee/bulkhead.hpp>
#include <levee/http/client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/ip/address.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <atomic>
#include <cctype>
#include <charconv>
#include <mutex>
#include <stdexcept>
#include <unordered_map>
#include <vector>

namespace levee::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;

void validate(const client_options& o) {
  auto reject = [](const char* member, const char* rule) {
    throw std::invalid_argument(std::string("client_options::") + member + " " + rule);
  };
  if (o.max_connections_per_host < 1 || o.max_connections_per_host > 100000)
    reject("max_connections_per_host", "must be in [1, 100000]");
  if (o.timeout <= std::chrono::nanoseconds::zero()) reject("timeout", "must be greater than zero");
  if (o.body_limit < 1) reject("body_limit", "must be at least 1");
  if (o.header_limit < 64 || o.header_limit > (1u << 20))
    reject("header_limit", "must be in [64, 1 MiB]");
  if (o.idle_timeout <= std::chrono::nanoseconds::zero())
    reject("idle_timeout", "must be greater than zero");
}

namespace client_detail {

struct counters {
  std::atomic<std::uint64_t> requests{0}, opened{0}, reused{0};
  std::atomic<std::size_t> open{0}, waiting{0}, peak_waiting{0};
};

struct connection {
  connection(asio::any_io_executor ex, counters& c) : stream(std::move(ex)), stats(c) {}
  ~connection() {
    if (established) stats.open.fetch_sub(1, std::memory_order_relaxed);
  }
  beast::tcp_stream stream;
  beast::flat_buffer buffer;
  steady::time_point idle_since{};
  bool established = false;
  counters& stats;
};

// One host's pool: a bulkhead's slots bound the connections (busy or
// opening); idle kept-alive connections wait in a LIFO stack.
struct host_pool {
  explicit host_pool(std::size_t max)
      : slots(bulkhead_options{.max_concurrent = max, .max_queue = std::size_t{1} << 30}) {}

  std::unique_ptr<connection> take_idle(steady::time_point now,
                                        std::chrono::nanoseconds idle_timeout) {
    std::vector<std::unique_ptr<connection>> stale;  // closed outside the lock
    std::unique_ptr<connection> found;
    {
      detail::spin_guard g(lock);
      while (!idle.empty()) {
        auto c = std::move(idle.back());
        idle.pop_back();
        if (now - c->idle_since < idle_timeout) {
          found = std::move(c);
          break;
        }
        stale.push_back(std::move(c));
      }
    }
    return found;
  }

  void put_idle(std::unique_ptr<connection> c) {
    detail::spin_guard g(lock);
    idle.push_back(std::move(c));
  }

  detail::bulkhead_state slots;
  detail::spinlock lock;
  std::vector<std::unique_ptr<connection>> idle;
};

// A connection closed by the server while idle in the pool shows up as one of
// these on the first write or read.
bool stale_connection_error(const boost::system::error_code& ec) {
  return ec == beast::http::error::end_of_stream || ec == asio::error::eof ||
         ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
         ec == asio::error::connection_aborted;
}

}  // namespace client_detail
using namespace client_detail;

struct client::impl {
  impl(executor_type e, client_options o) : ex(std::move(e)), options(std::move(o)) {}

  host_pool& pool_for(const std::string& key) {
    std::lock_guard g(pools_mutex);
    auto& p = pools[key];
    if (!p) p = std::make_unique<host_pool>(options.max_connections_per_host);
    return *p;
  }

  asio::awaitable<boost::system::error_code> connect(connection& c, const std::string& host,
                                                     std::uint16_t port,
                                                     steady::time_point deadline) {
    boost::system::error_code ec;
    const auto address = asio::ip::make_address(host, ec);
    if (!ec) {
      c.stream.expires_at(deadline);
      auto [cec] = co_await c.stream.async_connect(tcp::endpoint(address, port),
                                                   asio::as_tuple(asio::use_awaitable));
      co_return cec;
    }
    tcp::resolver resolver(ex);
    asio::steady_timer timer(ex, deadline);
    auto [order, rec, results, tec] =
        co_await asio::experimental::make_parallel_group(
            resolver.async_resolve(host, std::to_string(port), asio::deferred),
            timer.async_wait(asio::deferred))
            .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable);
    if (order[0] == 1 && !tec) co_return make_error_code(beast::error::timeout);
    if (rec) co_return rec;
    c.stream.expires_at(deadline);
    auto [cec, endpoint] =
        co_await c.stream.async_connect(results, asio::as_tuple(asio::use_awaitable));
    (void)endpoint;
    co_return cec;
  }

  executor_type ex;
  client_options options;
  counters stats;
  std::mutex pools_mutex;
  std::unordered_map<std::string, std::unique_ptr<host_pool>> pools;
};

client::client(executor_type ex, client_options options) {
  validate(options);
  impl_ = std::make_shared<impl>(std::move(ex), std::move(options));
}

client::~client() = default;

client::executor_type client::get_executor() const noexcept {
  return impl_->ex;
}
const client_options& client::options() const noexcept {
  return impl_->options;
}

client_stats client::stats() const noexcept {
  const counters& c = impl_->stats;
  return {c.requests.load(), c.opened.load(),  c.reused.load(),
          c.open.load(),     c.waiting.load(), c.peak_waiting.load()};
}

asio::awaitable<result> client::async_request(std::string host, std::uint16_t port, request req) {
  return async_request(std::move(host), port, std::move(req), impl_->options.timeout);
}

asio::awaitable<result> client::async_request(std::string host, std::uint16_t port, request req,
                                              std::chrono::nanoseconds timeout) {
  std::shared_ptr<impl> self = impl_;
  counters& stats = self->stats;
  const auto deadline = steady::now() + std::chrono::duration_cast<steady::duration>(timeout);
  stats.requests.fetch_add(1, std::memory_order_relaxed);
  host_pool& pool = self->pool_for(host + ":" + std::to_string(port));

  // A connection slot, within the deadline.
  if (pool.slots.try_enter() != detail::bulkhead_state::entry::granted) {
    const auto now_waiting = stats.waiting.fetch_add(1) + 1;
    for (auto peak = stats.peak_waiting.load();
         now_waiting > peak && !stats.peak_waiting.compare_exchange_weak(peak, now_waiting);) {
    }
    const auto remaining = std::max(std::chrono::nanoseconds(1), deadline - steady::now());
    const auto ec =
        co_await detail::wait_for_slot<steady, asio::any_io_executor>(pool.slots, remaining);
    stats.waiting.fetch_sub(1);
    if (ec == error::bulkhead_full) co_return result(beast::error::timeout, response());
    if (ec) co_return result(ec, response());
  }
  detail::bulkhead_slot slot(pool.slots);
  // Granted just as the deadline passed: do not open a connection for nothing.
  if (steady::now() >= deadline) co_return result(beast::error::timeout, response());

  if (req.version() == 0) req.version(11);
  if (req.find(beast::http::field::host) == req.end())
    req.set(beast::http::field::host, port == 80 ? host : host + ":" + std::to_string(port));
  if (req.find(beast::http::field::user_agent) == req.end())
    req.set(beast::http::field::user_agent, self->options.user_agent);
  req.keep_alive(true);
  req.prepare_payload();

  for (int round = 0; round < 2; ++round) {
    std::unique_ptr<connection> conn = pool.take_idle(steady::now(), self->options.idle_timeout);
    const bool reused = conn != nullptr;
    if (reused) {
      stats.reused.fetch_add(1, std::memory_order_relaxed);
    } else {
      conn = std::make_unique<connection>(self->ex, stats);
      const auto cec = co_await self->connect(*conn, host, port, deadline);
      if (cec) co_return result(cec, response());
      conn->established = true;
      stats.open.fetch_add(1, std::memory_order_relaxed);
      stats.opened.fetch_add(1, std::memory_order_relaxed);
      boost::system::error_code ignored;
      conn->stream.socket().set_option(tcp::no_delay(true), ignored);
    }

    conn->stream.expires_at(deadline);
    auto [wec, written] =
        co_await beast::http::async_write(conn->stream, req, asio::as_tuple(asio::use_awaitable));
    (void)written;
    if (wec) {
      if (reused && round == 0 && stale_connection_error(wec)) continue;
      co_return result(wec, response());
    }

    beast::http::response_parser<beast::http::string_body> parser;
    parser.body_limit(self->options.body_limit);
    parser.header_limit(self->options.header_limit);
    auto [rec, read] = co_await beast::http::async_read(conn->stream, conn->buffer, parser,
                                                        asio::as_tuple(asio::use_awaitable));
    if (rec) {
      // Nothing at all came back on a pooled connection: the server had
      // closed it. Send once more on a fresh one.
      if (reused && round == 0 && read == 0 && stale_connection_error(rec)) continue;
      co_return result(rec, response());  // the connection is closed with `conn`
    }
    response res = parser.release();
    if (res.keep_alive()) {
      conn->stream.expires_never();
      conn->idle_since = steady::now();
      pool.put_idle(std::move(conn));
    }
    co_return result(boost::system::error_code(), std::move(res));
  }
  co_return result(make_error_code(boost::system::errc::connection_reset), response());
}

asio::awaitable<result> http_get(client& c, std::string url, nothrow_t) {
  url_parts parts;
  if (auto ec = parse_url(url, parts)) co_return result(ec, response());
  request req(beast::http::verb::get, parts.target, 11);
  co_return co_await c.async_request(std::move(parts.host), parts.port, std::move(req));
}

asio::awaitable<response> http_get(client& c, std::string url) {
  auto [ec, res] = co_await http_get(c, std::move(url), nothrow);
  if (ec) throw boost::system::system_error(ec);
  co_return std::move(res);
}

asio::awaitable<result> send(client& c, std::string host, std::uint16_t port, request req,
                             nothrow_t) {
  co_return co_await c.async_request(std::move(host), port, std::move(req));
}

asio::awaitable<response> send(client& c, std::string host, std::uint16_t port, request req) {
  auto [ec, res] = co_await c.async_request(std::move(host), port, std::move(req));
  if (ec) throw boost::system::system_error(ec);
  co_return std::move(res);
}

}  // namespace levee::http
