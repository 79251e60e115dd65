/// \file
/// Client-side adaptive throttling: its options and metrics.
#pragma once

#include <levee/core/classify.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace levee {

/// Client-side adaptive throttling ("Handling Overload", in Google's SRE
/// book): over a sliding window the client counts its `requests` (every call
/// offered to the throttle, rejected ones included) and the `accepts` (calls
/// the downstream answered with a success, as `classifier` says), and rejects
/// a new call locally with probability
///
///     max(0, (requests - k * accepts) / (requests + 1))
///
/// capped at `max_rejection_probability`. While the downstream accepts at
/// least one call in `k`, nothing is rejected; as its success rate falls, a
/// growing share of calls is rejected without being sent, so the downstream
/// sees about `k` times the calls it can serve instead of all of them. The
/// rejection is `error::throttled` (condition `rejected`). Plain struct, a
/// default on every member.
struct throttle_options {
  /// How many requests per accepted one are let through before rejecting.
  /// Lower rejects sooner (1: as soon as one call fails); higher wastes
  /// more downstream work on calls that fail. In [1, 1000].
  double k = 2.0;
  /// How long a request or an accept counts. > 0, up to
  /// `nanoseconds::max()`. The SRE book uses two minutes; a shorter window
  /// follows a recovery sooner.
  std::chrono::nanoseconds window = std::chrono::seconds(60);
  /// Granularity of the window: `window / buckets` each. In [1, 1000].
  std::size_t buckets = 10;
  /// The highest rejection probability, so that some calls always reach a
  /// downstream that may have recovered. In [0, 1].
  double max_rejection_probability = 1.0;
  /// What counts as accepted: `outcome::success` is an accept, `failure` is
  /// not, `ignored` is not counted (neither a request nor an accept). A
  /// classifier that throws counts the call as not accepted. Empty:
  /// `default_classify`; `levee::http::classify` for HTTP calls.
  levee::classifier classifier{};
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const throttle_options& options);

/// A throttle's counters and window, at one moment.
struct throttle_metrics {
  std::uint64_t requests = 0;  ///< requests counted in the window
  std::uint64_t accepts = 0;   ///< accepts counted in the window
  /// The probability that the next call is rejected, from the window.
  double rejection_probability = 0;
  std::uint64_t admitted = 0;  ///< calls let through, since construction
  std::uint64_t rejected = 0;  ///< calls rejected with `throttled`, since construction
  std::uint64_t accepted = 0;  ///< admitted calls that were accepts, since construction
};

/// A throttle's metrics under its name, for `write_throttles_prometheus`.
struct named_throttle_metrics {
  std::string name;          ///< the value of its label `throttle` (unique)
  throttle_metrics metrics;  ///< its snapshot
};

/// Writes throttles' metrics in the Prometheus text exposition format 0.0.4,
/// one sample per throttle (label `throttle`, escaped as for breakers):
///
/// | Metric | Type |
/// |---|---|
/// | `levee_throttle_rejection_probability` | gauge |
/// | `levee_throttle_window_requests` | gauge |
/// | `levee_throttle_window_accepts` | gauge |
/// | `levee_throttle_admitted_calls_total` | counter |
/// | `levee_throttle_rejected_calls_total` | counter |
/// | `levee_throttle_accepted_calls_total` | counter |
///
/// \param out The stream to write to.
/// \param throttles The throttles, each with a unique name.
void write_throttles_prometheus(std::ostream& out,
                                const std::vector<named_throttle_metrics>& throttles);

}  // namespace levee
