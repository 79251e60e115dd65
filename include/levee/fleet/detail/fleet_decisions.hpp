// levee: what a fleet link decides for one breaker, sans I/O.
//
// The link (fleet/impl/fleet_state.hpp) is the shell: it reads the breaker, talks
// to Redis and arms timers. Everything it decides lives here, as plain
// functions of their inputs: the breaker's counters and state, the fleet's
// window as the round script returned it, records with their generations,
// the probe race's outcome, Redis time as a number of microseconds. No
// hiredis, no Asio, no clock read, no lock: a `fleet_decisions` belongs to
// one breaker and is used on the link's strand only.
//
// One breaker's life with a link, in calls:
//
//   tick(...)            every bucket width: the round to send, or none
//   round_answered()     the round's reply came (or the connection ended)
//   on_record(...)       a record, from a round, a publication or a message:
//                        ignore it (stale, known), join it, open or close
//   window_opens(...)    the fleet's window opens a CLOSED breaker
//   on_probe(...)        the probe race's outcome: probe, wait, half-open
//   on_transition(...)   a local transition: what to publish
//   disconnected()       Redis is gone: back to a local breaker
//
// Also here: `redis_clock` (Redis time from the steady clock, and command
// deadlines) and `reconnect_backoff` (the delays between connection
// attempts).
#pragma once

#include <levee/breaker/detail/decimal_ratio.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/core/vocabulary.hpp>

#include <chrono>
#include <cstdint>
#include <random>
#include <string>
#include <string_view>

namespace levee::detail {

/// A shared record (<base>:state, or a message on the channel): "o <generation>
/// <half-open time, us> <id>" (an opening) or "c <generation> 0 <id>" (a
/// closing); a message has the breaker's name after the id.
struct fleet_record {
  char kind = 0;  ///< 'o', 'c', or 0: none (absent or malformed)
  std::uint64_t generation = 0;
  std::int64_t half_open_us = 0;  ///< Redis time
  std::string rest;               ///< the id (record), "<id> <name>" (message)

  /// `kind` 0 when `text` is empty or malformed.
  static fleet_record parse(std::string_view text);
};

/// The fleet's window, as a round returned it.
struct fleet_window {
  std::uint64_t calls = 0;
  std::uint64_t failures = 0;
  std::uint64_t slow = 0;
  std::uint64_t failing_instances = 0;  ///< distinct instances with failures or slow calls
};

/// What the fleet's window of a breaker is judged by: the breaker's own
/// thresholds, the link's quorum and minimum.
struct fleet_thresholds {
  std::uint64_t minimum_calls = 1;
  std::uint64_t quorum = 2;
  decimal_ratio failure;
  decimal_ratio slow;
  bool slow_on = false;  ///< slow-call detection on

  /// `fleet_minimum_calls` 0: the breaker's `minimum_calls`.
  static fleet_thresholds of(const breaker_options& breaker, std::size_t quorum,
                             std::size_t fleet_minimum_calls);
};

/// True when the fleet's window opens a breaker: at least the minimum calls,
/// failing instances at least the quorum, and the failure rate (or, with
/// slow-call detection on, the slow-call rate) at its threshold.
bool fleet_window_trips(const fleet_thresholds& t, const fleet_window& w) noexcept;

/// The round script's answer to "may this instance probe?" (its reply's last
/// element, fleet/detail/fleet_scripts.hpp).
enum class probe_race : std::int8_t {
  given_up = -2,    ///< run past its deadline: it did nothing
  no_opening = -1,  ///< no fleet opening (no record, or a closing): decide alone
  lost = 0,         ///< another instance holds the lease and probes
  won = 1,          ///< this instance holds the lease: it probes
  not_yet = 2,      ///< the fleet's half-open time has not come
};

/// The round script's probe element as a `probe_race` (an unknown value:
/// `no_opening`, as the link always read it).
probe_race to_probe_race(std::int64_t v) noexcept;

/// A round to send (the round script's ARGV[2..4], ARGV[7], ARGV[9]).
struct round_request {
  std::uint64_t calls = 0, failures = 0, slow = 0;  ///< since the last round
  bool want_probe = false;                          ///< race for the probe lease
  std::uint64_t renew_generation = 0;               ///< renew this lease (0: none)
};

/// What a record asks of the breaker.
struct record_decision {
  enum class action : std::uint8_t {
    stale,    ///< an older generation than one already seen: ignored
    nothing,  ///< known, or nothing to do in the breaker's state
    join,     ///< the breaker, OPEN, now counts its opening as the fleet's
    open,     ///< open the CLOSED breaker (reason fleet) for `open_for`, then
              ///< call `opened_by_fleet()` if it did open
    close,    ///< close the breaker (reason fleet): the fleet's probe succeeded
  };
  action what = action::nothing;
  nanos open_for{};  ///< open: until the fleet's half-open time
};

/// What the probe race asks of the breaker.
struct probe_decision {
  enum class action : std::uint8_t {
    none,       ///< no race was run
    wait,       ///< not yet, or another instance probes: stay OPEN, rejecting
    probe,      ///< won: half-open (generation), then `probe_started(...)`
    half_open,  ///< no fleet opening: half-open (generation) as alone
  };
  action what = action::none;
  std::uint64_t generation = 0;  ///< the OPEN generation to half-open
  bool lost = false;             ///< wait because another instance holds the lease
};

/// What to publish (the publish script's mode): "open", "reopen" or "close"
/// from `on_transition`; the shell publishes "fleet" after `window_opens`.
struct publication {
  const char* mode = nullptr;  ///< null: nothing
  nanos open_for{};
  std::uint64_t generation = 0;  ///< reopen, close: the opening probed
};

/// One breaker's fleet decisions. Strand only, no lock.
class fleet_decisions {
 public:
  /// `start`: the breaker's cumulative counters when attached.
  fleet_decisions(const fleet_thresholds& t, const breaker_counters& start) noexcept;

  /// Every bucket width. `now`: the breaker's cumulative counters;
  /// `expired_generation`: the OPEN generation whose timer fired while gated
  /// (0: none): the round races for the probe lease only when calls were
  /// refused since the last round (an idle instance leaves the lease to one
  /// with a call to make); `probe_running`: HALF_OPEN with a probe in flight. Returns
  /// false (nothing to send) when disconnected (the counts are dropped: they
  /// would all land in one bucket) or while a round is unanswered (the counts
  /// go with the next round).
  bool tick(const breaker_counters& now, bool connected, std::uint64_t expired_generation,
            bool probe_running, round_request& out) noexcept;
  /// Between rounds: true when a round should race for the probe lease now
  /// (OPEN `expired_generation` expired while gated, and calls were refused
  /// since the last round: this instance has a call to make).
  bool wants_probe(const breaker_counters& now, std::uint64_t expired_generation) const noexcept {
    return expired_generation != 0 && now.rejected != last_.rejected;
  }
  /// The round's reply came (or never will).
  void round_answered() noexcept { in_flight_ = false; }

  /// A record, read at Redis time `now_us`, for a breaker in state `s`. An
  /// absent record (`kind` 0: expired, or Redis lost its data) means the
  /// opening, if any, is no longer the fleet's.
  record_decision on_record(const fleet_record& r, circuit_state s, std::int64_t now_us) noexcept;
  /// The breaker did open on `record_decision::action::open`.
  void opened_by_fleet() noexcept { fleet_open_ = true; }

  /// The fleet's window opens the breaker (in state `s`; reason fleet, its
  /// own open duration; the link then publishes mode "fleet").
  bool window_opens(const fleet_window& w, circuit_state s) const noexcept {
    return s == circuit_state::closed && fleet_window_trips(thresholds_, w);
  }

  /// The probe race of the last round sent; `record_generation`: the
  /// generation of the record the round returned (the lease's).
  probe_decision on_probe(probe_race r, std::uint64_t record_generation) noexcept;
  /// After `probe_decision::action::probe`: whether the breaker is HALF_OPEN
  /// now (it probes, and publishes the outcome).
  void probe_started(bool half_open) noexcept { probing_ = half_open; }

  /// A local transition of the breaker. Nothing while disconnected, nothing
  /// for a fleet or manual opening.
  publication on_transition(circuit_state from, circuit_state to, transition_reason why,
                            nanos open_for, bool connected) noexcept;

  /// The connection is gone (or this breaker's commands get error replies): a
  /// local breaker again. The generations seen are forgotten: Redis may come
  /// back without its data, its generations started again.
  void disconnected() noexcept;

  // Read-only, for the shell and the tests.
  const fleet_thresholds& thresholds() const noexcept { return thresholds_; }
  bool fleet_open() const noexcept { return fleet_open_; }  ///< the opening is the fleet's
  bool probing() const noexcept { return probing_; }
  std::uint64_t probing_generation() const noexcept { return probing_gen_; }
  std::uint64_t seen() const noexcept { return seen_; }  ///< newest record generation
  std::int64_t half_open_us() const noexcept { return half_open_us_; }
  bool in_flight() const noexcept { return in_flight_; }

 private:
  fleet_thresholds thresholds_;
  breaker_counters last_;
  bool in_flight_ = false;
  bool fleet_open_ = false;
  bool probing_ = false;               // this instance won the lease of generation probing_gen_
  std::uint64_t want_generation_ = 0;  // the OPEN generation the race is for
  std::uint64_t seen_ = 0;
  std::uint64_t probing_gen_ = 0;
  std::int64_t half_open_us_ = 0;
};

/// Redis time on this instance: the offset between Redis time and the steady
/// clock, learnt by TIME at connect and at every round. Times in us.
class redis_clock {
 public:
  void learn(std::int64_t redis_now_us, std::int64_t steady_us) noexcept {
    known_ = true;
    offset_us_ = redis_now_us - steady_us;
  }
  void forget() noexcept { known_ = false; }
  bool known() const noexcept { return known_; }
  std::int64_t now(std::int64_t steady_us) const noexcept { return steady_us + offset_us_; }
  /// When a command sent at `steady_us` is given up (`timeout_us` later), in
  /// Redis time, saturated; 0 (no deadline) until the offset is known.
  std::int64_t deadline(std::int64_t steady_us, std::int64_t timeout_us) const noexcept;

 private:
  std::int64_t offset_us_ = 0;  // Redis time - steady time
  bool known_ = false;
};

/// Delays between connection attempts: from `min`, doubled after every
/// failed attempt up to `max`, each drawn in [d/2, d]; a connection counts as
/// a failed attempt unless it stayed up `max` (`connection_lasted`).
class reconnect_backoff {
 public:
  reconnect_backoff(nanos min, nanos max) noexcept : min_(min), max_(max), next_(min) {}
  /// Starts again from `min`.
  void reset() noexcept { next_ = min_; }
  /// A connection ended after being up for `up`: only one that stayed up
  /// `max` or longer starts the delays again from `min` (a connection that
  /// fails at once after connecting is a failed attempt).
  void connection_lasted(nanos up) noexcept {
    if (up >= max_) next_ = min_;
  }
  /// The delay before the next attempt.
  nanos next(std::mt19937_64& rng) noexcept;

 private:
  nanos min_, max_, next_;
};

}  // namespace levee::detail
