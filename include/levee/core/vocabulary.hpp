/// \file
/// The words every layer uses: a breaker's states, why it changes
/// state, its window kinds, and the counts it reports.
#pragma once

#include <cstddef>
#include <cstdint>

namespace levee {

/// A breaker's state: the three of the README (CLOSED, OPEN, HALF_OPEN) and
/// three set by an operator. More may follow; switch with a default.
enum class circuit_state : std::uint8_t {
  closed = 0,     ///< calls run; outcomes go into the window
  open = 1,       ///< calls are rejected; a timer will turn the breaker HALF_OPEN
  half_open = 2,  ///< at most `half_open_probes` calls run as probes; others are rejected
  // Manual control (see basic_circuit_breaker::force_open and friends):
  forced_open = 3,   ///< every call is rejected until an operator says otherwise
  disabled = 4,      ///< every call runs; outcomes are counted, no window is kept, it never opens
  metrics_only = 5,  ///< every call runs; outcomes go into the window and the metrics,
                     ///< the breaker never opens
};

/// The number of `circuit_state` values.
inline constexpr std::size_t circuit_state_count = 6;

/// The name of a state.
/// \param s A state.
/// \return "closed", "open", "half_open", "forced_open", "disabled" or
/// "metrics_only"; "unknown" for a value outside the enumeration. A static
/// string.
const char* to_string(circuit_state s) noexcept;

/// Why a breaker changed state.
enum class transition_reason : std::uint8_t {
  failure_rate,          ///< CLOSED -> OPEN: the window's failure rate reached the threshold
  slow_call_rate,        ///< CLOSED -> OPEN: the window's slow-call rate reached the threshold
  consecutive_failures,  ///< CLOSED -> OPEN: `consecutive_failures` failures in a row
  probe_failed,          ///< HALF_OPEN -> OPEN: a probe failed (or was slow)
  probes_succeeded,      ///< HALF_OPEN -> CLOSED: `successes_to_close` probes succeeded in a row
  open_elapsed,          ///< OPEN -> HALF_OPEN: the open timer fired
  manual,                ///< an operator: force_open, disable, metrics_only or reset
  /// HALF_OPEN -> OPEN: the round had not closed or reopened
  /// `max_half_open_duration` after its first probe started (a probe hung)
  half_open_timeout,
  /// Decided by a `levee::fleet_link`: CLOSED -> OPEN on the fleet's shared
  /// evidence or another instance's published opening; OPEN (or HALF_OPEN)
  /// -> CLOSED when the fleet's prober closed it
  fleet,
};

/// The name of a reason.
/// \param r A reason.
/// \return its enumerator's name: "failure_rate", "slow_call_rate", ...,
/// "fleet"; "unknown" for a value outside the enumeration. A static string.
const char* to_string(transition_reason r) noexcept;

/// Which sliding window the breaker keeps in CLOSED.
enum class window_kind : std::uint8_t {
  /// The calls of the last `window` of time, kept in `window_buckets` buckets
  /// of `window / window_buckets` each (see \ref breaker_options::window_buckets).
  time = 0,
  /// The last `window_calls` calls, whenever they happened.
  count = 1,
};

/// Calls, failures and slow calls in a breaker's window.
struct window_totals {
  std::uint64_t calls = 0;     ///< calls in the window
  std::uint64_t failures = 0;  ///< of which failures
  std::uint64_t slow = 0;      ///< of which slow (successes and failures)
};

/// A breaker's cumulative outcome counts since construction (every state).
struct breaker_counters {
  std::uint64_t successes = 0;  ///< classified success
  std::uint64_t failures = 0;   ///< classified failure
  std::uint64_t ignored = 0;    ///< classified ignored (cancellations), or abandoned
  std::uint64_t slow = 0;       ///< successes and failures that were also slow
  std::uint64_t rejected = 0;   ///< refused admission
};

}  // namespace levee
