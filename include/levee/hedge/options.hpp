/// \file
/// Hedged requests: their options and metrics (docs/hedging.md).
#pragma once

#include <levee/core/classify.hpp>
#include <levee/retry/retry_budget.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <memory>
#include <string>
#include <vector>

namespace levee {

/// A hedge's settings (docs/hedging.md). Plain struct, a default on every
/// member; `basic_hedge` validates it. Every duration works up to
/// `nanoseconds::max()` (a delay of `max()` never hedges).
struct hedge_options {
  /// Attempts in all, the first one included. In [1, 8]; 1 never hedges.
  std::size_t max_attempts = 2;
  /// The fixed delay after which another attempt starts, when `percentile`
  /// is 0, and while the latency window holds fewer than `min_samples`
  /// samples otherwise. >= 0.
  std::chrono::nanoseconds delay = std::chrono::milliseconds(50);
  /// 0: the delay is fixed (`delay`). In (0, 1), such as 0.95: the delay is
  /// that percentile of the attempts' latency over the last one to two
  /// `window`s (log-spaced buckets, two windows that rotate: see
  /// docs/hedging.md), clamped to [`min_delay`, `max_delay`].
  double percentile = 0.0;
  /// The lowest percentile delay. >= 0.
  std::chrono::nanoseconds min_delay = std::chrono::milliseconds(1);
  /// The highest percentile delay. >= `min_delay`.
  std::chrono::nanoseconds max_delay = std::chrono::seconds(1);
  /// The percentile is used once the window holds this many samples. In
  /// [1, 2^30].
  std::size_t min_samples = 100;
  /// The length of each of the two rotating windows of the latency
  /// estimate and of the budget. > 0.
  std::chrono::nanoseconds window = std::chrono::seconds(10);
  /// The budget: extra attempts at most this share of the calls over the
  /// window (brpc's `max_backup_ratio`, Finagle's budget), plus
  /// `min_extra`. In [0, 1]. When it is spent, no hedge starts (counted in
  /// `hedge_metrics::budget_refusals`): a dependency slow everywhere gets
  /// hedged no more, instead of twice the load.
  double max_extra_ratio = 0.1;
  /// Extra attempts allowed over the window whatever the ratio, so that a
  /// quiet client can still hedge. <= 2^30.
  std::size_t min_extra = 10;
  /// Whether the calls may be sent twice. A call that is not idempotent is
  /// never hedged (one attempt, counted in `hedge_metrics::not_idempotent`)
  /// unless the call says otherwise (`hedge_call`).
  bool idempotent = true;
  /// What counts as an answer that wins: `outcome::success`. Any other
  /// outcome is a failed attempt (docs/hedging.md, "Failures"). Empty:
  /// `default_classify` (a 503 response is a value, so it would win), except
  /// in the HTTP helpers (`levee::http::hedged_get`, `hedged_send`), which
  /// classify with `levee::http::classify` then. A call may bring its own
  /// (`hedge_call::classifier`).
  levee::classifier classifier{};
  /// A retry budget shared with retry policies (`retry_options::budget`);
  /// null: none. Each hedge withdraws one retry from it as well, after the
  /// hedge's own budget allowed it; refused, the hedge is not started
  /// (counted in `budget_refusals`). Retries and hedges then add at most
  /// what the one budget allows together. The hedge deposits nothing: the
  /// successes come from the retry policies sharing it (docs/hedging.md,
  /// "Composition"). Its time is the hedge's clock: share it with policies
  /// of the same clock.
  std::shared_ptr<levee::retry_budget> shared_retry_budget = {};
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const hedge_options& options);

/// What one call tells the hedge, overriding its options.
struct hedge_call {
  /// Whether this call may be sent twice (a GET: yes; a POST: only when the
  /// caller knows it is safe).
  bool idempotent = true;
  /// What counts as this call's winning answer; empty: the options'
  /// `classifier`. The HTTP helpers give `levee::http::classify` here when
  /// the hedge has no classifier of its own (docs/hedging.md, "HTTP").
  levee::classifier classifier{};
};

/// A hedge's counters (since construction) and estimate, at one moment.
struct hedge_metrics {
  std::uint64_t calls = 0;            ///< calls started
  std::uint64_t attempts = 0;         ///< attempts started, first ones included
  std::uint64_t hedges = 0;           ///< extra attempts started (attempts - first ones)
  std::uint64_t hedge_wins = 0;       ///< calls whose winning answer came from an extra attempt
  std::uint64_t budget_refusals = 0;  ///< hedges not started: the budget was spent
  std::uint64_t not_idempotent = 0;   ///< calls run once: not idempotent
  std::uint64_t rejections = 0;       ///< attempts answered by a rejection (not hedged further)
  std::uint64_t cancelled = 0;        ///< losing attempts cancelled after another won
  /// The delay the next call would use.
  std::chrono::nanoseconds delay{0};
  /// Latency samples in the window (one to two `window`s).
  std::uint64_t window_samples = 0;
  std::uint64_t window_calls = 0;   ///< calls counted in the budget's window
  std::uint64_t window_hedges = 0;  ///< hedges counted in the budget's window
  /// Events a listener missed because a post failed to allocate.
  std::uint64_t events_lost = 0;
};

/// What a hedge tells its listeners (`basic_hedge::listen`). The values are
/// bits, for a mask.
enum class hedge_event_kind : std::uint32_t {
  hedged = 1,          ///< an extra attempt started: the others had not answered in time
  budget_refused = 2,  ///< an extra attempt was due, and the budget refused it
  hedge_won = 4,       ///< an extra attempt's answer won the call
};
/// Every `hedge_event_kind` bit.
inline constexpr std::uint32_t all_hedge_events = 7;

/// One hedge event, as a listener receives it.
struct hedge_event {
  hedge_event_kind kind = hedge_event_kind::hedged;  ///< what happened
  /// hedged, hedge_won: the attempt's index (1: the first extra attempt);
  /// budget_refused: the index it would have had.
  unsigned attempt = 0;
  /// The time from the call's first attempt to the event (on the hedge's clock).
  std::chrono::nanoseconds after{0};
  std::chrono::system_clock::time_point when;  ///< wall-clock time of the event
};

/// A hedge's metrics under its name, for `write_hedges_prometheus`.
struct named_hedge_metrics {
  std::string name;       ///< the value of its label `hedge` (unique)
  hedge_metrics metrics;  ///< its snapshot
};

/// Writes hedges' metrics in the Prometheus text exposition format 0.0.4,
/// one sample per hedge (label `hedge`, escaped as for breakers):
///
/// | Metric | Type |
/// |---|---|
/// | `levee_hedge_calls_total` | counter |
/// | `levee_hedge_attempts_total` | counter |
/// | `levee_hedge_hedges_total` | counter |
/// | `levee_hedge_wins_total` | counter |
/// | `levee_hedge_budget_refusals_total` | counter |
/// | `levee_hedge_not_idempotent_total` | counter |
/// | `levee_hedge_rejections_total` | counter |
/// | `levee_hedge_cancelled_total` | counter |
/// | `levee_hedge_delay_seconds` | gauge |
/// | `levee_hedge_window_samples` | gauge |
///
/// \param out The stream to write to.
/// \param hedges The hedges, each with a unique name.
void write_hedges_prometheus(std::ostream& out, const std::vector<named_hedge_metrics>& hedges);

}  // namespace levee
