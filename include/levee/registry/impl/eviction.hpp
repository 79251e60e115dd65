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
#include <thread>
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

// The key's entry, made if needed (evicting one at max_breakers), its use
// marked, and `project` of its guard set, taken under the lock.
template <class Clock, class WaitTraits>
template <class Project>
auto basic_breaker_registry<Clock, WaitTraits>::find_or_make(std::string_view key, Project project)
    -> std::invoke_result_t<Project, const guard_set&> {
  const auto t = now();
  maybe_sweep(t);
  {
    std::shared_lock g(entries_mutex_, std::defer_lock);
    lock_for_get(g);
    if (auto it = entries_.find(key); it != entries_.end()) {
      touch(it->second, t);
      return project(it->second.guards);
    }
  }
  guard_set evicted;  // destroyed outside the lock
  guard_set unkept;   // the same: an overflow's guards, not in the map
  std::unique_lock g(entries_mutex_, std::defer_lock);
  lock_for_get(g);
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    if (entries_.size() >= options_.max_breakers) {
      slot* victim = choose_victim();
      if (!victim) {
        overflows_.fetch_add(1, std::memory_order_relaxed);
        unkept = make(key, resolve(key));  // under the lock: resolve points into options_
        return project(unkept);
      }
      this->dropped(registry_event_kind::evicted, victim->first, victim->second.guards.breaker);
      evicted = std::move(victim->second.guards);
      erase_entry(victim);
      evictions_.fetch_add(1, std::memory_order_relaxed);
    }
    it = insert_entry(key, make(key, resolve(key)), t);
    this->added(it->first, it->second.guards.breaker);
  }
  touch(it->second, t);
  return project(it->second.guards);
}

// Marks a use of an existing key at `t`.
template <class Clock, class WaitTraits>
void basic_breaker_registry<Clock, WaitTraits>::touch(entry& e, std::int64_t t) {
  std::int64_t last = e.last_used.load(std::memory_order_relaxed);
  while (t - last > slack() &&
         !e.last_used.compare_exchange_weak(last, t, std::memory_order_relaxed)) {
  }
}

template <class Clock, class WaitTraits>
std::int64_t basic_breaker_registry<Clock, WaitTraits>::now() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

template <class Clock, class WaitTraits>
bool basic_breaker_registry<Clock, WaitTraits>::never_idle(std::int64_t idle_ns) noexcept {
  return idle_ns <= 0 || idle_ns == std::chrono::nanoseconds::max().count();
}

template <class Clock, class WaitTraits>
bool basic_breaker_registry<Clock, WaitTraits>::evictable(const entry& e) {
  if (e.guards.breaker.use_count() != 1) return false;
  if (e.guards.limit && e.guards.limit.use_count() != 1) return false;
  const circuit_state s = e.guards.breaker->state();
  return s == circuit_state::closed || s == circuit_state::open || s == circuit_state::half_open;
}

// A get's share of the idle sweep: when a quarter of the idle timeout has
// passed since the last sweep began, a sweep begins; while one is under way,
// each get runs its next batch (a get that finds another get in a batch skips
// it). So no get examines more than one batch, and a sweep of a large registry
// is spread over the gets that follow it. A registry nobody calls leaves its
// sweep where it stopped: no timer, and nothing is evicted sooner.
template <class Clock, class WaitTraits>
void basic_breaker_registry<Clock, WaitTraits>::maybe_sweep(std::int64_t t) {
  const std::int64_t idle = idle_timeout_.load(std::memory_order_relaxed);
  if (never_idle(idle)) return;
  auto& p = progress_;
  const std::int64_t quarter = idle / 4;
  if (!p.running.load(std::memory_order_relaxed) &&
      t - last_sweep_.load(std::memory_order_relaxed) < quarter)
    return;
  // Another get is in a batch: this one skips it (a load first, so that the
  // gets meanwhile do not all write the flag's line).
  if (p.busy.load(std::memory_order_relaxed) || p.busy.exchange(true, std::memory_order_acquire))
    return;
  if (!p.running.load(std::memory_order_relaxed)) {
    std::int64_t last = last_sweep_.load(std::memory_order_relaxed);
    if (t - last < quarter || !last_sweep_.compare_exchange_strong(last, t)) {
      p.busy.store(false, std::memory_order_release);
      return;
    }
    p.cursor = static_cast<std::size_t>(-1);  // from the end
    p.started = t;
    p.running.store(true, std::memory_order_relaxed);
  }
  try {
    bool done = false;
    sweep_batch(p.cursor, p.started, done, true);
    if (done) p.running.store(false, std::memory_order_relaxed);
  } catch (...) {  // the lock, the batch's list or a listener's queue: the next get goes on
    p.busy.store(false, std::memory_order_release);
    throw;
  }
  p.busy.store(false, std::memory_order_release);
}

// One batch of an idle sweep at `t`: at most detail::registry_sweep_batch
// entries under one hold of the unique lock, from `cursor` down; it evicts what
// has been idle for idle_timeout (plus the slack of the time of use) at `t` and
// that nobody holds, and destroys the guards outside the lock. \return how
// many it evicted; `done`: the sweep has reached the first entry (it is over),
// or eviction is off. `for_get`: the lock is taken as a get's (lock_for_get).
//
// slots_ is walked from its end down to 0, the lock released between batches.
// Meanwhile new entries go to the end (behind the cursor: new, not idle) and
// an erase moves the last slot into the erased one: an entry already examined
// (or new) may move in front of the cursor and be examined again, never one
// not yet examined behind it. So every entry that exists from the start to
// the end of the sweep is examined, as by a single pass.
template <class Clock, class WaitTraits>
std::size_t basic_breaker_registry<Clock, WaitTraits>::sweep_batch(std::size_t& cursor,
                                                                   std::int64_t t, bool& done,
                                                                   bool for_get) {
  // One reading of the timeout per batch: a reconfiguration to 0 (never) in
  // the middle of a sweep ends it, it never makes a limit of 0.
  const std::int64_t idle = idle_timeout_.load(std::memory_order_relaxed);
  if (never_idle(idle)) {
    done = true;
    return 0;
  }
  // last_used may lag the last get by up to `slack` (a 64th): count it in.
  const auto limit =
      detail::saturating_add(std::chrono::nanoseconds(idle), std::chrono::nanoseconds(idle / 64));
  std::vector<guard_set> evicted;  // destroyed outside the lock
  {
    std::unique_lock g(entries_mutex_, std::defer_lock);
    if (for_get) {
      lock_for_get(g);
    } else {
      g.lock();
    }
    cursor = std::min(cursor, slots_.size());
    std::size_t examined = 0;
    while (cursor > 0 && examined < detail::registry_sweep_batch) {
      --cursor;
      ++examined;
      slot* s = slots_[cursor];
      entry& e = s->second;
      const auto last = e.last_used.load(std::memory_order_relaxed);
      const bool unused = t >= last && std::chrono::nanoseconds(t - last) >= limit;
      if (unused && evictable(e)) {
        this->dropped(registry_event_kind::evicted, s->first, e.guards.breaker);
        evicted.push_back(std::move(e.guards));
        erase_entry(s);  // the last slot (examined, or new) comes to `cursor`
      }
    }
    work_.sweep_hold(examined);
    done = cursor == 0;
  }
  evictions_.fetch_add(evicted.size(), std::memory_order_relaxed);
  return evicted.size();
}

// The whole sweep at once (evict_idle), on a cursor of its own: a sweep that
// gets are running meanwhile goes on beside it.
template <class Clock, class WaitTraits>
std::size_t basic_breaker_registry<Clock, WaitTraits>::sweep(std::int64_t t) {
  if (never_idle(idle_timeout_.load(std::memory_order_relaxed))) return 0;
  std::size_t cursor = static_cast<std::size_t>(-1);  // the first hold starts at the end
  std::size_t total = 0;
  bool done = false;
  while (!done) {
    total += sweep_batch(cursor, t, done, false);
    // The lock is free between batches, and a get waiting for it goes first:
    // a shared_mutex is not fair, and this thread would take it again at once
    // (at 1M idle keys, a get on another thread waited 7.7 s for the whole
    // sweep; bench/README.md, "The registry's idle sweep").
    for (int i = 0; !done && i < 1000 && progress_.gets_waiting.load(std::memory_order_relaxed) > 0;
         ++i)
      std::this_thread::yield();
  }
  return total;
}

// A get's lock of the registry: at once when it is free, else counted while it
// waits (see `sweep`).
template <class Clock, class WaitTraits>
template <class Lock>
void basic_breaker_registry<Clock, WaitTraits>::lock_for_get(Lock& g) {
  if (g.try_lock()) return;
  progress_.gets_waiting.fetch_add(1, std::memory_order_relaxed);
  try {
    g.lock();
  } catch (...) {
    progress_.gets_waiting.fetch_sub(1, std::memory_order_relaxed);
    throw;
  }
  progress_.gets_waiting.fetch_sub(1, std::memory_order_relaxed);
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
