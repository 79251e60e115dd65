// levee: the breaker core's hot paths (admission and recording), inline in
// every caller; the slow paths are compiled once (breaker/impl/breaker_core.ipp).
#pragma once

namespace levee::detail {

inline permit breaker_core::try_acquire() noexcept {
  std::uint64_t w = state_.load(std::memory_order_acquire);
  for (;;) {
    switch (state_of(w)) {
      case circuit_state::closed:
        return permit(generation_of(w), permit::closed_call);
      case circuit_state::half_open:
        if (probes_of(w) < probe_limit_) {
          // The first probe of the round marks the word; its permit says so.
          if (state_.compare_exchange_weak(w, (w + probe_one) | round_started,
                                           std::memory_order_acq_rel, std::memory_order_acquire)) {
            return permit(generation_of(w), permit::probe, !(w & round_started));
          }
          continue;  // w was reloaded
        }
        break;
      case circuit_state::disabled:
        return permit(generation_of(w), permit::untracked);
      case circuit_state::metrics_only:
        return permit(generation_of(w), permit::closed_call);
      case circuit_state::open:
      case circuit_state::forced_open:
        break;
    }
    my_shard().rejected.bump();
    return permit();
  }
}

inline transition breaker_core::complete(permit p, outcome o, nanos now, nanos elapsed) noexcept {
  if (!p) return {};
  const bool slow = slow_ns_ > 0 && elapsed.count() >= slow_ns_ && o != outcome::ignored;
  if (p.is_special()) return complete_special(p, o, slow);
  shard& s = my_shard();
  if (o == outcome::ignored) {
    s.ignored.bump();
    return {};
  }
  const bool failed = o == outcome::failure;
  if (kind_ == window_kind::count) {
    count(s, failed, slow);
    return record_count_window(p, failed, slow);
  }

  s.lock.lock();
  (failed ? s.failures : s.successes).bump_locked();
  if (slow) s.slow.bump_locked();
  if (s.generation != p.generation()) {  // admitted before the window was reset
    s.lock.unlock();
    return {};
  }
  const std::int64_t index =
      time_.record(s.window, s.ring(), time_.index_of(s.window, now), failed, slow);
  s.lock.unlock();

  // In the window first: the call that trips `consecutive_failures` counts.
  if (consecutive_limit_ != 0) {
    if (transition t = note_consecutive(p, failed)) return t;
  }

  // A success cannot raise a rate: when the last check in this bucket found
  // enough calls and both rates under their thresholds, there is nothing to do.
  if (!failed && !slow &&
      validated_.load(std::memory_order_relaxed) == validation_stamp(p.generation(), index)) {
    return {};
  }
  return check_time_window(p.generation(), index);
}

}  // namespace levee::detail
