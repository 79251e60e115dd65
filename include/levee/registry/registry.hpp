/// \file
/// A registry of named breakers, one per endpoint, made on demand.
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
#include <levee/breaker/observe.hpp>
#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/random.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/core/detail/string_hash.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/registry/detail/guard_pair.hpp>
#include <levee/registry/detail/key_pattern.hpp>
#include <levee/registry/detail/registry_work.hpp>
#include <levee/registry/events.hpp>
#include <levee/registry/options.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <shared_mutex>
#include <sstream>
#include <string>
#include <string_view>
#include <type_traits>
#include <unordered_map>
#include <vector>

namespace levee {

/// Breakers by key (for example "host:port"), created on first use with the
/// shared defaults or a per-key override, named after their key, evicted when
/// idle, at most `max_breakers` of them. Every member function is thread-safe.
///
/// Eviction needs no timer (an idle registry leaves no pending work): a sweep
/// begins at most once per quarter of `idle_timeout`, and the `get`s run it,
/// each at most one batch of 256 breakers; `evict_idle` runs a whole sweep on
/// demand. A breaker is evicted when no caller holds it, nobody asked for it
/// for `idle_timeout`, and it is not in a state an operator chose
/// (FORCED_OPEN, DISABLED, METRICS_ONLY: an idle sweep must not undo them).
/// `get` writes the time of use only when it moved by more than
/// `idle_timeout / 64` (a shared write on every `get` would be contended), so
/// an eviction may come up to that much later, never sooner.
///
/// At `max_breakers`, a new key evicts an evictable breaker (nobody holds it,
/// no operator chose its state), the least recently used of 16 drawn at random
/// (exactly the least recently used up to 16 breakers), in amortised constant
/// time. What each guarantees: docs/observability.md, "Which breaker a new key
/// evicts".
///
/// A breaker the registry replaces (`remove`, eviction) starts from zero: its
/// counters restart (Prometheus sees a counter reset) and its listeners stay
/// with the old one. New options (`set_options`, `remove_options`,
/// `reconfigure`) do not replace it: the breakers and limits that exist are
/// reconfigured in place and keep their windows (README, "Changing a running
/// breaker"). Registry-wide listeners (`listen`, \ref registry_listeners)
/// follow the key.
template <class Clock = std::chrono::steady_clock,
          class WaitTraits = detail::wait_traits_of_t<Clock>>
class basic_breaker_registry : public registry_listeners<basic_breaker_registry<Clock, WaitTraits>,
                                                         basic_circuit_breaker<Clock, WaitTraits>> {
  friend registry_listeners<basic_breaker_registry, basic_circuit_breaker<Clock, WaitTraits>>;

 public:
  /// The breakers it makes.
  using breaker_type = basic_circuit_breaker<Clock, WaitTraits>;
  /// The adaptive limits it makes (with `registry_options::limits`).
  using limit_type = basic_adaptive_limit<Clock>;
  /// The type of its executor, which its breakers and limits get.
  using executor_type = boost::asio::any_io_executor;

  /// What guards one key: its breaker and, when `registry_options::limits` is
  /// set, its adaptive limit (else null).
  struct guard_set {
    std::shared_ptr<breaker_type> breaker;  ///< the key's breaker
    std::shared_ptr<limit_type> limit;      ///< the key's limit, or null

    /// Guards `aw` (an `asio::awaitable<T, Executor>`, as an rvalue) with the
    /// breaker and, inside it, the limit: `co_await g(call())` behaves as
    /// `co_await (*g.breaker)((*g.limit)(call()))` (README, "Composing levee"; a call
    /// the limit refuses is ignored by the breaker), in one coroutine frame.
    /// A call the limit times (docs/limits.md) shares its two clock reads
    /// with the breaker; any other is timed by the breaker alone, as
    /// without the limit. Without a limit, `(*g.breaker)(call())`.
    ///
    /// Result, the two forms: as `basic_circuit_breaker::operator()`; a
    /// limit's refusal is `error::limit_exceeded` in either form.
    /// Cancellation: reaches `aw`, or a call waiting in the limit's queue.
    /// Executor: the awaiting coroutine's (on `io_context::executor_type`,
    /// refused with an explicit `probe_timeout`, as by the breaker).
    /// Lifetime: hold `g` until the await is done. Thread safety: as the
    /// breaker and the limit, any thread.
    ///
    /// \param aw The call to guard.
    /// \return an awaitable with the same result as `aw`.
    template <class T, class Executor>
    boost::asio::awaitable<T, Executor> operator()(boost::asio::awaitable<T, Executor> aw) const {
      if (!limit) return (*breaker)(std::move(aw));
      return detail::guarded_pair_call<Clock>(detail::guard_access::breaker(*breaker),
                                              detail::guard_access::limit(*limit), std::move(aw));
    }
  };

  /// An empty registry whose breakers and limits will run on `ex`.
  /// \param ex Their executor (anything `any_io_executor` accepts).
  /// \param options Its settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type>
  explicit basic_breaker_registry(const Executor& ex, registry_options options = {})
      : executor_(ex),
        options_(detail::checked(std::move(options))),
        idle_timeout_(options_.idle_timeout.count()),
        last_sweep_(now()) {}

  /// An empty registry on `ctx.get_executor()`.
  /// \param ctx An execution context, such as an `io_context`.
  /// \param options Its settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_breaker_registry(ExecutionContext& ctx, registry_options options = {})
      : basic_breaker_registry(ctx.get_executor(), std::move(options)) {}

  /// The breaker for `key`, created if needed. Hold the shared_ptr for the
  /// length of the call: `co_await (*registry.get(key))(call())`.
  /// \param key The key, also the breaker's name.
  /// \return the breaker, never null.
  std::shared_ptr<breaker_type> get(std::string_view key) {
    // Only the breaker's reference is taken: the limit's is another cold
    // line and two locked instructions for nothing (bench/README.md).
    return find_or_make(key, [](const guard_set& g) { return g.breaker; });
  }

  /// The breaker and the adaptive limit for `key`, created if needed. Hold
  /// them for the length of the call: `co_await (*g.breaker)((*g.limit)(call()))`,
  /// or `co_await g(call())`.
  /// \param key The key, also the breaker's and the limit's name.
  /// \return the breaker and, with `registry_options::limits`, the limit.
  guard_set guards(std::string_view key) {
    return find_or_make(key, [](const guard_set& g) { return g; });
  }

  // Reconfiguration (impl/reconfigure.hpp): each validates first and changes
  // nothing when the options are invalid; the breakers and limits that exist
  // are reconfigured in place, their windows kept.

  /// Breaker options for `key` (or for every key a pattern matches, see
  /// `registry_options::overrides`) from now on. The existing breakers it
  /// covers are reconfigured in place (`basic_circuit_breaker::reconfigure`):
  /// their windows and states are kept. A limit override the name had stays.
  /// \param key A key or a pattern.
  /// \param options The breaker's options.
  /// \throws std::invalid_argument naming the member when `options` is invalid
  /// (nothing is changed then).
  void set_options(std::string key, breaker_options options);

  /// Breaker and limit options for `key` (or a pattern) from now on, as the
  /// other `set_options`; the existing limits it covers are reconfigured in
  /// place, a key that had no limit gets one, and a key that no longer has
  /// one (neither here nor in `registry_options::limits`) loses it (callers
  /// holding it finish with it).
  /// \param key A key or a pattern.
  /// \param options The options of its breakers and limits.
  /// \throws std::invalid_argument naming the member when `options` is invalid
  /// (nothing is changed then).
  void set_options(std::string key, key_options options);

  /// Removes the override of `key` (a key or a pattern): the breakers it
  /// covered take their options from the next rule (a pattern, or the
  /// defaults), reconfigured in place.
  /// \param key The name given to `set_options`.
  /// \return true if there was one.
  bool remove_options(std::string_view key);

  /// Replaces all of the registry's options: defaults, limits, overrides,
  /// `idle_timeout` and `max_breakers` (a lower bound evicts breakers that
  /// nobody holds, each chosen as for a new key at the bound, until it is
  /// met). Every
  /// breaker and limit that exists gets its new options in place, windows
  /// kept. To change the defaults only: `auto o = r.options(); o.defaults =
  /// ...; r.reconfigure(o);`. Breakers given out past a full registry
  /// (`overflows`) are not the registry's and keep their options.
  /// \param options The new options; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid
  /// (nothing is changed then).
  void reconfigure(registry_options options);

  /// \return how many times the registry's options changed (`set_options`,
  /// `remove_options` that removed one, `reconfigure`).
  std::uint64_t reconfigurations() const noexcept {
    return reconfigurations_.load(std::memory_order_relaxed);
  }

  /// Forgets the breaker for `key` (its options stay); callers holding it
  /// finish with it.
  /// \param key The key.
  /// \return true if there was one.
  bool remove(std::string_view key) {
    guard_set gone;  // destroyed after the lock, as in `guards`
    std::unique_lock g(entries_mutex_);
    auto it = entries_.find(key);
    if (it == entries_.end()) return false;
    this->dropped(registry_event_kind::removed, it->first, it->second.guards.breaker);
    gone = std::move(it->second.guards);
    erase_entry(it);
    return true;
  }

  /// Evicts idle breakers now, by the rules above.
  /// \return how many it evicted.
  std::size_t evict_idle() { return sweep(now()); }

  /// \return how many breakers it keeps now.
  std::size_t size() const {
    std::shared_lock g(entries_mutex_);
    return entries_.size();
  }

  /// Breakers evicted so far (idle, or chosen for a new key at the bound).
  /// \return the count since construction.
  std::uint64_t evictions() const noexcept { return evictions_.load(std::memory_order_relaxed); }
  /// Calls of `get` that found the registry full of held breakers and returned
  /// a breaker the registry does not keep.
  /// \return the count since construction.
  std::uint64_t overflows() const noexcept { return overflows_.load(std::memory_order_relaxed); }
  /// \return the work its eviction did so far, for levee's tests (not an
  /// interface).
  const detail::registry_work& detail_work() const noexcept { return work_; }

  /// Every breaker's metrics.
  /// \return a snapshot of each breaker it keeps, sorted by name (a stable
  /// exposition order).
  std::vector<named_metrics> metrics() const {
    std::vector<std::pair<std::string, std::shared_ptr<breaker_type>>> all;
    {
      std::shared_lock g(entries_mutex_);
      for (const auto& [key, e] : entries_) all.emplace_back(key, e.guards.breaker);
    }
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<named_metrics> out;
    out.reserve(all.size());
    for (auto& [key, b] : all) out.push_back({key, b->metrics()});
    return out;
  }

  /// Every adaptive limit's metrics.
  /// \return a snapshot of each limit, sorted by name (none without
  /// `registry_options::limits`).
  std::vector<named_limit_metrics> limit_metrics() const {
    std::vector<std::pair<std::string, std::shared_ptr<limit_type>>> all;
    {
      std::shared_lock g(entries_mutex_);
      for (const auto& [key, e] : entries_)
        if (e.guards.limit) all.emplace_back(key, e.guards.limit);
    }
    std::sort(all.begin(), all.end(),
              [](const auto& a, const auto& b) { return a.first < b.first; });
    std::vector<named_limit_metrics> out;
    out.reserve(all.size());
    for (auto& [key, l] : all) out.push_back({key, l->metrics()});
    return out;
  }

  /// The Prometheus text exposition (format 0.0.4) of every breaker, and of
  /// every adaptive limit when the registry has them.
  /// \param out Where the text goes.
  void write_prometheus(std::ostream& out) const {
    levee::write_prometheus(out, metrics());
    if (has_limits()) levee::write_limits_prometheus(out, limit_metrics());
  }
  /// \return the same exposition as `write_prometheus`, as a string.
  std::string prometheus_text() const {
    std::ostringstream out;
    write_prometheus(out);
    return out.str();
  }

  /// \return its options now (a copy: they may change), as validated.
  registry_options options() const {
    std::shared_lock g(entries_mutex_);
    return options_;
  }

 private:
  struct entry {
    guard_set guards;
    std::atomic<std::int64_t> last_used;  // Clock ticks (nanoseconds)
    std::size_t index = 0;                // its place in slots_, under the unique lock
    entry(guard_set g, std::int64_t t) : guards(std::move(g)), last_used(t) {}
    entry(entry&& o) noexcept
        : guards(std::move(o.guards)), last_used(o.last_used.load()), index(o.index) {}
  };
  using map_type = std::unordered_map<std::string, entry, detail::string_hash, std::equal_to<>>;
  using slot = typename map_type::value_type;  // a node of entries_: its address is stable

  // A key's options, as the rules of registry_options::overrides resolve them.
  struct resolved {
    const std::string* source = nullptr;  // the override's name; null: the defaults
    const breaker_options* breaker = nullptr;
    const adaptive_limit_options* limit = nullptr;  // null: no limit
  };
  resolved resolve(std::string_view key) const;  // under entries_mutex_

  guard_set make(std::string_view key, const resolved& r) const;  // impl/eviction.hpp

  // `guards` and `get`: the key's entry, made if needed, its last use
  // moved to now, and `project` of its guard set (taken under the lock).
  template <class Project>
  std::invoke_result_t<Project, const guard_set&> find_or_make(
      std::string_view key, Project project);  // impl/eviction.hpp

  template <class Change>
  void apply(Change&& change, const std::string* touched);
  bool has_limits() const;

  static std::int64_t now() noexcept;  // impl/eviction.hpp

  // Avoids writing the shared timestamp on every get: only when it moved by
  // more than a 64th of the idle timeout.
  std::int64_t slack() const noexcept { return idle_timeout_.load(std::memory_order_relaxed) / 64; }
  // Only ever raises the time (a CAS), so a get with an older `t` racing a
  // newer one cannot move it back.
  void touch(entry& e, std::int64_t t);  // impl/eviction.hpp

  static bool never_idle(std::int64_t idle_ns) noexcept;  // impl/eviction.hpp

  // Nobody but the registry holds it, and no operator chose its state.
  static bool evictable(const entry& e);  // impl/eviction.hpp

  // Under the unique lock: a new entry, also at the end of slots_.
  typename map_type::iterator insert_entry(std::string_view key, guard_set g,
                                           std::int64_t t);  // impl/eviction.hpp

  // Under the unique lock: removes an entry; the last of slots_ takes its place.
  void erase_entry(typename map_type::iterator it);  // impl/eviction.hpp
  void erase_entry(slot* s) { erase_entry(entries_.find(s->first)); }

  // Under the unique lock: the entry a new key at max_breakers evicts, null
  // when none is evictable. Up to registry_victim_sample entries: all of them;
  // above, that many drawn at random (with replacement), the least recently
  // used evictable one of them; when the draw found none evictable, the first
  // evictable one from where the last such search stopped (round robin).
  slot* choose_victim();  // impl/eviction.hpp

  // impl/eviction.hpp: the idle sweep (a get's batch, a batch, all), a get's lock.
  void maybe_sweep(std::int64_t t);
  std::size_t sweep_batch(std::size_t& cursor, std::int64_t t, bool& done, bool for_get);
  std::size_t sweep(std::int64_t t);
  template <class Lock>
  void lock_for_get(Lock& g);

  executor_type executor_;
  registry_options options_;                 // under entries_mutex_
  std::atomic<std::int64_t> idle_timeout_;   // options_.idle_timeout, read without the lock
  mutable std::shared_mutex entries_mutex_;  // entries_ and options_
  std::mutex reconfigure_mutex_;             // one reconfiguration at a time
  map_type entries_;                         // under entries_mutex_
  std::vector<slot*> slots_;                 // every node of entries_, in no order
  std::size_t hand_ = 0;                     // choose_victim's round robin, in slots_
  detail::splitmix64 random_{0};             // the sample's draws, under the unique lock
                                             // (fixed seed: reproducible evictions)
  std::atomic<std::uint64_t> reconfigurations_{0};
  std::atomic<std::int64_t> last_sweep_;  // when the last sweep began
  detail::sweep_progress progress_;       // the one gets run
  std::atomic<std::uint64_t> evictions_{0};
  std::atomic<std::uint64_t> overflows_{0};
  detail::registry_work work_;
};

/// The steady_clock registry.
using breaker_registry = basic_breaker_registry<>;

}  // namespace levee

#include <levee/registry/impl/eviction.hpp>
#include <levee/registry/impl/reconfigure.hpp>
