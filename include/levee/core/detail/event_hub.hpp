// levee: a layer's event listeners, shared by the layers that have events
// (the throttle, the rate limiter, the HTTP deadline reader, the hedge; the breaker and
// the adaptive limit keep their own, older copies of the same rules). The
// throttle's, the rate limiter's and the hedge's `listen` and `unlisten` are
// written once, in levee/core/listenable.hpp.
//
// The rules (docs/observability.md, "Events"), the breaker's:
// - `listen(mask, fn, ex)` adds a listener for the kinds in `mask` (an
//   event's `kind` is one bit), run on `ex`; `unlisten(id)` removes it, and
//   no event is posted to it after `unlisten` returned.
// - A listener never runs inside the layer nor under one of its locks: each
//   event is posted, as a copy, to its listener's executor.
// - Nobody listening costs the call path one relaxed load (`wants`): the
//   layer builds an event only when some listener wants its kind.
// - Events are posted under one small mutex, so a listener sees them in the
//   order the layer emitted them (on an executor that runs handlers in
//   order). A post that cannot allocate is counted (`lost`), never silent.
#pragma once

#include <levee/core/detail/small_mutex.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <utility>
#include <vector>

namespace levee::detail {

/// Listeners for `Event`, a copyable struct whose member `kind` is an enum
/// with one bit per kind. Thread-safe: every member from any thread.
template <class Event>
class event_hub {
 public:
  using listener = std::function<void(const Event&)>;

  /// The union of the listeners' masks: one relaxed load.
  std::uint32_t wanted() const noexcept { return mask_.load(std::memory_order_relaxed); }
  /// Whether some listener wants events of kind `k`.
  template <class Kind>
  bool wants(Kind k) const noexcept {
    return (wanted() & static_cast<std::uint32_t>(k)) != 0;
  }

  /// Adds `fn` for the kinds in `mask`, run on `ex`.
  /// \return an id for `unlisten`, unique in the process.
  /// \throws std::bad_alloc.
  std::uint64_t listen(std::uint32_t mask, listener fn, boost::asio::any_io_executor ex) {
    static std::atomic<std::uint64_t> next_id{1};
    const std::uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
    auto shared_fn = std::make_shared<const listener>(std::move(fn));
    std::shared_ptr<const set> old;  // released after the lock, with what it holds
    small_lock g(mutex_);
    auto next = std::make_shared<set>();
    if (set_) next->entries = set_->entries;
    next->entries.push_back({id, mask, std::move(shared_fn), std::move(ex)});
    old = replace(std::move(next));
    return id;
  }

  /// Removes a listener; events already posted to it are still delivered.
  /// An unknown id does nothing.
  /// \throws std::bad_alloc.
  void unlisten(std::uint64_t id) {
    std::shared_ptr<const set> old;  // released after the lock, with what it holds
    small_lock g(mutex_);
    if (!set_) return;
    auto next = std::make_shared<set>(*set_);
    std::erase_if(next->entries, [id](const entry& e) { return e.id == id; });
    old = replace(std::move(next));
  }

  /// Posts a copy of `e` to every listener that wants `e.kind`. Never runs a
  /// listener; a post that fails to allocate is counted in `lost`.
  void emit(const Event& e) noexcept {
    const auto bit = static_cast<std::uint32_t>(e.kind);
    small_lock g(mutex_);
    if (!set_) return;
    for (const entry& l : set_->entries) {
      if (!(l.mask & bit)) continue;
      try {
        boost::asio::post(l.executor, [fn = l.fn, e] { (*fn)(e); });
      } catch (...) {  // out of memory: this listener misses the event
        lost_.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }

  /// Events a listener missed because a post failed to allocate.
  std::uint64_t lost() const noexcept { return lost_.load(std::memory_order_relaxed); }

 private:
  struct entry {
    std::uint64_t id;
    std::uint32_t mask;
    std::shared_ptr<const listener> fn;  // shared: a posted event holds it, not the hub
    boost::asio::any_io_executor executor;
  };
  struct set {
    std::vector<entry> entries;
  };

  // Under mutex_: installs `next`, returns the set it replaced.
  std::shared_ptr<const set> replace(std::shared_ptr<const set> next) noexcept {
    std::uint32_t m = 0;
    for (const entry& e : next->entries) m |= e.mask;
    std::swap(set_, next);
    mask_.store(m, std::memory_order_relaxed);
    return next;
  }

  std::atomic<std::uint32_t> mask_{0};
  small_mutex mutex_;  // the set; the order of posts
  std::shared_ptr<const set> set_;
  std::atomic<std::uint64_t> lost_{0};
};

}  // namespace levee::detail
