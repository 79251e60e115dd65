/// \file
/// A token-bucket rate limiter: its options and metrics (docs/rate_limit.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace levee {

/// A token bucket: `rate` tokens come every `period`, the bucket holds at most
/// `burst` of them, and each call takes one. A call that finds no token
/// waits for the next one if it comes within `max_wait` (and within the
/// caller's time left, when the caller says it); otherwise it is rejected at
/// once with `error::rate_limited` (condition `rejected`), never after a
/// wait in vain. Plain struct, a default on every member.
///
/// The bucket is a GCRA (generic cell rate algorithm): one atomic "time at
/// which the bucket is full again", in nanoseconds, moved by one emission
/// interval, `period / rate` rounded up to a whole nanosecond (so the rate is
/// never exceeded; the rounding slows it by less than one part in the
/// interval's nanoseconds), per token.
struct rate_limiter_options {
  /// Tokens per `period`. >= 1, and at most `period` in nanoseconds (the
  /// interval between two tokens is at least 1 ns).
  std::uint64_t rate = 100;
  /// The period that `rate` counts over. > 0, and a full bucket's refill,
  /// `period / rate x burst`, at most 2^62 ns (about 146 years).
  std::chrono::nanoseconds period = std::chrono::seconds(1);
  /// The bucket's size: calls admitted at once after a quiet spell, before
  /// the rate applies. A full bucket at construction. In [1, 2^30].
  std::uint64_t burst = 100;
  /// The longest a call waits for a token. 0: never wait, reject at once
  /// when the bucket is empty. A call whose token would come later than
  /// this (or than its caller's time left, see `basic_rate_limiter`) is
  /// rejected at once. Any value up to `nanoseconds::max()` works. >= 0.
  std::chrono::nanoseconds max_wait = std::chrono::nanoseconds::zero();
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const rate_limiter_options& options);

/// A rate limiter's bucket and counters, at one moment.
struct rate_limiter_metrics {
  /// Whole tokens in the bucket now, in [0, burst] (0 while callers wait).
  std::uint64_t tokens = 0;
  std::uint64_t waiting = 0;    ///< calls waiting for their token now
  std::uint64_t admitted = 0;   ///< calls let through (after a wait or not), since construction
  std::uint64_t waited = 0;     ///< admitted calls that waited for their token
  std::uint64_t rejected = 0;   ///< calls rejected with `rate_limited`
  std::uint64_t cancelled = 0;  ///< waits cancelled by the caller (the token given back)
  std::uint64_t reconfigurations = 0;  ///< times `reconfigure` applied new options
  /// Events a listener missed because a post failed to allocate (0 unless
  /// memory ran out).
  std::uint64_t events_lost = 0;
};

/// What a rate limiter tells its listeners (`basic_rate_limiter::listen`).
/// The values are bits, for a mask.
enum class rate_limiter_event_kind : std::uint32_t {
  /// A call was rejected with `rate_limited`, never started: its token would
  /// have come after `wait`, later than it was allowed to wait (`allowed`).
  rejected = 1,
  /// A call waited `wait` for its token, got it and started.
  waited = 2,
  /// A wait ended after `wait` without its token: cancelled by the caller
  /// (its deadline, a timeout around it) or its frame destroyed.
  cancelled = 4,
};
/// Every `rate_limiter_event_kind` bit.
inline constexpr std::uint32_t all_rate_limiter_events = 7;

/// One rate limiter event, as a listener receives it.
struct rate_limiter_event {
  rate_limiter_event_kind kind = rate_limiter_event_kind::rejected;  ///< what happened
  /// rejected: how long the call would have waited for its token;
  /// waited, cancelled: how long it waited.
  std::chrono::nanoseconds wait{};
  /// rejected: the longest it could wait, `min(max_wait, time left)`.
  std::chrono::nanoseconds allowed{};
  /// rejected: the caller's deadline was the bound (its time left was
  /// shorter than `max_wait`, and the token came within `max_wait`).
  bool deadline = false;
  std::chrono::system_clock::time_point when;  ///< wall-clock time of the event
};

/// A rate limiter's metrics under its name, for `write_rate_limiters_prometheus`.
struct named_rate_limiter_metrics {
  std::string name;              ///< the value of its label `rate_limiter` (unique)
  rate_limiter_metrics metrics;  ///< its snapshot
};

/// Writes rate limiters' metrics in the Prometheus text exposition format
/// 0.0.4, one sample per limiter (label `rate_limiter`, escaped as for
/// breakers):
///
/// | Metric | Type |
/// |---|---|
/// | `levee_rate_limiter_tokens` | gauge |
/// | `levee_rate_limiter_waiting` | gauge |
/// | `levee_rate_limiter_admitted_calls_total` | counter |
/// | `levee_rate_limiter_waited_calls_total` | counter |
/// | `levee_rate_limiter_rejected_calls_total` | counter |
/// | `levee_rate_limiter_cancelled_waits_total` | counter |
/// | `levee_rate_limiter_reconfigurations_total` | counter |
///
/// \param out The stream to write to.
/// \param limiters The limiters, each with a unique name.
void write_rate_limiters_prometheus(std::ostream& out,
                                    const std::vector<named_rate_limiter_metrics>& limiters);

}  // namespace levee
