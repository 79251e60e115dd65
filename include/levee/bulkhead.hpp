// levee: a bulkhead, the concurrency limit of DESIGN.md's composition order.
#pragma once

#include <levee/detail/clock_traits.hpp>
#include <levee/detail/result_shape.hpp>
#include <levee/detail/saturating.hpp>
#include <levee/detail/spinlock.hpp>
#include <levee/detail/validate.hpp>
#include <levee/error.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/append.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <list>
#include <memory>
#include <optional>
#include <tuple>
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
  /// 0 or `nanoseconds::max()`: wait until a slot frees or the caller's own
  /// deadline cancels the wait. Any value up to `max()` works (the deadline
  /// saturates). >= 0.
  std::chrono::nanoseconds max_wait = std::chrono::nanoseconds::zero();
};

/// Throws `std::invalid_argument` naming the first invalid member.
void validate(const bulkhead_options& options);

namespace detail {

namespace asio = boost::asio;

/// The bulkhead's shared state: a count of running calls and a FIFO of
/// waiters, under one short lock. Held by shared_ptr: by the bulkhead, by each
/// call that holds a slot and by each waiter, so none of them points into a
/// destroyed bulkhead.
class bulkhead_state {
 public:
  explicit bulkhead_state(const bulkhead_options& o) : options_(o) {}

  struct waiter {
    virtual ~waiter() = default;
    // Posts the waiter's completion with `ec` to its executor. Called once,
    // by whoever took the waiter out of the queue, outside the lock.
    virtual void complete(boost::system::error_code ec) = 0;
    std::list<std::shared_ptr<waiter>>::iterator position;
    bool queued = false;
  };

  enum class entry { granted, queue, full };

  /// What a wait that ran out of `max_wait` ends with.
  static boost::system::error_code wait_timeout_error() noexcept {
    return make_error_code(error::bulkhead_full);
  }

  /// Takes a slot if one is free and nobody waits (first come, first served).
  entry try_enter() noexcept {
    spin_guard g(lock_);
    if (closed_) return entry::queue;  // enqueue refuses it with operation_aborted
    if (active_ < options_.max_concurrent && queue_.empty()) {
      ++active_;
      return entry::granted;
    }
    return queue_.size() < options_.max_queue ? entry::queue : entry::full;
  }

  /// Queues `w`, or grants or refuses it at once. Never completes inline.
  void enqueue(const std::shared_ptr<waiter>& w) {
    boost::system::error_code ec;
    {
      spin_guard g(lock_);
      if (closed_) {
        ec = boost::asio::error::operation_aborted;
      } else if (active_ < options_.max_concurrent && queue_.empty()) {
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

  /// A waiter's cancellation (`operation_aborted`) or the end of its
  /// `max_wait` (`bulkhead_full`): removes it if it is still waiting.
  void cancel(waiter& w, boost::system::error_code ec) {
    std::shared_ptr<waiter> removed;
    {
      spin_guard g(lock_);
      if (!w.queued) return;  // already granted (it owns a slot now) or completed
      removed = std::move(*w.position);
      queue_.erase(w.position);
      w.queued = false;
    }
    removed->complete(ec);
  }

  /// A call finished: its slot goes to the first waiter, or back to the pool.
  void leave() noexcept {
    std::shared_ptr<waiter> next;
    {
      spin_guard g(lock_);
      if (!queue_.empty()) {
        next = std::move(queue_.front());
        queue_.pop_front();
        next->queued = false;  // the slot passes to it: active_ unchanged
      } else {
        --active_;
      }
    }
    if (next) next->complete({});
  }

  /// The bulkhead is gone: every waiter completes with `operation_aborted`
  /// (posted: if its io_context is destroyed instead of run, the waiting
  /// coroutine is destroyed with it), and later calls are refused the same
  /// way. Calls holding a slot finish normally.
  void close() {
    std::list<std::shared_ptr<waiter>> waiting;
    {
      spin_guard g(lock_);
      closed_ = true;
      waiting.swap(queue_);
      for (auto& w : waiting) w->queued = false;
    }
    for (auto& w : waiting) w->complete(boost::asio::error::operation_aborted);
  }

  std::size_t in_flight() const noexcept {
    spin_guard g(lock_);
    return active_;
  }
  std::size_t queued() const noexcept {
    spin_guard g(lock_);
    return queue_.size();
  }
  const bulkhead_options& options() const noexcept { return options_; }

 private:
  const bulkhead_options options_;
  mutable spinlock lock_;
  std::size_t active_ = 0;
  bool closed_ = false;
  std::list<std::shared_ptr<waiter>> queue_;
};

/// One `async_acquire` (or one queued call): the handler, its cancellation
/// slot and the `max_wait` timer.
///
/// Nothing but the state's lock decides how a wait ends: a grant (`leave`),
/// the caller's cancellation and the timer all go through the state, and only
/// the one that takes the waiter out of the queue completes it. The timer's
/// handler and the slot's handler hold weak_ptrs, and the timer never emits
/// into the caller's slot: the slot is cleared only on the caller's executor,
/// in the posted completion.
///
/// `State` is `bulkhead_state` or another state with the same waiter
/// protocol (`enqueue`, `cancel`, `wait_timeout_error`): the adaptive limit's.
template <class Clock, class Handler, class IoExecutor, class State = bulkhead_state>
class bulkhead_waiter final
    : public bulkhead_state::waiter,
      public std::enable_shared_from_this<bulkhead_waiter<Clock, Handler, IoExecutor, State>> {
 public:
  using executor_type = asio::associated_executor_t<Handler, IoExecutor>;
  using timer_type = asio::basic_waitable_timer<Clock, wait_traits_of_t<Clock>, IoExecutor>;

  bulkhead_waiter(std::shared_ptr<State> state, Handler&& h, const IoExecutor& io)
      : state_(std::move(state)),
        handler_(std::move(h)),
        work_(asio::get_associated_executor(handler_, io)),
        slot_(asio::get_associated_cancellation_slot(handler_)),
        io_(io) {}

  /// Waits at most `max_wait` (0 or `nanoseconds::max()`: no limit).
  void start(std::chrono::nanoseconds max_wait) {
    auto weak = this->weak_from_this();
    if (slot_.is_connected()) {
      slot_.assign([weak](asio::cancellation_type) {
        if (auto self = weak.lock()) self->state_->cancel(*self, asio::error::operation_aborted);
      });
    }
    // The timer starts before the waiter is visible to other threads.
    if (max_wait > std::chrono::nanoseconds::zero() && max_wait < std::chrono::nanoseconds::max()) {
      timer_.emplace(io_);
      timer_->expires_at(saturating_add(Clock::now(), max_wait));
      timer_->async_wait([weak](boost::system::error_code ec) {
        if (ec) return;
        if (auto self = weak.lock()) {
          self->state_->cancel(*self, State::wait_timeout_error());
        }
      });
    }
    state_->enqueue(this->shared_from_this());
  }

  void complete(boost::system::error_code ec) override {
    auto ex = work_.get_executor();
    asio::post(ex, [self = this->shared_from_this(), ec]() mutable {
      if (self->slot_.is_connected()) self->slot_.clear();
      if (self->timer_) self->timer_->cancel();
      Handler h = std::move(self->handler_);
      self->work_.reset();
      self.reset();
      std::move(h)(ec);
    });
  }

 private:
  std::shared_ptr<State> state_;
  Handler handler_;
  asio::executor_work_guard<executor_type> work_;
  asio::cancellation_slot slot_;
  IoExecutor io_;
  std::optional<timer_type> timer_;
};

/// Starts a wait for a slot of `state`, at most `max_wait` (0 or
/// `nanoseconds::max()`: until granted or cancelled): completes with
/// `void(error_code)`: success (the caller owns a slot), `bulkhead_full` (the
/// wait ran out) or `operation_aborted` (the caller cancelled, or the state
/// was closed).
template <class Clock, class State, class IoExecutor, class CompletionToken>
auto async_wait_for_slot(std::shared_ptr<State> state, const IoExecutor& io,
                         std::chrono::nanoseconds max_wait, CompletionToken&& token) {
  return asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
      [](auto handler, std::shared_ptr<State> st, const IoExecutor& ex,
         std::chrono::nanoseconds limit) {
        using waiter_type =
            bulkhead_waiter<Clock, std::decay_t<decltype(handler)>, IoExecutor, State>;
        std::make_shared<waiter_type>(std::move(st), std::move(handler), ex)->start(limit);
      },
      token, std::move(state), io, max_wait);
}

/// A state that its owner keeps alive for as long as the waiters and slots
/// that use it (the HTTP client's pools): a non-owning shared_ptr.
inline std::shared_ptr<bulkhead_state> unowned(bulkhead_state& state) noexcept {
  return std::shared_ptr<bulkhead_state>(std::shared_ptr<void>(), &state);
}

/// Waits for a slot of `state` (which must outlive the wait) from a coroutine.
template <class Clock, class Executor>
asio::awaitable<boost::system::error_code, Executor> wait_for_slot(
    bulkhead_state& state, std::chrono::nanoseconds max_wait) {
  const Executor ex = co_await asio::this_coro::executor;
  auto [ec] = co_await async_wait_for_slot<Clock>(
      unowned(state), ex, max_wait, asio::as_tuple(asio::use_awaitable_t<Executor>{}));
  co_return ec;
}

/// Gives a slot back when the guarded call ends, however it ends (its frame
/// may be destroyed by `~io_context` after the bulkhead: the state lives on).
class bulkhead_slot {
 public:
  explicit bulkhead_slot(std::shared_ptr<bulkhead_state> s) noexcept : state_(std::move(s)) {}
  /// For a state that outlives the slot.
  explicit bulkhead_slot(bulkhead_state& s) noexcept : state_(unowned(s)) {}
  bulkhead_slot(const bulkhead_slot&) = delete;
  bulkhead_slot& operator=(const bulkhead_slot&) = delete;
  ~bulkhead_slot() { state_->leave(); }

 private:
  std::shared_ptr<bulkhead_state> state_;
};

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
/// Thread safety: shared freely between threads of a multi-threaded
/// `io_context`, without strands.
///
/// Lifetime: as Asio allows for its I/O objects, the bulkhead may be destroyed
/// while calls hold slots or wait in its queue (with the README's declaration
/// order, `io_context` first, the bulkhead is destroyed first). Calls holding
/// a slot run on and give it back to a state they share; waiting calls
/// complete with `operation_aborted` (posted: if the `io_context` is destroyed
/// rather than run, their coroutines are destroyed with it, not leaked). A
/// call started on a destroyed bulkhead's awaitable ends the same way.
///
/// `Clock` times `max_wait`.
template <class Clock = std::chrono::steady_clock>
class basic_bulkhead {
 public:
  using executor_type = boost::asio::any_io_executor;

  /// Throws `std::invalid_argument` naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type>
  explicit basic_bulkhead(const Executor& ex, bulkhead_options options = {})
      : executor_(ex), state_(std::make_shared<detail::bulkhead_state>(detail::checked(options))) {}

  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_bulkhead(ExecutionContext& ctx, bulkhead_options options = {})
      : basic_bulkhead(ctx.get_executor(), options) {}

  /// Movable (the calls and waiters go with the state), not copyable.
  basic_bulkhead(basic_bulkhead&&) noexcept = default;
  basic_bulkhead& operator=(basic_bulkhead&& other) {
    if (this != &other) {
      if (state_) state_->close();
      executor_ = std::move(other.executor_);
      state_ = std::move(other.state_);
    }
    return *this;
  }
  /// Completes every waiting call with `operation_aborted` (see Lifetime).
  ~basic_bulkhead() {
    if (state_) state_->close();
  }

  executor_type get_executor() const noexcept { return executor_; }
  const bulkhead_options& options() const noexcept { return state_->options(); }
  /// Calls running now (slots taken).
  std::size_t in_flight() const noexcept { return state_->in_flight(); }
  /// Calls waiting for a slot now.
  std::size_t queued() const noexcept { return state_->queued(); }

  /// Guards `aw` (an `asio::awaitable<T, Executor>`, passed as an rvalue).
  template <class T, class Executor>
  boost::asio::awaitable<T, Executor> operator()(boost::asio::awaitable<T, Executor> aw) {
    return call(state_, std::move(aw));
  }

  /// Waits for a slot: completes with `void(error_code)`: success (the caller
  /// now holds a slot and must call `release()` exactly once), `bulkhead_full`
  /// (the queue is full, or `max_wait` ran out) or `operation_aborted` (the
  /// wait was cancelled, or the bulkhead destroyed). Never completes inside
  /// the call. Per-operation cancellation: all types, while waiting.
  template <class CompletionToken>
  auto async_acquire(CompletionToken&& token) {
    return detail::async_wait_for_slot<Clock>(state_, executor_, state_->options().max_wait,
                                              std::forward<CompletionToken>(token));
  }

  /// Gives back a slot taken with `async_acquire`.
  void release() noexcept { state_->leave(); }

 private:
  template <class T, class Executor>
  static boost::asio::awaitable<T, Executor> call(std::shared_ptr<detail::bulkhead_state> state,
                                                  boost::asio::awaitable<T, Executor> aw) {
    namespace asio = boost::asio;
    boost::system::error_code ec;
    switch (state->try_enter()) {
      case detail::bulkhead_state::entry::granted:
        break;
      case detail::bulkhead_state::entry::full:
        ec = error::bulkhead_full;
        break;
      case detail::bulkhead_state::entry::queue: {
        const Executor ex = co_await asio::this_coro::executor;
        std::tie(ec) = co_await detail::async_wait_for_slot<Clock>(
            state, ex, state->options().max_wait,
            asio::as_tuple(asio::use_awaitable_t<Executor>{}));
        break;
      }
    }
    if (ec) co_return detail::error_result<T>(ec);
    detail::bulkhead_slot slot(std::move(state));
    co_return co_await std::move(aw);
  }

  executor_type executor_;
  std::shared_ptr<detail::bulkhead_state> state_;
};

using bulkhead = basic_bulkhead<>;

}  // namespace levee
