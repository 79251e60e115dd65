// levee: the out-of-line bodies of levee::detail::endpoint_set
// (levee/upstream/detail/endpoint_set.hpp): success-rate sweeps, health
// verdicts, the hand-over between generations, and ejections and returns.
#pragma once

namespace levee::detail {

inline std::vector<indexed_change> endpoint_set::sweep(nanos now) {
  std::vector<indexed_change> out;
  if (options_.success_rate_interval.count() == 0) return out;
  auto end = interval_end_.load(std::memory_order_relaxed);
  if (end != unset && now.count() < end) return out;
  const auto next = now.count() + options_.success_rate_interval.count();
  if (!interval_end_.compare_exchange_strong(end, next, std::memory_order_relaxed)) return out;
  if (end == unset) return out;  // the first interval starts now
  spin_guard g(lock_);
  std::size_t rated = 0;
  double sum = 0;
  for (std::size_t i = 0; i < size_; ++i) {
    slot& s = slots_[i];
    const auto w = s.window.exchange(0, std::memory_order_relaxed);
    const auto calls = w >> 32, ok = w & 0xffffffffu;
    const bool serving = s.state.load(std::memory_order_relaxed) == endpoint_state::in_service;
    s.rate = serving && calls >= options_.success_rate_request_volume ? double(ok) / double(calls)
                                                                      : -1.0;
    if (s.rate >= 0) ++rated, sum += s.rate;
  }
  if (rated < options_.success_rate_minimum_hosts) return out;
  const double mean = sum / double(rated);
  double square = 0;
  for (std::size_t i = 0; i < size_; ++i)
    if (slots_[i].rate >= 0) square += (slots_[i].rate - mean) * (slots_[i].rate - mean);
  const double floor =
      mean - options_.success_rate_stdev_factor * std::sqrt(square / double(rated));
  for (;;) {  // the worst first, within the share
    std::size_t worst = endpoint_choice::none;
    for (std::size_t i = 0; i < size_; ++i) {
      const slot& s = slots_[i];
      if (s.rate >= 0 && s.rate < floor &&
          s.state.load(std::memory_order_relaxed) == endpoint_state::in_service &&
          (worst == endpoint_choice::none || s.rate < slots_[worst].rate))
        worst = i;
    }
    if (worst == endpoint_choice::none || ejected_.load(std::memory_order_relaxed) >= max_ejected())
      return out;
    out.push_back({worst, eject_in_service(slots_[worst], now, upstream_cause::success_rate)});
  }
}

inline endpoint_change endpoint_set::health(std::size_t i, bool healthy, nanos now) noexcept {
  slot& s = slots_[i];
  spin_guard g(lock_);
  const auto st = s.state.load(std::memory_order_relaxed);
  if (healthy) {
    if (st != endpoint_state::ejected) return {};
    return back(s, now, upstream_cause::health_check);
  }
  if (st != endpoint_state::in_service || ejected_.load(std::memory_order_relaxed) >= max_ejected())
    return {};
  return eject_in_service(s, now, upstream_cause::health_check);
}

inline void endpoint_set::adopt(std::size_t i, const endpoint_set& from, std::size_t j) noexcept {
  const slot& o = from.slots_[j];
  slot& s = slots_[i];
  spin_guard g(from.lock_);
  const auto st = o.state.load(std::memory_order_relaxed);
  s.state.store(st == endpoint_state::in_service ? st : endpoint_state::ejected,
                std::memory_order_relaxed);
  s.until.store(o.until.load(std::memory_order_relaxed), std::memory_order_relaxed);
  s.consecutive.store(o.consecutive.load(std::memory_order_relaxed), std::memory_order_relaxed);
  s.level = o.level;
  s.returned_at = o.returned_at;
  s.ejections = o.ejections;
  s.returns = o.returns;
  s.rate = o.rate;
  s.ewma.store(o.ewma.load(std::memory_order_relaxed), std::memory_order_relaxed);
  s.sampled.store(o.sampled.load(std::memory_order_relaxed), std::memory_order_relaxed);
  for (std::size_t k = 0; k < upstream_causes; ++k) {
    s.ejections_by[k] = o.ejections_by[k];
    s.returns_by[k] = o.returns_by[k];
  }
  if (st != endpoint_state::in_service) ejected_.fetch_add(1, std::memory_order_relaxed);
}

inline endpoint_change endpoint_set::end_probe(slot& s, outcome o, nanos now) noexcept {
  if (o == outcome::ignored) {
    s.state.store(endpoint_state::ejected, std::memory_order_release);
    return {};
  }
  spin_guard g(lock_);
  if (o == outcome::success) return back(s, now, upstream_cause::probe);
  // The probe failed: again, for longer (still counted ejected).
  return eject(s, now, upstream_cause::probe);
}

inline endpoint_change endpoint_set::back(slot& s, nanos now, upstream_cause why) noexcept {
  s.consecutive.store(0, std::memory_order_relaxed);
  s.window.store(0, std::memory_order_relaxed);
  s.returned_at = now;
  ++s.returns;
  ++s.returns_by[static_cast<std::size_t>(why)];
  ejected_.fetch_sub(1, std::memory_order_relaxed);
  s.state.store(endpoint_state::in_service, std::memory_order_release);
  return {endpoint_change::returned, nanos(0), s.level, why};
}

inline endpoint_change endpoint_set::eject_in_service(slot& s, nanos now,
                                                      upstream_cause why) noexcept {
  const auto in_service = std::max<std::int64_t>(0, (now - s.returned_at).count());
  const auto decay = std::uint64_t(in_service / options_.base_ejection_time.count());
  s.level = decay >= s.level ? 0 : std::uint32_t(s.level - decay);
  ejected_.fetch_add(1, std::memory_order_relaxed);
  return eject(s, now, why);
}

inline endpoint_change endpoint_set::eject(slot& s, nanos now, upstream_cause why) noexcept {
  ++s.level;
  ++s.ejections;
  ++s.ejections_by[static_cast<std::size_t>(why)];
  const auto base = options_.base_ejection_time.count();
  const auto cap = options_.max_ejection_time.count();
  const auto span = s.level > std::uint64_t(cap / base) ? cap : std::int64_t(s.level) * base;
  const auto until = now.count() > std::numeric_limits<std::int64_t>::max() - span
                         ? std::numeric_limits<std::int64_t>::max()
                         : now.count() + span;
  s.consecutive.store(0, std::memory_order_relaxed);
  s.until.store(until, std::memory_order_relaxed);
  s.state.store(endpoint_state::ejected, std::memory_order_release);
  return {endpoint_change::ejected, nanos(span), s.level, why};
}

}  // namespace levee::detail
