// levee: a small number per thread, used to spread writes over shards.
#pragma once

#include <atomic>

namespace levee::detail {

/// The calling thread's slot: threads get 0, 1, 2, ... in the order they first
/// ask. Breakers map slots onto their shards, so that threads which share a
/// breaker write to different cache lines.
inline unsigned thread_slot() noexcept {
  static std::atomic<unsigned> next{0};
  thread_local const unsigned slot = next.fetch_add(1, std::memory_order_relaxed);
  return slot;
}

}  // namespace levee::detail
