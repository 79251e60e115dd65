// levee: the fleet link's entry points and members (fleet/impl/fleet_state.hpp):
// listen, metrics, wait_connected, stop, the events; attach, the gate, the
// registry scan. Compiled once in levee_fleet (lib/fleet.cpp).
#pragma once

#include <levee/breaker/detail/window_kinds.hpp>
#include <levee/core/detail/saturating.hpp>
#include <levee/fleet/impl/fleet_state.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <stdexcept>
#include <string_view>
#include <type_traits>

namespace levee::detail {

namespace asio = boost::asio;

// ---- entry points, events ------------------------------------------------------

void fleet_state::listen(std::function<void(const fleet_event&)> fn) {
  std::lock_guard g(mutex_);
  listeners_.push_back(std::move(fn));
}

fleet_metrics fleet_state::metrics() const {
  std::lock_guard g(mutex_);
  return metrics_;
}

void fleet_state::wait_connected(nanos within,
                                 std::function<void(boost::system::error_code)> done) {
  asio::post(strand_, [self = shared_from_this(), within, done = std::move(done)]() mutable {
    if (self->phase_ == phase::stopped || self->stopped())
      return done(asio::error::operation_aborted);
    if (self->phase_ == phase::ready) return done({});
    auto w = std::make_shared<waiter>(self->strand_);
    w->done = std::move(done);
    self->waiters_.push_back(w);
    w->timer.expires_at(saturating_add(steady::now(), within));
    w->timer.async_wait([weak = self->weak_from_this(), w](boost::system::error_code ec) {
      auto me = weak.lock();
      if (ec || !me || !w->done) return;  // ended by ready() or shutdown()
      std::erase(me->waiters_, w);
      std::exchange(w->done, nullptr)(asio::error::timed_out);
    });
  });
}

void fleet_state::ended(std::vector<std::shared_ptr<waiter>> ws, boost::system::error_code ec) {
  for (auto& w : ws) {
    w->timer.cancel();
    if (w->done) std::exchange(w->done, nullptr)(ec);
  }
}

void fleet_state::stop() {
  std::map<std::string, std::shared_ptr<member>> all;
  {
    std::lock_guard g(mutex_);
    if (stopped_) return;
    stopped_ = true;
    all = members_;
    listeners_.clear();
    metrics_.connected = false;
  }
  for (auto& [name, m] : all) forget(*m);
  asio::post(strand_, [self = shared_from_this()] { self->shutdown(); });
}

std::vector<std::shared_ptr<fleet_state::member>> fleet_state::all_members() {
  std::lock_guard g(mutex_);
  std::vector<std::shared_ptr<member>> v;
  for (auto& [name, m] : members_) v.push_back(m);
  return v;
}

std::shared_ptr<fleet_state::member> fleet_state::find(const std::string& name) {
  std::lock_guard g(mutex_);
  auto it = members_.find(name);
  return it == members_.end() ? nullptr : it->second;
}

bool fleet_state::stopped() {
  std::lock_guard g(mutex_);
  return stopped_;
}

void fleet_state::emit(fleet_event e) {
  std::vector<std::function<void(const fleet_event&)>> ls;
  {
    std::lock_guard g(mutex_);
    ls = listeners_;
  }
  if (e.when == std::chrono::system_clock::time_point{}) e.when = std::chrono::system_clock::now();
  for (auto& l : ls) {
    try {
      l(e);
    } catch (...) {
    }
  }
}

// ---- attach -------------------------------------------------------------------

void fleet_state::attach(const fleet_hook& b, std::string name) {
  const bool shareable = window_kinds::visit(
      b.options().window_type, []<class W>(std::type_identity<W>) { return W::fleet_shareable; });
  if (!shareable)
    throw std::invalid_argument("fleet_link::attach: only a time-window breaker can share");
  if (name.empty() || name.find_first_of(std::string_view("{}\n\0", 4)) != std::string::npos)
    throw std::invalid_argument(
        "fleet_link::attach: the name must not be empty nor hold braces, newlines or NUL");
  // Another live breaker under this name: refused (the first stays linked);
  // the same breaker again: nothing.
  const auto attached = [&](const std::shared_ptr<member>& held) {
    auto other = held ? held->breaker.lock() : fleet_hook();
    if (other && other != b)
      throw std::invalid_argument("fleet_link::attach: another breaker is attached as \"" + name +
                                  "\"");
    return static_cast<bool>(other);
  };
  if (attached(find(name))) return;
  const breaker_options& bo = b.options();
  auto m = std::make_shared<member>(
      strand_,
      fleet_decisions(fleet_thresholds::of(bo, options_.quorum, options_.fleet_minimum_calls),
                      b.counters()));
  m->name = name;
  m->base = options_.key_prefix + ":{" + name + "}";
  m->breaker = b;
  m->buckets = static_cast<std::uint32_t>(bo.window_buckets);
  m->width = bo.window / static_cast<std::int64_t>(bo.window_buckets);
  m->width_us = std::max<std::int64_t>(
      1, std::chrono::duration_cast<std::chrono::microseconds>(m->width).count());
  m->width = std::max<nanos>(m->width, std::chrono::milliseconds(1));  // rounds: <= 1000/s
  std::weak_ptr<fleet_state> weak = weak_from_this();
  std::weak_ptr<member> wm = m;
  m->listen_id = b.listen(
      static_cast<event_mask>(event_kind::transition),
      [weak, wm](const breaker_event& e) {
        auto self = weak.lock();
        auto mm = wm.lock();
        if (self && mm) self->on_transition(*mm, e);
      },
      strand_);
  std::shared_ptr<member> old;
  bool stopped = false;
  {
    std::lock_guard g(mutex_);
    stopped = stopped_;
    if (!stopped) {
      auto& slot = members_[name];
      try {
        if (attached(slot)) stopped = true;  // attached meanwhile, by another thread
      } catch (...) {
        b.unlisten(m->listen_id);
        throw;
      }
      if (!stopped) {
        old = std::move(slot);
        slot = m;
        metrics_.breakers = members_.size();
      }
    }
  }
  if (stopped) {
    b.unlisten(m->listen_id);
    return;
  }
  if (old) forget(*old);
  asio::post(strand_, [self = shared_from_this(), m] { self->start_member(m); });
}

void fleet_state::attach_registry(breaker_registry& r) {
  asio::post(strand_, [self = shared_from_this(), r = &r] {
    self->registries_.push_back(r);
    if (self->registries_.size() == 1) self->scan();
  });
}

void fleet_state::forget(member& m) {
  if (auto b = m.breaker.lock()) {
    b.unlisten(m.listen_id);
    b.gate(false);
  }
}

void fleet_state::start_member(const std::shared_ptr<member>& m) {
  if (phase_ == phase::ready) gate(*m);
  tick(m);
}

// Under the lock, against `stop`: a breaker is never left gated by a link that
// is gone (`fleet_gate` is one atomic fetch_or, it neither blocks nor calls out).
void fleet_state::gate(member& m) {
  std::lock_guard g(mutex_);
  if (stopped_) return;
  if (auto b = m.breaker.lock()) b.gate(true);
}

// The registry has no creation hook: every `registry_scan`, attach the names
// its metrics list that the link does not hold.
void fleet_state::scan() {
  if (stopped()) return;
  for (breaker_registry* r : registries_) {
    for (const named_metrics& nm : r->metrics()) {
      auto m = find(nm.name);
      if (m && !m->breaker.expired()) continue;
      if (auto it = unattachable_.find(nm.name); it != unattachable_.end() && !it->second.expired())
        continue;  // asked for once: `get` would keep it from being evicted
      auto b = r->get(nm.name);
      try {
        attach(fleet_hook(*b), nm.name);
        unattachable_.erase(nm.name);
      } catch (...) {  // a count-window breaker stays local
        unattachable_[nm.name] = fleet_hook(*b);
      }
    }
  }
  scan_timer_.expires_at(saturating_add(steady::now(), options_.registry_scan));
  scan_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (!ec && self) self->scan();
  });
}

}  // namespace levee::detail
