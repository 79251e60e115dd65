// levee: the one random generator (jitter in the breaker's open duration and
// in retry delays).
#pragma once

#include <cstdint>

namespace levee::detail {

/// splitmix64: small, fast, and the same sequence on every platform.
struct splitmix64 {
  std::uint64_t state;
  std::uint64_t next() noexcept {
    std::uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  /// Uniform in [0, 1), 53 bits.
  double unit() noexcept { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

/// A seed from std::random_device (compiled once).
std::uint64_t random_seed() noexcept;

}  // namespace levee::detail
