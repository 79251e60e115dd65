// levee-demo --replicas N: the pieces that do no I/O (the replicas'
// schedules, the round-robin of the modes without an upstream, the figures
// and the upstream's three claims), header-only so that
// tests/demo_replicas.cpp can check them. The run is replicas.cpp, the
// report replicas_report.cpp.
#pragma once

#include "scenario.hpp"

#include <flaky/schedule.hpp>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace demo::replicas {

/// How the sessions call the replicas.
enum class mode {
  naive_retry,  ///< round-robin, each failure retried up to 3 times, no breaker
  breaker,      ///< round-robin, one breaker for the whole set (the demo's `breaker`)
  upstream      ///< levee::upstream: per-replica ejection, retries elsewhere
};

inline constexpr mode all_modes[] = {mode::naive_retry, mode::breaker, mode::upstream};

inline const char* to_string(mode m) noexcept {
  switch (m) {
    case mode::naive_retry:
      return "naive_retry";
    case mode::breaker:
      return "breaker";
    case mode::upstream:
      return "upstream";
  }
  return "?";
}

/// A healthy replica's schedule: the sick one's phases (names, durations,
/// capacity), each as healthy as its first phase. The replicas' phases then
/// change at the same moments, and the tables can be read per phase.
inline std::vector<flaky::phase> healthy_schedule(const std::vector<flaky::phase>& sick) {
  std::vector<flaky::phase> out;
  if (sick.empty()) return out;
  for (const auto& p : sick) {
    flaky::phase h = sick.front();
    h.name = p.name;
    h.duration = p.duration;
    h.capacity = p.capacity;
    out.push_back(h);
  }
  return out;
}

/// Round-robin over `n` replicas: each attempt, the first one and the
/// retries, takes the next (so a retry may land on the replica that failed).
class round_robin {
 public:
  explicit round_robin(std::size_t n) noexcept : n_(n == 0 ? 1 : n) {}
  std::size_t next() noexcept { return i_++ % n_; }

 private:
  std::size_t n_;
  std::size_t i_ = 0;
};

/// One mode's figures in one phase (a call counts in the phase it started in).
struct phase_figures {
  std::uint64_t offered = 0;           ///< calls made by the sessions
  std::uint64_t succeeded = 0;         ///< calls that got a 2xx in the end
  std::uint64_t fast_failed = 0;       ///< calls levee refused (open breaker)
  std::uint64_t attempts = 0;          ///< attempts sent, retries included
  std::uint64_t downstream = 0;        ///< requests the replicas received (server side)
  std::uint64_t requests_to_sick = 0;  ///< of them, the sick replica's
  std::uint64_t probes_to_sick = 0;    ///< attempts that were the upstream's probes of it
  std::size_t peak_in_flight = 0;      ///< attempts in flight at once
  std::vector<double> latencies_ms;    ///< per call, scenario ms
  /// The event loops' longest lag in the phase, scenario ms: how late a timer
  /// due every 2 ms (real time) fired, on the sessions' thread or the
  /// replicas'. A stall of the machine holds up every call in flight by that
  /// much; the levee code under test does not block either loop.
  double loop_lag_ms = 0;

  double success_rate() const {
    return offered ? static_cast<double>(succeeded) / static_cast<double>(offered) : 0.0;
  }
  double percentile(double p) const { return percentile_of(latencies_ms, p); }
};

/// One timeline row: 100 ms of real time.
struct timeline_row {
  double t_ms = 0;  ///< real time since the start of the mode
  std::size_t phase = 0;
  std::uint64_t to_sick = 0;                  ///< requests the sick replica received in the row
  std::uint64_t downstream = 0;               ///< requests all replicas received in the row
  std::uint64_t finished = 0, succeeded = 0;  ///< calls that ended in the row
  double p99_ms = 0;                          ///< scenario ms, of the calls that ended in the row
};

struct mode_result {
  mode which = mode::naive_retry;
  std::vector<phase_figures> phases;
  std::vector<timeline_row> timeline;
  std::uint64_t ejections = 0, returns = 0;  ///< upstream: the sick replica's
  bool breaker_opened = false;               ///< breaker: did it ever open
};

/// What `upstream` must show in every run (issue 19): a success rate of at
/// least 99 % in every phase, a p99 within 20 % of the healthy phase's in
/// every phase, and in the outage no more requests to the sick replica than
/// its probes. `missed` says which, in words; empty when all three hold.
/// A phase's p99 bound grows by its event loops' lag (phase_figures::
/// loop_lag_ms): a stall of the machine delays the calls it catches by up to
/// its length, whatever routes them, and at --quick's or CI's scale 40 ms of
/// scenario time is 3 to 4 ms of real time (docs/demo.md, "Replicas").
struct claims {
  bool success = true, p99 = true, contained = true;
  std::vector<std::string> missed;
  bool met() const { return missed.empty(); }
};

inline claims check_upstream(const std::vector<flaky::phase>& schedule,
                             const std::vector<phase_figures>& phases) {
  claims c;
  std::size_t healthy = 0, outage = schedule.size();
  for (std::size_t i = 0; i < schedule.size(); ++i) {
    if (schedule[i].name == "healthy") healthy = i;
    if (schedule[i].name == "outage") outage = i;
  }
  if (phases.size() != schedule.size() || phases.empty()) {
    c.success = c.p99 = c.contained = false;
    c.missed.push_back("no figures");
    return c;
  }
  const double base = phases[healthy].percentile(0.99) * 1.2;
  for (std::size_t i = 0; i < phases.size(); ++i) {
    const auto& f = phases[i];
    const std::string& name = schedule[i].name;
    const double bound = base + f.loop_lag_ms;
    if (f.offered == 0 || f.success_rate() < 0.99) {
      c.success = false;
      c.missed.push_back(name + ": success rate " + std::to_string(f.success_rate()) + " < 0.99");
    }
    if (f.percentile(0.99) > bound) {
      c.p99 = false;
      c.missed.push_back(name + ": p99 " + std::to_string(f.percentile(0.99)) + " ms > " +
                         std::to_string(bound) + " ms (1.2 x the healthy phase's, plus " +
                         std::to_string(f.loop_lag_ms) + " ms of event-loop lag)");
    }
  }
  if (outage < phases.size() && phases[outage].requests_to_sick > phases[outage].probes_to_sick) {
    c.contained = false;
    c.missed.push_back("outage: " + std::to_string(phases[outage].requests_to_sick) +
                       " requests to the sick replica, " +
                       std::to_string(phases[outage].probes_to_sick) + " of them probes");
  }
  return c;
}

}  // namespace demo::replicas
