// levee: the breaker's sans-I/O core.
//
// The state machine and its windows. It takes the current time and call
// outcomes, and returns decisions (`permit`, `transition`); it never reads a
// clock, never touches Asio, and allocates nothing after construction. The
// Asio shell (`basic_circuit_breaker`) turns its transitions into timer waits.
//
// Thread safety: every member function may be called from any thread.
// - Admission in CLOSED is one atomic load; in OPEN, one load and one relaxed
//   increment on the caller's own shard; in HALF_OPEN, a CAS on the state word.
// - Recording in CLOSED takes the caller's shard lock (a shard per thread slot,
//   each on its own cache lines), so threads that share a breaker do not write
//   to the same line. Reading the whole window (to decide whether to open)
//   happens after a failure, after a slow call, and after a success only when
//   the window changed in a way a success could not have checked (a new bucket,
//   or fewer than `minimum_calls` calls at the last check).
// - Transitions are rare and serialised by `transition_lock_`. The core never
//   calls out: a transition is returned to the caller (the Asio shell), which
//   arms timers and tells observers after every lock is released.
//
// The windows are parts of their own, behind one seam (record, totals, clear):
// breaker/detail/window_kinds.hpp lists them and is the one place that
// dispatches on `window_kind`.
//
// Reconfiguration (`reconfigure`, docs/reconfigure.md) keeps the hot paths as
// they were: the options read without a lock are single atomic words (relaxed
// loads, plain moves on x86-64); the window's parameters and memory change
// only under `transition_lock_` and every shard's lock, and are read under
// one of those locks; the options' other members are read from a snapshot
// (`options()`) that is never freed before the core.
#pragma once

#include <levee/breaker/detail/breaker_permit.hpp>
#include <levee/breaker/detail/decimal_ratio.hpp>
#include <levee/breaker/detail/window_kinds.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/random.hpp>
#include <levee/core/detail/spinlock.hpp>
#include <levee/core/detail/thread_slot.hpp>
#include <levee/core/vocabulary.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <new>
#include <type_traits>

namespace levee::detail {

std::uint64_t hardware_concurrency_reads() noexcept;  ///< for levee's tests: breaker_core.ipp
class breaker_core {
 public:
  /// `options` must be valid (see `validate`). `shards` is rounded up to a power
  /// of two; 0 picks one per hardware thread, at most 4.
  explicit breaker_core(const breaker_options& options, unsigned shards = 0);
  ~breaker_core();
  breaker_core(const breaker_core&) = delete;
  breaker_core& operator=(const breaker_core&) = delete;

  circuit_state state() const noexcept { return state_of(state_.load(std::memory_order_acquire)); }
  /// Starts at 1; every transition adds one.
  std::uint64_t generation() const noexcept {
    return generation_of(state_.load(std::memory_order_acquire));
  }
  std::size_t probes_in_flight() const noexcept {
    return probes_of(state_.load(std::memory_order_acquire));
  }
  /// True when `complete` needs `now` (the window kind's `needs_time`: a time
  /// window); false for a count window.
  bool needs_time() const noexcept { return (bits() & needs_time_bit) != 0; }
  /// True when `complete` needs the call's duration (slow-call detection on).
  bool needs_elapsed() const noexcept { return slow_ns() > 0; }
  nanos slow_call_duration() const noexcept { return nanos(slow_ns()); }  ///< zero: off

  /// The options in force: a snapshot that stays valid as long as the core
  /// (a reconfiguration publishes a new one and keeps the old).
  const breaker_options& options() const noexcept {
    return *options_.load(std::memory_order_acquire);
  }

  /// Applies `options` (valid) as docs/reconfigure.md says: the window kept
  /// unless its kind, length, buckets or size changed (then an empty one);
  /// state, generation, open streak, probes and counters kept. `now`: the
  /// window's time. Returns a trip to OPEN when CLOSED and the kept window is
  /// over a new threshold. Callers serialise reconfigurations. Throws
  /// std::bad_alloc before anything changed.
  transition reconfigure(const breaker_options& options, nanos now);

  /// Reconfigurations since construction.
  std::uint64_t reconfigurations() const noexcept;

  /// The open duration the current open streak gives with the options in
  /// force (a fresh jitter draw): what a reconfiguration re-arms an OPEN
  /// breaker's timer with.
  nanos current_open_duration() noexcept;
  std::size_t shard_count() const noexcept { return shard_mask_ + 1; }

  /// Admission. An empty permit means "rejected: do not start the call".
  permit try_acquire() noexcept;

  /// Records how an admitted call ended. `now` is the current time (used by a
  /// time window only), `elapsed` the call's duration (used only with slow-call
  /// detection on). Outcomes of calls admitted in an earlier generation are
  /// counted in `counters()` but change no decision.
  transition complete(permit p, outcome o, nanos now, nanos elapsed = nanos::zero()) noexcept;

  /// What `complete_success_and_leave` did: nothing (the call is not its
  /// case: the caller calls `complete`, then `leave`), or recorded the call
  /// and left, `leave` false (`left`) or true (`last`: the caller destroys the
  /// shared state).
  enum class fast_end : std::uint8_t { declined, left, last };

  /// `complete` then `leave`, for the common case, inline on the shell's hot
  /// path: the success of a CLOSED call (a `closed_call` permit) with slow-call
  /// detection off, in any window kind unmoved. `now(read)` is called once the
  /// call is taken, and returns the window's time if `read` (the kind
  /// `needs_time`). The same decisions as `complete`: when the window must be
  /// checked, `settle(stamp, epoch)` is called (before leaving) and must pass
  /// them to `success_recorded` and act on its transition. Declines any other
  /// call or window, having done nothing.
  template <class Now, class Settle>
  fast_end complete_success_and_leave(permit p, Now&& now, Settle&& settle) noexcept;

  /// The rest of `complete` after `complete_success_and_leave` recorded a
  /// success with `stamp` in window `epoch` (out of line).
  transition success_recorded(permit p, std::int64_t stamp, std::uint32_t epoch) noexcept;

  /// Gives a permit back without counting it: the call was abandoned (its
  /// coroutine destroyed) before it finished. A probe's slot is freed.
  void release(permit p) noexcept;

  /// The open timer armed for `generation` fired.
  transition open_elapsed(std::uint64_t generation) noexcept;

  /// The half-open timer of HALF_OPEN state `generation` fired (the shell arms
  /// it for `max_half_open_duration` when `try_acquire` hands out a permit
  /// whose `first_probe()` is true):
  /// if still in that state, reopens with reason `half_open_timeout`. The
  /// probes in flight keep their permits, whose outcomes then change nothing.
  transition half_open_elapsed(std::uint64_t generation) noexcept;

  /// Fleet hook (levee::fleet_link): CLOSED -> OPEN with reason `fleet`, for
  /// `open_for` (zero: the breaker's own next open duration). `{}` in any
  /// other state.
  transition fleet_open(nanos open_for) noexcept;

  /// Fleet hook: OPEN or HALF_OPEN -> CLOSED with reason `fleet` (the fleet's
  /// prober closed it), a fresh window and a zero open streak. `{}` in any
  /// other state.
  transition fleet_close() noexcept;

  /// The current window as of `now` (the time window evicts old buckets
  /// first), for metrics and tests.
  window_totals window(nanos now) noexcept;

  /// Cumulative counts (relaxed reads: exact once calls have stopped).
  breaker_counters counters() const noexcept;

  /// What the transition `t` to OPEN was decided on, as long as no later
  /// transition to OPEN happened (zero then, and for other transitions): for `failure_rate` the
  /// window's calls and failures, for `slow_call_rate` its calls and slow calls; for
  /// `consecutive_failures`, the failures in a row (as calls and failures); for `probe_failed`, the
  /// probe (one call, failed or slow).
  window_totals trip_basis(const transition& t) const noexcept;

  /// The shortest the current OPEN period can last: its backed-off duration
  /// with the most jitter can take off (what `retry_after` answers between a
  /// trip and the arming of its timer, on another thread).
  nanos shortest_open_duration() const noexcept;

  /// Consecutive successful probes in the current HALF_OPEN state.
  std::size_t probe_successes() const noexcept;

  /// Openings since the breaker last closed: 1 after the first trip, one more
  /// for each failed probe round; 0 once closed.
  std::uint64_t open_streak() const noexcept;

  /// Manual control: moves to `target` (CLOSED, FORCED_OPEN, DISABLED or
  /// METRICS_ONLY; OPEN and HALF_OPEN are not manual targets and return `{}`)
  /// with reason `manual`. CLOSED, DISABLED and METRICS_ONLY start a fresh
  /// window; CLOSED also resets the open streak. A move to the current state
  /// is no transition (returns `{}`); in CLOSED it still starts a fresh window.
  transition set_state(circuit_state target) noexcept;

  /// Test hook: sets the counts of the time-window bucket that holds `now`, in
  /// the calling thread's shard, as if that many calls had finished in it
  /// (to test a bucket near its counters' limit without 2^32 calls).
  void test_preload(nanos now, std::uint32_t calls, std::uint32_t failures,
                    std::uint32_t slow) noexcept;

  // ---- the owner's lifetime ------------------------------------------------
  // The shell lets its owner (the breaker object) be destroyed while calls are
  // still in flight, as Asio lets an I/O object go with operations pending:
  // the shared state lives on until the last call ends. Calls in flight are
  // counted per shard (on the caller's own cache line, no shared counter):
  // `enter` when a call is admitted, `leave` as the very last thing the call
  // does with the shared state. `orphan` marks every shard and counts the
  // calls still in flight; from then on, `leave` tells the last one to go.

  /// A call was admitted and holds the shared state until `leave`.
  void enter() noexcept;  // impl/breaker_core.hpp, inline

  /// The call is done with the shared state. True when the owner was orphaned
  /// and this was the last call: the caller must now destroy the shared state.
  bool leave() noexcept;  // impl/breaker_core.hpp, inline

  /// The owner is gone (no call will be admitted any more). True when no call
  /// is in flight: the caller destroys the shared state now; otherwise the
  /// last `leave` will say so.
  bool orphan() noexcept;

 private:
  // The state word: | generation (47) | round started (1) | probes in flight (13) | state (3) |
  // "Round started": a probe was admitted in this HALF_OPEN state (the first
  // one's permit says so). Every transition writes a fresh word, without it.
  static constexpr unsigned probe_shift = 3;
  static constexpr unsigned generation_shift = 17;
  static constexpr std::uint64_t state_mask = 0x7;
  static constexpr std::uint64_t probe_mask = 0x1fff;
  static constexpr std::uint64_t probe_one = std::uint64_t{1} << probe_shift;
  static constexpr std::uint64_t round_started = std::uint64_t{1} << 16;

  // The state word's fields, and a fresh word (impl/breaker_core.hpp).
  static circuit_state state_of(std::uint64_t w) noexcept;
  static std::uint64_t probes_of(std::uint64_t w) noexcept;
  static std::uint64_t generation_of(std::uint64_t w) noexcept { return w >> generation_shift; }
  static std::uint64_t make_word(circuit_state s, std::uint64_t generation) noexcept;

  // A counter written either always under its shard's lock (`bump_locked`, a
  // plain load and store) or always with `fetch_add` (`bump`), never both.
  // successes, failures and slow: locked (`count`); ignored, rejected: `bump`.
  struct counter {
    std::atomic<std::uint64_t> value{0};
    void bump_locked() noexcept;  // impl/breaker_core.hpp
    void bump() noexcept { value.fetch_add(1, std::memory_order_relaxed); }
    std::uint64_t get() const noexcept { return value.load(std::memory_order_relaxed); }
  };

  // One shard: cumulative counters and the calls in flight. Followed in
  // memory by its part of the window (the window kind's `part_bytes`: the
  // time window's cursor and ring); shards are `stride_` bytes apart, a
  // multiple of the cache line, in one block aligned to a cache line, and the
  // window kind's shared part (`shared_bytes`) follows the last shard.
  struct shard {
    spinlock lock;  // window and generation (the counters say how they are written)
    // Calls in flight admitted or finished on this shard, times two (a call
    // may enter on one shard and leave on another: only the sum over shards,
    // modulo 2^31, is meaningful), plus 1 once the owner is orphaned.
    std::atomic<std::uint32_t> in_flight{0};
    std::uint64_t generation = 1;
    counter successes, failures, ignored, slow;
    counter rejected;  // bumped without the lock
    std::byte* part() noexcept { return reinterpret_cast<std::byte*>(this + 1); }
  };
  // A header of 56 bytes, a time window's cursor of 16 and ten buckets of 12
  // fill three cache lines.
  static_assert(sizeof(void*) != 8 || sizeof(shard) <= 56, "memory per breaker is a target");
  static_assert(sizeof(shard) % 8 == 0);  // a window's part is 8-byte aligned

  shard& shard_at(std::size_t i) const noexcept {
    return *reinterpret_cast<shard*>(shard_memory_.get() + i * stride_);
  }
  shard& my_shard() const noexcept;  // impl/breaker_core.hpp, inline
  // The window's memory, under a shard's lock or transition_lock_: each
  // shard's part right after its header (`s.part()`), and the shared part
  // after the last shard, unless a reconfiguration moved them (`moved_bit`).
  std::byte* part_of(shard& s) const noexcept;
  std::byte* shared_part() const noexcept;
  std::uint8_t bits() const noexcept { return window_bits_.load(std::memory_order_relaxed); }
  window_kind kind() const noexcept { return static_cast<window_kind>(bits() & kind_mask); }
  std::int64_t slow_ns() const noexcept { return slow_ns_.load(std::memory_order_relaxed); }
  // The window kind's parameters, kept in `window_`.
  template <class W>
  const W& window_as() const noexcept {
    return *std::launder(reinterpret_cast<const W*>(window_));
  }
  template <class W>  // window kind W's bits, but `moved_bit`
  static constexpr std::uint8_t bits_of() noexcept;
  template <class W, class Now, class Settle>  // complete_success_and_leave for kind W
  fast_end success_and_leave_as(permit p, Now& now, Settle& settle) noexcept;
  // Counts a finished call outside the window's locked section.
  static void count(shard& s, bool failed, bool slow) noexcept;  // impl/breaker_core.hpp

  // Slow paths (breaker/impl/breaker_core.ipp). HALF_OPEN admission: a CAS takes a
  // probe slot, and the round's first marks the word: that probe's permit says so.
  permit acquire_probe(std::uint64_t w) noexcept;
  transition complete_special(permit p, outcome o, bool slow) noexcept;
  transition complete_probe(permit p, outcome o, bool slow) noexcept;
  // `complete` for any window but the inline kind unmoved (impl/breaker_core.hpp).
  transition complete_other(permit p, bool failed, bool slow, nanos now, bool counted) noexcept;
  transition recorded(permit p, bool failed, bool slow, std::int64_t stamp,
                      std::uint32_t e) noexcept;
  transition check_window(std::uint64_t generation, std::int64_t stamp,
                          std::uint32_t epoch) noexcept;
  // What the thresholds are, read with the window (under shard 0's lock).
  struct limits {
    std::uint64_t failure_numerator, slow_numerator, minimum_calls;
    std::uint8_t failure_exponent, slow_exponent;
  };
  // The window: the shared part and every shard's part (of `generation`; 0:
  // every shard) as of `stamp(w, part)`, with the thresholds in `*l`. Empty
  // (and `*l` untouched) when the window is not the one of `epoch` (a
  // reconfiguration replaced it); `any_epoch`: whichever it is.
  static constexpr std::uint64_t any_epoch = ~std::uint64_t{0};
  template <class Stamp>
  window_totals totals(std::uint64_t generation, std::uint64_t epoch, Stamp stamp,
                       limits* l) noexcept;
  transition note_consecutive(permit p, bool failed) noexcept;
  transition trip(std::uint64_t generation, transition_reason why,
                  const window_totals& basis) noexcept;
  bool over_threshold(const window_totals& t, const limits& l,
                      transition_reason& why) const noexcept;
  nanos next_open_duration() noexcept;  // under transition_lock_, after open_streak_ was updated
  nanos open_duration_for(std::uint32_t streak, long double jitter_factor) const noexcept;
  // Reconfiguration's parts (breaker/impl/breaker_core.ipp). `window_ext`:
  // what a core that was reconfigured keeps, allocated by the first
  // reconfiguration: the options it replaced, and a window that no longer
  // fits the shards' own room.
  struct window_ext;
  void lock_shards() noexcept;
  void unlock_shards() noexcept;
  // Notes the basis of an opening (under transition_lock_); returns `t`.
  transition opened(const transition& t, const window_totals& basis) noexcept;
  void reset_windows(std::uint64_t generation) noexcept;  // under transition_lock_

  static std::uint64_t validation_stamp(std::uint64_t generation,
                                        std::int64_t index) noexcept;  // impl/breaker_core.hpp

  // Read on every call, written rarely: the state word, the validation stamp
  // and the configuration share the first cache lines.
  std::atomic<std::uint64_t> state_;
  std::atomic<std::uint64_t> validated_{0};  // validation_stamp of the last passing check
  // The window's parameters, kind and memory: written under transition_lock_
  // and every shard's lock (a reconfiguration), read under one of them.
  alignas(8) std::byte window_[12];  // the window kind's parameters
  std::uint32_t stride_;             // of the shards: fixed
  // Options that calls read without a lock: one atomic word each (relaxed).
  std::atomic<std::int64_t> slow_ns_;
  std::uint16_t shard_mask_;                // at most 1024 shards
  std::atomic<std::uint16_t> probe_limit_;  // half_open_probes <= 8191
  // The window kind (low bits), in bit 5 its `shared_only`, in bit 6 whether a
  // reconfiguration moved it out of the shards (`window_ext`), in 7 `needs_time`.
  static constexpr std::uint8_t kind_mask = 0x1f;
  static constexpr std::uint8_t shared_only_bit = 0x20;
  static constexpr std::uint8_t moved_bit = 0x40;
  static constexpr std::uint8_t needs_time_bit = 0x80;
  std::atomic<std::uint8_t> window_bits_;
  std::uint8_t failure_exponent_;  // the thresholds' decimal_ratio, split so that
  std::uint8_t slow_exponent_;     // the exponents fill what would be padding
  // Serialises transitions and HALF_OPEN bookkeeping (and guards the fields
  // marked so). Here, in what would be padding: taken on transitions and
  // probe outcomes only, rare next to the loads of this line.
  spinlock transition_lock_;
  // Which window: one more at each reconfiguration that replaced it (as the
  // window's parameters). A call records its epoch with its stamp, so that a
  // check never reads a new window with an old window's stamp.
  std::uint32_t window_epoch_ = 0;
  // The thresholds (as the window's parameters).
  std::uint64_t failure_numerator_;
  std::uint64_t slow_numerator_;
  std::uint64_t minimum_calls_;
  std::atomic<std::uint64_t> consecutive_limit_;
  // The options in force (open durations, probes, ...: read under
  // transition_lock_ by the core, without a lock by the shell); replaced
  // under transition_lock_, the old ones kept in `ext_` until the core goes.
  std::atomic<const breaker_options*> options_;
  window_ext* ext_ = nullptr;  // under transition_lock_ (and, its window, as the window)
  struct aligned_delete {
    void operator()(std::byte* p) const noexcept { ::operator delete[](p, std::align_val_t{64}); }
  };
  std::unique_ptr<std::byte[], aligned_delete> shard_memory_;

  // Written on failures (consecutive_failures on) and on transitions only.
  std::atomic<std::uint64_t> consecutive_{0};
  std::atomic<std::int64_t> orphan_pending_{0};  // calls an orphaned owner still waits for
  // Under transition_lock_:
  std::uint32_t probe_successes_ = 0;   // saturating: 2^32 - 1 successes never close
  std::uint32_t open_streak_ = 0;       // saturating
  std::uint64_t basis_generation_ = 0;  // of the last transition to OPEN
  splitmix64 rng_;                      // open-duration jitter
  std::uint64_t basis_calls_ = 0;       // what it was decided on: calls, and
  std::uint64_t basis_part_ = 0;        // failures, or slow calls (slow_call_rate)
};

// The state word and the configuration come first and are read-mostly; the
// rarely written fields follow. The core is not cache-line aligned on purpose:
// an over-aligned member would make every breaker's allocation pad to 64
// bytes, and the only hot writes (the shards) live in their own aligned block.
// (Memory per breaker is a target: bench/README.md.) The options live in
// their snapshot (`options_`), not copied here.
static_assert(sizeof(void*) != 8 || sizeof(breaker_core) <= 176,
              "breaker_core grew: memory per breaker is a target");

}  // namespace levee::detail

#include <levee/breaker/detail/impl/breaker_core.hpp>  // the hot paths, inline
