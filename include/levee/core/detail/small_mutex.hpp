// levee: a four-byte mutex that sleeps instead of spinning.
//
// For the few critical sections that must call out (arm an Asio timer, post
// an event in order): a `spinlock` would make other threads spin through an
// allocation or a post, and a std::mutex costs 40 bytes in every breaker.
// Uncontended, lock and unlock are one atomic operation each; contended, the
// waiter sleeps on the word (`std::atomic::wait`, a futex on Linux), as in
// Drepper's "Futexes Are Tricky" (mutex 3).
#pragma once

#include <atomic>
#include <cstdint>

namespace levee::detail {

class small_mutex {
 public:
  void lock() noexcept {
    std::uint32_t c = 0;
    if (state_.compare_exchange_strong(c, 1, std::memory_order_acquire)) return;
    if (c != 2) c = state_.exchange(2, std::memory_order_acquire);
    while (c != 0) {
      state_.wait(2, std::memory_order_relaxed);
      c = state_.exchange(2, std::memory_order_acquire);
    }
  }

  void unlock() noexcept {
    if (state_.exchange(0, std::memory_order_release) == 2) state_.notify_one();
  }

 private:
  std::atomic<std::uint32_t> state_{0};  // 0 free, 1 locked, 2 locked with waiters
};

/// RAII holder (std::lock_guard without the header).
class small_lock {
 public:
  explicit small_lock(small_mutex& m) noexcept : m_(m) { m_.lock(); }
  ~small_lock() { m_.unlock(); }
  small_lock(const small_lock&) = delete;
  small_lock& operator=(const small_lock&) = delete;

 private:
  small_mutex& m_;
};

}  // namespace levee::detail
