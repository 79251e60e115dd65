/// \file
/// A bulkhead's options (levee/limit/bulkhead.hpp).
#pragma once

#include <chrono>
#include <cstddef>

namespace levee {

/// A bulkhead's limits. Plain struct, a default on every member.
struct bulkhead_options {
  /// Calls running at once. >= 1.
  std::size_t max_concurrent = 64;
  /// Calls waiting for a slot when all are taken; one more is rejected with
  /// `error::bulkhead_full`. 0: no queue, reject at once.
  std::size_t max_queue = 0;
  /// Longest wait in the queue before giving up with `error::bulkhead_full`.
  /// 0 or `nanoseconds::max()`: wait until a slot frees or the caller's own
  /// deadline cancels the wait. Any value up to `max()` works (the deadline
  /// saturates). >= 0.
  std::chrono::nanoseconds max_wait = std::chrono::nanoseconds::zero();
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const bulkhead_options& options);

}  // namespace levee
