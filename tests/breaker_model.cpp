// Model-based test: random sequences of admissions, outcomes, cancellations,
// abandoned probes and clock steps, run against the core and against a plain
// reference model (the seed's algorithm: a deque of every call, with the core's
// bucket granularity). Every decision must agree.
#include <levee/breaker/detail/breaker_core.hpp>

#include <catch2/catch.hpp>

#include <cstdint>
#include <deque>
#include <iterator>
#include <optional>
#include <random>
#include <sstream>
#include <vector>

using levee::circuit_state;
using levee::outcome;
using levee::detail::breaker_core;
using levee::detail::permit;
using levee::detail::transition;
using nanos = std::chrono::nanoseconds;

namespace {

// The thresholds the sequences use, with the decimal fraction each stands for
// (the README's `>=` is exact against what the user wrote).
struct threshold {
  double value;
  std::uint64_t numerator;
  std::uint64_t denominator;
};
constexpr threshold thresholds[] = {{0.1, 1, 10},
                                    {0.25, 1, 4},
                                    {0.5, 1, 2},
                                    {0.6, 3, 5},
                                    {0.75, 3, 4},
                                    {1.0, 1, 1},
                                    {0.28, 7, 25},
                                    {0.55, 11, 20},
                                    {0.07, 7, 100},
                                    {0.14, 7, 50},
                                    {1.0 / 3, 3333333333333333, 10000000000000000}};

bool reached(std::size_t part, std::size_t whole, double value) {
  for (const threshold& t : thresholds) {
    if (t.value == value) return part * t.denominator >= t.numerator * whole;
  }
  FAIL("threshold not in the table");
  return false;
}

// The reference: written for clarity, not speed. It keeps every call.
struct reference_model {
  struct record {
    std::int64_t bucket;
    bool failed;
    bool slow;
  };
  struct ticket {
    std::uint64_t generation;
    bool probe;
    bool first = false;  // the first probe of its HALF_OPEN round
  };

  levee::breaker_options o;
  std::int64_t width;
  circuit_state state = circuit_state::closed;
  std::uint64_t generation = 1;
  std::deque<record> calls;
  std::size_t probes = 0;
  std::size_t probe_successes = 0;
  std::size_t consecutive = 0;
  std::int64_t open_until = 0;
  std::optional<std::int64_t> half_open_until;  // armed by the round's first probe

  explicit reference_model(const levee::breaker_options& options)
      : o(options),
        width(options.window.count() / static_cast<std::int64_t>(options.window_buckets)) {}

  static std::int64_t floor_div(std::int64_t a, std::int64_t b) {
    return a >= 0 ? a / b : -((-a + b - 1) / b);
  }

  void evict(std::int64_t now) {
    if (o.window_type != levee::window_kind::time) return;
    const std::int64_t current = floor_div(now, width);
    while (!calls.empty() &&
           calls.front().bucket <= current - static_cast<std::int64_t>(o.window_buckets))
      calls.pop_front();
  }

  std::pair<std::size_t, std::size_t> totals(std::int64_t now) {
    evict(now);
    std::size_t failures = 0;
    for (const auto& c : calls) failures += c.failed;
    return {calls.size(), failures};
  }

  bool should_open(std::int64_t now) {
    evict(now);
    const std::size_t n = calls.size();
    if (n < o.minimum_calls) return false;
    std::size_t failures = 0, slow = 0;
    for (const auto& c : calls) {
      failures += c.failed;
      slow += c.slow;
    }
    if (reached(failures, n, o.failure_rate_threshold)) return true;
    return o.slow_call_duration > nanos::zero() && reached(slow, n, o.slow_call_rate_threshold);
  }

  void open(std::int64_t now) {
    state = circuit_state::open;
    ++generation;
    probes = 0;
    open_until = now + o.open_duration.count();
    half_open_until.reset();
  }

  // Returns the admitted ticket, or nothing.
  std::optional<ticket> admit(std::int64_t now) {
    switch (state) {
      case circuit_state::closed:
        return ticket{generation, false};
      case circuit_state::half_open:
        if (probes < o.half_open_probes) {
          ++probes;
          const bool first = !half_open_until;
          if (first) half_open_until = now + o.max_half_open_duration.count();
          return ticket{generation, true, first};
        }
        return std::nullopt;
      default:
        return std::nullopt;
    }
  }

  // Returns the state entered, if the completion caused a transition.
  std::optional<circuit_state> complete(ticket t, outcome oc, std::int64_t now, nanos elapsed) {
    const bool slow = o.slow_call_duration > nanos::zero() && elapsed >= o.slow_call_duration &&
                      oc != outcome::ignored;
    if (t.probe) {
      if (state != circuit_state::half_open || generation != t.generation) return std::nullopt;
      if (oc == outcome::ignored) {
        --probes;
        return std::nullopt;
      }
      if (oc == outcome::failure || slow) {
        open(now);
        return circuit_state::open;
      }
      --probes;
      if (++probe_successes >= o.successes_to_close) {
        state = circuit_state::closed;
        ++generation;
        half_open_until.reset();
        calls.clear();
        consecutive = 0;
        probes = 0;
        return circuit_state::closed;
      }
      return std::nullopt;
    }
    if (oc == outcome::ignored) return std::nullopt;
    if (state != circuit_state::closed || generation != t.generation) return std::nullopt;
    const bool failed = oc == outcome::failure;
    calls.push_back({floor_div(now, width), failed, slow});
    if (o.window_type == levee::window_kind::count && calls.size() > o.window_calls)
      calls.pop_front();
    if (o.consecutive_failures != 0) {  // the tripping call is in the window too
      consecutive = failed ? consecutive + 1 : 0;
      if (consecutive >= o.consecutive_failures) {
        open(now);
        return circuit_state::open;
      }
    }
    if (should_open(now)) {
      open(now);
      return circuit_state::open;
    }
    return std::nullopt;
  }

  void release(ticket t) {
    if (t.probe && state == circuit_state::half_open && generation == t.generation) --probes;
  }

  // The half-open timer: the round had not settled in time.
  bool half_open_timer_fires(std::int64_t now) {
    if (state != circuit_state::half_open || !half_open_until || now < *half_open_until)
      return false;
    open(now);
    return true;
  }

  bool timer_fires(std::int64_t now) {
    if (state != circuit_state::open || now < open_until) return false;
    state = circuit_state::half_open;
    ++generation;
    probes = 0;
    probe_successes = 0;
    return true;
  }
};

levee::breaker_options random_options(std::mt19937_64& rng) {
  auto pick = [&](std::uint64_t lo, std::uint64_t hi) {
    return std::uniform_int_distribution<std::uint64_t>(lo, hi)(rng);
  };
  levee::breaker_options o;
  constexpr std::uint64_t last = std::size(thresholds) - 1;
  o.failure_rate_threshold = thresholds[pick(0, last)].value;
  o.window_type = pick(0, 3) == 0 ? levee::window_kind::count : levee::window_kind::time;
  o.window_buckets = pick(1, 10);
  o.window = nanos(static_cast<std::int64_t>(o.window_buckets * pick(1, 5) * 100));
  o.window_calls = pick(1, 25);
  o.minimum_calls = pick(1, o.window_type == levee::window_kind::count ? o.window_calls : 25);
  o.open_duration = nanos(static_cast<std::int64_t>(pick(1, 2000)));
  o.half_open_probes = pick(1, 3);
  o.successes_to_close = pick(1, 3);
  o.consecutive_failures = pick(0, 2) == 0 ? pick(1, 4) : 0;
  o.max_half_open_duration = nanos(static_cast<std::int64_t>(pick(1, 3000)));
  if (pick(0, 3) == 0) {
    o.slow_call_duration = nanos(static_cast<std::int64_t>(pick(1, 50)));
    o.slow_call_rate_threshold = thresholds[pick(0, last)].value;
  }
  levee::validate(o);
  return o;
}

std::string describe(const levee::breaker_options& o) {
  std::ostringstream s;
  s << "threshold=" << o.failure_rate_threshold << " kind=" << static_cast<int>(o.window_type)
    << " window=" << o.window.count() << "ns buckets=" << o.window_buckets
    << " window_calls=" << o.window_calls << " minimum=" << o.minimum_calls
    << " open=" << o.open_duration.count() << "ns probes=" << o.half_open_probes
    << " to_close=" << o.successes_to_close << " consecutive=" << o.consecutive_failures
    << " max_half_open=" << o.max_half_open_duration.count() << "ns"
    << " slow=" << o.slow_call_duration.count() << "ns/" << o.slow_call_rate_threshold;
  return s.str();
}

// Catch2's assertion macros cost about a microsecond each; at 17 million
// comparisons that is most of the run. Compare plainly, report through Catch2
// only when something disagrees (with the sequence, step and options).
#define AGREE(cond)                                                                  \
  do {                                                                               \
    if (!(cond)) {                                                                   \
      FAIL("disagreement: " #cond " at sequence " << seq << " step " << step << ": " \
                                                  << describe(o));                   \
    }                                                                                \
  } while (0)

}  // namespace

TEST_CASE("model: 100,000 random sequences agree with the reference model") {
  constexpr int sequences = 100'000;
  std::mt19937_64 rng(20261127);
  std::uint64_t steps = 0, transitions = 0, rejections = 0, half_open_timeouts = 0, fast_ends = 0;
  for (int seq = 0; seq < sequences; ++seq) {
    const levee::breaker_options o = random_options(rng);
    breaker_core core(o, 1);
    reference_model model(o);
    struct outstanding {
      permit p;
      reference_model::ticket t;
    };
    std::vector<outstanding> live;
    std::int64_t now = std::uniform_int_distribution<std::int64_t>(-1000, 1000)(rng);
    const int length = std::uniform_int_distribution<int>(1, 80)(rng);
    for (int step = 0; step < length; ++step, ++steps) {
      const int action = std::uniform_int_distribution<int>(0, 99)(rng);
      if (action < 40) {  // a call arrives
        const permit p = core.try_acquire();
        const auto t = model.admit(now);
        AGREE(static_cast<bool>(p) == t.has_value());
        if (p) {
          AGREE(p.is_probe() == t->probe);
          AGREE(p.first_probe() == t->first);
          live.push_back({p, *t});
        } else {
          ++rejections;
        }
      } else if (action < 80 && !live.empty()) {  // a call finishes
        const std::size_t i = std::uniform_int_distribution<std::size_t>(0, live.size() - 1)(rng);
        const int r = std::uniform_int_distribution<int>(0, 9)(rng);
        const outcome oc = r < 4 ? outcome::success : r < 8 ? outcome::failure : outcome::ignored;
        const nanos elapsed(std::uniform_int_distribution<std::int64_t>(0, 60)(rng));
        // Half the successes through the shell's inline path (every window
        // kind, slow-call detection off; else it declines and `complete` decides).
        transition t;
        breaker_core::fast_end fast = breaker_core::fast_end::declined;
        if (oc == outcome::success && r % 2 == 0) {
          core.enter();
          fast = core.complete_success_and_leave(
              live[i].p, [&](bool read) { return read ? nanos(now) : nanos::zero(); },
              [&](std::int64_t stamp, std::uint32_t epoch) {
                t = core.success_recorded(live[i].p, stamp, epoch);
              });
          AGREE(fast != breaker_core::fast_end::last);
          if (fast == breaker_core::fast_end::declined) (void)core.leave();
          AGREE((fast == breaker_core::fast_end::declined) ==
                (o.slow_call_duration > nanos::zero() || !live[i].p.is_closed_call()));
          fast_ends += fast != breaker_core::fast_end::declined;
        }
        if (fast == breaker_core::fast_end::declined)
          t = core.complete(live[i].p, oc, nanos(now), elapsed);
        const auto expected = model.complete(live[i].t, oc, now, elapsed);
        AGREE(static_cast<bool>(t) == expected.has_value());
        if (t) {
          ++transitions;
          AGREE(t.to == *expected);
          AGREE(t.generation == model.generation);
          if (t.to == circuit_state::open) AGREE(t.open_for == o.open_duration);
        }
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      } else if (action < 85 && !live.empty()) {  // a call is abandoned
        const std::size_t i = std::uniform_int_distribution<std::size_t>(0, live.size() - 1)(rng);
        core.release(live[i].p);
        model.release(live[i].t);
        live.erase(live.begin() + static_cast<std::ptrdiff_t>(i));
      } else {  // time passes; the open timer fires when due
        const int r = std::uniform_int_distribution<int>(0, 9)(rng);
        now += r < 6 ? std::uniform_int_distribution<std::int64_t>(0, 50)(rng)
                     : std::uniform_int_distribution<std::int64_t>(0, 3000)(rng);
        if (model.half_open_timer_fires(now)) {
          const transition t = core.half_open_elapsed(core.generation());
          AGREE(t);
          AGREE(t.to == circuit_state::open);
          AGREE(t.reason == levee::transition_reason::half_open_timeout);
          AGREE(t.open_for == o.open_duration);
          ++transitions;
          ++half_open_timeouts;
        }
        if (model.timer_fires(now)) {
          const transition t = core.open_elapsed(core.generation());
          AGREE(t);
          AGREE(t.to == circuit_state::half_open);
          ++transitions;
        }
      }
      AGREE(core.state() == model.state);
      AGREE(core.generation() == model.generation);
      AGREE(core.probes_in_flight() == model.probes);
      if (model.state == circuit_state::closed && step % 8 == 0) {
        const auto w = core.window(nanos(now));
        const auto [calls, failures] = model.totals(now);
        AGREE(w.calls == calls);
        AGREE(w.failures == failures);
      }
    }
  }
  // The sequences must have exercised every path, not only admissions.
  CHECK(steps > 3'000'000);
  CHECK(transitions > 100'000);
  CHECK(rejections > 100'000);
  CHECK(half_open_timeouts > 10'000);
  CHECK(fast_ends > 10'000);
}
