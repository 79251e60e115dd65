/// \file
/// The breaker's options.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/vocabulary.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>

namespace levee {

/// How a circuit breaker decides. A plain struct: every member has a default
/// (the seed scenario's), designated initialisers work
/// (`breaker_options{.window = 5s}`), and the breaker's constructor validates
/// it, throwing `std::invalid_argument` that names the offending member.
struct breaker_options {
  /// Open when failures / calls >= this, once the window holds at least
  /// `minimum_calls` calls. In (0, 1].
  double failure_rate_threshold = 0.5;

  /// Length of the time window (`window_type == window_kind::time`). > 0.
  std::chrono::nanoseconds window = std::chrono::seconds(10);

  /// Granularity of the time window. The window is a ring of this many buckets
  /// of `w = window / window_buckets` each; a call finished at time `t` sits in
  /// bucket `floor(t / w)` and is counted while the current bucket is less than
  /// `window_buckets` buckets later. So a call leaves the window at the first
  /// bucket boundary at or after `t + window - w`: never later than
  /// `t + window`, and at most `w` earlier. More buckets, finer edges, more
  /// memory (12 bytes per bucket per shard). In [1, 1024], and `w` >= 1 ns.
  std::size_t window_buckets = 10;

  /// Time window (the default) or count window.
  window_kind window_type = window_kind::time;

  /// Size of the count window (`window_type == window_kind::count`): the last
  /// this many calls. In [1, 1048576]; memory is 2 bits per call.
  std::size_t window_calls = 100;

  /// The window must hold at least this many calls before the failure rate
  /// (or the slow-call rate) can open the breaker. >= 1; with a count window,
  /// <= `window_calls`. Ten calls: small enough that a quiet service still
  /// trips, large enough that one unlucky call does not.
  std::size_t minimum_calls = 10;

  /// How long the breaker stays OPEN before its timer turns it HALF_OPEN. > 0.
  /// Every duration option works up to `nanoseconds::max()`: arithmetic on
  /// durations saturates, and a deadline past the clock's range means "for
  /// ever" (here: OPEN until an operator resets it).
  std::chrono::nanoseconds open_duration = std::chrono::seconds(30);

  /// Open-duration backoff: each consecutive reopening (a probe failed before
  /// the breaker closed again) multiplies the open duration by this, up to
  /// `max_open_duration`; closing resets it. >= 1; 1 (the default) is off.
  double open_duration_multiplier = 1.0;

  /// Cap of the open duration under backoff. >= `open_duration` when
  /// `open_duration_multiplier` > 1.
  std::chrono::nanoseconds max_open_duration = std::chrono::minutes(5);

  /// Spreads each open duration `d` uniformly over [d * (1 - j), d * (1 + j)],
  /// so that a fleet of clients that opened together does not probe in
  /// lockstep. In [0, 1); 0 (the default) is off.
  double open_duration_jitter = 0.0;

  /// Seed of that jitter. 0 (the default) picks one at random; tests set it.
  std::uint64_t jitter_seed = 0;

  /// The "stuck open" signal: raised when the breaker has not been CLOSED for
  /// this long since it last left CLOSED (it stays open, or keeps reopening),
  /// and reported in the metrics and as a `stuck_open` event at that moment.
  /// Zero (the default) turns it off. >= 0.
  std::chrono::nanoseconds recovery_window = std::chrono::nanoseconds::zero();

  /// Calls admitted at once as probes in HALF_OPEN. In [1, 8191].
  std::size_t half_open_probes = 1;

  /// Consecutive probe successes that close the breaker: 1 to 2^32 - 1.
  std::size_t successes_to_close = 1;

  /// The longest a HALF_OPEN round may last from its first probe (as
  /// Resilience4j's `maxWaitDurationInHalfOpenState`): if by then the probes
  /// have neither closed nor reopened the breaker (a probe hangs with no
  /// timeout around it, or too few probes came), it reopens (reason
  /// `half_open_timeout`, the open duration backs off as after a failed
  /// probe) and the next round's probes get fresh slots; the hung probe's late
  /// outcome changes nothing. A HALF_OPEN breaker that no call reached yet
  /// waits for its first probe with no timer. > 0; `nanoseconds::max()`: no
  /// limit. Default one minute: twice the default `open_duration` and longer
  /// than the usual request timeouts (30 s), so a probe that is merely slow
  /// is not cut short, while a hung one costs at most a minute of rejections.
  std::chrono::nanoseconds max_half_open_duration = std::chrono::minutes(1);

  /// Also open after this many failures in a row, whatever the window says.
  /// 0 (the default) turns it off.
  std::size_t consecutive_failures = 0;

  /// A call that takes at least this long counts as slow. Zero (the default)
  /// turns slow-call detection off. >= 0. From 100 times the coarse clock's
  /// resolution (400 ms on a 250 Hz Linux kernel) the steady_clock breaker
  /// times calls on `CLOCK_MONOTONIC_COARSE` (off by less than one tick,
  /// under 1 %), below it on `steady_clock::now()` (docs/breaker.md).
  std::chrono::nanoseconds slow_call_duration = std::chrono::nanoseconds::zero();

  /// Open when slow calls / calls >= this (with at least `minimum_calls`
  /// calls). In (0, 1]. Used only when `slow_call_duration` is non-zero. A
  /// slow probe counts as a failed probe.
  double slow_call_rate_threshold = 1.0;

  /// Each probe's own deadline. A probe is a question whose answer is needed
  /// soon: one sent into a dead dependency that answers late (or never)
  /// would hold the breaker HALF_OPEN until that answer, and another open
  /// period would follow. A probe still running at its deadline is cancelled
  /// (per-operation cancellation; for an awaitable, its coroutine's), counts
  /// as a failed probe at that moment (the breaker reopens at once, reason
  /// `probe_failed`) and its caller gets `error::timeout` once the operation
  /// has returned. Only probes have it: CLOSED calls are not timed.
  ///
  /// Zero (the default): automatic, `4 x` an estimate of the p99 latency of
  /// the successful calls the breaker has seen, at least 1 ms, and at most
  /// `slow_call_duration` when that is set (a probe that slow counts as
  /// failed anyway, so ending it there changes no decision, only its
  /// timing). A healthy dependency answers within its p99; four times that
  /// leaves room for a cold start without letting a dead dependency hold the
  /// round. The estimate adds no clock read to most CLOSED calls: with
  /// `slow_call_duration` set and timed on the precise clock it uses the
  /// durations already measured (no read added), else it measures about one
  /// call in 16 (two reads, the call chosen by a per-thread pseudo-random
  /// draw); a
  /// sample updates one atomic word (a frugal streaming quantile estimate:
  /// up by a quarter when a sample is above it, down by 1/512 otherwise), so
  /// it settles near the 99th percentile, rises tenfold in about ten samples
  /// and halves in about 350. Durations of zero (a clock coarser than the
  /// call) are not samples. With no sample yet: `slow_call_duration` when
  /// set, else no deadline. Caveat: if the dependency comes back lastingly
  /// slower than four times what the breaker saw before it opened, every
  /// probe times out; set this option (or `slow_call_duration`) for such a
  /// dependency. `nanoseconds::max()`: no probe deadline (the probe runs
  /// until it ends or `max_half_open_duration` reopens the breaker).
  /// Otherwise > 0: that deadline. >= 0. Calls whose awaitable is on
  /// `asio::io_context::executor_type` (not a strand) are refused when it is
  /// a deadline (> 0 and not `nanoseconds::max()`), and get no automatic
  /// deadline (docs/breaker.md, "A probe's deadline").
  std::chrono::nanoseconds probe_timeout = std::chrono::nanoseconds::zero();

  /// Decides success, failure or ignored for each finished call. Empty: the
  /// default rules (`default_classify`).
  levee::classifier classifier = {};
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member, such as
/// "breaker_options::window must be greater than zero".
void validate(const breaker_options& options);

}  // namespace levee
