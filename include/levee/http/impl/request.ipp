// levee: one request of the HTTP client (prepared at its initiation: a slot
// of its origin's pool and a pooled or new connection; then its coroutine:
// one exchange, one retry on a fresh connection) and the client's members.
// The operation that runs a request is in http/impl/request_op.ipp.
// Compiled once in lib/.
#pragma once

#include <levee/core/detail/run_on.hpp>
#include <levee/core/error.hpp>
#include <levee/http/client.hpp>
#include <levee/http/error.hpp>
#include <levee/http/impl/client_impl.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/cancellation_state.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>

#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>

namespace levee::http {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace ssl = boost::asio::ssl;

client::impl::impl(executor_type e, client_options o)
    : ex(std::move(e)),
      options(std::move(o)),
      resolver(ex, options.dns_servers, std::chrono::milliseconds(2000)) {
  if (options.tls) {
    tls = options.tls;
  } else {
    tls = std::make_shared<ssl::context>(ssl::context::tls_client);
    tls->set_default_verify_paths();
    tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                     ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  }
}

namespace client_detail {
// A timeout that is the caller's deadline (`capped`) is reported as that.
boost::system::error_code ended(bool capped, boost::system::error_code ec) noexcept {
  return capped && ec == beast::error::timeout
             ? boost::system::error_code(levee::error::deadline_exceeded)
             : ec;
}
}  // namespace client_detail

client_detail::request_plan::~request_plan() {
  if (!owner) return;  // moved from
  // A connection the request never used (its coroutine destroyed unstarted,
  // or started past its deadline) goes first: a pooled one back to the pool,
  // a new one closed, before its slot goes to another request.
  if (conn && reused) owner->put_idle(*pool, std::move(conn));
  conn.reset();
  if (pool) owner->release(pool, slot);
}

client_detail::plan_ptr client::impl::prepare(url_parts&& origin_in, request&& req_in,
                                              std::chrono::nanoseconds timeout,
                                              std::optional<steady::time_point> until, bool built) {
  // Made with the origin and the request moved in once, on levee's block
  // cache: the plan holds them from here on (`origin` and `req` name its
  // own), and goes to the request's coroutine as a pointer.
  client_detail::plan_ptr owned =
      std::make_unique<client_detail::request_plan>(std::move(origin_in), std::move(req_in));
  client_detail::request_plan& p = *owned;
  url_parts& origin = p.origin;
  request& req = p.req;
  // The caller's with_deadline (`until`, read at initiation) caps the
  // request's own timeout; a request cut short by it ends with
  // `levee::error::deadline_exceeded`, which no retry policy retries.
  const auto start = steady::now();
  if (until) {
    if (*until <
        start + std::chrono::milliseconds(1)) {  // nothing is sent with less than 1 ms left
      p.refused = levee::error::deadline_exceeded;
      return owned;
    }
    p.carried = *until;
  }
  p.capped = p.carried && *p.carried <= client_detail::deadline_after(start, timeout);
  p.deadline = p.capped ? *p.carried : client_detail::deadline_after(start, timeout);
  stats.requests.fetch_add(1, std::memory_order_relaxed);

  if (req.version() == 0) req.version(11);
  // Nothing leaves before the request is known to say only what it says,
  // to whom it says. The origin first (given as url_parts, it is checked as
  // parse_url would, and an IPv6 host takes its one spelling: tests/
  // http_hostile.cpp, "an IPv6 literal in two spellings"), then, below, the
  // request with its fields. A request the client built itself from a URL
  // it parsed is valid by construction: its origin parse_url's, its method
  // a verb's, its target parse_url's, its fields the Host below and the
  // validated user_agent.
  if (!built) {
    if (auto ec = client_detail::canonical_origin(origin)) {
      p.refused = ec;
      return owned;
    }
  }
  // Host and User-Agent, when the request has none, are written by
  // `write_head`, not inserted (`client_detail::added_fields`); the Host
  // value is the pool's key's, below.
  if (built) {
    // A GET or a HEAD with no field and no body: prepare_payload would
    // change nothing, and no Transfer-Encoding can be there.
    p.add_host = p.add_user_agent = true;
  } else {
    p.add_host = req.find(beast::http::field::host) == req.end();
    p.add_user_agent = req.find(beast::http::field::user_agent) == req.end();
    // The caller's `Connection: close` stays (and an HTTP/1.0 request is not
    // given keep-alive): such a connection is never pooled. The request is
    // validated before prepare_payload, which throws on a TRACE with a body.
    if (auto ec = validate_request(req)) {
      p.refused = ec;
      return owned;
    }
    req.prepare_payload();
    // A body goes out framed by its Content-Length alone (`write_head`). A
    // Transfer-Encoding that prepare_payload left (a coding of the caller's,
    // or `chunked` twice: it removes the last one) would describe a body
    // that is not encoded so, and a server reading it as chunks could take
    // the body for the next request.
    if (req.find(beast::http::field::transfer_encoding) != req.end()) {
      p.refused = make_error_code(error::invalid_request);
      return owned;
    }
  }

  // The pool's key: the scheme, "://" and the Host value, which holds the
  // port unless it is the scheme's default. Written into this thread's
  // buffer, which keeps its capacity: the pool holds its own copy, made
  // once per origin.
  thread_local std::string key;
  key.clear();
  key.append(origin.scheme).append("://", 3);
  client_detail::append_host_header(origin, key);
  p.owner = shared_from_this();  // alive while the request is; gives back what p holds
  // A slot free now, and a connection for it: the request's coroutine then
  // starts on that connection's strand and does its I/O there, without a hop.
  p.conn = acquire(key, start, p.pool, p.slot);
  if (p.slot) {
    p.reused = p.conn != nullptr;
    if (!p.reused) {
      try {
        p.conn = connection_ptr(new client_detail::connection(
            ex, origin.scheme == "https" ? tls.get() : nullptr, stats_ptr));
      } catch (const boost::system::system_error& e) {
        // (A TLS stream that OpenSSL could not make.) The operation's error,
        // as it was when connections were made in the request's coroutine.
        p.refused = e.code();  // the slot goes back with `p`
        return owned;
      }
    }
  }
  return owned;
}

asio::awaitable<void> client::impl::run(levee::detail::own_frame_t, client_detail::plan_ptr owned,
                                        result& out) {
  // The plan, freed with this frame (its destructor gives back what it
  // still holds).
  client_detail::request_plan& plan = *owned;
  // One coroutine frame for the whole request (bench/README.md, "The
  // request on its connection's strand"), started on a strand of levee's: the
  // strand of the connection the plan holds, or a new one.
  const asio::any_io_executor here = co_await asio::this_coro::executor;
  const steady::time_point deadline = plan.deadline;
  const bool capped = plan.capped;
  host_pool& pool = *plan.pool;
  // A connection slot, within the deadline.
  if (!plan.slot) {
    // Any cancellation ends the wait, partial and total too: nothing has
    // been sent (co_spawn lets only terminal through unless told so). Back
    // to terminal only for the I/O, after the wait.
    co_await asio::this_coro::reset_cancellation_state(asio::enable_total_cancellation());
    const auto now_waiting = stats.waiting.fetch_add(1) + 1;
    for (auto peak = stats.peak_waiting.load();
         now_waiting > peak && !stats.peak_waiting.compare_exchange_weak(peak, now_waiting);) {
    }
    auto [ec] = co_await async_acquire(plan.pool, deadline, asio::as_tuple(asio::use_awaitable));
    stats.waiting.fetch_sub(1);
    if (ec) {
      std::get<0>(out) = client_detail::ended(capped, ec);
      co_return;
    }
    plan.slot = true;
    // A cancellation that came as the slot was granted: still nothing sent.
    const auto state = co_await asio::this_coro::cancellation_state;
    if (state.cancelled() != asio::cancellation_type::none) {
      std::get<0>(out) = asio::error::operation_aborted;
      co_return;
    }
    co_await asio::this_coro::reset_cancellation_state();
  }
  if (steady::now() >= deadline) {
    std::get<0>(out) = client_detail::ended(capped, beast::error::timeout);
    co_return;
  }

  request& req = plan.req;
  const bool secure = plan.origin.scheme == "https";
  const detail::response_limits limits{options.body_limit, options.header_limit,
                                       std::size_t{options.header_limit} + 64 * 1024, 8};
  const bool head = req.method() == beast::http::verb::head;
  // Views of the pool's key (the plan holds the pool) and of the options,
  // which outlive the loop.
  client_detail::added_fields added;
  if (plan.add_host) added.host = std::string_view(pool.key).substr(plan.origin.scheme.size() + 3);
  // Without the spaces and tabs around it, as Beast's fields store a value.
  if (plan.add_user_agent) added.user_agent = client_detail::trim_ows(options.user_agent);
  bool fresh_only = false;
  for (;;) {
    connection_ptr conn = std::move(plan.conn);
    bool reused = std::exchange(plan.reused, false);
    if (!conn) {
      conn = fresh_only ? nullptr : take_idle(pool);
      reused = conn != nullptr;
    }
    if (reused) {
      stats.reused.fetch_add(1, std::memory_order_relaxed);
    } else if (!conn) {
      // On this coroutine's strand (start_plan spawns it on one): its I/O
      // needs no hop.
      conn = connection_ptr(new client_detail::connection(
          client_detail::connection::on_strand_t{}, here, secure ? tls.get() : nullptr, stats_ptr));
    }
    if (conn->reader) {
      conn->reader->restart(limits, head);
    } else {
      conn->reader.emplace(limits, head);
    }
    detail::response_reader& reader = *conn->reader;
    // The connection's I/O runs on its strand (see `new_strand`): here, or
    // through run_on for a pooled connection of another strand. (Not
    // co_spawn's own forwarding of the caller's cancellation: see run_on.)
    boost::system::error_code ec;
    if (conn->executor == here) {
      ec = co_await converse(levee::detail::own_frame, *conn, plan.origin, reused, req, added,
                             reader, deadline, plan.carried);
    } else {
      ec = co_await levee::detail::run_on(
          conn->executor, converse(levee::detail::own_frame, *conn, plan.origin, reused, req, added,
                                   reader, deadline, plan.carried));
    }
    if (ec) {
      // A pooled connection the server closed as the request went out: no
      // byte of a response came back, so an idempotent request is sent again,
      // once, on a new connection (never another pooled one).
      if (reused && !reader.got_some() && client_detail::idempotent(req.method()) &&
          ec != beast::error::timeout && ec != asio::error::operation_aborted &&
          ec != levee::error::deadline_exceeded && steady::now() < deadline) {
        stats.retried.fetch_add(1, std::memory_order_relaxed);
        fresh_only = true;
        continue;
      }
      std::get<0>(out) = client_detail::ended(capped, ec);
      co_return;  // the connection is closed with `conn`
    }
    const bool clean = reader.clean() && !conn->leftover;
    const bool keep_alive = reader.keep_alive();
    response res = reader.release();
    // A 408 that closes a pooled connection answers no request of ours: the
    // server gave up on the idle connection just as this request went out.
    // Not after an early response, though: a body is never sent twice.
    if (reused && !conn->early && res.result_int() == 408 && !keep_alive &&
        client_detail::idempotent(req.method()) && steady::now() < deadline) {
      stats.retried.fetch_add(1, std::memory_order_relaxed);
      fresh_only = true;
      continue;
    }
    // (An early response leaves the server reading, or dropping, the rest.
    // The exchange's timer can close its socket on another thread just as
    // the response completes: the response stands, the closed connection
    // is not pooled.)
    if (keep_alive && req.keep_alive() && clean && !conn->early && !conn->timed_out)
      put_idle(pool, std::move(conn));
    std::get<1>(out) = std::move(res);
    co_return;
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
  impl_->close();
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
  const client_detail::counters& c = *impl_->stats_ptr;
  client_stats s{c.requests.load(),
                 c.opened.load(),
                 c.reused.load(),
                 c.stale.load(),
                 c.retried.load(),
                 c.deadlines_sent.load(),
                 c.open.load(),
                 0,
                 0,
                 c.waiting.load(),
                 c.peak_waiting.load()};
  std::lock_guard g(impl_->pools_mutex);
  s.connections_idle = impl_->idle_total;
  s.origins = impl_->pools.size();
  return s;
}

void client::close_idle() {
  impl_->close_idle();
}

}  // namespace levee::http
