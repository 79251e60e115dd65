// levee: runs an awaitable as a child coroutine on another executor (a strand),
// with the caller's cancellation forwarded safely.
#pragma once

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <memory>
#include <tuple>
#include <type_traits>

namespace levee::detail {

namespace asio = boost::asio;

/// `co_await asio::co_spawn(ex, aw, use_awaitable)` forwards the caller's
/// cancellation by posting a pointer to a signal that the caller's frame owns
/// and frees when it resumes: with the child on another thread, the post can
/// run after the free (Asio issue 1332, fixed after 1.81). Here the signal
/// belongs to a shared state that every posted step holds; the caller's slot
/// holds a weak_ptr and is cleared on the caller's executor before it resumes.
/// `Value` is `void` for an `awaitable<void>` (completion `void(std::exception_ptr)`).
template <class Value, class Handler, class Executor>
class run_on_op : public std::enable_shared_from_this<run_on_op<Value, Handler, Executor>> {
 public:
  using handler_executor = asio::associated_executor_t<Handler, Executor>;

  run_on_op(Handler&& h, const Executor& caller_ex, const Executor& child_ex)
      : handler_(std::move(h)),
        work_(asio::get_associated_executor(handler_, caller_ex)),
        caller_slot_(asio::get_associated_cancellation_slot(handler_)),
        child_ex_(child_ex) {}

  void start(asio::awaitable<Value, Executor> aw) {
    if (caller_slot_.is_connected()) {
      caller_slot_.assign([weak = this->weak_from_this()](asio::cancellation_type type) {
        if (auto self = weak.lock()) {
          asio::post(self->child_ex_, [self, type] {
            if (!self->finished_) self->child_signal_.emit(type);
          });
        }
      });
    }
    asio::post(child_ex_, [self = this->shared_from_this(), aw = std::move(aw)]() mutable {
      auto slot = self->child_signal_.slot();
      if constexpr (std::is_void_v<Value>) {
        asio::co_spawn(self->child_ex_, std::move(aw),
                       asio::bind_cancellation_slot(slot, [self](std::exception_ptr e) {
                         self->finished_ = true;  // on the child's executor
                         self->complete(std::move(e));
                       }));
      } else {
        asio::co_spawn(self->child_ex_, std::move(aw),
                       asio::bind_cancellation_slot(slot, [self](std::exception_ptr e, Value v) {
                         self->finished_ = true;  // on the child's executor
                         self->complete(std::move(e), std::move(v));
                       }));
      }
    });
  }

 private:
  // `v`: the value, none for `awaitable<void>`. Posted, not dispatched as
  // the hedge and the timeout race resume their callers: the child's
  // executor is a connection's strand, which the pool hands to the next
  // request; a caller resumed inside its invoker would hold that request's
  // I/O until it next suspends (bench/README.md, "The caller resumed
  // without a post").
  template <class... V>
  void complete(std::exception_ptr e, V... v) {
    asio::post(work_.get_executor(),
               [self = this->shared_from_this(), e = std::move(e), ... v = std::move(v)]() mutable {
                 if (self->caller_slot_.is_connected()) self->caller_slot_.clear();
                 Handler h = std::move(self->handler_);
                 self->work_.reset();
                 self.reset();
                 std::move(h)(std::move(e), std::move(v)...);
               });
  }

  Handler handler_;
  asio::executor_work_guard<handler_executor> work_;
  asio::cancellation_slot caller_slot_;
  Executor child_ex_;
  asio::cancellation_signal child_signal_;
  bool finished_ = false;  // on the child's executor only
};

/// Runs `aw` on `child_ex` (a strand) and resumes the caller on its own
/// executor with `aw`'s result (its exception rethrown). `Value` must be
/// default-constructible (co_spawn's rule).
template <class Value, class Executor>
asio::awaitable<Value, Executor> run_on(const Executor& child_ex,
                                        asio::awaitable<Value, Executor> aw) {
  const Executor ex = co_await asio::this_coro::executor;
  auto token = asio::as_tuple(asio::use_awaitable_t<Executor>{});
  auto [failure, value] =
      co_await asio::async_initiate<decltype(token), void(std::exception_ptr, Value)>(
          [&ex, &child_ex](auto handler, asio::awaitable<Value, Executor> call) {
            using op_type = run_on_op<Value, std::decay_t<decltype(handler)>, Executor>;
            std::make_shared<op_type>(std::move(handler), ex, child_ex)->start(std::move(call));
          },
          token, std::move(aw));
  if (failure) std::rethrow_exception(failure);
  co_return std::move(value);
}

}  // namespace levee::detail
