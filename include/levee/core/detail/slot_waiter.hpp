// levee: a caller waiting for a slot (bulkhead, adaptive limit), and the
// intrusive FIFO that holds such callers without allocating.
#pragma once

#include <boost/system/error_code.hpp>

#include <cstddef>
#include <list>
#include <memory>
#include <utility>

namespace levee::detail {

/// One caller waiting for a slot. The state that queues it completes it once,
/// outside its lock, through `complete`.
struct slot_waiter {
  virtual ~slot_waiter() = default;
  // Posts the waiter's completion with `ec` to its executor. Called once, by
  // whoever took the waiter out of the queue, outside the lock.
  virtual void complete(boost::system::error_code ec) = 0;

  /// In a state's queue now. Read and written only under that state's lock.
  bool queued = false;

  // The adaptive limit's std::list queue (until it uses `waiter_queue`).
  std::list<std::shared_ptr<slot_waiter>>::iterator position;

 private:
  friend class waiter_queue;
  // `waiter_queue`'s links: the queue owns a queued waiter through `self_`.
  slot_waiter* prev_ = nullptr;
  slot_waiter* next_ = nullptr;
  std::shared_ptr<slot_waiter> self_;
};

/// A FIFO of waiters linked through the waiters themselves: pushing, erasing
/// and popping are a few pointer stores, never an allocation or a free, so
/// they may run under a spinlock. The queue owns what it holds (a moved-in
/// shared_ptr); what comes out is handed back, to be released by the caller
/// after it lets go of its lock.
class waiter_queue {
 public:
  waiter_queue() = default;
  waiter_queue(const waiter_queue&) = delete;
  waiter_queue& operator=(const waiter_queue&) = delete;

  bool empty() const noexcept { return head_ == nullptr; }
  std::size_t size() const noexcept { return size_; }

  /// Appends `w` (moved in: no reference count changes) and marks it queued.
  void push_back(std::shared_ptr<slot_waiter>&& w) noexcept {
    slot_waiter* p = w.get();
    p->self_ = std::move(w);
    p->prev_ = tail_;
    p->next_ = nullptr;
    (tail_ ? tail_->next_ : head_) = p;
    tail_ = p;
    p->queued = true;
    ++size_;
  }

  /// Takes `w`, which must be in this queue, out of it; marks it not queued.
  std::shared_ptr<slot_waiter> erase(slot_waiter& w) noexcept {
    w.queued = false;
    return unlink(w);
  }

  /// Takes the first waiter out (the queue must not be empty).
  std::shared_ptr<slot_waiter> pop_front() noexcept { return erase(*head_); }

  /// Moves every waiter to the end of `out`, each marked not queued: what a
  /// state does under its lock when it closes. `out` is then drained with
  /// `pop_taken`, outside the lock.
  void take_all(waiter_queue& out) noexcept {
    if (!head_) return;
    for (slot_waiter* p = head_; p; p = p->next_) p->queued = false;
    if (out.tail_) {
      out.tail_->next_ = head_;
      head_->prev_ = out.tail_;
    } else {
      out.head_ = head_;
    }
    out.tail_ = std::exchange(tail_, nullptr);
    out.size_ += std::exchange(size_, 0);
    head_ = nullptr;
  }

  /// The first waiter of a queue filled by `take_all`, or null; does not
  /// touch `queued` (which the state's lock guards).
  std::shared_ptr<slot_waiter> pop_taken() noexcept { return head_ ? unlink(*head_) : nullptr; }

 private:
  std::shared_ptr<slot_waiter> unlink(slot_waiter& w) noexcept {
    (w.prev_ ? w.prev_->next_ : head_) = w.next_;
    (w.next_ ? w.next_->prev_ : tail_) = w.prev_;
    w.prev_ = w.next_ = nullptr;
    --size_;
    return std::move(w.self_);
  }

  slot_waiter* head_ = nullptr;
  slot_waiter* tail_ = nullptr;
  std::size_t size_ = 0;
};

}  // namespace levee::detail
