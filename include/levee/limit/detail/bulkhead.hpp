// levee: the bulkhead's machinery: its shared state, one waiting caller, the
// wait operation and the slot that a running call holds.
#pragma once

#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/core/detail/slot_waiter.hpp>
#include <levee/core/detail/spinlock.hpp>
#include <levee/core/error.hpp>
#include <levee/limit/bulkhead_options.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <type_traits>
#include <vector>

namespace levee::detail {

namespace asio = boost::asio;

/// The bulkhead's shared state: a count of running calls and a FIFO of
/// waiters. Held by shared_ptr: by the bulkhead, by each call that holds a
/// slot and by each waiter, so none of them points into a destroyed bulkhead.
///
/// `queue_lock_` guards the count, the queue and `closed_`; under it run only
/// plain stores (the queue is intrusive: no allocation, no free). Waiters are
/// completed, and shared_ptrs released, after it is let go.
class bulkhead_state {
 public:
  using waiter = slot_waiter;

  /// `options` must be valid.
  explicit bulkhead_state(const bulkhead_options& options)
      : max_concurrent_(options.max_concurrent), max_queue_(options.max_queue) {
    owned_.push_back(std::make_unique<const bulkhead_options>(options));
    options_.store(owned_.back().get(), std::memory_order_release);
  }

  /// The options in force; kept as long as the state.
  const bulkhead_options& options() const noexcept {
    return *options_.load(std::memory_order_acquire);
  }

  /// New limits (valid): see `basic_bulkhead::reconfigure`.
  void reconfigure(const bulkhead_options& options) {
    std::lock_guard r(reconfigure_mutex_);
    owned_.push_back(std::make_unique<const bulkhead_options>(options));
    {
      spin_guard g(queue_lock_);
      max_concurrent_ = options.max_concurrent;
      max_queue_ = options.max_queue;
      ++reconfigurations_;
    }
    options_.store(owned_.back().get(), std::memory_order_release);
    // Room a higher limit made goes to the waiters, one at a time.
    for (;;) {
      std::shared_ptr<waiter> next;
      {
        spin_guard g(queue_lock_);
        if (queue_.empty() || active_ >= max_concurrent_) return;
        next = queue_.pop_front();
        ++active_;
      }
      next->complete({});
    }
  }

  /// Reconfigurations since construction.
  std::uint64_t reconfigurations() const noexcept {
    spin_guard g(queue_lock_);
    return reconfigurations_;
  }

  enum class entry { granted, queue, full };

  /// What a wait that ran out of `max_wait` ends with.
  static boost::system::error_code wait_timeout_error() noexcept {
    return make_error_code(error::bulkhead_full);
  }

  /// Takes a slot if one is free and nobody waits (first come, first served).
  entry try_enter() noexcept {
    spin_guard g(queue_lock_);
    if (closed_) return entry::queue;  // enqueue refuses it with operation_aborted
    if (active_ < max_concurrent_ && queue_.empty()) {
      ++active_;
      return entry::granted;
    }
    return queue_.size() < max_queue_ ? entry::queue : entry::full;
  }

  /// Queues `w`, or grants or refuses it at once. Never completes inline.
  void enqueue(const std::shared_ptr<waiter>& w) {
    std::shared_ptr<waiter> owned = w;  // the queue's reference, counted outside the lock
    boost::system::error_code ec;
    {
      spin_guard g(queue_lock_);
      if (closed_) {
        ec = asio::error::operation_aborted;
      } else if (active_ < max_concurrent_ && queue_.empty()) {
        ++active_;
      } else if (queue_.size() < max_queue_) {
        queue_.push_back(std::move(owned));
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
      spin_guard g(queue_lock_);
      if (!w.queued) return;  // already granted (it owns a slot now) or completed
      removed = queue_.erase(w);
    }
    removed->complete(ec);
  }

  /// A call finished: its slot goes to the first waiter, or back to the pool.
  void leave() noexcept {
    std::shared_ptr<waiter> next;
    {
      spin_guard g(queue_lock_);
      // The slot passes to the first waiter (active_ unchanged), unless a
      // lower limit (reconfigure) left more calls running than it allows.
      if (!queue_.empty() && active_ <= max_concurrent_) {
        next = queue_.pop_front();
      } else {
        --active_;
      }
    }
    if (next) next->complete({});
  }

  /// A slot granted to a waiter whose completion was destroyed unrun (its
  /// io_context gone): nobody holds it, it goes back.
  void release_unclaimed() noexcept { leave(); }

  /// The bulkhead is gone: every waiter completes with `operation_aborted`
  /// (posted: if its io_context is destroyed instead of run, the waiting
  /// coroutine is destroyed with it), and later calls are refused the same
  /// way. Calls holding a slot finish normally.
  void close() {
    waiter_queue waiting;
    {
      spin_guard g(queue_lock_);
      closed_ = true;
      queue_.take_all(waiting);
    }
    while (auto w = waiting.pop_taken()) w->complete(asio::error::operation_aborted);
  }

  std::size_t in_flight() const noexcept {
    spin_guard g(queue_lock_);
    return active_;
  }
  std::size_t queued() const noexcept {
    spin_guard g(queue_lock_);
    return queue_.size();
  }

 private:
  std::size_t max_concurrent_;  // under queue_lock_ (reconfigure)
  std::size_t max_queue_;
  mutable spinlock queue_lock_;
  std::uint64_t reconfigurations_ = 0;  // under queue_lock_
  std::mutex reconfigure_mutex_;        // one reconfiguration at a time; owned_
  std::vector<std::unique_ptr<const bulkhead_options>> owned_;  // the current and the replaced
  std::atomic<const bulkhead_options*> options_{nullptr};
  std::size_t active_ = 0;  // slots taken
  bool closed_ = false;
  waiter_queue queue_;
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
/// A granted slot belongs to the waiter until its completion hands it to the
/// handler; a completion destroyed unrun (its io_context destroyed, not run)
/// gives it back to the state, else nobody would ever free it.
///
/// `State` is `bulkhead_state` or another state with the same waiter
/// protocol (`enqueue`, `cancel`, `wait_timeout_error`, `release_unclaimed`):
/// the adaptive limit's.
template <class Clock, class Handler, class IoExecutor, class State = bulkhead_state>
class bulkhead_waiter final
    : public slot_waiter,
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

  bulkhead_waiter(const bulkhead_waiter&) = delete;
  bulkhead_waiter& operator=(const bulkhead_waiter&) = delete;
  ~bulkhead_waiter() override {
    if (holds_slot_) state_->release_unclaimed();
  }

  /// Waits at most `max_wait` (0 or `nanoseconds::max()`: no limit).
  void start(std::chrono::nanoseconds max_wait) {
    auto weak = this->weak_from_this();
    if (slot_.is_connected()) {
      slot_.assign([weak](asio::cancellation_type) {
        if (auto self = weak.lock()) self->state_->cancel(*self, asio::error::operation_aborted);
      });
    }
    // The timer starts before the waiter is visible to other threads (and
    // outside the state's lock).
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
    holds_slot_ = !ec;  // before the post: the completion may be destroyed unrun
    auto ex = work_.get_executor();
    asio::post(ex, [self = this->shared_from_this(), ec]() mutable {
      if (self->slot_.is_connected()) self->slot_.clear();
      if (self->timer_) self->timer_->cancel();
      self->holds_slot_ = false;  // the handler owns the slot now
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
  // A granted slot not yet handed to the handler. Written by `complete` and
  // by the completion it posts (ordered by the post), read by the destructor.
  bool holds_slot_ = false;
};

/// Starts a wait for a slot of `state`, at most `max_wait` (0 or
/// `nanoseconds::max()`: until granted or cancelled): completes with
/// `void(error_code)`: success (the caller owns a slot), `bulkhead_full` (the
/// wait ran out) or `operation_aborted` (the caller cancelled, or the state
/// was closed).
template <class Clock, class State, class IoExecutor,
          BOOST_ASIO_COMPLETION_TOKEN_FOR(void(boost::system::error_code)) CompletionToken>
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

/// Gives a slot back when the guarded call ends, however it ends (its frame
/// may be destroyed by `~io_context` after the bulkhead: the state lives on).
class bulkhead_slot {
 public:
  explicit bulkhead_slot(std::shared_ptr<bulkhead_state> s) noexcept : state_(std::move(s)) {}
  bulkhead_slot(const bulkhead_slot&) = delete;
  bulkhead_slot& operator=(const bulkhead_slot&) = delete;
  ~bulkhead_slot() { state_->leave(); }

 private:
  std::shared_ptr<bulkhead_state> state_;
};

}  // namespace levee::detail
