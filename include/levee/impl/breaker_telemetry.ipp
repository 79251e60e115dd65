// levee: a breaker's events, history and stuck-open signal, compiled once in
// lib/ (see detail/breaker_telemetry.hpp).
#pragma once

#include <levee/detail/breaker_telemetry.hpp>

#include <boost/asio/post.hpp>

#include <algorithm>
#include <array>
#include <utility>
#include <vector>

namespace levee::detail {

namespace {
bool closed_like(circuit_state s) noexcept {
  return s == circuit_state::closed || s == circuit_state::disabled ||
         s == circuit_state::metrics_only;
}
}  // namespace

struct breaker_telemetry::listener_set {
  struct entry {
    std::uint64_t id;
    event_mask mask;
    std::shared_ptr<const event_listener> fn;  // shared: listen/unlisten copy no callable
    boost::asio::any_io_executor executor;
  };
  // A posted event holds its set, which holds the name its `breaker` view
  // points to: the event outlives neither, and holds nothing of the breaker.
  std::string name;
  std::vector<entry> entries;

  void post(breaker_event e, const std::shared_ptr<const listener_set>& self) const noexcept {
    e.breaker = name;
    e.when = std::chrono::system_clock::now();
    for (const entry& l : entries) {
      if (!(l.mask & static_cast<event_mask>(e.kind))) continue;
      try {
        boost::asio::post(l.executor, [self, &l, e] { (*l.fn)(e); });
      } catch (...) {  // out of memory: drop the event
      }
    }
  }
};

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
  };
  std::vector<pending> early;  // transitions that arrived before their predecessor
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
  // Posted under order_lock_, as unlisten changes the set under it: no event
  // reaches a listener after its unlisten returned. Only calls that some
  // listener wants come here.
  small_lock order(order_lock_);
  const std::shared_ptr<const listener_set> set = listeners();
  if (!set) return;
  breaker_event e;
  e.kind = kind;
  e.from = e.to = state;
  e.slow = slow;
  set->post(e, set);
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
                                stuck_alarm& alarm) noexcept {
  if (!t) return;
  small_lock order(order_lock_);
  extras_type* x = make_extras();
  if (!x) return;  // no memory for metrics: the breaker itself goes on
  if (!x->history) {
    auto fresh = std::unique_ptr<history_type>(new (std::nothrow) history_type);
    if (!fresh) return;
    fresh->since = created_;
    spin_guard g(state_lock_);
    x->history = std::move(fresh);
  }
  history_type& h = *x->history;
  if (t.generation < h.next_generation) return;  // skipped (see below): too late to apply
  if (t.generation != h.next_generation) {
    // Another thread's transition, the one before this, is on its way: that
    // thread applies this one right after its own. Every transition is
    // delivered, but a predecessor that does not come (out of memory here)
    // must not stall the history: past 16 waiting, the gap is skipped.
    bool stashed = true;
    try {
      h.early.push_back({t, basis});
    } catch (...) {
      stashed = false;
    }
    if (stashed && h.early.size() < 16) return;
    std::sort(h.early.begin(), h.early.end(),
              [](const auto& a, const auto& b) { return a.t.generation < b.t.generation; });
    if (!stashed) {
      if (h.early.empty() || t.generation < h.early.front().t.generation) {
        apply(t, basis, now(), alarm);  // the gap is skipped
      } else {
        h.next_generation = h.early.front().t.generation;
      }
    } else {
      h.next_generation = h.early.front().t.generation;
    }
  } else {
    apply(t, basis, now(), alarm);
  }
  // Then those that were waiting for it, in order.
  for (bool found = true; found && !h.early.empty();) {
    found = false;
    for (std::size_t i = 0; i < h.early.size(); ++i) {
      if (h.early[i].t.generation != h.next_generation) continue;
      const auto p = h.early[i];
      h.early.erase(h.early.begin() + static_cast<std::ptrdiff_t>(i));
      apply(p.t, p.basis, now(), alarm);
      found = true;
      break;
    }
  }
}

void breaker_telemetry::apply(const transition& t, const window_totals& basis, nanos now,
                              stuck_alarm& alarm) noexcept {
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
      if (set && t.to == circuit_state::open) {
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
  set->post(e, set);
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
  set->post(e, set);
}

void breaker_telemetry::detach(stuck_alarm& alarm) noexcept {
  small_lock order(order_lock_);
  detached_.store(true, std::memory_order_relaxed);
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
  auto next = std::make_shared<listener_set>();
  next->name = x->name;
  if (const auto current = listeners()) next->entries = current->entries;
  next->entries.push_back({id, mask, std::move(fn_ptr), std::move(ex)});
  std::unique_ptr<extras_type::last_failure> last;
  if ((mask & static_cast<event_mask>(event_kind::transition)) && !x->last)
    last = std::make_unique<extras_type::last_failure>();
  event_mask m = 0;
  for (const auto& e : next->entries) m |= e.mask;
  static_assert(all_events <= 0xff, "mask_ holds every kind in a byte");
  {
    spin_guard g(state_lock_);
    x->listeners = std::move(next);
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
