// levee: the HTTP client's operations: a request's initiation (prepared by
// `client::impl::prepare`, http/impl/request.ipp), the operation that runs it
// and completes its handler, and the coroutine forms. Compiled once in lib/.
#pragma once

#include <levee/core/detail/block_cache.hpp>
#include <levee/core/detail/initiation_mark.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/error.hpp>
#include <levee/http/client.hpp>
#include <levee/http/deadline.hpp>
#include <levee/http/error.hpp>
#include <levee/http/impl/client_impl.hpp>
#include <levee/timeout/deadline.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/dispatch.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <exception>
#include <memory>
#include <optional>
#include <utility>

namespace levee::http {

namespace asio = boost::asio;
namespace beast = boost::beast;

namespace detail {

namespace {

/// One request operation: runs an `awaitable<result>`, or a prepared
/// request's `awaitable<void>` that leaves its result in `slot()`, as a child
/// coroutine, and completes the type-erased handler with `(ec, response)` on
/// the handler's executor.
///
/// A request the client prepared (`client::impl::prepare`) runs on the
/// strand it is given, `on`: its connection's when a slot and a connection
/// were free at initiation (that connection's I/O then runs in the child
/// itself, without a hop), else a new one. Its caller is resumed by a post
/// (`post_end_`). For a caller that cannot cancel, it is launched on an
/// entry point of levee's rather than co_spawn's (`start_prepared`).
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
                                                : client_detail::unstranded(client_ex)) {}

  /// Runs `aw`: an `awaitable<result>`, or a prepared request's
  /// `awaitable<void>`, which leaves its result in `slot()` (the response
  /// then goes from there to the caller's handler, not through co_spawn's
  /// completion and this operation's: bench/README.md, "The response moved
  /// once").
  template <class T>
  void start(asio::awaitable<T> aw) {
    if (!caller_slot_.is_connected()) {
      // No post first: co_spawn starts the child inline when this thread runs
      // the client's executor (up to its first wait), posts it otherwise.
      const levee::detail::initiation_mark here(this);
      asio::co_spawn(child_ex_, std::move(aw), child_end{shared_from_this(), false});
      return;
    }
    caller_slot_.assign([weak = weak_from_this()](asio::cancellation_type type) {
      if (auto self = weak.lock()) {
        self->cancelled_.store(true, std::memory_order_release);
        asio::post(self->child_ex_, [self, type] {
          if (!self->finished_) self->child_signal_.emit(type);
        });
      }
    });
    asio::post(child_ex_, [self = shared_from_this(), aw = std::move(aw)]() mutable {
      if (self->cancelled_.load(std::memory_order_acquire)) {
        // Cancelled (any type) before the child started: nothing was sent.
        // The unstarted child is destroyed here, and with it what it held (a
        // prepared request gives back its slot and its pooled connection).
        { const auto dropped = std::move(aw); }
        self->finished_ = true;
        self->result_ = result(asio::error::operation_aborted, response());
        self->complete(nullptr);
        return;
      }
      asio::co_spawn(
          self->child_ex_, std::move(aw),
          asio::bind_cancellation_slot(self->child_signal_.slot(), child_end{self, true}));
    });
  }

  /// Runs a prepared request's `awaitable<void>` (its result in `slot()`).
  /// A caller that cannot cancel: as `start` does, with co_spawn's entry
  /// point replaced by levee's (`prepared_thread`), launched inside the
  /// request's strand. Otherwise `start`.
  void start_prepared(asio::awaitable<void> aw) {
#if defined(LEVEE_OWN_FRAMES)
    if (!caller_slot_.is_connected()) {
      // The entry's frame is made here, so that its allocation failing
      // throws to the initiating caller, as co_spawn's does; launched
      // inside the strand. (The entry holds this operation: `op` lives as
      // long as the closure. A closure no larger than this fits the block
      // of Asio's cache the dispatch's operation takes.)
      auto entry = prepared_thread(levee::detail::own_frame, shared_from_this(), std::move(aw));
      asio::dispatch(child_ex_, [entry = std::move(entry), op = this]() mutable {
        asio::detail::awaitable_thread<asio::any_io_executor>(
            std::move(entry), op->child_ex_, asio::cancellation_slot(), asio::cancellation_state())
            .launch();
      });
      return;
    }
#endif
    start(std::move(aw));
  }

  /// Where a prepared request's coroutine puts its result.
  result& slot() noexcept {
    return result_;
  }

 private:
#if defined(LEVEE_OWN_FRAMES)
  // A prepared request's thread of coroutines, as co_spawn's entry point
  // runs a child, minus what this operation does itself or does not need:
  // the entry point's frame of Asio's (this one is levee's, from its block
  // cache), co_spawn's work guards (the request's own I/O keeps the
  // context's work, and `work_` the caller's), its dispatch to the
  // executor as an awaited operation (the launch is inside the strand
  // already: `start_prepared`), its check for a child that never waited
  // (a prepared request resumes its caller by a post: `post_end_`), and
  // its dispatch of the completion (the end is on the strand already).
  // bench/README.md, "A request's coroutine without co_spawn". What escapes
  // `complete` (its post, out of memory) leaves through Asio's resumption,
  // out of the io_context's run(), as from co_spawn's completion handler.
  static asio::awaitable<asio::detail::awaitable_thread_entry_point, asio::any_io_executor>
  prepared_thread(levee::detail::own_frame_t, std::shared_ptr<request_op> self,
                  asio::awaitable<void> aw) {
    std::exception_ptr e;
    try {
      co_await std::move(aw);
    } catch (...) {
      e = std::current_exception();
    }
    self->complete(std::move(e));
  }
#endif

  // The caller's resumption: dispatched from the child's completion, posted
  // when that came inside the initiation (bench/README.md, "The caller
  // resumed without a post") or on a connection's strand (`post_end_`).
  void complete(std::exception_ptr e) {
    auto ex = work_;
    auto resume = [self = shared_from_this(), e = std::move(e)]() mutable {
      if (self->caller_slot_.is_connected()) self->caller_slot_.clear();
      any_request_handler h = std::move(self->handler_);
      auto [ec, res] = std::move(self->result_);
      self->work_ = asio::any_io_executor();
      self.reset();
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

  // The child's completion: its result into `result_` (an
  // `awaitable<result>`'s; a prepared request's is there already), then the
  // caller's resumption.
  struct child_end {
    std::shared_ptr<request_op> self;
    bool on_strand;  // spawned with a strand and a slot: `finished_` is used
    void operator()(std::exception_ptr e) const {
      if (on_strand) self->finished_ = true;
      self->complete(std::move(e));
    }
    void operator()(std::exception_ptr e, result r) const {
      if (on_strand) self->finished_ = true;
      self->result_ = std::move(r);
      self->complete(std::move(e));
    }
  };

  any_request_handler handler_;
  result result_;                       // see `slot`
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
  // Set by the caller's cancellation, on any thread: the child is not started
  // after it (tests/http_client.cpp, "a request cancelled before it starts").
  std::atomic<bool> cancelled_{false};
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
void start_plan(client& c, const std::shared_ptr<Impl>& state, client_detail::plan_ptr plan,
                request_handler h) {
  if (plan->refused) return client_access::run(c, refused(plan->refused), std::move(h));
  const asio::any_io_executor on =
      plan->conn ? plan->conn->executor : client_detail::new_strand(state->ex);
  // From levee's block cache: one allocation a request less for malloc.
  const auto op = std::allocate_shared<request_op>(levee::detail::cached_allocator<request_op>(),
                                                   std::move(h), state, state->ex, &on);
  op->start_prepared(state->run(levee::detail::own_frame, std::move(plan), op->slot()));
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
             impl.prepare(std::move(parts), std::move(req), impl.options.timeout, until, true),
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
