// levee: a one-byte lock for short critical sections (a few stores).
#pragma once

#include <atomic>

#include <sched.h>

namespace levee::detail {

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();  // _mm_pause without <immintrin.h>, a heavy header
#endif
}

/// Test-and-test-and-set lock. Critical sections under it are a handful of
/// plain stores, never a call out; after a short spin it yields, so a holder
/// that was preempted gets the core back.
class spinlock {
 public:
  [[gnu::always_inline]] void lock() noexcept {
    if (!locked_.exchange(true, std::memory_order_acquire)) return;
    lock_slow();
  }

  void unlock() noexcept { locked_.store(false, std::memory_order_release); }

 private:
  [[gnu::noinline]] void lock_slow() noexcept {
    for (unsigned spins = 0;; ++spins) {
      while (locked_.load(std::memory_order_relaxed)) {
        if (++spins < 64) {
          cpu_relax();
        } else {
          ::sched_yield();  // <thread> is a heavy header for one call
        }
      }
      if (!locked_.exchange(true, std::memory_order_acquire)) return;
    }
  }

  std::atomic<bool> locked_{false};
};

/// RAII holder for `spinlock` (std::lock_guard without the header).
class spin_guard {
 public:
  explicit spin_guard(spinlock& l) noexcept : lock_(l) { lock_.lock(); }
  ~spin_guard() { lock_.unlock(); }
  spin_guard(const spin_guard&) = delete;
  spin_guard& operator=(const spin_guard&) = delete;

 private:
  spinlock& lock_;
};

}  // namespace levee::detail
