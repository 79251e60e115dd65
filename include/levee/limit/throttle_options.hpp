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
/// book): over a sliding window the client counts its `requests` (the calls
/// the throttle rejected, when it rejects them, and the calls it let through,
/// when they end) and the `accepts` (calls the downstream answered with a
/// success, as `classifier` says), and rejects
/// a new call locally with probability
///
///     max(0, (requests - k * accepts) / (requests + 1))
///
/// capped at `max_rejection_probability`, and zero while the window holds
/// fewer than `minimum_requests`. A call in flight is not counted yet: a
/// slow downstream is not mistaken for one that refuses, and a client that
/// just started does not shed its first calls. While the downstream accepts
/// more than one call in `k`, nothing is rejected (at exactly one in `k`, at
/// most `1 / (requests + 1)`); as its success rate falls, a
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
  /// Nothing is shed while the window holds fewer requests than this (as
  /// the breaker's `minimum_calls`): a few failures after a quiet period say
  /// little. <= 2^30.
  std::size_t minimum_requests = 10;
  /// The highest rejection probability, so that some calls always reach a
  /// downstream that may have recovered. In [0, 1]. The way back depends on
  /// it: after the downstream heals, the share let through doubles (with
  /// `k = 2`) each window, from `1 - max_rejection_probability`; from the
  /// uncapped formula's 0.999 after an outage that is ten windows, from 0.8
  /// (Envoy's admission control's default, and ours) about three
  /// (docs/shedding.md, "The way back").
  double max_rejection_probability = 0.8;
  /// What counts as accepted: `outcome::success` is an accept, `failure` is
  /// not, `ignored` is not counted (neither a request nor an accept). A
  /// classifier that throws counts the call as a request without an accept. Empty:
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
  /// Events a listener missed because a post failed to allocate (0 unless
  /// memory ran out).
  std::uint64_t events_lost = 0;
};

/// What a throttle tells its listeners (`basic_throttle::listen`). The
/// values are bits, for a mask.
enum class throttle_event_kind : std::uint32_t {
  rejected = 1,  ///< a call was rejected with `throttled`, never started
};
/// Every `throttle_event_kind` bit.
inline constexpr std::uint32_t all_throttle_events = 1;

/// One throttle event, as a listener receives it.
struct throttle_event {
  throttle_event_kind kind = throttle_event_kind::rejected;  ///< what happened
  /// rejected: the rejection probability the call was drawn against.
  double probability = 0;
  std::uint64_t requests = 0;                  ///< requests in the window then
  std::uint64_t accepts = 0;                   ///< accepts in the window then
  std::chrono::system_clock::time_point when;  ///< wall-clock time of the event
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
