// levee: the registry's reconfiguration (included by registry/registry.hpp):
// new options applied in place to the breakers and limits that exist.
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/registry/detail/key_pattern.hpp>

#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <utility>
#include <vector>

namespace levee {

template <class Clock, class WaitTraits>
auto basic_breaker_registry<Clock, WaitTraits>::resolve(std::string_view key) const -> resolved {
  resolved r;
  const auto& overrides = options_.overrides;
  auto found = overrides.find(key);
  if (found == overrides.end() || detail::is_key_pattern(key)) {
    // Not a key with an entry of its own (a key holding `*` is matched as
    // any other key, by the patterns): the most specific pattern.
    found = overrides.end();
    for (auto it = overrides.begin(); it != overrides.end(); ++it) {
      if (!detail::is_key_pattern(it->first) || !detail::key_matches(it->first, key)) continue;
      if (found == overrides.end() || detail::more_specific(it->first, found->first)) found = it;
    }
  }
  if (found != overrides.end()) {
    r.source = &found->first;
    r.breaker = &found->second.breaker;
    if (found->second.limit)
      r.limit = &*found->second.limit;
    else if (options_.limits)
      r.limit = &*options_.limits;
    return r;
  }
  r.breaker = &options_.defaults;
  if (options_.limits) r.limit = &*options_.limits;
  return r;
}

template <class Clock, class WaitTraits>
bool basic_breaker_registry<Clock, WaitTraits>::has_limits() const {
  std::shared_lock g(entries_mutex_);
  if (options_.limits) return true;
  for (const auto& [name, o] : options_.overrides)
    if (o.limit) return true;
  return false;
}

// Changes options_ with `change` (under both locks), then brings every entry
// whose options may have changed in line: all of them when `touched` is null,
// else those whose rule was or is the override named `*touched`. The breakers
// and limits are reconfigured after the entries' lock is released (their
// reconfigure takes their own locks), still under reconfigure_mutex_, so that
// two reconfigurations cannot apply their options in the opposite order.
template <class Clock, class WaitTraits>
template <class Change>
void basic_breaker_registry<Clock, WaitTraits>::apply(Change&& change, const std::string* touched) {
  std::lock_guard serial(reconfigure_mutex_);
  std::vector<std::pair<std::shared_ptr<breaker_type>, breaker_options>> breakers;
  std::vector<std::pair<std::shared_ptr<limit_type>, adaptive_limit_options>> limits;
  std::vector<guard_set> dropped;  // destroyed outside the lock
  {
    std::unique_lock g(entries_mutex_);
    std::vector<std::optional<std::string>> before;
    if (touched) {
      before.reserve(entries_.size());
      for (const auto& [key, e] : entries_) {
        const auto r = resolve(key);
        before.push_back(r.source ? std::optional<std::string>(*r.source) : std::nullopt);
      }
    }
    if (!change(options_)) return;
    reconfigurations_.fetch_add(1, std::memory_order_relaxed);
    idle_timeout_.store(options_.idle_timeout.count(), std::memory_order_relaxed);
    // A lower bound first, before the copies below make every breaker held.
    // Only reconfigure() lowers it, with `touched` null: `before` is empty.
    while (entries_.size() > options_.max_breakers) {
      slot* victim = choose_victim();
      if (!victim) break;
      this->dropped(registry_event_kind::evicted, victim->first, victim->second.guards.breaker);
      dropped.push_back(std::move(victim->second.guards));
      erase_entry(victim);
      evictions_.fetch_add(1, std::memory_order_relaxed);
    }
    std::size_t i = 0;
    for (auto& [key, e] : entries_) {
      const auto r = resolve(key);
      if (touched) {
        const auto& was = before[i++];
        const bool same_rule = r.source ? was && *was == *r.source : !was;
        if (same_rule && (!r.source || *r.source != *touched)) continue;
      }
      breakers.emplace_back(e.guards.breaker, *r.breaker);
      if (r.limit && e.guards.limit) {
        limits.emplace_back(e.guards.limit, *r.limit);
      } else if (r.limit) {
        e.guards.limit = std::make_shared<limit_type>(executor_, *r.limit, key);
      } else if (e.guards.limit) {
        dropped.push_back({nullptr, std::move(e.guards.limit)});
        e.guards.limit = nullptr;
      }
    }
  }
  // Validated above: the layers accept them.
  for (auto& [b, o] : breakers) b->reconfigure(o);
  for (auto& [l, o] : limits) l->reconfigure(o);
}

template <class Clock, class WaitTraits>
void basic_breaker_registry<Clock, WaitTraits>::set_options(std::string key,
                                                            breaker_options options) {
  validate(options);
  apply(
      [&](registry_options& o) {
        o.overrides[key].breaker = std::move(options);
        return true;
      },
      &key);
}

template <class Clock, class WaitTraits>
void basic_breaker_registry<Clock, WaitTraits>::set_options(std::string key, key_options options) {
  validate(options.breaker);
  if (options.limit) validate(*options.limit);
  apply(
      [&](registry_options& o) {
        o.overrides[key] = std::move(options);
        return true;
      },
      &key);
}

template <class Clock, class WaitTraits>
bool basic_breaker_registry<Clock, WaitTraits>::remove_options(std::string_view key) {
  const std::string name(key);
  bool removed = false;
  apply(
      [&](registry_options& o) {
        auto it = o.overrides.find(name);
        if (it == o.overrides.end()) return false;
        o.overrides.erase(it);
        return removed = true;
      },
      &name);
  return removed;
}

template <class Clock, class WaitTraits>
void basic_breaker_registry<Clock, WaitTraits>::reconfigure(registry_options options) {
  validate(options);
  apply(
      [&](registry_options& o) {
        o = std::move(options);
        return true;
      },
      nullptr);
}

}  // namespace levee
