// levee: what a breaker tells the outside world (events, per-state history,
// the stuck-open signal), compiled once: nothing here depends on the clock
// type, so a translation unit that guards a call does not instantiate it.
//
// Times are nanoseconds since the breaker clock's epoch, read by the shell.
// Locks:
// - `state_lock_` (spinlock): plain loads and stores only: the listener set
//   pointer, the last failure, the history. Snapshots are taken under it and
//   used after it is released.
// - `order_lock_` (small_mutex, sleeps): transitions are delivered under it
//   in generation order, with their events queued and the stuck-open alarm
//   armed or cancelled; call events are queued under it too (only when some
//   listener wants them), and the listener set is replaced under it. These
//   are call-outs (allocation, post), so a mutex: holding it is what makes
//   listeners see events in order and keeps any event from being queued
//   after `unlisten` returned. Each listener's queue batches its events
//   (one post per batch; breaker/impl/breaker_listeners.ipp).
#pragma once

#include <levee/breaker/detail/breaker_core.hpp>
#include <levee/breaker/observe.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/small_mutex.hpp>
#include <levee/core/detail/spinlock.hpp>
#include <levee/core/vocabulary.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

namespace levee::detail {

/// The stuck-open timer, which has the clock's type: the shell implements it.
/// Called under the telemetry's `order_lock_` only.
class stuck_alarm {
 public:
  /// Calls `breaker_telemetry::stuck_elapsed(left_closed)` at `left_closed +
  /// recovery_window` (clock time) unless re-armed or cancelled first.
  virtual void arm_stuck(nanos left_closed, nanos recovery_window) noexcept = 0;
  virtual void cancel_stuck() noexcept = 0;
  /// The breaker's `recovery_window` (zero: no stuck-open signal).
  virtual nanos recovery_window() const noexcept = 0;

 protected:
  ~stuck_alarm() = default;
};

/// Who a transition with reason `fleet` follows (levee::fleet).
struct fleet_origin {
  std::string instance;
  std::uint64_t generation = 0;
};

class breaker_telemetry {
 public:
  using clock_fn = nanos (*)() noexcept;

  breaker_telemetry(std::string name, nanos created);
  ~breaker_telemetry();
  breaker_telemetry(const breaker_telemetry&) = delete;
  breaker_telemetry& operator=(const breaker_telemetry&) = delete;

  /// The event kinds some listener wants: one relaxed load on the call path.
  event_mask wanted() const noexcept { return mask_.load(std::memory_order_relaxed); }
  bool wants(event_kind k) const noexcept { return wanted() & static_cast<event_mask>(k); }

  /// "" when unnamed. Set at construction, never changed.
  std::string_view name() const noexcept;

  /// A call event (success, failure, ignored with `slow`; rejected) in `state`.
  void call_event(event_kind kind, circuit_state state, bool slow) noexcept;

  /// Keeps the last failure for the next transition event to OPEN (only while
  /// someone listens for transitions).
  void note_failure(const call_result* r) noexcept;

  /// A transition the core returned, from any thread, after the core's lock
  /// was released. Transitions are applied in generation order, every one
  /// once: one that arrives before its predecessor (delivered by another
  /// thread) is kept, however many wait, and the thread that delivers the
  /// predecessor applies it right after. Until then `fill` reports the state
  /// before it, with the time since credited to that state, so that times
  /// never go down. Applying one: time in state, transition counts, the
  /// stuck-open alarm, the transition event. Out of memory: see `fill`'s
  /// `events_lost`.
  void deliver(const transition& t, const window_totals& basis, clock_fn now, stuck_alarm& alarm,
               const fleet_origin* origin = nullptr) noexcept;

  /// A reconfiguration happened (the breaker in `state`): posts the
  /// `reconfigured` event.
  void reconfigured(circuit_state state) noexcept;

  /// The stuck-open alarm armed when the breaker left CLOSED at `left_closed`
  /// fired.
  void stuck_elapsed(nanos left_closed) noexcept;

  /// The breaker object is gone: arms no alarm (nor, the shell, any timer)
  /// any more, and cancels the alarm.
  void detach(stuck_alarm& alarm) noexcept;
  bool detached() const noexcept { return flags_.load(std::memory_order_relaxed) & detached_bit; }

  std::uint64_t listen(event_mask mask, event_listener fn, boost::asio::any_io_executor ex);
  void unlisten(std::uint64_t id);

  /// The state as of the last delivered transition, the time in each state,
  /// the transition counts and the stuck-open signal (`recovery_window`),
  /// into `r`.
  void fill(breaker_metrics& r, nanos now, nanos recovery_window) const noexcept;

 private:
  struct extras_type;
  struct history_type;
  struct listener_set;

  extras_type* extras() const noexcept { return extras_.load(std::memory_order_acquire); }
  extras_type* make_extras() noexcept;  // under order_lock_
  void apply(const transition& t, const window_totals& basis, nanos now, stuck_alarm& alarm,
             const fleet_origin* origin) noexcept;  // under order_lock_
  std::shared_ptr<const listener_set> listeners() const noexcept;

  std::atomic<extras_type*> extras_{nullptr};  // named, listened to or past a transition
  std::atomic<std::uint8_t> mask_{0};          // an event_mask in a byte
  mutable spinlock state_lock_;
  // detached_bit: the breaker object is gone. history_lost_bit: a transition
  // found no memory for the history (the history then starts later).
  static constexpr std::uint8_t detached_bit = 1, history_lost_bit = 2;
  std::atomic<std::uint8_t> flags_{0};
  small_mutex order_lock_;
  nanos created_;
  // Under state_lock_: the latest time a snapshot was taken at. A transition
  // whose time was read earlier is applied at this time instead, so that time
  // in a state never goes backwards between two snapshots (clocks are read
  // before the lock, never under it).
  mutable nanos seen_{};
};

}  // namespace levee::detail
