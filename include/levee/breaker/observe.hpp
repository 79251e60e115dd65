/// \file
/// What a breaker tells the outside world: events and metrics.
#pragma once

#include <levee/breaker/options.hpp>

#include <boost/system/error_code.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <iosfwd>
#include <string>
#include <string_view>
#include <vector>

namespace levee {

/// What happened. The values are bits, for `event_mask`.
enum class event_kind : std::uint32_t {
  transition = 1,   ///< the state changed (`from`, `to`, `reason`)
  success = 2,      ///< a call finished and counted as a success
  failure = 4,      ///< a call finished and counted as a failure
  ignored = 8,      ///< a call finished and was not counted (cancelled)
  rejected = 16,    ///< a call was refused without being started
  stuck_open = 32,  ///< the breaker has not been CLOSED for `recovery_window`
  /// `reconfigure` applied new options (`from` = `to` = the state then);
  /// docs/reconfigure.md
  reconfigured = 64,
};

/// A set of `event_kind` bits.
using event_mask = std::uint32_t;
/// `transition` and `stuck_open`: the breaker's state changes.
inline constexpr event_mask transition_events = static_cast<event_mask>(event_kind::transition) |
                                                static_cast<event_mask>(event_kind::stuck_open);
/// `success`, `failure`, `ignored` and `rejected`: one event per call.
inline constexpr event_mask call_events =
    static_cast<event_mask>(event_kind::success) | static_cast<event_mask>(event_kind::failure) |
    static_cast<event_mask>(event_kind::ignored) | static_cast<event_mask>(event_kind::rejected);
/// Every kind: those above and `reconfigured`.
inline constexpr event_mask all_events =
    transition_events | call_events | static_cast<event_mask>(event_kind::reconfigured);

/// The name of an event kind.
/// \param k A kind (one bit).
/// \return "transition", "success", "failure", "ignored", "rejected",
/// "stuck_open" or "reconfigured"; "unknown" for any other value. A static
/// string.
const char* to_string(event_kind k) noexcept;

/// One event, as a listener receives it.
struct breaker_event {
  event_kind kind = event_kind::transition;    ///< what happened
  circuit_state from = circuit_state::closed;  ///< transition: the state left; else the state
  circuit_state to = circuit_state::closed;    ///< transition: the state entered; else the state
  transition_reason reason = transition_reason::failure_rate;  ///< transition only
  bool slow = false;                    ///< success and failure: the call was slow
  std::chrono::nanoseconds open_for{};  ///< transition to OPEN: until the timer fires
  // Transition to OPEN: what tripped it (zero for other events).
  /// `failure_rate`, `slow_call_rate`: the window's failure or slow-call rate;
  /// `consecutive_failures`, `probe_failed`: 1.
  double rate = 0;
  /// The calls that rate is over: the window's (`failure_rate`,
  /// `slow_call_rate`), the failures in a row (`consecutive_failures`), 1
  /// (`probe_failed`).
  std::uint64_t calls = 0;
  /// The last failure before the transition: its error_code (zero if it had
  /// none, e.g. it threw something else) and its exception (null if it did not
  /// throw). Recorded only while some listener wants transition events. Only
  /// `failure_rate`, `consecutive_failures` and a `probe_failed` whose probe
  /// failed carry one; it is empty for `slow_call_rate`, `half_open_timeout`,
  /// a probe that succeeded slowly and `fleet`.
  boost::system::error_code last_error;
  std::exception_ptr last_exception;  ///< see #last_error
  /// Reason `fleet` (levee::fleet): the instance that published the record
  /// this transition follows, and the record's generation; empty and 0 when
  /// the fleet's window (evidence from several instances) opened it, and for
  /// every other reason. A follower's event against the publisher's gives
  /// the propagation delay (docs/fleet.md).
  std::string fleet_instance;
  std::uint64_t fleet_generation = 0;  ///< see #fleet_instance
  /// Wall-clock time of the event. A call event's (success, failure,
  /// ignored, rejected) is read from the coarse wall clock (on Linux
  /// `CLOCK_REALTIME_COARSE`: the kernel's last tick, 1 to 4 ms old), the
  /// others' from `system_clock::now()`; a listener's events never go back
  /// in time (a call event is held at the time of the event before it).
  std::chrono::system_clock::time_point when;
  std::string_view breaker;  ///< the breaker's name, "" when unnamed
};

/// A listener. It runs on the executor given when it was added (by default the
/// breaker's), never inside the breaker and never under one of its locks, so
/// it may call the breaker, log, or block that executor as any handler may.
using event_listener = std::function<void(const breaker_event&)>;

/// A snapshot of one breaker's metrics.
struct breaker_metrics {
  circuit_state state = circuit_state::closed;  ///< the state when the snapshot was taken
  std::uint64_t successes = 0;                  ///< calls since construction classified success
  std::uint64_t failures = 0;                   ///< calls since construction classified failure
  std::uint64_t ignored = 0;   ///< calls since construction not counted (cancelled)
  std::uint64_t slow = 0;      ///< successes and failures that were also slow
  std::uint64_t rejected = 0;  ///< calls refused without being started
  /// Calls in the current window: those recorded since the breaker last
  /// entered CLOSED or METRICS_ONLY, as far as the window reaches (a time
  /// window keeps ageing while the breaker is open; a count window keeps its
  /// last calls). DISABLED keeps no window.
  std::uint64_t window_calls = 0;
  std::uint64_t window_failures = 0;  ///< failures in the current window
  std::uint64_t window_slow = 0;      ///< slow calls in the current window
  double failure_rate = 0;            ///< window_failures / window_calls, 0 when empty
  double slow_call_rate = 0;          ///< window_slow / window_calls, 0 when empty
  /// Total time spent in each state since construction, the current stint
  /// included; indexed by `circuit_state`.
  std::array<std::chrono::nanoseconds, circuit_state_count> time_in_state{};
  /// Transitions since construction: `transitions[from][to]`.
  std::array<std::array<std::uint64_t, circuit_state_count>, circuit_state_count> transitions{};
  /// Openings since the breaker last closed (0 when closed).
  std::uint64_t open_streak = 0;
  /// Time since the breaker last left CLOSED (0 when CLOSED, DISABLED or
  /// METRICS_ONLY).
  std::chrono::nanoseconds not_closed_for{};
  /// `recovery_window` is set and `not_closed_for` reached it: the breaker
  /// stayed OPEN, or kept reopening, or was FORCED_OPEN, for that long.
  bool stuck_open = false;
  /// Events that could not be posted to a listener, and transitions that
  /// could not be recorded in `transitions` and `time_in_state`, for lack of
  /// memory: 0 unless memory ran out. Nothing is ever dropped otherwise.
  std::uint64_t events_lost = 0;
  /// Times `reconfigure` applied new options since construction.
  std::uint64_t reconfigurations = 0;
};

/// One breaker's metrics with its name, for the Prometheus exposition.
struct named_metrics {
  std::string name;         ///< the value of its label `breaker` (unique)
  breaker_metrics metrics;  ///< its snapshot
};

/// Writes metrics in the Prometheus text exposition format 0.0.4, one family
/// per metric, one sample per breaker (label `breaker`):
///
/// | Metric | Type | Labels |
/// |---|---|---|
/// | `levee_calls_total` | counter | `outcome` = success, failure, ignored |
/// | `levee_slow_calls_total` | counter | |
/// | `levee_rejected_calls_total` | counter | |
/// | `levee_state` | gauge (1 for the current state, 0 for the others) | `state` |
/// | `levee_failure_ratio` | gauge, 0..1 | |
/// | `levee_slow_call_ratio` | gauge, 0..1 | |
/// | `levee_window_calls` | gauge | |
/// | `levee_state_seconds_total` | counter | `state` |
/// | `levee_transitions_total` | counter | `from`, `to` |
/// | `levee_open_streak` | gauge | |
/// | `levee_not_closed_seconds` | gauge | |
/// | `levee_stuck_open` | gauge, 0 or 1 | |
/// | `levee_reconfigurations_total` | counter | |
///
/// Label values are escaped as the format requires, and always valid UTF-8:
/// each ill-formed sequence in a name (its maximal subpart, as Unicode
/// recommends) becomes U+FFFD, so one bad name cannot make Prometheus reject
/// the whole scrape (two names that differ only there then share a series:
/// keep names valid UTF-8). Families and samples come
/// out in a stable order (the order of `breakers`, then the enum orders).
/// Names must be unique (a registry's keys are): two breakers with one name
/// would make duplicate series. A `levee_transitions_total` series appears at
/// the first transition of its pair.
///
/// \param out Where the text goes.
/// \param breakers The breakers, in the order their samples are written.
void write_prometheus(std::ostream& out, const std::vector<named_metrics>& breakers);

}  // namespace levee
