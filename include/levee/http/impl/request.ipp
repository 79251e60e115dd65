// levee: one request of the HTTP client (a slot of its origin's pool, a
// pooled or new connection, one exchange, one retry on a fresh connection),
// the client's members and the non-template entry points of its operations.
// Compiled once in lib/.
#pragma once

#include <levee/core/detail/initiation_mark.hpp>
#include <levee/core/detail/run_on.hpp>
#include <levee/core/error.hpp>
#include <levee/http/client.hpp>
#include <levee/http/deadline.hpp>
#include <levee/http/error.hpp>
#include <levee/http/impl/client_impl.hpp>
#include <levee/timeout/deadline.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>

#include <exception>
#include <memory>
#include <mutex>
#include <stdexcept>
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
  if (slot) owner->release_slot(*pool);
  if (pool) owner->maybe_forget(key, pool);
}

client_detail::request_plan client::impl::prepare(url_parts origin, request req,
                                                  std::chrono::nanoseconds timeout,
                                                  std::optional<steady::time_point> until) {
  client_detail::request_plan p;
  // The caller's with_deadline (`until`, read at initiation) caps the
  // request's own timeout; a request cut short by it ends with
  // `levee::error::deadline_exceeded`, which no retry policy retries.
  const auto start = steady::now();
  if (until) {
    if (*until <
        start + std::chrono::milliseconds(1)) {  // nothing is sent with less than 1 ms left
      p.refused = levee::error::deadline_exceeded;
      return p;
    }
    p.carried = *until;
  }
  p.capped = p.carried && *p.carried <= client_detail::deadline_after(start, timeout);
  p.deadline = p.capped ? *p.carried : client_detail::deadline_after(start, timeout);
  stats.requests.fetch_add(1, std::memory_order_relaxed);

  if (req.version() == 0) req.version(11);
  // The Host value once per request: the Host field and the pool's key.
  const std::string host = host_header(origin);
  if (req.find(beast::http::field::host) == req.end()) req.set(beast::http::field::host, host);
  if (req.find(beast::http::field::user_agent) == req.end())
    req.set(beast::http::field::user_agent, options.user_agent);
  // The caller's `Connection: close` stays (and an HTTP/1.0 request is not
  // given keep-alive): such a connection is never pooled. Nothing leaves
  // before the request is known to say only what it says, to whom it says (an
  // origin given as url_parts is checked as parse_url would); validated
  // before prepare_payload, which throws on a TRACE with a body.
  if (auto ec = validate_origin(origin)) {
    p.refused = ec;
    return p;
  }
  if (auto ec = validate_request(req)) {
    p.refused = ec;
    return p;
  }
  req.prepare_payload();
  // A body goes out framed by its Content-Length alone (`write_head`). A
  // Transfer-Encoding that prepare_payload left (a coding of the caller's, or
  // `chunked` twice: it removes the last one) would describe a body that is
  // not encoded so, and a server reading it as chunks could take the body for
  // the next request.
  if (req.find(beast::http::field::transfer_encoding) != req.end()) {
    p.refused = make_error_code(error::invalid_request);
    return p;
  }

  const auto port = std::to_string(origin.port);
  p.key.reserve(origin.scheme.size() + 3 + host.size() + 1 + port.size());
  p.key.append(origin.scheme).append("://").append(host).append("/").append(port);
  p.owner = shared_from_this();  // alive while the request is; gives back what p holds
  p.pool = pool_for(p.key);
  // A slot free now, and a connection for it: the request's coroutine then
  // starts on that connection's strand and does its I/O there, without a hop.
  if (try_acquire(*p.pool)) {
    p.slot = true;
    p.conn = take_idle(*p.pool);
    p.reused = p.conn != nullptr;
    if (!p.reused)
      p.conn = connection_ptr(new client_detail::connection(
          ex, origin.scheme == "https" ? tls.get() : nullptr, stats_ptr));
  }
  p.origin = std::move(origin);
  p.req = std::move(req);
  return p;
}

asio::awaitable<result> client::impl::run(client_detail::request_plan plan) {
  // One coroutine frame for the whole request (bench/README.md, "The
  // request on its connection's strand"), started on a strand of levee's: the
  // strand of the connection the plan holds, or a new one.
  const asio::any_io_executor here = co_await asio::this_coro::executor;
  const bool stranded = client_detail::is_strand(here);
  const steady::time_point deadline = plan.deadline;
  const bool capped = plan.capped;
  host_pool& pool = *plan.pool;
  // A connection slot, within the deadline.
  if (!plan.slot) {
    const auto now_waiting = stats.waiting.fetch_add(1) + 1;
    for (auto peak = stats.peak_waiting.load();
         now_waiting > peak && !stats.peak_waiting.compare_exchange_weak(peak, now_waiting);) {
    }
    auto [ec] = co_await async_acquire(plan.pool, deadline, asio::as_tuple(asio::use_awaitable));
    stats.waiting.fetch_sub(1);
    if (ec) co_return result(client_detail::ended(capped, ec), response());
    plan.slot = true;
  }
  if (steady::now() >= deadline)
    co_return result(client_detail::ended(capped, beast::error::timeout), response());

  request& req = plan.req;
  const bool secure = plan.origin.scheme == "https";
  const detail::response_limits limits{options.body_limit, options.header_limit,
                                       std::size_t{options.header_limit} + 64 * 1024, 8};
  const bool head = req.method() == beast::http::verb::head;
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
      // On this coroutine's strand: its I/O needs no hop.
      ssl::context* const context = secure ? tls.get() : nullptr;
      conn = stranded ? connection_ptr(new client_detail::connection(
                            client_detail::connection::on_strand_t{}, here, context, stats_ptr))
                      : connection_ptr(new client_detail::connection(ex, context, stats_ptr));
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
      ec = co_await converse(*conn, plan.origin, reused, req, reader, deadline, plan.carried);
    } else {
      ec = co_await levee::detail::run_on(conn->executor, converse(*conn, plan.origin, reused, req,
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
      co_return result(client_detail::ended(capped, ec),
                       response());  // the connection is closed with `conn`
    }
    const bool clean = reader.clean() && !conn->leftover;
    response res = reader.release();
    // A 408 that closes a pooled connection answers no request of ours: the
    // server gave up on the idle connection just as this request went out.
    // Not after an early response, though: a body is never sent twice.
    if (reused && !conn->early && res.result_int() == 408 && !res.keep_alive() &&
        client_detail::idempotent(req.method()) && steady::now() < deadline) {
      stats.retried.fetch_add(1, std::memory_order_relaxed);
      fresh_only = true;
      continue;
    }
    // (An early response leaves the server reading, or dropping, the rest.)
    if (res.keep_alive() && req.keep_alive() && clean && !conn->early)
      put_idle(pool, std::move(conn));
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

namespace detail {

namespace {

// The executor under `ex`: a strand's inner io_context executor, or `ex`.
asio::any_io_executor unstranded(const asio::any_io_executor& ex) {
  using io_executor = asio::io_context::executor_type;
  if (const auto* s = ex.target<asio::strand<io_executor>>()) return s->get_inner_executor();
  return ex;
}

/// One request operation: runs an `awaitable<result>` as a child coroutine
/// and completes the type-erased handler with `(ec, response)` on the
/// handler's executor.
///
/// A request the client prepared (`client::impl::prepare`) runs on the
/// strand it is given, `on`: its connection's when a slot and a connection
/// were free at initiation (that connection's I/O then runs in the child
/// itself, without a hop), else a new one. Its caller is resumed by a post
/// (`post_end_`).
///
/// Any other child (a request refused at initiation, guarded.hpp's
/// breaker-guarded GET): a caller that can cancel (its handler has a
/// connected cancellation slot) gets a strand of its own for the child; one
/// that cannot gets no strand (nor a slot bound to the child): nothing but
/// the child's own steps, one at a time, ever touches its state.
///
/// A caller's cancellation is posted to the child's strand (as
/// `levee::detail::run_on` does, and for the same reason: Asio issue 1332),
/// so that it never runs beside the child's own steps, and the caller's slot
/// is cleared on the caller's executor before the handler runs.
class request_op : public std::enable_shared_from_this<request_op> {
 public:
  request_op(request_handler h, std::shared_ptr<void> client_state,
             const asio::any_io_executor& client_ex, const asio::any_io_executor* on = nullptr)
      : handler_(std::move(h.handler)),
        client_state_(std::move(client_state)),
        work_(asio::prefer(h.executor, asio::execution::outstanding_work.tracked)),
        caller_slot_(asio::get_associated_cancellation_slot(handler_)),
        post_end_(on != nullptr),
        child_ex_(on                            ? *on
                  : caller_slot_.is_connected() ? client_detail::new_strand(client_ex)
                                                : unstranded(client_ex)) {}

  void start(asio::awaitable<result> aw) {
    if (!caller_slot_.is_connected()) {
      // No post first: co_spawn starts the child inline when this thread runs
      // the client's executor (up to its first wait), posts it otherwise.
      const levee::detail::initiation_mark here(this);
      asio::co_spawn(child_ex_, std::move(aw),
                     [self = shared_from_this()](std::exception_ptr e, result r) {
                       self->complete(std::move(e), std::move(r));
                     });
      return;
    }
    caller_slot_.assign([weak = weak_from_this()](asio::cancellation_type type) {
      if (auto self = weak.lock()) {
        asio::post(self->child_ex_, [self, type] {
          if (!self->finished_) self->child_signal_.emit(type);
        });
      }
    });
    asio::post(child_ex_, [self = shared_from_this(), aw = std::move(aw)]() mutable {
      asio::co_spawn(self->child_ex_, std::move(aw),
                     asio::bind_cancellation_slot(self->child_signal_.slot(),
                                                  [self](std::exception_ptr e, result r) {
                                                    self->finished_ = true;  // on the strand
                                                    self->complete(std::move(e), std::move(r));
                                                  }));
    });
  }

 private:
  // The caller's resumption: dispatched from the child's completion, posted
  // when that came inside the initiation (bench/README.md, "The caller
  // resumed without a post") or on a connection's strand (`post_end_`).
  void complete(std::exception_ptr e, result r) {
    auto ex = work_;
    auto resume = [self = shared_from_this(), e = std::move(e), r = std::move(r)]() mutable {
      if (self->caller_slot_.is_connected()) self->caller_slot_.clear();
      any_request_handler h = std::move(self->handler_);
      self->work_ = asio::any_io_executor();
      self.reset();
      auto& [ec, res] = r;
      if (e) {
        // The request's own errors are error_codes; a system_error from below
        // becomes its code; anything else (bad_alloc) propagates out of the
        // io_context's run(), as an exception from a handler does.
        try {
          std::rethrow_exception(e);
        } catch (const boost::system::system_error& failure) {
          ec = failure.code();
          res = response();
        }
      }
      std::move(h)(ec, std::move(res));
    };
    if (post_end_ || levee::detail::initiation_mark::inside(this))
      asio::post(ex, std::move(resume));
    else
      asio::dispatch(ex, std::move(resume));
  }

  any_request_handler handler_;
  std::shared_ptr<void> client_state_;  // the client's inside, alive until the completion
  asio::any_io_executor work_;          // the handler's, tracked
  asio::cancellation_slot caller_slot_;
  // The child runs on a connection's strand (`on`), which that connection
  // takes back to the pool before the request ends: the caller is resumed by
  // a post, outside it, or its code would hold the strand, and the next
  // request on that connection, until it suspended (tests/http_threads.cpp,
  // "a resumed caller does not hold its connection's strand").
  bool post_end_;
  asio::any_io_executor child_ex_;  // a strand of its own if the caller can cancel
  asio::cancellation_signal child_signal_;
  bool finished_ = false;  // on the strand only (used only when the caller can cancel)
};

}  // namespace

std::shared_ptr<dns_resolver> client_access::resolver(client& c) {
  return std::shared_ptr<dns_resolver>(c.impl_, &c.impl_->resolver);
}

void client_access::run(client& c, asio::awaitable<result> aw, request_handler h) {
  std::make_shared<request_op>(std::move(h), c.impl_, c.impl_->ex)->start(std::move(aw));
}

namespace {
// The caller's deadline on the client's clock, fixed now, at initiation: a
// request whose coroutine starts late (a busy io_context) keeps it.
std::optional<client_detail::steady::time_point> deadline_of(
    const asio::any_io_executor& ex) noexcept {
  if (auto left = remaining_deadline(ex))
    return client_detail::deadline_after(client_detail::steady::now(), *left);
  return std::nullopt;
}

asio::awaitable<result> refused(boost::system::error_code ec) {
  co_return result(ec, response());
}

// Runs a prepared request: on its connection's strand when the plan holds
// one (the connection's I/O then needs no hop), else on a new strand (a new
// connection made after the wait for a slot shares it).
// (A template: `client::impl` is named by its friends only.)
template <class Impl>
void start_plan(client& c, const std::shared_ptr<Impl>& state, client_detail::request_plan plan,
                request_handler h) {
  if (plan.refused) return client_access::run(c, refused(plan.refused), std::move(h));
  const asio::any_io_executor on =
      plan.conn ? plan.conn->executor : client_detail::new_strand(state->ex);
  std::make_shared<request_op>(std::move(h), state, state->ex, &on)
      ->start(state->run(std::move(plan)));
}
}  // namespace

void client_access::start(client& c, url_parts origin, request req,
                          std::optional<std::chrono::nanoseconds> timeout, request_handler h) {
  auto& impl = *c.impl_;
  const auto until = deadline_of(h.executor);
  start_plan(c, c.impl_,
             impl.prepare(std::move(origin), std::move(req), timeout.value_or(impl.options.timeout),
                          until),
             std::move(h));
}

void client_access::start(client& c, std::string url, beast::http::verb method, request_handler h) {
  const auto until = deadline_of(h.executor);
  url_parts parts;
  if (auto ec = parse_url(url, parts)) return run(c, refused(ec), std::move(h));
  auto& impl = *c.impl_;
  request req(method, parts.target, 11);
  start_plan(c, c.impl_,
             impl.prepare(std::move(parts), std::move(req), impl.options.timeout, until),
             std::move(h));
}

void client_access::start_send(client& c, std::string origin, request req, request_handler h) {
  const auto until = deadline_of(h.executor);
  url_parts parts;
  if (auto ec = parse_url(origin, parts)) return run(c, refused(ec), std::move(h));
  if (parts.target != "/")  // an origin has no path nor query
    return run(c, refused(make_error_code(error::invalid_url)), std::move(h));
  auto& impl = *c.impl_;
  start_plan(c, c.impl_,
             impl.prepare(std::move(parts), std::move(req), impl.options.timeout, until),
             std::move(h));
}

}  // namespace detail

asio::awaitable<response> http_get(client& c, std::string url) {
  co_return co_await async_get(c, std::move(url), asio::use_awaitable);
}

asio::awaitable<response> http_head(client& c, std::string url) {
  co_return co_await async_head(c, std::move(url), asio::use_awaitable);
}

asio::awaitable<response> send(client& c, std::string origin, request req) {
  co_return co_await async_send(c, std::move(origin), std::move(req), asio::use_awaitable);
}

asio::awaitable<response> send(client& c, std::string host, std::uint16_t port, request req) {
  co_return co_await c.async_request(std::move(host), port, std::move(req), asio::use_awaitable);
}

}  // namespace levee::http
