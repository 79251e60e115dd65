// levee: a fleet link's decisions (fleet/detail/fleet_decisions.hpp), compiled
// once in levee_fleet (lib/fleet.cpp).
#pragma once

#include <levee/core/detail/saturating.hpp>
#include <levee/fleet/detail/fleet_decisions.hpp>

#include <algorithm>
#include <limits>
#include <sstream>
#include <utility>

namespace levee::detail {

fleet_record fleet_record::parse(std::string_view text) {
  fleet_record r;
  std::istringstream in{std::string(text)};
  std::string kind;
  if (!(in >> kind >> r.generation >> r.half_open_us) || kind.size() != 1 ||
      (kind[0] != 'o' && kind[0] != 'c'))
    return {};
  r.kind = kind[0];
  in.get();  // the space
  std::getline(in, r.rest, '\0');
  return r;
}

fleet_thresholds fleet_thresholds::of(const breaker_options& b, std::size_t quorum,
                                      std::size_t fleet_minimum_calls) {
  fleet_thresholds t;
  t.minimum_calls = fleet_minimum_calls != 0 ? fleet_minimum_calls : b.minimum_calls;
  t.quorum = quorum;
  t.failure = decimal_ratio::from_double(b.failure_rate_threshold);
  t.slow = decimal_ratio::from_double(b.slow_call_rate_threshold);
  t.slow_on = b.slow_call_duration > nanos::zero();
  return t;
}

bool fleet_window_trips(const fleet_thresholds& t, const fleet_window& w) noexcept {
  return w.calls >= t.minimum_calls && w.failing_instances >= t.quorum &&
         (t.failure.reached_by(w.failures, w.calls) ||
          (t.slow_on && t.slow.reached_by(w.slow, w.calls)));
}

probe_race to_probe_race(std::int64_t v) noexcept {
  switch (v) {
    case -2:
      return probe_race::given_up;
    case 0:
      return probe_race::lost;
    case 1:
      return probe_race::won;
    case 2:
      return probe_race::not_yet;
    default:
      return probe_race::no_opening;
  }
}

fleet_decisions::fleet_decisions(const fleet_thresholds& t, const breaker_counters& start) noexcept
    : thresholds_(t), last_(start) {}

bool fleet_decisions::tick(const breaker_counters& c, bool connected,
                           std::uint64_t expired_generation, bool probe_running,
                           round_request& out) noexcept {
  if (!connected) {
    last_ = c;  // no evidence is shared while down
    return false;
  }
  if (in_flight_) return false;  // the counts wait for the next round
  out.calls = (c.successes + c.failures) - (last_.successes + last_.failures);
  out.failures = c.failures - last_.failures;
  out.slow = c.slow - last_.slow;
  out.want_probe = wants_probe(c, expired_generation);
  want_generation_ = out.want_probe ? expired_generation : 0;
  last_ = c;
  // A probe still running keeps its lease: no second prober meanwhile. A
  // winner that has not probed yet lets it expire.
  out.renew_generation = probing_ && probe_running ? probing_gen_ : 0;
  in_flight_ = true;
  return true;
}

record_decision fleet_decisions::on_record(const fleet_record& r, circuit_state s,
                                           std::int64_t now_us) noexcept {
  using action = record_decision::action;
  if (r.kind == 0) {  // no record: expired, or Redis lost its data
    fleet_open_ = false;
    return {};
  }
  if (r.generation < seen_) return {action::stale};
  if (r.generation == seen_) {  // known: a breaker that opened since joins it
    if (r.kind == 'o' && s == circuit_state::open) {
      fleet_open_ = true;
      return {action::join};
    }
    return {};
  }
  seen_ = r.generation;
  if (r.kind == 'o') {
    half_open_us_ = r.half_open_us;
    if (s == circuit_state::closed && r.half_open_us > now_us)
      return {action::open, std::chrono::microseconds(r.half_open_us - now_us)};
    if (s == circuit_state::open) {
      fleet_open_ = true;
      return {action::join};
    }
    return {};
  }
  // A closing: the fleet's probe succeeded.
  const bool close = fleet_open_ && (s == circuit_state::open || s == circuit_state::half_open);
  fleet_open_ = false;
  probing_ = false;
  return close ? record_decision{action::close} : record_decision{};
}

probe_decision fleet_decisions::on_probe(probe_race r, std::uint64_t record_generation) noexcept {
  using action = probe_decision::action;
  // A round run past its deadline did nothing: the race waits for the next.
  if (want_generation_ == 0 || r == probe_race::given_up) return {};
  const std::uint64_t generation = std::exchange(want_generation_, 0);
  switch (r) {
    case probe_race::won:  // this instance probes for the fleet
      probing_gen_ = record_generation;
      return {action::probe, generation};
    case probe_race::lost:  // another instance probes
      return {action::wait, generation, true};
    case probe_race::not_yet:  // the fleet's half-open time has not come
      return {action::wait, generation};
    case probe_race::given_up:  // (returned above)
    case probe_race::no_opening:
      break;
  }
  fleet_open_ = false;  // a local opening decides alone
  return {action::half_open, generation};
}

publication fleet_decisions::on_transition(circuit_state from, circuit_state to,
                                           transition_reason why, nanos open_for,
                                           bool connected) noexcept {
  if (!connected) return {};
  if (to == circuit_state::open && from == circuit_state::closed &&
      why != transition_reason::fleet && why != transition_reason::manual)
    return {"open", open_for, 0};
  if (to == circuit_state::open && from == circuit_state::half_open && probing_) {
    probing_ = false;
    return {"reopen", open_for, probing_gen_};
  }
  if (to == circuit_state::closed && from == circuit_state::half_open &&
      why == transition_reason::probes_succeeded && probing_) {
    probing_ = false;
    return {"close", nanos::zero(), probing_gen_};
  }
  // A probe of its own failed (no fleet opening held: Redis came back during
  // an outage, or the opening expired): published as a local trip is, so
  // that the rest of the outage is shared again (quorum applies in Redis).
  if (to == circuit_state::open && from == circuit_state::half_open &&
      why != transition_reason::fleet && why != transition_reason::manual)
    return {"open", open_for, 0};
  return {};
}

void fleet_decisions::disconnected() noexcept {
  in_flight_ = false;
  fleet_open_ = false;
  probing_ = false;
  want_generation_ = 0;
  seen_ = 0;  // Redis may come back empty: its generations start again
}

std::int64_t redis_clock::deadline(std::int64_t steady_us, std::int64_t timeout_us) const noexcept {
  if (!known_) return 0;
  const std::int64_t now = this->now(steady_us);
  constexpr auto max = std::numeric_limits<std::int64_t>::max();
  return timeout_us > max - now ? max : now + timeout_us;
}

nanos reconnect_backoff::next(std::mt19937_64& rng) noexcept {
  // Full jitter over the upper half: [d/2, d].
  std::uniform_int_distribution<std::int64_t> pick(next_.count() / 2, next_.count());
  const nanos delay(pick(rng));
  next_ = std::min(saturating_add(next_, next_), max_);
  return delay;
}

}  // namespace levee::detail
