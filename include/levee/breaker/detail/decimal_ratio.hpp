// levee: a rate threshold as an exact decimal fraction, shared by the breaker's
// core and the fleet's decisions (sans I/O, no other levee header).
#pragma once

#include <cstdint>

namespace levee::detail {

/// A rate threshold as an exact decimal fraction: `numerator / 10^exponent`.
/// `from_double` takes the shortest decimal that reads back as the same double
/// (0.28 is 28/100, not 0.28000000000000002665), so that a rate compares with
/// the threshold the user wrote exactly; a threshold that needs more than 18
/// decimal places is rounded up at the 18th.
struct decimal_ratio {
  std::uint64_t numerator = 1;
  std::uint8_t exponent = 0;

  static decimal_ratio from_double(double threshold) noexcept;  // threshold in (0, 1]
  /// `part / whole >= numerator / 10^exponent`, exactly.
  bool reached_by(std::uint64_t part, std::uint64_t whole) const noexcept;
};

}  // namespace levee::detail
