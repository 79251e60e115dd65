/// \file
/// Registry-wide listeners: the events of every breaker a registry holds, now
/// and later, and the registry's own events (a breaker added, evicted,
/// removed).
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
#include <levee/breaker/observe.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>
#include <vector>

namespace levee {

/// What happened to a registry's set of breakers. The values are bits above
/// those of `event_kind`, for the same `event_mask`.
enum class registry_event_kind : std::uint32_t {
  added = 128,    ///< the registry created a breaker for the key and keeps it
  evicted = 256,  ///< it evicted the key's breaker (idle, or chosen at the bound)
  removed = 512,  ///< `remove(key)` dropped the key's breaker
};
// New options (`set_options`, `remove_options`, `reconfigure`) replace no
// breaker: each is reconfigured in place and reports the breaker's own
// `event_kind::reconfigured`.

/// `added`, `evicted` and `removed`: the registry's own events.
inline constexpr event_mask registry_events =
    static_cast<event_mask>(registry_event_kind::added) |
    static_cast<event_mask>(registry_event_kind::evicted) |
    static_cast<event_mask>(registry_event_kind::removed);

/// One event, as a registry listener receives it.
struct registry_event {
  /// The key of the breaker concerned (its name). Valid during the call only.
  std::string_view key;
  /// One bit: an `event_kind` (the breaker's own event, in `breaker`) or a
  /// `registry_event_kind`.
  event_mask kind = 0;
  /// The breaker's event when `kind` is an `event_kind`; default otherwise.
  breaker_event breaker{};
};

/// A registry listener: called with each event its mask asked for.
using registry_listener = std::function<void(const registry_event&)>;

/// The registry-wide listeners of a `basic_breaker_registry` (its base).
///
/// A listener added by `listen` receives, for every breaker the registry keeps
/// now or creates later, that breaker's events in its mask (as with the
/// breaker's own `listen`, batched posts, nothing on the call path for
/// kinds nobody asked for), plus the registry's events in its mask. A key whose
/// breaker is evicted and created again keeps reporting: `evicted`, then
/// `added` and the new breaker's events. A breaker the registry drops
/// (`evicted`, `removed`) stops reporting to registry listeners at
/// once, even while callers still hold it. A breaker the registry hands out
/// without keeping it (`registry_options::max_breakers` reached, every breaker
/// held) is not reported.
///
/// Order: for one listener on an executor that runs handlers in order, a
/// key's `added` comes before its breaker's events, and its breaker's events
/// before its `evicted` or `removed`. Thread safety: every member
/// function, on any thread.
/// \tparam Registry The registry type (CRTP).
/// \tparam Breaker Its breaker type.
template <class Registry, class Breaker>
class registry_listeners {
 public:
  /// Adds a listener, invoked on the registry's executor by `asio::post`.
  /// \param mask The kinds it wants: `event_kind` bits (`all_events`, ...)
  /// and `registry_event_kind` bits (`registry_events`).
  /// \param fn The listener.
  /// \return an id for `unlisten`.
  std::uint64_t listen(event_mask mask, registry_listener fn) {
    return add(mask, std::move(fn), self().executor_);
  }
  /// As `listen(mask, fn)`, the listener invoked on `ex`.
  /// \param mask The kinds it wants.
  /// \param fn The listener.
  /// \param ex Where it runs: anything `any_io_executor` accepts.
  /// \return an id for `unlisten`.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, boost::asio::any_io_executor> std::uint64_t
  listen(event_mask mask, registry_listener fn, const Executor& ex) {
    return add(mask, std::move(fn), boost::asio::any_io_executor(ex));
  }
  /// Removes a listener from the registry and from every breaker; events
  /// already posted to it are still delivered.
  /// \param id What `listen` returned; an unknown id does nothing.
  void unlisten(std::uint64_t id) {
    std::vector<attachment> detached;
    {
      std::lock_guard g(mutex_);
      for (auto it = records_.begin(); it != records_.end(); ++it) {
        if (it->id != id) continue;
        detached = std::move(it->attached);
        records_.erase(it);
        break;
      }
    }
    for (auto& a : detached)
      if (auto b = a.breaker.lock()) b->unlisten(a.id);
  }

  registry_listeners(const registry_listeners&) = delete;
  registry_listeners& operator=(const registry_listeners&) = delete;

 protected:
  registry_listeners() = default;
  ~registry_listeners() {
    for (auto& r : records_)
      for (auto& a : r.attached)
        if (auto b = a.breaker.lock()) b->unlisten(a.id);
  }

  /// The registry keeps a new breaker for `key` (under its lock, before the
  /// breaker is handed out): the listeners attach to it and get `added`.
  /// \param key Its key.
  /// \param b The new breaker.
  void added(std::string_view key, const std::shared_ptr<Breaker>& b) {
    std::lock_guard g(mutex_);
    for (auto& r : records_) {
      attach(r, key, b);
      post(r, registry_event_kind::added, key);
    }
  }
  /// The registry drops the breaker of `key` (under its lock): the listeners
  /// detach from it and get `why`.
  /// \param why `evicted` or `removed`.
  /// \param key Its key.
  /// \param b The breaker dropped.
  void dropped(registry_event_kind why, std::string_view key, const std::shared_ptr<Breaker>& b) {
    std::lock_guard g(mutex_);
    for (auto& r : records_) {
      for (auto a = r.attached.begin(); a != r.attached.end();) {
        auto held = a->breaker.lock();
        if (held && held != b) {
          ++a;
          continue;
        }
        if (held) held->unlisten(a->id);
        a = r.attached.erase(a);
      }
      post(r, why, key);
    }
  }

 private:
  struct attachment {
    std::weak_ptr<Breaker> breaker;
    std::uint64_t id;
  };
  struct record {
    std::uint64_t id;
    event_mask mask;
    std::shared_ptr<const registry_listener> fn;
    boost::asio::any_io_executor ex;
    std::vector<attachment> attached;
  };

  Registry& self() noexcept { return static_cast<Registry&>(*this); }

  // Under the registry's unique lock, then ours: no breaker is added or
  // dropped meanwhile, so each kept breaker is attached exactly once.
  std::uint64_t add(event_mask mask, registry_listener fn, boost::asio::any_io_executor ex) {
    auto shared = std::make_shared<const registry_listener>(std::move(fn));
    std::unique_lock entries(self().entries_mutex_);
    std::lock_guard g(mutex_);
    auto& r = records_.emplace_back(record{++next_id_, mask, std::move(shared), std::move(ex), {}});
    for (auto& [key, e] : self().entries_) attach(r, key, e.guards.breaker);
    return r.id;
  }

  static void attach(record& r, std::string_view key, const std::shared_ptr<Breaker>& b) {
    if ((r.mask & all_events) == 0) return;
    auto id = b->listen(
        r.mask & all_events,
        [fn = r.fn, name = std::string(key)](const breaker_event& e) {
          registry_event re;
          re.key = name;
          re.kind = static_cast<event_mask>(e.kind);
          re.breaker = e;
          (*fn)(re);
        },
        r.ex);
    r.attached.push_back({b, id});
  }

  static void post(const record& r, registry_event_kind kind, std::string_view key) {
    const auto bit = static_cast<event_mask>(kind);
    if ((r.mask & bit) == 0) return;
    boost::asio::post(r.ex, [fn = r.fn, name = std::string(key), bit] {
      registry_event re;
      re.key = name;
      re.kind = bit;
      (*fn)(re);
    });
  }

  std::mutex mutex_;  // records_ and next_id_; taken after the registry's lock
  std::vector<record> records_;
  std::uint64_t next_id_ = 0;
};

}  // namespace levee
