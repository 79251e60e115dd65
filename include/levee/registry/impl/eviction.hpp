// levee: the registry's idle sweep (included by registry/registry.hpp).
#pragma once

#include <levee/core/detail/saturating.hpp>

#include <chrono>
#include <mutex>
#include <vector>

namespace levee {

// Evicts what has been idle for idle_timeout (plus the slack of the time of
// use) and that nobody holds; the guards are destroyed outside the lock.
template <class Clock, class WaitTraits>
std::size_t basic_breaker_registry<Clock, WaitTraits>::sweep(std::int64_t t) {
  if (never_idle()) return 0;
  // last_used may lag the last get by up to `slack`: count it in.
  const auto limit = detail::saturating_add(
      std::chrono::nanoseconds(idle_timeout_.load(std::memory_order_relaxed)),
      std::chrono::nanoseconds(slack()));
  std::vector<guard_set> evicted;  // destroyed outside the lock
  {
    std::unique_lock g(entries_mutex_);
    for (auto it = entries_.begin(); it != entries_.end();) {
      entry& e = it->second;
      const auto last = e.last_used.load(std::memory_order_relaxed);
      const bool idle = t >= last && std::chrono::nanoseconds(t - last) >= limit;
      if (idle && evictable(e)) {
        this->dropped(registry_event_kind::evicted, it->first, e.guards.breaker);
        evicted.push_back(std::move(e.guards));
        it = entries_.erase(it);
      } else {
        ++it;
      }
    }
    work_.sweep_hold(entries_.size() + evicted.size());
  }
  evictions_.fetch_add(evicted.size(), std::memory_order_relaxed);
  return evicted.size();
}

}  // namespace levee
