// levee: a breaker's events, history and stuck-open signal, compiled once in
// lib/ (see breaker/detail/breaker_telemetry.hpp).
#pragma once

#include <levee/breaker/detail/breaker_telemetry.hpp>
#include <levee/breaker/impl/breaker_listeners.ipp>

#include <algorithm>
#include <array>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

namespace levee::detail {

namespace {
bool closed_like(circuit_state s) noexcept {
  return s == circuit_state::closed || s == circuit_state::disabled ||
         s == circuit_state::metrics_only;
}
}  // namespace

// Per-state times and transition counts, and the delivery order; allocated
// at the first transition (a breaker only ever CLOSED has none).
struct breaker_telemetry::history_type {
  circuit_state current = circuit_state::closed;
  nanos since{};        // when `current` began
  nanos left_closed{};  // when the breaker last left a closed-like state
  std::array<nanos, circuit_state_count> time_in_state{};
  std::array<std::array<std::uint64_t, circuit_state_count>, circuit_state_count> transitions{};
  // Under order_lock_:
  std::uint64_t next_generation = 2;  // the core starts at 1
  struct pending {
    transition t;
    window_totals basis;
    fleet_origin origin;  // reason `fleet` only
  };
  // Transitions that arrived before their predecessor, by generation. Never
  // bounded and never skipped: the predecessor is on its way (every
  // transition the core returns is delivered by the thread that made it).
  std::vector<pending> early;
};

// What not every breaker needs, allocated on first use: a name, listeners, a
// transition.
struct breaker_telemetry::extras_type {
  std::string name;
  // Under state_lock_:
  std::shared_ptr<const listener_set> listeners;  // replaced as a whole: a snapshot is a copy
  struct last_failure {                           // while someone listens for transitions
    boost::system::error_code error;
    std::exception_ptr exception;
  };
  std::unique_ptr<last_failure> last;
  std::unique_ptr<history_type> history;  // allocated under order_lock_
  // Events not posted and transitions not recorded, for lack of memory.
  std::atomic<std::uint64_t> lost{0};
  // Events the listeners' queues could not keep (made by the first listen,
  // under both locks; shared with the queues, which outlive the breaker).
  std::shared_ptr<std::atomic<std::uint64_t>> queue_lost;
};

breaker_telemetry::breaker_telemetry(std::string name, nanos created) : created_(created) {
  if (!name.empty()) {
    auto* x = new extras_type;
    x->name = std::move(name);
    extras_.store(x, std::memory_order_release);
  }
}

breaker_telemetry::~breaker_telemetry() {
  delete extras();
}

std::string_view breaker_telemetry::name() const noexcept {
  const extras_type* x = extras();
  return x ? std::string_view(x->name) : std::string_view();
}

breaker_telemetry::extras_type* breaker_telemetry::make_extras() noexcept {
  if (extras_type* x = extras()) return x;
  auto* x = new (std::nothrow) extras_type;
  if (x) extras_.store(x, std::memory_order_release);
  return x;
}

std::shared_ptr<const breaker_telemetry::listener_set> breaker_telemetry::listeners()
    const noexcept {
  const extras_type* x = extras();
  if (!x) return {};
  spin_guard g(state_lock_);
  return x->listeners;
}

void breaker_telemetry::call_event(event_kind kind, circuit_state state, bool slow) noexcept {
  // Queued under order_lock_, as listen and unlisten replace the set under
  // it: the set needs no copy here, and no event is queued for a listener
  // after its unlisten returned. Only calls that some listener wants come
  // here.
  small_lock order(order_lock_);
  const extras_type* x = extras();
  const listener_set* set = x ? x->listeners.get() : nullptr;
  if (set) set->post_call(kind, state, slow);
}

void breaker_telemetry::note_failure(const call_result* r) noexcept {
  extras_type* x = extras();
  if (!x) return;
  std::exception_ptr last = r ? r->exception() : std::exception_ptr();
  const boost::system::error_code ec = r && r->error() ? *r->error() : boost::system::error_code();
  spin_guard g(state_lock_);  // released before `last` (the previous one) goes
  if (!x->last) return;       // made by listen
  x->last->error = ec;
  std::swap(x->last->exception, last);
}

void breaker_telemetry::deliver(const transition& t, const window_totals& basis, clock_fn now,
                                stuck_alarm& alarm, const fleet_origin* origin) noexcept {
  if (!t) return;
  std::unique_lock order(order_lock_);
  extras_type* x = make_extras();
  if (!x) {  // no memory for the history: the breaker itself goes on
    flags_.fetch_or(history_lost_bit, std::memory_order_relaxed);
    return;
  }
  if (!x->history) {
    auto fresh = std::unique_ptr<history_type>(new (std::nothrow) history_type);
    if (!fresh) {
      flags_.fetch_or(history_lost_bit, std::memory_order_relaxed);
      return;
    }
    fresh->since = created_;
    if (flags_.load(std::memory_order_relaxed) & history_lost_bit) {
      // Earlier transitions found no memory for the history: the history
      // starts here, and every earlier generation counts as lost (those
      // still on their way are not applied either, see below).
      fresh->next_generation = t.generation;
      x->lost.fetch_add(t.generation - 2, std::memory_order_relaxed);
    }
    spin_guard g(state_lock_);
    x->history = std::move(fresh);
  }
  history_type& h = *x->history;
  if (t.generation < h.next_generation) return;  // only after a history_lost start: counted there
  if (t.generation != h.next_generation) {
    // Another thread's transition, the one before this, is on its way: that
    // thread applies this one right after its own.
    const auto at = std::upper_bound(
        h.early.begin(), h.early.end(), t.generation,
        [](std::uint64_t g, const history_type::pending& p) { return g < p.t.generation; });
    try {
      h.early.insert(at, {t, basis, origin ? *origin : fleet_origin{}});
      return;
    } catch (...) {
      // No memory to keep it: wait here for the predecessor, which is
      // applied by its own thread (or, likewise, by one waiting for it).
      while (h.next_generation != t.generation) {
        order.unlock();
        std::this_thread::yield();
        order.lock();
      }
    }
  }
  apply(t, basis, now(), alarm, origin);
  // Then those that were waiting for it, in order.
  std::size_t done = 0;
  while (done < h.early.size() && h.early[done].t.generation == h.next_generation) {
    apply(h.early[done].t, h.early[done].basis, now(), alarm, &h.early[done].origin);
    ++done;
  }
  h.early.erase(h.early.begin(), h.early.begin() + static_cast<std::ptrdiff_t>(done));
}

void breaker_telemetry::apply(const transition& t, const window_totals& basis, nanos now,
                              stuck_alarm& alarm, const fleet_origin* origin) noexcept {
  extras_type& x = *extras();
  history_type& h = *x.history;
  h.next_generation = t.generation + 1;
  breaker_event e;
  std::shared_ptr<const listener_set> set;
  std::exception_ptr forgotten;  // destroyed after the lock is released
  bool left_closed = false, came_back = false;
  {
    spin_guard g(state_lock_);
    now = std::max(now, seen_);
    const auto from = static_cast<std::size_t>(t.from), to = static_cast<std::size_t>(t.to);
    h.time_in_state[from] += now - h.since;
    h.since = now;
    h.current = t.to;
    ++h.transitions[from][to];
    if (closed_like(t.from) && !closed_like(t.to)) {
      h.left_closed = now;
      left_closed = true;
    } else if (!closed_like(t.from) && closed_like(t.to)) {
      came_back = true;
    }
    if (wants(event_kind::transition)) set = x.listeners;
    if (x.last) {
      // Only a trip that failures caused carries the last failure: not a
      // slow-call-rate trip, a half-open timeout, a probe that succeeded
      // slowly or a fleet opening (their last failure, if any, is older
      // than what tripped them).
      const bool by_failure = t.reason == transition_reason::failure_rate ||
                              t.reason == transition_reason::consecutive_failures ||
                              (t.reason == transition_reason::probe_failed && basis.failures != 0);
      if (set && t.to == circuit_state::open && by_failure) {
        e.last_error = x.last->error;
        e.last_exception = x.last->exception;
      }
      if (closed_like(t.to)) {  // a new episode: forget the last failure
        x.last->error = {};
        forgotten = std::move(x.last->exception);
      }
    }
  }
  const nanos recovery = alarm.recovery_window();
  if (left_closed && recovery > nanos::zero() && !detached()) {
    alarm.arm_stuck(now, recovery);
  } else if (came_back && recovery > nanos::zero()) {
    alarm.cancel_stuck();  // recovered: a closed breaker leaves no pending work
  }
  if (!set) return;
  e.kind = event_kind::transition;
  e.from = t.from;
  e.to = t.to;
  e.reason = t.reason;
  e.open_for = t.open_for;
  if (origin && t.reason == transition_reason::fleet) {
    try {
      e.fleet_instance = origin->instance;
      e.fleet_generation = origin->generation;
    } catch (...) {  // out of memory: the event goes without it
    }
  }
  if (t.to == circuit_state::open) {  // what tripped it
    e.calls = basis.calls;
    if (basis.calls != 0) {
      const std::uint64_t part =
          t.reason == transition_reason::slow_call_rate ? basis.slow : basis.failures;
      e.rate = t.reason == transition_reason::probe_failed
                   ? 1.0
                   : static_cast<double>(part) / static_cast<double>(basis.calls);
    }
  }
  set->post(e);
}

void breaker_telemetry::stuck_elapsed(nanos left_closed) noexcept {
  small_lock order(order_lock_);
  extras_type* x = extras();
  if (!x) return;
  std::shared_ptr<const listener_set> set;
  breaker_event e;
  {
    spin_guard g(state_lock_);
    const history_type* h = x->history.get();
    if (!h || closed_like(h->current) || h->left_closed != left_closed) return;
    e.from = e.to = h->current;
    set = x->listeners;
  }
  if (!set) return;
  e.kind = event_kind::stuck_open;
  set->post(e);
}

void breaker_telemetry::reconfigured(circuit_state state) noexcept {
  small_lock order(order_lock_);  // after the transitions delivered before it
  const std::shared_ptr<const listener_set> set = listeners();
  if (!set) return;
  breaker_event e;
  e.kind = event_kind::reconfigured;
  e.from = e.to = state;
  set->post(e);
}

void breaker_telemetry::detach(stuck_alarm& alarm) noexcept {
  small_lock order(order_lock_);
  flags_.fetch_or(detached_bit, std::memory_order_relaxed);
  alarm.cancel_stuck();
}

std::uint64_t breaker_telemetry::listen(event_mask mask, event_listener fn,
                                        boost::asio::any_io_executor ex) {
  static std::atomic<std::uint64_t> next_id{1};  // ids unique across breakers
  const std::uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
  auto fn_ptr = std::make_shared<const event_listener>(std::move(fn));
  small_lock order(order_lock_);
  extras_type* x = make_extras();
  if (!x) throw std::bad_alloc();
  std::shared_ptr<std::atomic<std::uint64_t>> queue_lost = x->queue_lost;
  if (!queue_lost) queue_lost = std::make_shared<std::atomic<std::uint64_t>>(0);
  auto queue = std::make_shared<breaker_listener_queue>(std::move(fn_ptr), std::move(ex), x->name,
                                                        queue_lost);
  auto next = std::make_shared<listener_set>();
  if (x->listeners) next->entries = x->listeners->entries;  // order_lock_: not replaced meanwhile
  next->entries.push_back({id, mask, std::move(queue)});
  std::unique_ptr<extras_type::last_failure> last;
  if ((mask & static_cast<event_mask>(event_kind::transition)) && !x->last)
    last = std::make_unique<extras_type::last_failure>();
  event_mask m = 0;
  for (const auto& e : next->entries) m |= e.mask;
  static_assert(all_events <= 0xff, "mask_ holds every kind in a byte");
  {
    spin_guard g(state_lock_);
    x->listeners = std::move(next);
    x->queue_lost = std::move(queue_lost);
    if (last) x->last = std::move(last);
  }
  mask_.store(static_cast<std::uint8_t>(m), std::memory_order_release);
  return id;
}

void breaker_telemetry::unlisten(std::uint64_t id) {
  small_lock order(order_lock_);
  extras_type* x = extras();
  const auto current = listeners();
  if (!x || !current) return;
  auto next = std::make_shared<listener_set>(*current);
  std::erase_if(next->entries, [id](const listener_set::entry& e) { return e.id == id; });
  event_mask m = 0;
  for (const auto& e : next->entries) m |= e.mask;
  {
    spin_guard g(state_lock_);
    x->listeners = std::move(next);
  }
  mask_.store(static_cast<std::uint8_t>(m), std::memory_order_release);
}

void breaker_telemetry::fill(breaker_metrics& r, nanos now, nanos recovery) const noexcept {
  const extras_type* x = extras();
  spin_guard g(state_lock_);
  seen_ = std::max(seen_, now);
  if (x) {
    r.events_lost = x->lost.load(std::memory_order_relaxed);
    if (x->queue_lost) r.events_lost += x->queue_lost->load(std::memory_order_relaxed);
  }
  const history_type* h = x ? x->history.get() : nullptr;
  // `now` was read before the lock: a transition applied since may be newer.
  const auto since = [now](nanos t) { return std::max(now - t, nanos::zero()); };
  if (!h) {
    r.time_in_state[0] = since(created_);
    return;
  }
  r.state = h->current;  // consistent with the times below
  r.time_in_state = h->time_in_state;
  r.time_in_state[static_cast<std::size_t>(h->current)] += since(h->since);
  r.transitions = h->transitions;
  if (!closed_like(h->current)) {
    r.not_closed_for = since(h->left_closed);
    r.stuck_open = recovery > nanos::zero() && r.not_closed_for >= recovery;
  }
}

}  // namespace levee::detail
