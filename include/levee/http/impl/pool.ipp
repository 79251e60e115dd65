// levee: the HTTP client's pools, one per origin: connection slots (a FIFO
// of waiting requests, each until its deadline), idle kept-alive
// connections, closed lazily past their idle timeout (no timer: an idle client
// leaves no pending work). Compiled once in lib/.
#pragma once

#include <levee/http/impl/client_impl.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/post.hpp>
#include <boost/beast/core/error.hpp>

#include <algorithm>
#include <utility>
#include <vector>

namespace levee::http {

namespace asio = boost::asio;
namespace beast = boost::beast;

void client_detail::slot_waiter::complete(boost::system::error_code ec) {
  auto ex = std::move(work);
  asio::post(ex, [h = std::move(handler), ec]() mutable {
    asio::get_associated_cancellation_slot(h).clear();
    std::move(h)(ec);
  });
}

// At a request's initiation, in one lock: its origin's pool (made once per
// origin: see `pools_mutex`), a slot if one is free and nobody waits for
// one, and with it the newest idle connection, if it still looks open.
client_detail::connection_ptr client::impl::acquire(std::string_view key, steady::time_point now,
                                                    std::shared_ptr<host_pool>& pool, bool& slot) {
  connection_ptr c;
  std::vector<connection_ptr> expired;  // closed after the lock
  std::vector<std::shared_ptr<host_pool>> forgotten;
  {
    std::lock_guard g(pools_mutex);
    auto it = pools.find(key);
    if (it == pools.end()) {  // made before it is inserted: a bad_alloc leaves no empty entry
      auto made = std::make_shared<host_pool>(std::string(key));
      it = pools.emplace(made->key, std::move(made)).first;
    }
    pool = it->second;
    if (pool->busy >= options.max_connections_per_host || !pool->waiters.empty()) return nullptr;
    ++pool->busy;
    slot = true;
    c = pop_idle(*pool, now, expired, forgotten);
  }
  if (!c || c->usable()) return c;
  stats.stale.fetch_add(1, std::memory_order_relaxed);
  return take_idle(*pool);
}

// Under the lock: the newest idle connection of `pool` within its idle
// timeout; the expired ones it meets go to `expired`. Runs the client's
// sweep first when the earliest idle connection has expired (`sweep`:
// more to `expired`, and the origins it forgets to `forgotten`).
client_detail::connection_ptr client::impl::pop_idle(
    host_pool& pool, steady::time_point now, std::vector<connection_ptr>& expired,
    std::vector<std::shared_ptr<host_pool>>& forgotten) {
  if (now >= next_expiry) sweep(now, expired, forgotten);
  while (!pool.idle.empty()) {
    auto candidate = std::move(pool.idle.back());
    pool.idle.pop_back();
    --idle_total;
    if (now - candidate->idle_since < options.idle_timeout) return candidate;
    expired.push_back(std::move(candidate));
  }
  return nullptr;
}

void client::impl::start_wait(std::shared_ptr<host_pool> pool, steady::time_point deadline,
                              asio::any_completion_handler<void(boost::system::error_code)> handler,
                              asio::any_io_executor handler_ex) {
  auto w = std::make_shared<slot_waiter>(
      ex, std::move(handler), asio::prefer(handler_ex, asio::execution::outstanding_work.tracked));
  std::weak_ptr<impl> weak_self = weak_from_this();
  auto slot = asio::get_associated_cancellation_slot(w->handler);
  if (slot.is_connected()) {
    std::weak_ptr<slot_waiter> weak = w;
    slot.assign([weak, weak_self, pool](asio::cancellation_type type) {
      if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                   asio::cancellation_type::total)) == asio::cancellation_type::none)
        return;
      auto self = weak_self.lock();
      auto waiter = weak.lock();
      if (self && waiter) self->end_wait(*pool, *waiter, slot_waiter::state::cancelled);
    });
  }
  // The timer starts before the waiter is visible to other threads, outside
  // the lock; whoever takes the waiter out of the queue cancels it.
  if (deadline != steady::time_point::max()) {
    w->timer.expires_at(deadline);
    w->timer.async_wait(
        [weak_self, pool, weak = std::weak_ptr<slot_waiter>(w)](boost::system::error_code ec) {
          if (ec) return;
          auto self = weak_self.lock();
          auto waiter = weak.lock();
          if (self && waiter) self->end_wait(*pool, *waiter, slot_waiter::state::timed_out);
        });
  }
  std::shared_ptr<levee::detail::slot_waiter> queued = w;  // the queue's reference
  {
    std::lock_guard g(pools_mutex);
    if (closed) {  // the client is gone
      w->st = slot_waiter::state::cancelled;
    } else if (pool->busy < options.max_connections_per_host && pool->waiters.empty()) {
      ++pool->busy;
      w->st = slot_waiter::state::granted;
    } else {
      pool->waiters.push_back(std::move(queued));  // intrusive: no allocation
      return;
    }
  }
  w->timer.cancel();
  w->complete(w->st == slot_waiter::state::granted
                  ? boost::system::error_code()
                  : boost::system::error_code(asio::error::operation_aborted));
}

// The deadline or a cancellation ends a wait that was not granted.
void client::impl::end_wait(host_pool& pool, slot_waiter& w, slot_waiter::state why) {
  std::shared_ptr<levee::detail::slot_waiter> removed;
  {
    std::lock_guard g(pools_mutex);
    if (!w.queued) return;  // granted, or ended otherwise
    w.st = why;
    removed = pool.waiters.erase(w);
  }
  w.timer.cancel();
  w.complete(why == slot_waiter::state::timed_out
                 ? boost::system::error_code(beast::error::timeout)
                 : boost::system::error_code(asio::error::operation_aborted));
}

// A request ends: its slot (if it had one) comes back, to the first waiter
// or to the pool, and its origin is forgotten if its pool is now empty and
// unused (the request holds one reference, the map the other). One lock.
void client::impl::release(const std::shared_ptr<host_pool>& pool, bool slot) {
  std::shared_ptr<levee::detail::slot_waiter> next;
  std::shared_ptr<host_pool> forgotten;  // the map's reference, released after the lock
  {
    std::lock_guard g(pools_mutex);
    if (slot) {
      if (!pool->waiters.empty()) {
        next = pool->waiters.pop_front();  // the slot passes to it: busy unchanged
        static_cast<slot_waiter&>(*next).st = slot_waiter::state::granted;
      } else {
        --pool->busy;
      }
    }
    if (pool.use_count() == 2 && pool->busy == 0 && pool->idle.empty() && pool->waiters.empty()) {
      auto it = pools.find(pool->key);
      if (it != pools.end() && it->second == pool) {
        forgotten = std::move(it->second);
        pools.erase(it);
      }
    }
  }
  if (next) {
    static_cast<slot_waiter&>(*next).timer.cancel();
    next->complete({});
  }
}

// A pooled connection that still looks open, or nothing. Idle connections
// past their idle timeout are closed on the way (lazily: the client keeps no
// timer, so an idle client leaves no pending work).
client_detail::connection_ptr client::impl::take_idle(host_pool& pool) {
  for (;;) {
    const auto now = steady::now();  // read before the lock
    connection_ptr c;
    std::vector<connection_ptr> expired;  // closed after the lock
    std::vector<std::shared_ptr<host_pool>> forgotten;
    {
      std::lock_guard g(pools_mutex);
      c = pop_idle(pool, now, expired, forgotten);
    }
    if (!c) return nullptr;
    if (c->usable()) return c;
    stats.stale.fetch_add(1, std::memory_order_relaxed);
  }
}

void client::impl::put_idle(host_pool& pool, connection_ptr c) {
  const auto now = steady::now();
  c->idle_since = now;
  connection_ptr refused;               // closed (a post) after the lock
  std::vector<connection_ptr> expired;  // likewise
  std::vector<std::shared_ptr<host_pool>> forgotten;
  std::lock_guard g(pools_mutex);
  if (now >= next_expiry) sweep(now, expired, forgotten);
  if (closed || idle_total >= options.max_idle_connections) {
    refused = std::move(c);
    return;
  }
  pool.idle.push_back(std::move(c));
  ++idle_total;
  next_expiry = std::min(next_expiry, client_detail::deadline_after(now, options.idle_timeout));
}

// Under the lock (see `pools_mutex`): moves the idle connections past their
// idle timeout to `expired`, forgets the origins left empty and unused, and
// notes the next expiry. Runs when a connection is taken from or given back
// to a pool, once the earliest idle connection has expired.
void client::impl::sweep(steady::time_point now, std::vector<connection_ptr>& expired,
                         std::vector<std::shared_ptr<host_pool>>& forgotten) {
  auto next = steady::time_point::max();
  for (auto it = pools.begin(); it != pools.end();) {
    auto& idle = it->second->idle;
    for (auto c = idle.begin(); c != idle.end();) {
      if (now - (*c)->idle_since >= options.idle_timeout) {
        expired.push_back(std::move(*c));
        c = idle.erase(c);
        --idle_total;
      } else {
        next =
            std::min(next, client_detail::deadline_after((*c)->idle_since, options.idle_timeout));
        ++c;
      }
    }
    auto& p = it->second;
    if (p.use_count() == 1 && p->busy == 0 && p->idle.empty() && p->waiters.empty()) {
      forgotten.push_back(std::move(p));
      it = pools.erase(it);
    } else {
      ++it;
    }
  }
  next_expiry = next;
}

void client::impl::close_idle() {
  std::vector<connection_ptr> idle;  // closed after the lock
  std::vector<std::shared_ptr<host_pool>> forgotten;
  std::lock_guard g(pools_mutex);
  for (auto it = pools.begin(); it != pools.end();) {
    for (auto& c : it->second->idle) idle.push_back(std::move(c));
    it->second->idle.clear();
    auto& p = it->second;
    if (p.use_count() == 1 && p->busy == 0 && p->waiters.empty()) {
      forgotten.push_back(std::move(p));
      it = pools.erase(it);
    } else {
      ++it;
    }
  }
  idle_total = 0;
  next_expiry = steady::time_point::max();
}

void client::impl::close() {
  levee::detail::waiter_queue waiting;  // every pool's waiters, completed after the lock
  {
    std::lock_guard g(pools_mutex);
    closed = true;
    for (auto& [key, pool] : pools) pool->waiters.take_all(waiting);
  }
  while (auto w = waiting.pop_taken()) {
    static_cast<slot_waiter&>(*w).timer.cancel();
    w->complete(asio::error::operation_aborted);
  }
}

}  // namespace levee::http
