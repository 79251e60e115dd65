// levee: one call in 16, picked per thread at random, for the measurements a
// layer takes on a sample of its calls (the breaker's automatic probe
// deadline, the adaptive limit's round trips).
#pragma once

#include <cstdint>

namespace levee::detail {

/// True for about one call in 16: a thread's first call, then after gaps
/// drawn geometric (p = 1/16) by `next_gap` (one pseudo-random sequence per
/// thread and `Tag`, the same seed on each). A per-thread countdown to the
/// next sampled call, so that a call not sampled costs a decrement. Each
/// `Tag` has its own countdown and sequence, so that two layers on one call
/// do not sample the same calls.
template <class Tag>
struct one_in_16 {
  /// The mean gap, the weight of a sampled call in an estimate over all calls.
  static constexpr std::uint32_t mean_gap = 16;

  [[gnu::always_inline]] static bool pick() noexcept {
    std::uint32_t& left = countdown();
    if (--left != 0) [[likely]]
      return false;
    left = next_gap();
    return true;
  }

 private:
  static std::uint32_t& countdown() noexcept {
    // Initial-exec, as thread_slot (core/detail/thread_slot.hpp): no call to
    // `__tls_get_addr` from position-independent code.
    constinit thread_local std::uint32_t left [[gnu::tls_model("initial-exec")]] = 1;
    return left;
  }
  [[gnu::noinline]] static std::uint32_t next_gap() noexcept {
    constinit thread_local std::uint64_t x [[gnu::tls_model("initial-exec")]] = 0x9e3779b97f4a7c15u;
    for (std::uint32_t gap = 1;; gap += 16) {
      x ^= x << 13;  // xorshift64
      x ^= x >> 7;
      x ^= x << 17;
      // Each of the 16 nibbles is one call's draw, sampled when zero (1 in
      // 16): the first zero nibble's index is the gap. The lowest bit of
      // `zero` is exact (a borrow only runs upwards from a zero nibble).
      const std::uint64_t zero = (x - 0x1111'1111'1111'1111u) & ~x & 0x8888'8888'8888'8888u;
      if (zero != 0) return gap + static_cast<std::uint32_t>(__builtin_ctzll(zero)) / 4;
    }
  }
};

}  // namespace levee::detail
