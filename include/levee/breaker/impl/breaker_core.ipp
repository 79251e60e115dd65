// levee: the breaker core's slow paths, compiled once in lib/.
#pragma once

#include <levee/breaker/detail/breaker_core.hpp>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <cmath>
#include <cstdint>
#include <new>
#include <thread>
#include <type_traits>

namespace levee::detail {

namespace {
constexpr std::size_t cache_line = 64;
__extension__ typedef unsigned __int128 uint128;
constexpr std::uint64_t pow10(unsigned n) noexcept {
  std::uint64_t p = 1;
  while (n-- > 0) p *= 10;
  return p;
}
std::atomic<std::uint64_t> hardware_reads{0};
// Read once per process (a function-local static: thread-safe): glibc reads
// /sys/devices/system/cpu/online on every call, about half of what making a
// breaker cost (bench/README.md, "The registry").
unsigned hardware_threads() noexcept {
  static const unsigned n = [] {
    hardware_reads.fetch_add(1, std::memory_order_relaxed);
    return std::thread::hardware_concurrency();
  }();
  return n;
}
}  // namespace

std::uint64_t hardware_concurrency_reads() noexcept {
  return hardware_reads.load(std::memory_order_relaxed);
}

decimal_ratio decimal_ratio::from_double(double threshold) noexcept {
  // The shortest round-trip representation, in fixed notation: "1", "0.28",
  // "0.0000001". A double in (0, 1] needs at most 1 + 1 + 1074 characters.
  char text[1100];
  const auto [end, ec] =
      std::to_chars(text, text + sizeof text, threshold, std::chars_format::fixed);
  if (ec != std::errc() || threshold <= 0.0 || threshold > 1.0) return {};  // validated before
  decimal_ratio r{0, 0};
  const char* p = text;
  for (; p != end && *p != '.'; ++p)
    r.numerator = r.numerator * 10 + static_cast<unsigned>(*p - '0');
  if (p == end) return r;  // "1"
  ++p;
  constexpr unsigned max_places = 18;
  for (; p != end && r.exponent < max_places; ++p, ++r.exponent) {
    r.numerator = r.numerator * 10 + static_cast<unsigned>(*p - '0');
  }
  if (p != end) ++r.numerator;  // more places (none is a trailing zero): round up
  return r;
}

bool decimal_ratio::reached_by(std::uint64_t part, std::uint64_t whole) const noexcept {
  return static_cast<uint128>(part) * pow10(exponent) >= static_cast<uint128>(numerator) * whole;
}

breaker_core::breaker_core(const breaker_options& o, unsigned shards)
    : state_(make_word(circuit_state::closed, 1)),
      slow_ns_(o.slow_call_duration.count()),
      probe_limit_(static_cast<std::uint16_t>(o.half_open_probes)),
      window_bits_(0),
      failure_exponent_(decimal_ratio::from_double(o.failure_rate_threshold).exponent),
      slow_exponent_(decimal_ratio::from_double(o.slow_call_rate_threshold).exponent),
      failure_numerator_(decimal_ratio::from_double(o.failure_rate_threshold).numerator),
      slow_numerator_(decimal_ratio::from_double(o.slow_call_rate_threshold).numerator),
      minimum_calls_(o.minimum_calls),
      consecutive_limit_(o.consecutive_failures),
      options_(new breaker_options(o)),
      rng_{o.jitter_seed != 0 ? o.jitter_seed : random_seed()} {
  if (shards == 0) shards = std::clamp(hardware_threads(), 1u, 4u);
  shards = std::min(shards, 1024u);
  std::size_t n = 1;
  while (n < shards) n <<= 1;
  shard_mask_ = static_cast<std::uint16_t>(n - 1);
  window_kinds::visit(o.window_type, [&]<class W>(std::type_identity<W>) {
    static_assert(sizeof(W) <= sizeof(window_) && std::is_trivially_copyable_v<W> &&
                  std::is_trivially_destructible_v<W>);
    const W& w = *new (window_) W(o);
    window_bits_.store(bits_of<W>(), std::memory_order_relaxed);
    stride_ = static_cast<std::uint32_t>((sizeof(shard) + w.part_bytes() + cache_line - 1) /
                                         cache_line * cache_line);
    auto* memory = static_cast<std::byte*>(
        ::operator new[](n* stride_ + w.shared_bytes(), std::align_val_t{cache_line}));
    shard_memory_.reset(memory);
    for (std::size_t i = 0; i < n; ++i) {
      auto* s = new (memory + i * stride_) shard();
      w.init_part(s->part());
    }
    w.init_shared(shared_part());
  });
}

bool breaker_core::over_threshold(const window_totals& t, const limits& l,
                                  transition_reason& why) const noexcept {
  if (t.calls < l.minimum_calls) return false;
  // Exact: integer cross-multiplication against the threshold's decimal form.
  if (decimal_ratio{l.failure_numerator, l.failure_exponent}.reached_by(t.failures, t.calls)) {
    why = transition_reason::failure_rate;
    return true;
  }
  if (slow_ns() > 0 &&
      decimal_ratio{l.slow_numerator, l.slow_exponent}.reached_by(t.slow, t.calls)) {
    why = transition_reason::slow_call_rate;
    return true;
  }
  return false;
}

permit breaker_core::acquire_probe(std::uint64_t w) noexcept {
  while (state_of(w) == circuit_state::half_open &&
         probes_of(w) < probe_limit_.load(std::memory_order_relaxed)) {
    if (state_.compare_exchange_weak(w, (w + probe_one) | round_started, std::memory_order_acq_rel,
                                     std::memory_order_acquire))
      return permit(generation_of(w), permit::probe, !(w & round_started));
  }
  if (state_of(w) != circuit_state::half_open) return try_acquire();  // it moved on meanwhile
  my_shard().rejected.bump();                                         // every slot taken
  return permit();
}

// A probe, or an untracked call (DISABLED: counted by outcome, no window).
transition breaker_core::complete_special(permit p, outcome o, bool slow) noexcept {
  shard& s = my_shard();
  if (o == outcome::ignored) {
    s.ignored.bump();
  } else {
    count(s, o == outcome::failure, slow);
  }
  return p.is_probe() ? complete_probe(p, o, slow) : transition();
}

transition breaker_core::note_consecutive(permit p, bool failed) noexcept {
  if (generation_of(state_.load(std::memory_order_acquire)) != p.generation()) return {};
  if (failed) {
    const std::uint64_t in_a_row = consecutive_.fetch_add(1, std::memory_order_relaxed) + 1;
    const std::uint64_t limit = consecutive_limit_.load(std::memory_order_relaxed);
    if (limit != 0 && in_a_row >= limit) {
      return trip(p.generation(), transition_reason::consecutive_failures, {in_a_row, in_a_row, 0});
    }
  } else if (consecutive_.load(std::memory_order_relaxed) != 0) {
    consecutive_.store(0, std::memory_order_relaxed);
  }
  return {};
}

nanos breaker_core::next_open_duration() noexcept {
  const long double unit =
      options().open_duration_jitter > 0.0 ? static_cast<long double>(rng_.unit()) : 0.5L;
  return open_duration_for(open_streak_, unit);
}

nanos breaker_core::shortest_open_duration() const noexcept {
  spin_guard g(const_cast<spinlock&>(transition_lock_));
  return open_duration_for(open_streak_, 0.0L);
}

// `unit` in [0, 1): where in the jitter's range (0: the shortest).
nanos breaker_core::open_duration_for(std::uint32_t streak, long double unit) const noexcept {
  // In long double (a 64-bit mantissa on x86-64: every duration up to
  // nanoseconds::max() is exact), saturating: a product at or past
  // nanoseconds::max() is "for ever", never a wrapped or 1 ns duration.
  // Under transition_lock_: the options cannot change meanwhile.
  const breaker_options& o = options();
  using real = long double;
  real d = static_cast<real>(o.open_duration.count());
  if (o.open_duration_multiplier > 1.0 && streak > 1) {
    d *= std::pow(static_cast<real>(o.open_duration_multiplier), static_cast<real>(streak - 1));
    d = std::min(d, static_cast<real>(o.max_open_duration.count()));  // inf: the cap
  }
  if (o.open_duration_jitter > 0.0) {
    const auto jitter = static_cast<real>(o.open_duration_jitter);
    d *= 1.0L - jitter + 2.0L * jitter * unit;  // unit: exact (53 bits)
  }
  constexpr auto forever = std::numeric_limits<std::int64_t>::max();
  if (!(d < static_cast<real>(forever))) return nanos::max();
  return nanos(std::max<std::int64_t>(1, std::llround(d)));
}

std::uint64_t breaker_core::open_streak() const noexcept {
  spin_guard g(const_cast<spinlock&>(transition_lock_));
  return open_streak_;
}

transition breaker_core::trip(std::uint64_t generation, transition_reason why,
                              const window_totals& basis) noexcept {
  // METRICS_ONLY keeps a window over the threshold: no lock for every failure.
  if (state_of(state_.load(std::memory_order_acquire)) != circuit_state::closed) return {};
  spin_guard g(transition_lock_);
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) != circuit_state::closed || generation_of(w) != generation) return {};
  const std::uint64_t next = generation + 1;
  open_streak_ = 1;
  state_.store(make_word(circuit_state::open, next), std::memory_order_release);
  return opened({circuit_state::closed, circuit_state::open, why, next, next_open_duration()},
                basis);
}

transition breaker_core::fleet_open(nanos open_for) noexcept {
  spin_guard g(transition_lock_);
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) != circuit_state::closed) return {};
  const std::uint64_t next = generation_of(w) + 1;
  open_streak_ = 1;
  if (open_for <= nanos::zero()) open_for = next_open_duration();
  state_.store(make_word(circuit_state::open, next), std::memory_order_release);
  return opened(
      {circuit_state::closed, circuit_state::open, transition_reason::fleet, next, open_for}, {});
}

transition breaker_core::fleet_close() noexcept {
  spin_guard g(transition_lock_);
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) != circuit_state::open && state_of(w) != circuit_state::half_open) return {};
  const std::uint64_t next = generation_of(w) + 1;
  open_streak_ = 0;
  probe_successes_ = 0;
  reset_windows(next);
  state_.store(make_word(circuit_state::closed, next), std::memory_order_release);
  return {state_of(w), circuit_state::closed, transition_reason::fleet, next};
}

transition breaker_core::open_elapsed(std::uint64_t generation) noexcept {
  spin_guard g(transition_lock_);
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) != circuit_state::open || generation_of(w) != generation) return {};
  probe_successes_ = 0;
  state_.store(make_word(circuit_state::half_open, generation + 1), std::memory_order_release);
  return {circuit_state::open, circuit_state::half_open, transition_reason::open_elapsed,
          generation + 1};
}

transition breaker_core::half_open_elapsed(std::uint64_t generation) noexcept {
  spin_guard g(transition_lock_);
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) != circuit_state::half_open || generation_of(w) != generation) return {};
  const std::uint64_t next = generation + 1;
  if (open_streak_ != UINT32_MAX) ++open_streak_;  // as a failed probe: the open duration backs off
  state_.store(make_word(circuit_state::open, next), std::memory_order_release);
  return opened({circuit_state::half_open, circuit_state::open,
                 transition_reason::half_open_timeout, next, next_open_duration()},
                {});
}

// The probe's effect on the state; complete_special counted it.
transition breaker_core::complete_probe(permit p, outcome o, bool slow) noexcept {
  spin_guard g(transition_lock_);
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) != circuit_state::half_open || generation_of(w) != p.generation()) return {};
  if (o == outcome::ignored) {
    state_.fetch_sub(probe_one, std::memory_order_acq_rel);  // give the slot back
    return {};
  }
  const std::uint64_t next = p.generation() + 1;
  if (o == outcome::failure || slow) {
    if (open_streak_ != UINT32_MAX) ++open_streak_;
    state_.store(make_word(circuit_state::open, next), std::memory_order_release);
    return opened({circuit_state::half_open, circuit_state::open, transition_reason::probe_failed,
                   next, next_open_duration()},
                  {1, o == outcome::failure ? 1u : 0u, slow ? 1u : 0u});
  }
  if (probe_successes_ != UINT32_MAX) ++probe_successes_;
  if (probe_successes_ >= options().successes_to_close) {
    open_streak_ = 0;
    reset_windows(next);
    state_.store(make_word(circuit_state::closed, next), std::memory_order_release);
    return {circuit_state::half_open, circuit_state::closed, transition_reason::probes_succeeded,
            next};
  }
  state_.fetch_sub(probe_one, std::memory_order_acq_rel);
  return {};
}

transition breaker_core::set_state(circuit_state target) noexcept {
  if (target == circuit_state::half_open || target == circuit_state::open) return {};
  spin_guard g(transition_lock_);
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) == target) {
    // Already there: no transition. A reset in CLOSED still clears the window
    // (what a reset is for); METRICS_ONLY keeps its window.
    if (target == circuit_state::closed) reset_windows(generation_of(w));
    return {};
  }
  const std::uint64_t next = generation_of(w) + 1;
  if (target != circuit_state::forced_open) {
    reset_windows(next);
    probe_successes_ = 0;
  }
  if (target == circuit_state::closed) open_streak_ = 0;
  state_.store(make_word(target, next), std::memory_order_release);
  return {state_of(w), target, transition_reason::manual, next};
}

void breaker_core::release(permit p) noexcept {
  if (!p) return;
  my_shard().ignored.bump();
  if (!p.is_probe()) return;
  spin_guard g(transition_lock_);
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  if (state_of(w) == circuit_state::half_open && generation_of(w) == p.generation()) {
    state_.fetch_sub(probe_one, std::memory_order_acq_rel);
  }
}

breaker_counters breaker_core::counters() const noexcept {
  breaker_counters c;
  for (std::size_t i = 0; i <= shard_mask_; ++i) {
    const shard& s = shard_at(i);
    c.successes += s.successes.get();
    c.failures += s.failures.get();
    c.ignored += s.ignored.get();
    c.slow += s.slow.get();
    c.rejected += s.rejected.get();
  }
  return c;
}

window_totals breaker_core::trip_basis(const transition& t) const noexcept {
  if (t.to != circuit_state::open) return {};
  spin_guard g(const_cast<spinlock&>(transition_lock_));
  if (basis_generation_ != t.generation) return {};
  if (t.reason == transition_reason::slow_call_rate) return {basis_calls_, 0, basis_part_};
  return {basis_calls_, basis_part_, 0};
}

bool breaker_core::orphan() noexcept {
  std::uint32_t in_flight = 0;  // modulo 2^31
  for (std::size_t i = 0; i <= shard_mask_; ++i) {
    in_flight += shard_at(i).in_flight.fetch_or(1, std::memory_order_acq_rel) >> 1;
  }
  const auto n = static_cast<std::int64_t>(in_flight & 0x7fff'ffffu);
  // Calls that left before their shard was marked are not in `n`; those that
  // leave after it each take one off: whoever brings the count to 0 is last.
  return orphan_pending_.fetch_add(n, std::memory_order_acq_rel) + n == 0;
}

std::size_t breaker_core::probe_successes() const noexcept {
  spin_guard g(const_cast<spinlock&>(transition_lock_));
  return probe_successes_;
}

}  // namespace levee::detail
