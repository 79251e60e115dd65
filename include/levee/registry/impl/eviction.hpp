// levee: the registry's new and touched entries, its idle sweep and the
// choice of the breaker a new key evicts at max_breakers (included by
// registry/registry.hpp).
#pragma once

#include <levee/core/detail/saturating.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace levee {

// A new key's guards, built from its resolved options.
template <class Clock, class WaitTraits>
auto basic_breaker_registry<Clock, WaitTraits>::make(std::string_view key, const resolved& r) const
    -> guard_set {
  guard_set g;
  g.breaker = std::make_shared<breaker_type>(executor_, *r.breaker, std::string(key));
  if (r.limit) g.limit = std::make_shared<limit_type>(executor_, *r.limit, std::string(key));
  return g;
}

// Marks a use of an existing key at `t`.
template <class Clock, class WaitTraits>
auto basic_breaker_registry<Clock, WaitTraits>::touch(entry& e, std::int64_t t) -> guard_set {
  std::int64_t last = e.last_used.load(std::memory_order_relaxed);
  while (t - last > slack() &&
         !e.last_used.compare_exchange_weak(last, t, std::memory_order_relaxed)) {
  }
  return e.guards;
}

template <class Clock, class WaitTraits>
bool basic_breaker_registry<Clock, WaitTraits>::evictable(const entry& e) {
  if (e.guards.breaker.use_count() != 1) return false;
  if (e.guards.limit && e.guards.limit.use_count() != 1) return false;
  const circuit_state s = e.guards.breaker->state();
  return s == circuit_state::closed || s == circuit_state::open || s == circuit_state::half_open;
}

template <class Clock, class WaitTraits>
void basic_breaker_registry<Clock, WaitTraits>::maybe_sweep(std::int64_t t) {
  if (never_idle()) return;
  std::int64_t last = last_sweep_.load(std::memory_order_relaxed);
  if (t - last < idle_timeout_.load(std::memory_order_relaxed) / 4) return;
  if (!last_sweep_.compare_exchange_strong(last, t)) return;  // another thread sweeps
  sweep(t);
}

// Evicts what has been idle for idle_timeout (plus the slack of the time of
// use) at `t` and that nobody holds; the guards are destroyed outside the lock.
//
// Incremental: at most detail::registry_sweep_batch entries per hold of the
// lock, so that a get waits for one batch at most, not for the whole map.
// slots_ is walked from its end down to 0, the lock released between batches.
// Meanwhile new entries go to the end (behind the cursor: new, not idle) and
// an erase moves the last slot into the erased one: an entry already examined
// (or new) may move in front of the cursor and be examined again, never one
// not yet examined behind it. So every entry that exists from the start to
// the end of the sweep is examined, as by the single pass before.
template <class Clock, class WaitTraits>
std::size_t basic_breaker_registry<Clock, WaitTraits>::sweep(std::int64_t t) {
  if (never_idle()) return 0;
  // last_used may lag the last get by up to `slack`: count it in.
  const auto limit = detail::saturating_add(
      std::chrono::nanoseconds(idle_timeout_.load(std::memory_order_relaxed)),
      std::chrono::nanoseconds(slack()));
  std::size_t total = 0;
  std::size_t cursor = static_cast<std::size_t>(-1);  // the first hold starts at the end
  bool done = false;
  while (!done) {
    std::vector<guard_set> evicted;  // destroyed outside the lock
    {
      std::unique_lock g(entries_mutex_);
      cursor = std::min(cursor, slots_.size());
      std::size_t examined = 0;
      while (cursor > 0 && examined < detail::registry_sweep_batch) {
        --cursor;
        ++examined;
        slot* s = slots_[cursor];
        entry& e = s->second;
        const auto last = e.last_used.load(std::memory_order_relaxed);
        const bool idle = t >= last && std::chrono::nanoseconds(t - last) >= limit;
        if (idle && evictable(e)) {
          this->dropped(registry_event_kind::evicted, s->first, e.guards.breaker);
          evicted.push_back(std::move(e.guards));
          erase_entry(s);  // the last slot (examined, or new) comes to `cursor`
        }
      }
      work_.sweep_hold(examined);
      done = cursor == 0;
    }
    evictions_.fetch_add(evicted.size(), std::memory_order_relaxed);
    total += evicted.size();
  }
  return total;
}

// Under the unique lock: the entry a new key at max_breakers evicts (see the
// declaration in registry.hpp).
template <class Clock, class WaitTraits>
auto basic_breaker_registry<Clock, WaitTraits>::choose_victim() -> slot* {
  const std::size_t n = slots_.size();
  slot* victim = nullptr;
  std::size_t examined = 0;
  auto consider = [&](slot* s) {
    ++examined;
    if (!evictable(s->second)) return;
    if (!victim || s->second.last_used.load(std::memory_order_relaxed) <
                       victim->second.last_used.load(std::memory_order_relaxed))
      victim = s;
  };
  if (n <= detail::registry_victim_sample) {
    for (slot* s : slots_) consider(s);
  } else {
    for (std::size_t k = 0; k < detail::registry_victim_sample; ++k)
      consider(slots_[random_.next() % n]);
    for (std::size_t k = 0; !victim && k < n; ++k) {
      hand_ = hand_ + 1 < n ? hand_ + 1 : 0;
      consider(slots_[hand_]);
    }
  }
  work_.victim_searches.fetch_add(1, std::memory_order_relaxed);
  work_.victim_examined.fetch_add(examined, std::memory_order_relaxed);
  return victim;
}

// Under the unique lock: a new entry, also at the end of slots_.
template <class Clock, class WaitTraits>
auto basic_breaker_registry<Clock, WaitTraits>::insert_entry(std::string_view key, guard_set g,
                                                             std::int64_t t) ->
    typename map_type::iterator {
  if (slots_.size() == slots_.capacity())  // so that push_back cannot throw below
    slots_.reserve(std::max<std::size_t>(16, 2 * slots_.size()));  // geometric
  auto it = entries_.emplace(std::string(key), entry{std::move(g), t}).first;
  it->second.index = slots_.size();
  slots_.push_back(&*it);
  return it;
}

// Under the unique lock: removes an entry; the last of slots_ takes its place.
template <class Clock, class WaitTraits>
void basic_breaker_registry<Clock, WaitTraits>::erase_entry(typename map_type::iterator it) {
  const std::size_t i = it->second.index;
  slots_[i] = slots_.back();
  slots_[i]->second.index = i;
  slots_.pop_back();
  entries_.erase(it);
}

}  // namespace levee
