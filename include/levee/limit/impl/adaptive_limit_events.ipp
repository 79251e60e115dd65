// levee: an adaptive limit's listeners and the events posted to them,
// compiled once in lib/ with limit/impl/adaptive_limit.ipp, which includes it.
#pragma once

#include <levee/limit/adaptive_limit.hpp>

#include <boost/asio/post.hpp>

#include <chrono>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace levee::detail {

std::uint64_t adaptive_limit_state::listen(std::uint32_t mask,
                                           std::function<void(const limit_event&)> fn,
                                           boost::asio::any_io_executor ex) {
  std::lock_guard g(listeners_mutex_);
  auto next = std::make_shared<listener_set>(*listeners_);
  const std::uint64_t id = next_id_++;
  next->entries.push_back(
      {id, mask, std::make_shared<const std::function<void(const limit_event&)>>(std::move(fn)),
       std::move(ex)});
  std::uint32_t all = 0;
  for (const auto& e : next->entries) all |= e.mask;
  listeners_ = std::move(next);
  listening_.store(all, std::memory_order_relaxed);
  reported_valid_ = false;  // a new listener's first event starts from the change itself
  return id;
}

void adaptive_limit_state::unlisten(std::uint64_t id) {
  std::lock_guard g(listeners_mutex_);
  auto next = std::make_shared<listener_set>(*listeners_);
  std::erase_if(next->entries, [id](const listener_entry& e) { return e.id == id; });
  std::uint32_t all = 0;
  for (const auto& e : next->entries) all |= e.mask;
  listeners_ = std::move(next);
  listening_.store(all, std::memory_order_relaxed);
}

void adaptive_limit_state::emit(std::uint32_t kind, double from, double to, std::size_t in_flight) {
  const auto set = listeners_;
  for (const auto& e : set->entries) {
    if (!(e.mask & kind)) continue;
    try {
      limit_event ev;
      ev.kind = static_cast<limit_event_kind>(kind);
      ev.from = from;
      ev.to = to;
      ev.in_flight = in_flight;
      ev.when = std::chrono::system_clock::now();
      ev.limit = set->name;
      boost::asio::post(e.executor, [set, fn = e.fn, ev] { (*fn)(ev); });
    } catch (...) {  // a failed allocation: this listener misses the event
      events_lost_.fetch_add(1, std::memory_order_relaxed);
    }
  }
}

void adaptive_limit_state::changed_event(double before) noexcept {
  // Under the listeners' mutex, the limit is read again and reported from
  // where the last event left it: two threads that changed the limit at once
  // post their events in the order they take the mutex, each event starts
  // where the one before ended, and the last one ends at the limit as it is.
  std::lock_guard g(listeners_mutex_);
  double now = 0;
  std::size_t running = 0;
  {
    spin_guard s(spinlock_);
    now = current();
    running = in_flight_;
  }
  const double from = reported_valid_ ? reported_ : before;
  if (std::floor(from) == std::floor(now)) return;  // already reported, or back where it was
  reported_ = now;
  reported_valid_ = true;
  emit(static_cast<std::uint32_t>(limit_event_kind::changed), from, now, running);
}

void adaptive_limit_state::limited_event(double limit, std::size_t in_flight) noexcept {
  // A failed allocation loses the event (counted in emit); the call is
  // still refused.
  std::lock_guard g(listeners_mutex_);
  emit(static_cast<std::uint32_t>(limit_event_kind::limited), limit, limit, in_flight);
}

}  // namespace levee::detail
