/// \file
/// An adaptive limit's options (levee/limit/adaptive_limit.hpp).
#pragma once

#include <levee/core/classify.hpp>

#include <chrono>
#include <cstddef>

namespace levee {

/// How the limit moves.
enum class limit_algorithm {
  /// Netflix's Gradient2 (concurrency-limits, `Gradient2Limit`): latency-based.
  /// The ratio of a long-term round trip to the last one estimates queueing;
  /// the limit shrinks when calls take longer than `rtt_tolerance` times
  /// usual, and grows by `queue_size` otherwise. Only successes are round
  /// trips: a drop (a failure, a timeout) leaves the limit where it is.
  gradient2,
  /// Loss-based additive increase, multiplicative decrease (Netflix's
  /// `AIMDLimit`, TCP's congestion avoidance): a failure or a round trip over
  /// `aimd_timeout` multiplies the limit by `backoff_ratio`; a success while
  /// at least half the limit is in flight adds one.
  aimd,
};

/// An adaptive limit's parameters. Plain struct, a default on every member;
/// the defaults are those of Netflix's concurrency-limits (Gradient2Limit and
/// AIMDLimit builders).
struct adaptive_limit_options {
  /// How the limit moves: Gradient2 (the default) or AIMD.
  limit_algorithm algorithm = limit_algorithm::gradient2;
  /// The limit before any sample. In [min_limit, max_limit].
  std::size_t initial_limit = 20;
  /// The limit never goes below this (>= 1) nor above `max_limit`.
  std::size_t min_limit = 20;
  /// The limit never goes above this. >= min_limit.
  std::size_t max_limit = 200;
  /// Gradient2: weight of a new estimate, in (0, 1].
  double smoothing = 0.2;
  /// Gradient2: how much longer than the long-term round trip a window's may
  /// be before it counts as queueing. >= 1. (Netflix's current Gradient2 has
  /// none, that is 1; early releases had 1.5.) The limit settles near
  /// `rtt_tolerance` times the downstream's capacity.
  double rtt_tolerance = 1.0;
  /// Gradient2: windows in the long-term round-trip average. >= 1.
  std::size_t long_window = 600;
  /// Gradient2: calls the limit may grow by per window (before smoothing):
  /// the queueing allowed at the downstream. >= 0.
  double queue_size = 4;
  /// Gradient2: a window lasts at least this long and holds at least
  /// `min_window_samples` samples (Netflix's WindowedLimit: 1 s and 10). The
  /// limit moves once per window, so that each change is measured before the
  /// next (a window should be longer than a round trip). >= 0.
  std::chrono::nanoseconds sample_window = std::chrono::seconds(1);
  /// Gradient2: the fewest samples a window holds (see #sample_window).
  std::size_t min_window_samples = 10;
  /// AIMD: factor applied to the limit on a drop, in [0.5, 1).
  double backoff_ratio = 0.9;
  /// AIMD: a round trip longer than this is a drop. > 0.
  std::chrono::nanoseconds aimd_timeout = std::chrono::seconds(5);
  /// Calls that may wait for room when the limit is reached; one more is
  /// rejected with `error::limit_exceeded`. 0 (the default): reject at once.
  std::size_t max_queue = 0;
  /// Longest wait in the queue (then `limit_exceeded`). 0 or `max()`: until
  /// room frees or the caller cancels. >= 0.
  std::chrono::nanoseconds max_wait = std::chrono::nanoseconds::zero();
  /// What a call's outcome means: a failure is a drop (AIMD shrinks on it;
  /// Gradient2 takes no round trip from it, as its latency is not the
  /// downstream's), an ignored outcome (a cancellation) is no sample at all.
  /// A classifier that throws counts the call as a failure, as the breaker's.
  /// Empty: `default_classify`; `levee::http::classify` for HTTP calls.
  levee::classifier classifier{};
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const adaptive_limit_options& options);

}  // namespace levee
