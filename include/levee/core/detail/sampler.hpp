// levee: one call in 16, picked per thread at random, for the measurements a
// layer takes on a sample of its calls (the breaker's automatic probe
// deadline, the adaptive limit's round trips).
#pragma once

#include <cstdint>

namespace levee::detail {

/// True for about one call in 16, after gaps drawn geometric (p = 1/16) by
/// `next_gap`: a per-thread countdown to the next sampled call, so that a call
/// not sampled costs a compare and a decrement. `FirstCallSampled`: a
/// thread's first call is always sampled (the breaker's probe deadline wants
/// a first estimate at once); otherwise the first gap is drawn as every other,
/// so that every call is sampled with probability 1/16 (the adaptive limit
/// weighs a sampled call as 16). Each instantiation has its own countdown and
/// its own pseudo-random sequence (seeded by `Seed`), so that two layers on
/// one call sample independently.
template <class Tag, bool FirstCallSampled, std::uint64_t Seed>
struct one_in_16 {
  /// The mean gap, the weight of a sampled call in an estimate over all calls.
  static constexpr std::uint32_t mean_gap = 16;

  [[gnu::always_inline]] static bool pick() noexcept {
    std::uint32_t& left = countdown();
    if constexpr (FirstCallSampled) {
      if (--left != 0) [[likely]]
        return false;
      left = next_gap();
      return true;
    } else {
      if (left > 1) [[likely]] {
        --left;
        return false;
      }
      return at_gap(left);
    }
  }

 private:
  // `left` is 1 (this call is the one) or 0 (the thread's first call: its
  // first gap is drawn, this call the gap's first).
  [[gnu::noinline]] static bool at_gap(std::uint32_t& left) noexcept {
    if (left == 0) left = next_gap();
    if (left > 1) {
      --left;
      return false;
    }
    left = next_gap();
    return true;
  }
  static std::uint32_t& countdown() noexcept {
    // Initial-exec, as thread_slot (core/detail/thread_slot.hpp): no call to
    // `__tls_get_addr` from position-independent code.
    constinit thread_local std::uint32_t left [[gnu::tls_model("initial-exec")]] =
        FirstCallSampled ? 1 : 0;
    return left;
  }
  [[gnu::noinline]] static std::uint32_t next_gap() noexcept {
    constinit thread_local std::uint64_t x [[gnu::tls_model("initial-exec")]] = Seed;
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
