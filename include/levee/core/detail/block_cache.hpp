// levee: a per-thread cache of memory blocks for a layer's per-call state
// (a hedged call's), beside Asio's recycling allocator rather than in it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <new>
#include <utility>

namespace levee::detail {

/// Blocks a thread frees and takes again: up to `slots` of them, each of a
/// size class of 64 bytes up to `largest`. Asio's recycling allocator keeps
/// two blocks per thread and purpose, and a hedged call has more of Asio's own
/// alive at once (its frames, its strand's operations): a block of the call's
/// state kept there was pushed out by them and came from `aligned_alloc` on
/// every call (docs/hedging.md, "Allocations"). A block freed on another
/// thread joins that thread's cache; each thread frees its cache when it
/// exits. Larger blocks go to `std::free`; a block given back when every
/// slot is full takes the place of the one given back longest ago, which
/// goes to `std::free`: the blocks a thread gave back last are the ones it
/// keeps.
class block_cache {
 public:
  static constexpr std::size_t slots = 8;
  static constexpr std::size_t granule = 64;
  static constexpr std::size_t largest = 4096;

  /// A block of at least `n` bytes, aligned to `granule` (which must cover
  /// the object's alignment). \throws std::bad_alloc.
  static void* allocate(std::size_t n) {
    const std::size_t size = rounded(n);
    if (size <= largest) {
      for (auto& s : cache().slot) {
        if (s.block && s.size == size) {
          void* p = s.block;
          s.block = nullptr;
          return p;
        }
      }
    }
    if (void* p = std::aligned_alloc(granule, size)) return p;
    throw std::bad_alloc();
  }

  /// Gives back a block `allocate(n)` returned.
  static void deallocate(void* p, std::size_t n) noexcept {
    const std::size_t size = rounded(n);
    if (size <= largest) {
      auto& c = cache();
      if (!c.closed) {
        reaper_of_this_thread();  // made once per thread: frees the cache at its exit
        for (auto& s : c.slot) {
          if (!s.block) {
            s.block = p;
            s.size = size;
            s.given = ++c.clock;
            return;
          }
        }
        // Every slot full: `p` takes the place of the block given back
        // longest ago. Giving `p` up instead, or giving one up only on a miss
        // that found every slot full (as Asio's recycling allocator does),
        // lets a thread whose slots hold sizes it no longer asks for miss for
        // good: a call holding a cached size and a missed one empties a slot
        // with its hit, so its miss finds room, and the block given back last
        // finds none (tests/hedge_allocs.cpp, "block cache: ...").
        entry* oldest = &c.slot[0];
        for (auto& s : c.slot) oldest = s.given < oldest->given ? &s : oldest;
        std::free(std::exchange(oldest->block, p));
        oldest->size = size;
        oldest->given = ++c.clock;
        return;
      }
    }
    std::free(p);
  }

 private:
  struct entry {
    void* block = nullptr;
    std::size_t size = 0;
    std::uint64_t given = 0;  // when it was given back, on the thread's count
  };
  // Trivially destructible, so that it stays valid through the thread's
  // exit: a block freed by another thread_local's destructor after the
  // reaper's finds `closed` and goes to free.
  struct per_thread {
    std::array<entry, slots> slot;
    std::uint64_t clock;  // blocks given back so far
    bool closed;
  };
  struct reaper {
    ~reaper() {
      auto& c = cache();
      c.closed = true;
      for (auto& s : c.slot) std::free(std::exchange(s.block, nullptr));
    }
  };
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

  T* allocate(std::size_t n) { return static_cast<T*>(block_cache::allocate(n * sizeof(T))); }
  void deallocate(T* p, std::size_t n) noexcept { block_cache::deallocate(p, n * sizeof(T)); }

  template <class U>
  bool operator==(const cached_allocator<U>&) const noexcept {
    return true;
  }
};

}  // namespace levee::detail
