// levee: the breaker core's hot paths (admission and recording), inline in
// every caller; the slow paths are compiled once (breaker/impl/breaker_core.ipp).
#pragma once

namespace levee::detail {

inline circuit_state breaker_core::state_of(std::uint64_t w) noexcept {
  return static_cast<circuit_state>(w & state_mask);
}

inline std::uint64_t breaker_core::probes_of(std::uint64_t w) noexcept {
  return (w >> probe_shift) & probe_mask;
}

inline std::uint64_t breaker_core::make_word(circuit_state s, std::uint64_t generation) noexcept {
  return generation << generation_shift | static_cast<std::uint64_t>(s);
}

[[gnu::always_inline]] inline void breaker_core::counter::bump_locked() noexcept {
  value.store(value.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

[[gnu::always_inline]] inline breaker_core::shard& breaker_core::my_shard() const noexcept {
  return shard_at(thread_slot() & shard_mask_);
}

[[gnu::always_inline]] inline void breaker_core::enter() noexcept {
  my_shard().in_flight.fetch_add(2, std::memory_order_relaxed);
}

[[gnu::always_inline]] inline bool breaker_core::leave() noexcept {
  const std::uint32_t old = my_shard().in_flight.fetch_sub(2, std::memory_order_acq_rel);
  if (!(old & 1)) [[likely]]
    return false;
  return orphan_pending_.fetch_sub(1, std::memory_order_acq_rel) == 1;
}

inline void breaker_core::count(shard& s, bool failed, bool slow) noexcept {
  spin_guard g(s.lock);
  (failed ? s.failures : s.successes).bump_locked();
  if (slow) s.slow.bump_locked();
}

inline transition breaker_core::opened(const transition& t, const window_totals& basis) noexcept {
  basis_generation_ = t.generation;  // under transition_lock_
  basis_calls_ = basis.calls;
  basis_part_ = t.reason == transition_reason::slow_call_rate ? basis.slow : basis.failures;
  return t;
}

inline std::uint64_t breaker_core::validation_stamp(std::uint64_t generation,
                                                    std::int64_t index) noexcept {
  return generation << 32 | (static_cast<std::uint64_t>(index) & 0xffffffffu);  // generation >= 1
}

[[gnu::always_inline]] inline permit breaker_core::try_acquire() noexcept {
  const std::uint64_t w = state_.load(std::memory_order_acquire);
  const circuit_state state = state_of(w);
  if (state == circuit_state::closed) [[likely]]
    return permit(generation_of(w), permit::closed_call);
  if (state == circuit_state::half_open) return acquire_probe(w);  // out of line
  if (state == circuit_state::metrics_only) return permit(generation_of(w), permit::closed_call);
  if (state == circuit_state::disabled) return permit(generation_of(w), permit::untracked);
  my_shard().rejected.bump();  // OPEN, FORCED_OPEN
  return permit();
}

template <class W>
constexpr std::uint8_t breaker_core::bits_of() noexcept {
  std::uint8_t b = static_cast<std::uint8_t>(static_cast<std::uint8_t>(W::kind) & kind_mask);
  if (W::shared_only) b = static_cast<std::uint8_t>(b | shared_only_bit);
  if (W::needs_time) b = static_cast<std::uint8_t>(b | needs_time_bit);
  return b;
}

[[gnu::always_inline]] inline transition breaker_core::complete(permit p, outcome o, nanos now,
                                                                nanos elapsed) noexcept {
  if (!p) return {};
  const std::int64_t slow_ns = slow_ns_.load(std::memory_order_relaxed);
  const bool slow = slow_ns > 0 && elapsed.count() >= slow_ns && o != outcome::ignored;
  if (p.is_special()) return complete_special(p, o, slow);
  shard& s = my_shard();
  if (o == outcome::ignored) {
    s.ignored.bump();
    return {};
  }
  const bool failed = o == outcome::failure;
  // A window kept only in the shared part (the count window) is recorded
  // under shard 0's lock, out of line (`complete_other`).
  if (bits() & shared_only_bit) [[unlikely]]
    return complete_other(p, failed, slow, now, false);

  s.lock.lock();
  (failed ? s.failures : s.successes).bump_locked();
  if (slow) s.slow.bump_locked();
  if (s.generation != p.generation()) {  // admitted before the window was reset
    s.lock.unlock();
    return {};
  }
  // The window kind's `record` (breaker/detail/window_kinds.hpp): the first
  // kind listed inline, any other (or a window a reconfiguration moved)
  // through the dispatch compiled once.
  using inline_kind = window_kinds::inline_kind;
  const std::uint32_t epoch = window_epoch_;
  if ((bits() & (kind_mask | moved_bit)) != static_cast<std::uint8_t>(inline_kind::kind))
      [[unlikely]] {
    s.lock.unlock();  // counted; recorded under the lock its kind needs
    return complete_other(p, failed, slow, now, true);
  }
  // Not moved: the shared part follows the last shard.
  std::byte* const shared = shard_memory_.get() + (std::size_t{shard_mask_} + 1) * stride_;
  const std::int64_t stamp = window_as<inline_kind>().record(s.part(), shared, now, failed, slow);
  s.lock.unlock();
  return recorded(p, failed, slow, stamp, epoch);
}

template <class Now, class Settle>
[[gnu::always_inline]] inline breaker_core::fast_end breaker_core::complete_success_and_leave(
    permit p, Now&& now, Settle&& settle) noexcept {
  // Slow-call detection off: no call is slow (`complete` with a zero
  // elapsed). A probe or an untracked call, or a moved window: `complete`.
  const std::uint8_t b = bits() & (kind_mask | shared_only_bit | moved_bit);
  using first = window_kinds::inline_kind;  // the default, tested first
  if (b == (bits_of<first>() & (kind_mask | shared_only_bit)) && slow_ns() == 0 &&
      p.is_closed_call()) [[likely]]
    return success_and_leave_as<first>(p, now, settle);
  if (slow_ns() != 0 || !p.is_closed_call()) return fast_end::declined;
  fast_end e = fast_end::declined;
  window_kinds::any_of([&]<class W>(std::type_identity<W>) __attribute__((always_inline)) {
    if (b != (bits_of<W>() & (kind_mask | shared_only_bit))) return false;
    e = success_and_leave_as<W>(p, now, settle);
    return true;
  });
  return e;
}

template <class W, class Now, class Settle>
[[gnu::always_inline]] inline breaker_core::fast_end breaker_core::success_and_leave_as(
    permit p, Now& now, Settle& settle) noexcept {
  constexpr std::uint8_t taken_bits = bits_of<W>() & (kind_mask | shared_only_bit);
  constexpr std::uint8_t kind_bits = kind_mask | shared_only_bit | moved_bit;
  const nanos at = now(W::needs_time);
  // A kind kept only in the shared part is recorded under shard 0's lock,
  // against shard 0's generation, and counted there (as `complete_other`).
  shard& s = W::shared_only ? shard_at(0) : my_shard();
  s.lock.lock();
  // The window's kind is stable only under a shard's lock (a reconfiguration
  // takes them all): changed since the test above, `complete` decides.
  if ((bits() & kind_bits) != taken_bits) [[unlikely]] {
    s.lock.unlock();
    return fast_end::declined;
  }
  s.successes.bump_locked();
  if (s.generation == p.generation()) [[likely]] {  // else admitted before the window was reset
    const std::uint32_t epoch = window_epoch_;
    // Not moved: the shared part follows the last shard.
    std::byte* const shared = shard_memory_.get() + (std::size_t{shard_mask_} + 1) * stride_;
    const std::int64_t stamp = window_as<W>().record(s.part(), shared, at, false, false);
    s.lock.unlock();
    // As `recorded` for a success that is not slow: nothing more to do when
    // no consecutive-failure limit is set and the stamp's check passed.
    if (consecutive_limit_.load(std::memory_order_relaxed) != 0 ||
        validated_.load(std::memory_order_relaxed) != validation_stamp(p.generation(), stamp))
        [[unlikely]]
      settle(stamp, epoch);
  } else {
    s.lock.unlock();
  }
  // `leave`, on the shard just used (any shard will do: only the sum counts).
  const std::uint32_t old = s.in_flight.fetch_sub(2, std::memory_order_acq_rel);
  if (!(old & 1)) [[likely]]
    return fast_end::left;
  return orphan_pending_.fetch_sub(1, std::memory_order_acq_rel) == 1 ? fast_end::last
                                                                      : fast_end::left;
}

// After the call was recorded with `stamp` in window `epoch`: consecutive
// failures, and the window's check unless the stamp says it passed.
// `complete_other` (breaker/impl/breaker_window.ipp) records any window but
// the inline kind unmoved, under the lock its kind needs: the caller's own
// shard's, shard 0's for a `shared_only` kind (`counted`: the counters were
// bumped already, on the own shard).
[[gnu::always_inline]] inline transition breaker_core::recorded(permit p, bool failed, bool slow,
                                                                std::int64_t stamp,
                                                                std::uint32_t epoch) noexcept {
  // In the window first: the call that trips `consecutive_failures` counts.
  if (consecutive_limit_.load(std::memory_order_relaxed) != 0) {
    if (transition t = note_consecutive(p, failed)) return t;
  }

  // A success cannot raise a rate: when the last check with this stamp (for
  // a time window, in this bucket) found enough calls and both rates under
  // their thresholds, there is nothing to do.
  if (!failed && !slow &&
      validated_.load(std::memory_order_relaxed) == validation_stamp(p.generation(), stamp)) {
    return {};
  }
  return check_window(p.generation(), stamp, epoch);
}

}  // namespace levee::detail
