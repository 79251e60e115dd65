// levee: the circuit breaker for Asio coroutines and completion tokens.
#pragma once

#include <levee/classify.hpp>
#include <levee/detail/breaker_core.hpp>
#include <levee/detail/result_shape.hpp>
#include <levee/detail/validate.hpp>
#include <levee/detail/window_clock.hpp>
#include <levee/error.hpp>
#include <levee/observe.hpp>
#include <levee/options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/compose.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/wait_traits.hpp>

#include <algorithm>
#include <array>
#include <chrono>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace levee {

template <class Clock, class WaitTraits>
class basic_circuit_breaker;

namespace detail {

namespace asio = boost::asio;

// ---- result shapes ----------------------------------------------------------

/// How a completion signature carries errors, for `async_execute`.
template <class... Args>
struct error_arguments {
  static constexpr bool supported = false;
};
// `throws`: the rejection is an exception (a `circuit_open_error`, made when
// the call is rejected and passed to `reject`); otherwise an error_code.
template <class... Rest>
struct error_arguments<boost::system::error_code, Rest...> {
  static constexpr bool supported = (std::is_default_constructible_v<std::decay_t<Rest>> && ...);
  static constexpr bool throws = false;
  template <class Self>
  static void reject(Self& self, std::exception_ptr) {
    self.complete(make_error_code(error::circuit_open), std::decay_t<Rest>{}...);
  }
};
template <class... Rest>
struct error_arguments<std::exception_ptr, Rest...> {
  static constexpr bool supported = (std::is_default_constructible_v<std::decay_t<Rest>> && ...);
  static constexpr bool throws = true;
  template <class Self>
  static void reject(Self& self, std::exception_ptr rejection) {
    self.complete(std::move(rejection), std::decay_t<Rest>{}...);
  }
};
template <class... Ts>
struct error_arguments<std::tuple<boost::system::error_code, Ts...>> {  // as_tuple
  static constexpr bool supported = (std::is_default_constructible_v<Ts> && ...);
  static constexpr bool throws = false;
  template <class Self>
  static void reject(Self& self, std::exception_ptr) {
    self.complete(error_tuple<std::tuple<boost::system::error_code, Ts...>>::make(
        make_error_code(error::circuit_open)));
  }
};

/// The view of a completion handler's arguments.
inline call_result make_arguments_result(const boost::system::error_code& ec) noexcept {
  return call_result(&ec, &value_lookup<boost::system::error_code>::find, &ec);
}
template <class First, class... Rest>
call_result make_arguments_result(const std::tuple<const First&, const Rest&...>& args) noexcept {
  using view = std::tuple<const First&, const Rest&...>;
  if constexpr (std::is_same_v<First, boost::system::error_code>) {
    return call_result(&args, &value_lookup<view>::find, &std::get<0>(args));
  } else if constexpr (std::is_same_v<First, std::exception_ptr>) {
    if (std::get<0>(args)) return call_result(std::get<0>(args), nullptr);
    return call_result(&args, &value_lookup<view>::find, nullptr);
  } else if constexpr (sizeof...(Rest) == 0) {
    return make_value_result(std::get<0>(args));  // a single value, e.g. an as_tuple tuple
  } else {
    return call_result(&args, &value_lookup<view>::find, nullptr);
  }
}

// ---- the shared state behind a breaker --------------------------------------

inline bool closed_like(circuit_state s) noexcept {
  return s == circuit_state::closed || s == circuit_state::disabled ||
         s == circuit_state::metrics_only;
}

template <class Clock, class WaitTraits>
class breaker_impl final : public std::enable_shared_from_this<breaker_impl<Clock, WaitTraits>>,
                           private transition_observer {
 public:
  using timer_type = asio::basic_waitable_timer<Clock, WaitTraits, asio::any_io_executor>;
  using time_point = typename Clock::time_point;

  breaker_impl(asio::any_io_executor ex, breaker_options options, std::string name)
      : options_(detail::checked(std::move(options))),
        core_(options_),
        timer_(std::move(ex)),
        created_(Clock::now()) {
    core_.observe(this);
    if (!name.empty()) {
      extras_ = std::make_unique<extras_type>();
      extras_->name = std::move(name);
    }
  }
  ~breaker_impl() { core_.observe(nullptr); }

  /// The breaker object is gone: its timers stop (nothing of it stays pending
  /// on the executor), and the shared state lives on until the last call in
  /// flight ends (`leave`), or goes now if there is none.
  static void detach(std::shared_ptr<breaker_impl> self) noexcept {
    breaker_impl& b = *self;
    b.detached_.store(true, std::memory_order_relaxed);
    {
      spin_guard g(b.timer_lock_);
      b.timer_.cancel();
    }
    {
      spin_guard g(b.metrics_lock_);
      if (b.extras_ && b.extras_->stuck_timer) b.extras_->stuck_timer->cancel();
    }
    b.last_owner_ = std::move(self);
    if (b.core_.orphan()) b.release_last_owner();
  }

  /// A call is done with the shared state (see `call_scope`).
  void leave() noexcept {
    if (core_.leave()) [[unlikely]]
      release_last_owner();
  }

  const breaker_options& options() const noexcept { return options_; }
  breaker_core& core() noexcept { return core_; }
  const breaker_core& core() const noexcept { return core_; }
  asio::any_io_executor get_executor() noexcept { return timer_.get_executor(); }

  std::string_view name() const noexcept {
    spin_guard g(metrics_lock_);
    return extras_ ? std::string_view(extras_->name) : std::string_view();
  }

  outcome classify(const call_result& r) const noexcept {
    if (!options_.classifier) return default_classify(r);
    try {
      return options_.classifier(r);
    } catch (...) {
      return outcome::failure;
    }
  }

  /// The outcome of a call that returned `value`. Without a classifier the
  /// default rules need no `call_result`: a value is a success, a tuple's
  /// error_code decides.
  template <class T>
  outcome classify_value(const T& value) const noexcept {
    if (options_.classifier) return classify(make_value_result(value));
    if constexpr (is_error_tuple_v<T>) {
      const boost::system::error_code& ec = std::get<0>(value);
      if (!ec) return outcome::success;
      // As default_classify: cancellations and inner levee rejections say
      // nothing of the downstream's health.
      return is_cancellation(ec) || is_rejection(ec) ? outcome::ignored : outcome::failure;
    } else {
      return outcome::success;
    }
  }

  /// Records a finished call and acts on what the core decides. `r`: the
  /// call's result, when known (for the last failure of a transition event).
  void finish(permit p, outcome o, time_point start, const call_result* r) noexcept {
    const nanos now = core_.needs_time() ? window_now<Clock>() : nanos::zero();
    const nanos elapsed = core_.needs_elapsed()
                              ? std::chrono::duration_cast<nanos>(Clock::now() - start)
                              : nanos::zero();
    // Without a listener for call events this is one relaxed load. Posted
    // before the core records the call, so that a transition the call causes
    // comes after it.
    const event_mask mask = event_mask_.load(std::memory_order_relaxed);
    if (mask & call_events) on_outcome(o, elapsed);
    // The last failure, kept only while a listener wants transitions: with
    // none, a failure costs nothing more than this test of the same load.
    if (o == outcome::failure && (mask & static_cast<event_mask>(event_kind::transition)))
        [[unlikely]]
      note_failure(r);
    apply(core_.complete(p, o, now, elapsed));
  }

  /// A call abandoned before it finished (its coroutine or handler destroyed):
  /// gives the permit back, counted as ignored.
  void abandon(permit p) noexcept {
    if (event_mask_.load(std::memory_order_relaxed) & static_cast<event_mask>(event_kind::ignored))
      on_outcome(outcome::ignored, nanos::zero());
    core_.release(p);
  }

  /// A call was refused.
  void rejected() noexcept {
    if (event_mask_.load(std::memory_order_relaxed) &
        static_cast<event_mask>(event_kind::rejected)) {
      breaker_event e;
      e.kind = event_kind::rejected;
      e.from = e.to = core_.state();
      emit(e);
    }
  }

  /// See `basic_circuit_breaker::retry_after`.
  nanos retry_after() noexcept {
    const std::uint64_t generation = core_.generation();
    switch (core_.state()) {
      case circuit_state::closed:
      case circuit_state::disabled:
      case circuit_state::metrics_only:
        return nanos::zero();
      case circuit_state::forced_open:
        return nanos::max();
      case circuit_state::half_open:
        if (core_.probes_in_flight() < options_.half_open_probes) return nanos::zero();
        break;
      case circuit_state::open:
        break;
    }
    time_point deadline;
    {
      spin_guard g(timer_lock_);
      // Not armed for this state (yet, or no more): no better answer than now.
      if (static_cast<std::uint32_t>(generation) != timer_generation_) return nanos::zero();
      deadline = timer_.expiry();
    }
    if (deadline == time_point::max()) return nanos::max();  // "for ever"
    const time_point now = Clock::now();
    if (deadline <= now) return nanos::zero();
    return std::chrono::duration_cast<nanos>(deadline - now);
  }

  /// The exception of a rejection (the exception forms), out of the hot path.
  [[noreturn]] void throw_rejection() { throw_circuit_open(retry_after(), name()); }
  std::exception_ptr make_rejection() noexcept { return make_circuit_open(retry_after(), name()); }

  time_point start_time() const noexcept {
    return core_.needs_elapsed() ? Clock::now() : time_point();
  }

  void apply(const transition& t) noexcept {
    if (!t) return;
    if (t.to == circuit_state::open) {
      arm(t.generation, t.open_for);
    } else if (t.to != circuit_state::half_open) {
      // CLOSED (probes succeeded) or a manual state: neither the open timer
      // nor the half-open timer has anything left to do.
      disarm(t.generation);
    }
  }

  /// A probe of HALF_OPEN state `generation` was admitted: the round's first
  /// arms the half-open timer (`max_half_open_duration`). Not on the CLOSED
  /// path: only probes come here.
  void probe_admitted(std::uint64_t generation) noexcept {
    if (options_.max_half_open_duration == nanos::max()) return;  // no limit
    arm(generation, options_.max_half_open_duration, /*once=*/true);
  }

  // ---- fleet hooks (levee::fleet_link) -------------------------------------
  // While the gate is on, the open timer's expiry does not turn the breaker
  // HALF_OPEN: it is remembered (`fleet_open_expired`) and the link decides
  // (`fleet_half_open`). Turning the gate off applies a remembered expiry at
  // once: a breaker whose link is gone is a local breaker again.

  void fleet_gate(bool on) noexcept {
    fleet_gate_.store(on);
    if (on) return;
    const std::uint64_t g = core_.generation();
    if (fleet_expired_.load() == g) apply(core_.open_elapsed(g));
  }
  bool fleet_open_expired() const noexcept {
    const std::uint64_t g = core_.generation();
    return core_.state() == circuit_state::open && fleet_expired_.load() == g;
  }
  /// OPEN `generation` -> HALF_OPEN now (reason `open_elapsed`), as if its
  /// timer fired.
  void fleet_half_open(std::uint64_t generation) noexcept { apply(core_.open_elapsed(generation)); }
  /// CLOSED -> OPEN (reason `fleet`) for `open_for` (zero: the breaker's own
  /// duration); returns the duration, zero when it was not CLOSED.
  nanos fleet_open(nanos open_for) noexcept {
    const transition t = core_.fleet_open(open_for);
    apply(t);
    return t ? t.open_for : nanos::zero();
  }
  /// OPEN or HALF_OPEN -> CLOSED (reason `fleet`).
  void fleet_close() noexcept { apply(core_.fleet_close()); }

  // ---- observability -----------------------------------------------------

  std::uint64_t listen(event_mask mask, event_listener fn, asio::any_io_executor ex) {
    static std::atomic<std::uint64_t> next_id{1};  // ids unique across breakers
    const std::uint64_t id = next_id.fetch_add(1, std::memory_order_relaxed);
    auto entry = listener_entry{id, mask, std::make_shared<const event_listener>(std::move(fn)),
                                std::move(ex)};
    spin_guard g(metrics_lock_);
    extras_type& x = extras();
    auto next = std::make_shared<listener_set>();
    next->name = x.name;
    if (x.listeners) next->entries = x.listeners->entries;
    next->entries.push_back(std::move(entry));
    if ((mask & static_cast<event_mask>(event_kind::transition)) && !x.last) {
      x.last = std::make_unique<typename extras_type::last_failure>();
    }
    x.listeners = std::move(next);
    recompute_mask();
    return id;
  }

  void unlisten(std::uint64_t id) {
    spin_guard g(metrics_lock_);
    if (!extras_ || !extras_->listeners) return;
    auto next = std::make_shared<listener_set>(*extras_->listeners);
    std::erase_if(next->entries, [id](const listener_entry& e) { return e.id == id; });
    extras_->listeners = std::move(next);
    recompute_mask();
  }

  breaker_metrics metrics() noexcept {
    breaker_metrics r;
    r.state = core_.state();
    const call_counters c = core_.counters();
    r.successes = c.successes;
    r.failures = c.failures;
    r.ignored = c.ignored;
    r.slow = c.slow;
    r.rejected = c.rejected;
    const window_totals w = core_.window(window_now<Clock>());
    r.window_calls = w.calls;
    r.window_failures = w.failures;
    r.window_slow = w.slow;
    if (w.calls) {
      r.failure_rate = static_cast<double>(w.failures) / static_cast<double>(w.calls);
      r.slow_call_rate = static_cast<double>(w.slow) / static_cast<double>(w.calls);
    }
    r.open_streak = core_.open_streak();
    spin_guard g(metrics_lock_);
    const time_point now = Clock::now();
    if (!history_) {
      r.time_in_state[0] = std::chrono::duration_cast<nanos>(now - created_);
      return r;
    }
    const history_type& h = *history_;
    r.state = h.current;  // consistent with the times below
    r.time_in_state = h.time_in_state;
    r.time_in_state[static_cast<std::size_t>(h.current)] +=
        std::chrono::duration_cast<nanos>(now - h.since);
    r.transitions = h.transitions;
    if (!closed_like(h.current)) {
      r.not_closed_for = std::chrono::duration_cast<nanos>(now - h.left_closed);
      r.stuck_open =
          options_.recovery_window > nanos::zero() && r.not_closed_for >= options_.recovery_window;
    }
    return r;
  }

 private:
  struct listener_entry {
    std::uint64_t id;
    event_mask mask;
    std::shared_ptr<const event_listener> fn;  // shared: listen/unlisten copy no callable
    asio::any_io_executor executor;
  };

  // The listeners, replaced as a whole when one is added or removed (so that a
  // snapshot is a pointer copy). A posted event holds its set, which holds the
  // name its `breaker` view points to: the event outlives neither, and holds
  // nothing of the breaker.
  struct listener_set {
    std::string name;
    std::vector<listener_entry> entries;
  };

  // What not every breaker needs, allocated on first use (56 bytes: a named
  // breaker stays under 1 KiB).
  struct extras_type {
    std::string name;
    std::shared_ptr<const listener_set> listeners;
    std::unique_ptr<timer_type> stuck_timer;  // when `recovery_window` is set
    // The last failure, for the next transition event to OPEN: allocated when
    // a listener for transitions is added, kept while someone listens.
    struct last_failure {
      boost::system::error_code error;
      std::exception_ptr exception;
    };
    std::unique_ptr<last_failure> last;
  };

  // Per-state times and transition counts, allocated at the first transition:
  // until then the breaker has only ever been CLOSED.
  struct history_type {
    circuit_state current = circuit_state::closed;
    time_point since;        // when `current` began
    time_point left_closed;  // when the breaker last left a closed-like state
    std::array<nanos, circuit_state_count> time_in_state{};
    std::array<std::array<std::uint64_t, circuit_state_count>, circuit_state_count> transitions{};
  };

  extras_type& extras() {  // under metrics_lock_
    if (!extras_) extras_ = std::make_unique<extras_type>();
    return *extras_;
  }

  void recompute_mask() noexcept {  // under metrics_lock_
    event_mask m = 0;
    if (extras_ && extras_->listeners)
      for (const auto& e : extras_->listeners->entries) m |= e.mask;
    static_assert(all_events <= 0xff, "event_mask_ holds every kind in a byte");
    event_mask_.store(static_cast<std::uint8_t>(m), std::memory_order_relaxed);
  }

  // Under metrics_lock_: events are posted under the lock that orders
  // transitions and guards the listener set, so that listeners see transitions
  // in order and no event reaches a listener whose `unlisten` returned
  // (`asio::post` never runs a handler inline). Only when some listener wants
  // the kind.
  void emit_locked(breaker_event e) noexcept {
    if (!extras_ || !extras_->listeners) return;
    const std::shared_ptr<const listener_set>& set = extras_->listeners;
    e.breaker = set->name;
    e.when = std::chrono::system_clock::now();
    for (const listener_entry& l : set->entries) {
      if (!(l.mask & static_cast<event_mask>(e.kind))) continue;
      try {
        asio::post(l.executor, [set, &l, e] { (*l.fn)(e); });
      } catch (...) {  // out of memory: drop the event
      }
    }
  }
  void emit(const breaker_event& e) noexcept {
    spin_guard g(metrics_lock_);
    emit_locked(e);
  }

  void note_failure(const call_result* r) noexcept {
    std::exception_ptr last = r ? r->exception() : std::exception_ptr();
    spin_guard g(metrics_lock_);             // released before `last` (the previous one) goes
    if (!extras_ || !extras_->last) return;  // listening made them
    extras_->last->error = r && r->error() ? *r->error() : boost::system::error_code();
    std::swap(extras_->last->exception, last);
  }

  void on_outcome(outcome o, nanos elapsed) noexcept {
    breaker_event e;
    e.kind = o == outcome::success   ? event_kind::success
             : o == outcome::failure ? event_kind::failure
                                     : event_kind::ignored;
    e.from = e.to = core_.state();
    e.slow = options_.slow_call_duration > nanos::zero() &&
             elapsed >= options_.slow_call_duration && o != outcome::ignored;
    emit(e);
  }

  // Under the core's lock, in generation order: time in state, transition
  // counts, the stuck-open timer, and the transition event.
  void on_transition(const transition& t, const window_totals& basis) noexcept override {
    std::exception_ptr forgotten;  // destroyed after the lock is released
    spin_guard g(metrics_lock_);
    // Read under the lock that metrics() reads it under: time in state never
    // goes backwards between two snapshots.
    const time_point now = Clock::now();
    if (!history_) {
      try {
        history_ = std::make_unique<history_type>();
      } catch (...) {
        return;  // no memory for metrics: the breaker itself goes on
      }
      history_->since = created_;
    }
    history_type& h = *history_;
    const auto from = static_cast<std::size_t>(t.from), to = static_cast<std::size_t>(t.to);
    h.time_in_state[from] += std::chrono::duration_cast<nanos>(now - h.since);
    h.since = now;
    h.current = t.to;
    ++h.transitions[from][to];
    if (closed_like(t.from) && !closed_like(t.to)) {
      h.left_closed = now;
      if (options_.recovery_window > nanos::zero()) arm_stuck(now);
    } else if (!closed_like(t.from) && closed_like(t.to) && extras_ && extras_->stuck_timer) {
      extras_->stuck_timer->cancel();  // recovered: a closed breaker leaves no pending work
    }
    if (event_mask_.load(std::memory_order_relaxed) &
        static_cast<event_mask>(event_kind::transition)) {
      breaker_event e;
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
        if (extras_ && extras_->last) {
          e.last_error = extras_->last->error;
          e.last_exception = extras_->last->exception;
        }
      }
      emit_locked(e);
    }
    if (closed_like(t.to) && extras_ && extras_->last) {  // a new episode: forget it
      extras_->last->error = {};
      forgotten = std::move(extras_->last->exception);
    }
  }

  // Under metrics_lock_: the stuck-open signal, `recovery_window` after the
  // breaker left CLOSED, if it has not come back by then.
  void arm_stuck(time_point left_closed) noexcept {
    if (detached_.load(std::memory_order_relaxed)) return;  // the breaker object is gone
    try {
      extras_type& x = extras();
      // Saturating: a deadline past the clock's range never comes, so no timer.
      const auto wait = std::chrono::ceil<typename Clock::duration>(options_.recovery_window);
      if (wait >= time_point::max() - std::max(left_closed, time_point())) {
        if (x.stuck_timer) x.stuck_timer->cancel();
        return;
      }
      if (!x.stuck_timer) x.stuck_timer = std::make_unique<timer_type>(timer_.get_executor());
      x.stuck_timer->expires_at(left_closed + wait);
      x.stuck_timer->async_wait(
          [weak = this->weak_from_this(), left_closed](boost::system::error_code ec) {
            if (ec) return;
            if (auto self = weak.lock()) self->stuck_check(left_closed);
          });
    } catch (...) {
    }
  }

  void stuck_check(time_point left_closed) noexcept {
    spin_guard g(metrics_lock_);
    if (!history_ || closed_like(history_->current) || history_->left_closed != left_closed) return;
    breaker_event e;
    e.kind = event_kind::stuck_open;
    e.from = e.to = history_->current;
    emit_locked(e);
  }

  // Arms the timer: the open timer of OPEN `generation`, or (`once`: unless
  // already armed for it) the half-open timer of HALF_OPEN `generation`.
  // Serialised by `timer_lock_`: a transition to OPEN can come from any thread
  // that completes a call. `timer_generation_` keeps a late arm or disarm
  // (another thread's, for an older transition) from undoing a newer one.
  void arm(std::uint64_t generation, nanos open_for, bool once = false) noexcept {
    spin_guard g(timer_lock_);
    if (older(generation) || detached_.load(std::memory_order_relaxed)) return;
    if (once && static_cast<std::uint32_t>(generation) == timer_generation_) return;
    timer_generation_ = static_cast<std::uint32_t>(generation);
    timer_.expires_after(std::chrono::ceil<typename Clock::duration>(open_for));
    timer_.async_wait([weak = this->weak_from_this(), generation](boost::system::error_code ec) {
      if (ec) return;  // cancelled: the breaker is gone or was re-armed
      if (auto self = weak.lock()) {
        if (self->fleet_gate_.load() && self->core_.state() == circuit_state::open) {
          self->fleet_expired_.store(generation);
          if (self->fleet_gate_.load()) return;  // the fleet link decides
        }
        // The open timer of OPEN `generation`, or the half-open timer of
        // HALF_OPEN `generation`: the core knows which, by the state.
        if (const transition t = self->core_.open_elapsed(generation)) return self->apply(t);
        self->apply(self->core_.half_open_elapsed(generation));
      }
    });
  }
  void disarm(std::uint64_t generation) noexcept {
    spin_guard g(timer_lock_);
    if (older(generation) || static_cast<std::uint32_t>(generation) == timer_generation_) return;
    timer_generation_ = static_cast<std::uint32_t>(generation);
    timer_.cancel();
  }
  bool older(std::uint64_t generation) const noexcept {  // than the timer's, under timer_lock_
    return static_cast<std::int32_t>(static_cast<std::uint32_t>(generation) - timer_generation_) <
           0;
  }

  void release_last_owner() noexcept {
    std::shared_ptr<breaker_impl> last = std::move(last_owner_);  // destroys *this
  }

  breaker_options options_;
  breaker_core core_;
  spinlock timer_lock_;                      // timer_, timer_generation_
  mutable spinlock metrics_lock_;            // history_, extras_ (and so listeners)
  std::atomic<std::uint8_t> event_mask_{0};  // an event_mask (a byte: next to the locks)
  std::atomic<bool> detached_{false};        // the breaker object is gone: arm no timer
  std::uint32_t timer_generation_ = 0;       // low bits; compared modulo 2^32
  timer_type timer_;
  time_point created_;
  std::unique_ptr<history_type> history_;
  std::unique_ptr<extras_type> extras_;
  std::shared_ptr<breaker_impl> last_owner_;  // set by `detach` while calls are in flight
  // Fleet hooks: a fleet link decides OPEN -> HALF_OPEN while the gate is on;
  // the OPEN generation whose timer fired while gated.
  std::atomic<bool> fleet_gate_{false};
  std::atomic<std::uint64_t> fleet_expired_{0};
};

/// Holds a permit for the length of one call; gives it back if the call is
/// abandoned (its coroutine or handler destroyed before it finished). It also
/// holds the breaker's shared state: the breaker object may be destroyed while
/// the call is in flight (`breaker_core::enter`/`leave`); the state goes with
/// the last call. Nothing touches the state after `leave`.
template <class Impl>
class call_scope {
 public:
  call_scope(Impl& b, permit p) noexcept : b_(&b), p_(p), start_(b.start_time()) {
    b.core().enter();
    if (p.is_probe()) b.probe_admitted(p.generation());
  }
  call_scope(call_scope&& other) noexcept
      : b_(other.b_), p_(std::exchange(other.p_, permit())), start_(other.start_) {}
  call_scope& operator=(call_scope&&) = delete;
  ~call_scope() {
    if (p_) {
      b_->abandon(p_);
      b_->leave();
    }
  }

  void finish(outcome o, const call_result* r = nullptr) noexcept {
    if (p_) {
      b_->finish(std::exchange(p_, permit()), o, start_, r);
      b_->leave();
    }
  }
  void finish(const call_result& r) noexcept { finish(b_->classify(r), &r); }
  /// A call that returned `value`.
  template <class T>
  void finish_value(const T& value) noexcept {
    const outcome o = b_->classify_value(value);
    if (o != outcome::failure) return finish(o);
    const call_result r = make_value_result(value);  // a view, for the last failure
    finish(o, &r);
  }

 private:
  Impl* b_;
  permit p_;
  typename std::remove_cvref_t<decltype(std::declval<Impl&>().start_time())> start_;
};

// ---- the coroutine form -----------------------------------------------------

template <class Impl, class T, class Executor>
asio::awaitable<T, Executor> guarded_call(Impl& b, asio::awaitable<T, Executor> aw) {
  const permit p = b.core().try_acquire();
  if (!p) {
    b.rejected();
    if constexpr (is_error_tuple_v<T>) {
      co_return error_tuple<T>::make(make_error_code(error::circuit_open));
    } else {
      b.throw_rejection();
    }
  }
  call_scope<Impl> scope(b, p);
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(aw);
      scope.finish(b.options().classifier ? b.classify(call_result()) : outcome::success);
    } else {
      T value = co_await std::move(aw);
      scope.finish_value(value);
      co_return std::move(value);
    }
  } catch (const boost::system::system_error& e) {
    const boost::system::error_code ec = e.code();
    scope.finish(call_result(std::current_exception(), &ec));
    throw;
  } catch (...) {
    scope.finish(call_result(std::current_exception(), nullptr));
    throw;
  }
}

// ---- the completion-token form ----------------------------------------------

template <class Impl, class Op, class Signature>
class execute_op;

template <class Impl, class Op, class R, class... Args>
class execute_op<Impl, Op, R(Args...)> {
 public:
  execute_op(Impl& b, Op&& op) : b_(&b), op_(std::move(op)) {}

  template <class Self>
  void operator()(Self& self) {
    using arguments = error_arguments<std::decay_t<Args>...>;
    if (rejected_) return arguments::reject(self, std::move(rejection_));
    self.reset_cancellation_state(asio::enable_total_cancellation());
    const permit p = b_->core().try_acquire();
    if (!p) {
      b_->rejected();
      // Made now: the breaker may be gone when the posted completion runs.
      if constexpr (arguments::throws) rejection_ = b_->make_rejection();
      // Never complete inside the initiating function: go through the
      // handler's executor, as Asio's own operations do.
      rejected_ = true;
      return asio::post(std::move(self));
    }
    scope_.emplace(*b_, p);
    Op op = std::move(op_);
    std::move(op)(std::move(self));
  }

  template <class Self, class... As>
  void operator()(Self& self, As&&... args) {
    if (scope_) {
      const std::tuple<const std::decay_t<As>&...> view(args...);
      scope_->finish(make_arguments_result(view));
    }
    self.complete(std::forward<As>(args)...);
  }

 private:
  Impl* b_;
  Op op_;
  std::optional<call_scope<Impl>> scope_;
  std::exception_ptr rejection_;
  bool rejected_ = false;
};

template <class Awaitable>
struct guarded_type {
  // An async operation (e.g. `timer.async_wait(asio::deferred)`): guarded as
  // with `async_execute(op, asio::use_awaitable)`.
  using type = typename asio::async_result<asio::use_awaitable_t<>,
                                           asio::completion_signature_of_t<Awaitable>>::return_type;
};
template <class T, class Executor>
struct guarded_type<asio::awaitable<T, Executor>> {
  using type = asio::awaitable<T, Executor>;
};

}  // namespace detail

/// What `breaker(aw)` returns: for an `asio::awaitable<T, Executor>`, an
/// `asio::awaitable<T, Executor>` that runs `aw` under the breaker when it is
/// awaited (and never runs it when the breaker rejects the call).
template <class Awaitable>
using breaker_guarded = typename detail::guarded_type<std::remove_cvref_t<Awaitable>>::type;

/// A circuit breaker (DESIGN.md) for Asio coroutines and completion tokens.
///
/// `Clock` drives the OPEN -> HALF_OPEN timer and, with slow-call detection,
/// call durations; `WaitTraits` are its Asio wait traits. Tests use
/// `manual_clock`. `circuit_breaker` is the steady_clock breaker.
///
/// Executor: the timer runs on the executor given at construction; guarded
/// calls run on their caller's executor.
///
/// Thread safety: a breaker may be shared by coroutines on any number of
/// threads (of one `io_context` or of several); every member function is
/// thread-safe except construction, destruction and move.
///
/// Lifetime: as with an Asio I/O object, the breaker may be destroyed while
/// calls it guards are in flight (for example by `~io_context` at shutdown,
/// when the io_context was declared first) or while its timer is pending: the
/// timers are cancelled, and its shared state lives on until the last call
/// ends. A guarded operation must not be *started* after the breaker is gone.
template <class Clock = std::chrono::steady_clock,
          class WaitTraits = boost::asio::wait_traits<Clock>>
class basic_circuit_breaker {
  using impl_type = detail::breaker_impl<Clock, WaitTraits>;

 public:
  using clock_type = Clock;
  using executor_type = boost::asio::any_io_executor;

  /// A breaker whose open timer runs on `ex` (anything `any_io_executor`
  /// accepts: `io_context::get_executor()`, a strand, ...).
  ///
  /// Throws `std::invalid_argument` naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type>
  explicit basic_circuit_breaker(const Executor& ex, breaker_options options = {},
                                 std::string name = {})
      : impl_(std::make_shared<impl_type>(executor_type(ex), std::move(options), std::move(name))) {
  }

  /// A breaker whose open timer runs on `ctx.get_executor()`.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_circuit_breaker(ExecutionContext& ctx, breaker_options options = {},
                                 std::string name = {})
      : basic_circuit_breaker(ctx.get_executor(), std::move(options), std::move(name)) {}

  basic_circuit_breaker(basic_circuit_breaker&&) noexcept = default;
  basic_circuit_breaker& operator=(basic_circuit_breaker&& other) noexcept {
    if (this != &other) {
      if (impl_) impl_type::detach(std::move(impl_));
      impl_ = std::move(other.impl_);
    }
    return *this;
  }

  /// Safe with calls in flight and with the timer pending, as for an Asio I/O
  /// object: the timers are cancelled, and the calls in flight finish as usual
  /// (their outcomes are counted, no timer is armed any more); the breaker's
  /// shared state goes with the last of them.
  ~basic_circuit_breaker() {
    if (impl_) impl_type::detach(std::move(impl_));
  }

  /// The current state.
  circuit_state state() const noexcept { return impl_->core().state(); }

  /// The options, as validated.
  const breaker_options& options() const noexcept { return impl_->options(); }

  /// The executor the open timer runs on.
  executor_type get_executor() const noexcept { return impl_->get_executor(); }

  /// Probes running now (HALF_OPEN); 0 in other states.
  std::size_t probes_in_flight() const noexcept { return impl_->core().probes_in_flight(); }

  /// Cumulative outcome and rejection counts since construction.
  detail::call_counters counters() const noexcept { return impl_->core().counters(); }

  /// Calls, failures and slow calls in the CLOSED window now.
  detail::window_totals window() const noexcept {
    return impl_->core().window(detail::window_now<Clock>());
  }

  /// For `levee::fleet_link`: the shared state behind the breaker (it may
  /// outlive this object; hold it weakly).
  std::shared_ptr<detail::breaker_impl<Clock, WaitTraits>> shared_state() const noexcept {
    return impl_;
  }

  /// The name given at construction (a registry uses its key), "" if none.
  std::string_view name() const noexcept { return impl_->name(); }

  /// When to retry, as Polly's `BrokenCircuitException.RetryAfter`: the time
  /// until the breaker is due to admit a call, measured on its clock. 0 when
  /// it admits calls now (CLOSED, DISABLED, METRICS_ONLY, HALF_OPEN with a
  /// free probe slot); in OPEN, the time until its timer makes it HALF_OPEN
  /// (`nanoseconds::max()` with an `open_duration` of "for ever"); in
  /// HALF_OPEN with every slot taken, the time until the round's
  /// `max_half_open_duration` runs out (when it is settled at the latest; 0
  /// with no limit, as nothing better is known); in
  /// FORCED_OPEN, `nanoseconds::max()`. For the error_code forms: a rejected
  /// call's exception (`circuit_open_error`) carries the same value, computed
  /// when it was rejected. Thread-safe; reads the clock and takes a short lock.
  std::chrono::nanoseconds retry_after() const noexcept { return impl_->retry_after(); }

  // ---- observability -------------------------------------------------------

  /// A snapshot of the metrics: calls by outcome, rejections, the window's
  /// rates, the state, the time spent in each state, transitions per pair of
  /// states, the open streak and the stuck-open signal. Thread-safe.
  breaker_metrics metrics() const noexcept { return impl_->metrics(); }

  /// Adds a listener for the events in `mask` (`all_events`,
  /// `transition_events`, `call_events`, or `event_kind` bits), invoked on
  /// `ex` (by default the breaker's executor) by `asio::post`: outside the
  /// breaker and its locks, in the order the events happened for a given
  /// listener and executor when that executor runs handlers in order.
  /// Returns an id for `unlisten`.
  ///
  /// Cost: nothing on the call path for kinds no listener asked for (one
  /// relaxed load); one post per event otherwise.
  std::uint64_t listen(event_mask mask, event_listener fn) {
    return impl_->listen(mask, std::move(fn), get_executor());
  }
  template <class Executor>
  requires std::is_convertible_v<const Executor&, executor_type> std::uint64_t listen(
      event_mask mask, event_listener fn, const Executor& ex) {
    return impl_->listen(mask, std::move(fn), executor_type(ex));
  }

  /// Removes a listener; events already posted to it are still delivered.
  void unlisten(std::uint64_t id) { impl_->unlisten(id); }

  // ---- manual control ------------------------------------------------------
  // Each is a transition with reason `manual`, visible in the events and the
  // metrics; calls in flight finish as usual and change no decision. Asking
  // for the state the breaker is already in does nothing (no transition, no
  // event; METRICS_ONLY keeps its window), except that `reset` in CLOSED
  // still clears the window.

  /// FORCED_OPEN: every call is rejected, until `reset`, `disable` or
  /// `metrics_only`. No timer: it stays open until told otherwise.
  void force_open() noexcept { impl_->apply(impl_->core().set_state(circuit_state::forced_open)); }

  /// DISABLED ("force closed"): every call runs; outcomes are counted by
  /// outcome but kept out of the window (the rates stay at 0); the breaker
  /// never opens.
  void disable() noexcept { impl_->apply(impl_->core().set_state(circuit_state::disabled)); }

  /// METRICS_ONLY: every call runs; outcomes go into the window and the
  /// metrics (rates included); the breaker never opens.
  void metrics_only() noexcept {
    impl_->apply(impl_->core().set_state(circuit_state::metrics_only));
  }

  /// CLOSED with a fresh window and a zero open streak, from any state.
  void reset() noexcept { impl_->apply(impl_->core().set_state(circuit_state::closed)); }

  /// Guards `aw`: `co_await breaker(http_get(...))`.
  ///
  /// `aw` is an `asio::awaitable<T, Executor>` (or an async operation such as
  /// `timer.async_wait(asio::deferred)`). Nothing happens until the result is
  /// awaited. Then:
  /// - if the breaker admits the call, `aw` runs; its result is returned and
  ///   its exception rethrown, unchanged, after the outcome is recorded;
  /// - if it rejects the call, `aw` is destroyed without running and the
  ///   await throws `circuit_open_error` (a `boost::system::system_error`
  ///   with `error::circuit_open`, plus `retry_after()` and the breaker's
  ///   name), or, when `T` is `std::tuple<error_code, U...>`, returns
  ///   `{error::circuit_open, U{}...}` without throwing (then ask
  ///   `retry_after()`).
  ///
  /// Cancellation: the awaiting coroutine's cancellation reaches `aw`; a
  /// cancelled call is classified `ignored` by default and frees its probe slot.
  template <class Awaitable>
  breaker_guarded<Awaitable> operator()(Awaitable&& aw) {
    static_assert(!std::is_lvalue_reference_v<Awaitable>,
                  "levee: pass the awaitable as an rvalue: breaker(http_get(...)) or "
                  "breaker(std::move(aw)); an awaitable runs once");
    if constexpr (is_awaitable<std::remove_cvref_t<Awaitable>>::value) {
      return detail::guarded_call(*impl_, std::move(aw));
    } else {
      return async_execute(std::move(aw), boost::asio::use_awaitable);
    }
  }

  /// Runs the async operation `op` under the breaker and completes through
  /// `token` (a callback, `asio::deferred`, `asio::use_future`,
  /// `asio::use_awaitable`, ...).
  ///
  /// `op` is an async operation: an object that takes a completion token and
  /// starts the operation, such as `timer.async_wait(asio::deferred)` or a
  /// deferred composition. Its completion signature must carry errors first:
  /// `void(error_code, T...)`, `void(exception_ptr, T...)` or
  /// `void(std::tuple<error_code, T...>)` (`asio::as_tuple`).
  ///
  /// Completion signature: that of `op`. On rejection the handler receives
  /// `error::circuit_open` (in the exception_ptr form, an exception_ptr
  /// holding a `circuit_open_error`) and value-initialised values; it is
  /// never invoked from inside `async_execute`.
  ///
  /// Per-operation cancellation: forwarded to `op` (all types).
  ///
  /// Executor: the handler's associated executor, else the breaker's.
  template <class Op, class CompletionToken>
  auto async_execute(Op&& op, CompletionToken&& token) {
    using signature = boost::asio::completion_signature_of_t<std::decay_t<Op>>;
    static_assert(supported_signature<signature>::value,
                  "levee::async_execute: the operation's completion signature must start with an "
                  "error_code, an exception_ptr or a std::tuple<error_code, ...>, and its other "
                  "arguments must be default-constructible");
    return boost::asio::async_compose<CompletionToken, signature>(
        detail::execute_op<impl_type, std::decay_t<Op>, signature>(*impl_, std::forward<Op>(op)),
        token, impl_->get_executor());
  }

 private:
  template <class T>
  struct is_awaitable : std::false_type {};
  template <class T, class E>
  struct is_awaitable<boost::asio::awaitable<T, E>> : std::true_type {};

  template <class Signature>
  struct supported_signature : std::false_type {};
  template <class R, class... Args>
  struct supported_signature<R(Args...)>
      : std::bool_constant<detail::error_arguments<std::decay_t<Args>...>::supported> {};

  std::shared_ptr<impl_type> impl_;
};

/// The steady_clock circuit breaker.
using circuit_breaker = basic_circuit_breaker<>;

}  // namespace levee
