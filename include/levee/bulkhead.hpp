// levee: a bulkhead, the concurrency limit of DESIGN.md's composition order.
#pragma once

#include <levee/detail/clock_traits.hpp>
#include <levee/detail/result_shape.hpp>
#include <levee/detail/spinlock.hpp>
#include <levee/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/experimental/parallel_group.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <list>
#include <memory>
#include <type_traits>

namespace levee {

/// A bulkhead's limits. Plain struct, a default on every member.
struct bulkhead_options {
  /// Calls running at once. >= 1.
  std::size_t max_concurrent = 64;
  /// Calls waiting for a slot when all are taken; one more is rejected with
  /// `error::bulkhead_full`. 0: no queue, reject at once.
  std::size_t max_queue = 0;
  /// Longest wait in the queue before giving up with `error::bulkhead_full`.
  /// 0: wait until a slot frees or the caller's own deadline cancels the wait.
  std::chrono::nanoseconds max_wait = std::chrono::nanoseconds::zero();
};

/// Throws `std::invalid_argument` naming the first invalid member.
void validate(const bulkhead_options& options);

namespace detail {

namespace asio = boost::asio;

/// The bulkhead's shared state: a count of running calls and a FIFO of
/// waiters, under one short lock.
class bulkhead_state {
 public:
  explicit bulkhead_state(const bulkhead_options& o) : options_(o) {}

  struct waiter {
    virtual ~waiter() = default;
    // Posts the waiter's completion with `ec` to its executor, then deletes it.
    virtual void complete(boost::system::error_code ec) = 0;
    std::list<waiter*>::iterator position;
    bool queued = false;
  };

  enum class entry { granted, queue, full };

  /// Takes a slot if one is free and nobody waits (first come, first served).
  entry try_enter() noexcept {
    spin_guard g(lock_);
    if (active_ < options_.max_concurrent && queue_.empty()) {
      ++active_;
      return entry::granted;
    }
    return queue_.size() < options_.max_queue ? entry::queue : entry::full;
  }

  /// Queues `w`, or grants or refuses it at once. Never completes inline.
  void enqueue(waiter* w) {
    boost::system::error_code ec;
    {
      spin_guard g(lock_);
      if (active_ < options_.max_concurrent && queue_.empty()) {
        ++active_;
      } else if (queue_.size() < options_.max_queue) {
        w->position = queue_.insert(queue_.end(), w);
        w->queued = true;
        return;
      } else {
        ec = make_error_code(error::bulkhead_full);
      }
    }
    w->complete(ec);
  }

  /// A waiter's cancellation: removes it if it is still waiting.
  void cancel(waiter* w) {
    {
      spin_guard g(lock_);
      if (!w->queued) return;  // already granted: it owns a slot now
      queue_.erase(w->position);
      w->queued = false;
    }
    w->complete(boost::asio::error::operation_aborted);
  }

  /// A call finished: its slot goes to the first waiter, or back to the pool.
  void leave() noexcept {
    waiter* next = nullptr;
    {
      spin_guard g(lock_);
      if (!queue_.empty()) {
        next = queue_.front();
        queue_.pop_front();
        next->queued = false;  // the slot passes to it: active_ unchanged
      } else {
        --active_;
      }
    }
    if (next) next->complete({});
  }

  std::size_t in_flight() const noexcept {
    spin_guard g(const_cast<spinlock&>(lock_));
    return active_;
  }
  std::size_t queued() const noexcept {
    spin_guard g(const_cast<spinlock&>(lock_));
    return queue_.size();
  }
  const bulkhead_options& options() const noexcept { return options_; }

 private:
  bulkhead_options options_;
  spinlock lock_;
  std::size_t active_ = 0;
  std::list<waiter*> queue_;
};

template <class Handler, class IoExecutor>
class bulkhead_waiter final : public bulkhead_state::waiter {
 public:
  using executor_type = asio::associated_executor_t<Handler, IoExecutor>;

  bulkhead_waiter(bulkhead_state& state, Handler&& h, const IoExecutor& io)
      : state_(state),
        handler_(std::move(h)),
        work_(asio::get_associated_executor(handler_, io)),
        slot_(asio::get_associated_cancellation_slot(handler_)) {}

  void start() {
    if (slot_.is_connected()) {
      slot_.assign([this](asio::cancellation_type) { state_.cancel(this); });
    }
    state_.enqueue(this);
  }

  void complete(boost::system::error_code ec) override {
    auto ex = work_.get_executor();
    asio::post(ex, [self = std::unique_ptr<bulkhead_waiter>(this), ec]() mutable {
      if (self->slot_.is_connected()) self->slot_.clear();
      Handler h = std::move(self->handler_);
      self.reset();
      std::move(h)(ec);
    });
  }

 private:
  bulkhead_state& state_;
  Handler handler_;
  asio::executor_work_guard<executor_type> work_;
  asio::cancellation_slot slot_;
};

/// Gives a slot back when the guarded call ends, however it ends.
class bulkhead_slot {
 public:
  explicit bulkhead_slot(bulkhead_state& s) noexcept : state_(&s) {}
  bulkhead_slot(const bulkhead_slot&) = delete;
  bulkhead_slot& operator=(const bulkhead_slot&) = delete;
  ~bulkhead_slot() { state_->leave(); }

 private:
  bulkhead_state* state_;
};

/// Waits for a slot of `state`, at most `max_wait` (0: until granted or
/// cancelled). Returns success (the caller owns a slot), `bulkhead_full`
/// (the wait ran out) or `operation_aborted` (the caller cancelled).
template <class Clock, class Executor>
asio::awaitable<boost::system::error_code, Executor> wait_for_slot(
    bulkhead_state& state, std::chrono::nanoseconds max_wait) {
  const Executor ex = co_await asio::this_coro::executor;
  auto acquire = [&state, ex](auto token) {
    return asio::async_initiate<decltype(token), void(boost::system::error_code)>(
        [&state, ex](auto handler) {
          using handler_type = std::decay_t<decltype(handler)>;
          auto* w = new bulkhead_waiter<handler_type, Executor>(state, std::move(handler), ex);
          w->start();
        },
        token);
  };
  if (max_wait <= std::chrono::nanoseconds::zero()) {
    auto [ec] = co_await acquire(asio::as_tuple(asio::use_awaitable_t<Executor>{}));
    co_return ec;
  }
  asio::basic_waitable_timer<Clock, wait_traits_of_t<Clock>, Executor> timer(
      ex, std::chrono::ceil<typename Clock::duration>(max_wait));
  auto [order, wait_ec, timer_ec] =
      co_await asio::experimental::make_parallel_group(acquire(asio::deferred),
                                                       timer.async_wait(asio::deferred))
          .async_wait(asio::experimental::wait_for_one(), asio::use_awaitable_t<Executor>{});
  if (!wait_ec) co_return wait_ec;  // granted, even if the timer fired too: the slot is ours
  if (order[0] == 1 && !timer_ec) co_return make_error_code(error::bulkhead_full);
  co_return wait_ec;  // the caller cancelled the wait
}

}  // namespace detail

/// A bulkhead: at most `max_concurrent` guarded calls run at once; up to
/// `max_queue` more wait, first come first served, each for at most
/// `max_wait` (and never beyond its caller's own cancellation); any other is
/// rejected with `error::bulkhead_full` without being started.
///
/// `co_await bulkhead(call())` returns `call()`'s result unchanged; a rejection
/// throws `boost::system::system_error`, or, for a `std::tuple<error_code,
/// U...>` result, returns `{error::bulkhead_full, U{}...}`. A cancelled wait
/// ends with `operation_aborted` in the same two forms.
///
/// Thread safety: shared freely between threads. Lifetime: must outlive the
/// calls it guards. `Clock` times `max_wait`.
template <class Clock = std::chrono::steady_clock>
class basic_bulkhead {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// Throws `std::invalid_argument` naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type>
  explicit basic_bulkhead(const Executor& ex, bulkhead_options options = {})
      : executor_(ex), state_(std::make_unique<detail::bulkhead_state>(checked(options))) {}

  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_bulkhead(ExecutionContext& ctx, bulkhead_options options = {})
      : basic_bulkhead(ctx.get_executor(), options) {}

  executor_type get_executor() const noexcept { return executor_; }
  const bulkhead_options& options() const noexcept { return state_->options(); }
  /// Calls running now (slots taken).
  std::size_t in_flight() const noexcept { return state_->in_flight(); }
  /// Calls waiting for a slot now.
  std::size_t queued() const noexcept { return state_->queued(); }

  /// Guards `aw` (an `asio::awaitable<T, Executor>`, passed as an rvalue).
  template <class T, class Executor>
  boost::asio::awaitable<T, Executor> operator()(boost::asio::awaitable<T, Executor> aw) {
    return call(*state_, std::move(aw));
  }

  /// Waits for a slot: completes with `void(error_code)`: success (the caller
  /// now holds a slot and must call `release()` exactly once), `bulkhead_full`
  /// or `operation_aborted` (the wait was cancelled). Never completes inside
  /// the call. Per-operation cancellation: all types, while waiting.
  template <class CompletionToken>
  auto async_acquire(CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [this](auto handler) {
          using handler_type = std::decay_t<decltype(handler)>;
          auto* w = new detail::bulkhead_waiter<handler_type, executor_type>(
              *state_, std::move(handler), executor_);
          w->start();
        },
        token);
  }

  /// Gives back a slot taken with `async_acquire`.
  void release() noexcept { state_->leave(); }

 private:
  static bulkhead_options checked(bulkhead_options o) {
    validate(o);
    return o;
  }

  template <class T, class Executor>
  static boost::asio::awaitable<T, Executor> call(detail::bulkhead_state& state,
                                                  boost::asio::awaitable<T, Executor> aw) {
    namespace asio = boost::asio;
    boost::system::error_code ec;
    switch (state.try_enter()) {
      case detail::bulkhead_state::entry::granted:
        break;
      case detail::bulkhead_state::entry::full:
        ec = error::bulkhead_full;
        break;
      case detail::bulkhead_state::entry::queue:
        ec = co_await detail::wait_for_slot<Clock, Executor>(state, state.options().max_wait);
        break;
    }
    if (ec) {
      if constexpr (detail::is_error_tuple_v<T>) {
        co_return detail::error_tuple<T>::make(ec);
      } else {
        throw boost::system::system_error(ec);
      }
    }
    detail::bulkhead_slot slot(state);
    co_return co_await std::move(aw);
  }

  executor_type executor_;
  std::unique_ptr<detail::bulkhead_state> state_;
};

using bulkhead = basic_bulkhead<>;

}  // namespace levee
