// levee: a per-thread cache of memory blocks for a layer's per-call state
// (a hedged call's), beside Asio's recycling allocator rather than in it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <limits>
#include <new>
#include <utility>

// Under AddressSanitizer, a cached block is poisoned while it waits in the
// cache, but for its last word (the link to the next block, which
// LeakSanitizer must see), so that a use of an object after its block went
// back is reported (as a use after poison; the cache would otherwise hide
// it).
#if defined(__SANITIZE_ADDRESS__)
#define LEVEE_BLOCK_CACHE_POISON 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define LEVEE_BLOCK_CACHE_POISON 1
#endif
#endif
#if defined(LEVEE_BLOCK_CACHE_POISON)
#include <sanitizer/asan_interface.h>
#endif

namespace levee::detail {

/// Blocks a thread frees and takes again, kept per size class (64 bytes up
/// to `largest`, in steps of `granule`), `budget` bytes in all. Asio's
/// recycling allocator keeps two blocks per thread and purpose, and a call
/// through levee's layers has more of Asio's own alive at once (its frames,
/// its strand's operations): a block kept there was pushed out by them and
/// came from `aligned_alloc` on every call (docs/hedging.md, "Allocations").
///
/// Taking a block and giving one back index the class's list, with no
/// search while the budget has room (until 2026-12-07, eight slots searched
/// one by one, which a client with 16 connections in flight overflowed:
/// bench/README.md, "The block cache by size class"). A block freed on
/// another thread joins that thread's cache; each thread frees its cache
/// when it exits. Larger blocks go to `std::free`. A block given back to a
/// full budget takes the place of blocks of other classes, taken in turn (a
/// round robin over the classes): a thread whose cache holds sizes it no
/// longer asks for does not miss for good on the sizes it asks for now
/// (tests/hedge_allocs.cpp, "block cache: ...").
class block_cache {
 public:
  static constexpr std::size_t granule = 64;
  static constexpr std::size_t largest = 4096;
  static constexpr std::size_t classes = largest / granule;
  /// The bytes a thread keeps at most, over all classes.
  static constexpr std::size_t budget = 256 * 1024;

  /// A block of at least `n` bytes, aligned to `granule` (which must cover
  /// the object's alignment). \throws std::bad_alloc.
  static void* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() - granule) throw std::bad_alloc();
    const std::size_t size = rounded(n);
    if (size <= largest) {
      auto& c = cache();
      const std::size_t k = size / granule - 1;
      if (void* p = c.head[k]) {
        unpoison(p, size);
        c.head[k] = next_of(p, size);
        c.bytes -= size;
        return p;
      }
    }
    if (void* p = std::aligned_alloc(granule, size)) return p;
    throw std::bad_alloc();
  }

  /// Gives back a block `allocate(n)` returned.
  static void deallocate(void* p, std::size_t n) noexcept {
    if (n <= largest) {
      const std::size_t size = rounded(n);
      auto& c = cache();
      const std::size_t k = size / granule - 1;
      if (!c.closed) {
        if (!c.reaped) [[unlikely]] {
          reaper_of_this_thread();  // made once per thread: frees the cache at its exit
          c.reaped = true;
        }
        while (c.bytes + size > budget && give_up_one(c, k)) {
        }
        if (c.bytes + size <= budget) {
          next_of(p, size) = c.head[k];
          c.head[k] = p;
          c.bytes += size;
          poison(p, size);
          return;
        }
      }
    }
    std::free(p);
  }

 private:
  // Trivially destructible, so that it stays valid through the thread's
  // exit: a block freed by another thread_local's destructor after the
  // reaper's finds `closed` and goes to free.
  struct per_thread {
    std::array<void*, classes> head;  // each class's blocks, linked through their last word
    std::size_t bytes;                // held, over all classes
    std::size_t cursor;  // the class that gives up a block next when the budget is full
    bool reaped;         // the thread's reaper is made
    bool closed;         // the reaper ran: nothing more is kept
  };
  struct reaper {
    ~reaper() {
      auto& c = cache();
      c.closed = true;
      for (std::size_t k = 0; k < classes; ++k) {
        while (void* p = c.head[k]) {
          unpoison(p, (k + 1) * granule);
          c.head[k] = next_of(p, (k + 1) * granule);
          std::free(p);
        }
      }
      c.bytes = 0;
    }
  };
  // A cached block's link to the next one of its class: its last word, so
  // that its first ones (an object's vptr, a coroutine frame's resume
  // pointer) are poisoned with the rest (see the top).
  static void*& next_of(void* p, std::size_t size) noexcept {
    return *static_cast<void**>(static_cast<void*>(static_cast<char*>(p) + size - sizeof(void*)));
  }
  // A block in the cache is poisoned under AddressSanitizer, but for its
  // link, its last word (see the top).
  static void poison([[maybe_unused]] void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(LEVEE_BLOCK_CACHE_POISON)
    ASAN_POISON_MEMORY_REGION(p, n - sizeof(void*));
#endif
  }
  static void unpoison([[maybe_unused]] void* p, [[maybe_unused]] std::size_t n) noexcept {
#if defined(LEVEE_BLOCK_CACHE_POISON)
    ASAN_UNPOISON_MEMORY_REGION(p, n);
#endif
  }
  // Frees one block of a class other than `keep`, the next in turn after the
  // last one given up. False when no other class holds one.
  static bool give_up_one(per_thread& c, std::size_t keep) noexcept {
    for (std::size_t i = 0; i < classes; ++i) {
      const std::size_t k = (c.cursor + i) % classes;
      if (k == keep || !c.head[k]) continue;
      void* p = c.head[k];
      unpoison(p, (k + 1) * granule);
      c.head[k] = next_of(p, (k + 1) * granule);
      c.bytes -= (k + 1) * granule;
      c.cursor = (k + 1) % classes;
      std::free(p);
      return true;
    }
    return false;
  }
  static per_thread& cache() noexcept {
    constinit thread_local per_thread c{};
    return c;
  }
  static void reaper_of_this_thread() noexcept {
    thread_local reaper r;
    (void)r;
  }
  static constexpr std::size_t rounded(std::size_t n) noexcept {
    return n == 0 ? granule : (n + granule - 1) / granule * granule;
  }
};

/// An allocator over `block_cache` (for `std::allocate_shared`).
template <class T>
struct cached_allocator {
  using value_type = T;
  static_assert(alignof(T) <= block_cache::granule, "over-aligned for the block cache");

  cached_allocator() noexcept = default;
  template <class U>
  cached_allocator(const cached_allocator<U>&) noexcept {}

  T* allocate(std::size_t n) {
    if (n > std::numeric_limits<std::size_t>::max() / sizeof(T)) throw std::bad_alloc();
    return static_cast<T*>(block_cache::allocate(n * sizeof(T)));
  }
  void deallocate(T* p, std::size_t n) noexcept { block_cache::deallocate(p, n * sizeof(T)); }

  template <class U>
  bool operator==(const cached_allocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace levee::detail
