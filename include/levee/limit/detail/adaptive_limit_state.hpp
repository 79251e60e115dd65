// levee: the adaptive limit's shared state: admission, the wait queue, samples.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/detail/sampler.hpp>
#include <levee/core/detail/spinlock.hpp>
#include <levee/limit/detail/bulkhead.hpp>
#include <levee/limit/detail/limit_algorithm.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <cstdint>
#include <functional>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <variant>
#include <vector>

namespace levee {
struct adaptive_limit_options;
struct adaptive_limit_metrics;
struct limit_event;
}  // namespace levee

namespace levee::detail {

/// Calls in flight against a limit that moves with each sample, a FIFO of
/// waiters (the bulkhead's waiter protocol), under one spinlock: arithmetic
/// and list splices, never an allocation, a free or a call out (a waiter's
/// list node is made before the spinlock is taken and freed after it is
/// released; completions are posted, events emitted, after it is released).
/// Owned through `shared_ptr`s (`make`): the limiter's, and each waiter's
/// while it waits. The awaitable forms' frames hold it by address instead
/// (no locked instruction a call): a frame is counted in when admitted
/// (`try_enter`, or `frame_in` after a wait) and out when its slot is freed
/// (`leave_frame`), both under the spinlock it takes anyway; the state goes
/// with the last of its owners (whose deleter is `orphan`) and of those
/// frames. A frame must be started while an owner lives, so the limiter may
/// go first (docs/limits.md, "Cost, observability, one limit per host").
class adaptive_limit_state : public std::enable_shared_from_this<adaptive_limit_state> {
 public:
  using waiter = bulkhead_state::waiter;
  using waiter_list = std::list<std::shared_ptr<waiter>>;
  enum class entry { granted, queue, full };

  adaptive_limit_state(adaptive_limit_options o, std::string name);
  adaptive_limit_state(const adaptive_limit_state&) = delete;
  adaptive_limit_state& operator=(const adaptive_limit_state&) = delete;

  /// A state owned by the returned pointer and its copies (see the class).
  static std::shared_ptr<adaptive_limit_state> make(adaptive_limit_options o, std::string name);
  /// The owners' deleter: the state goes now, or with the last frame out.
  static void orphan(adaptive_limit_state* s) noexcept;

  static boost::system::error_code wait_timeout_error() noexcept {
    return make_error_code(error::limit_exceeded);
  }

  /// A slot if the calls in flight are under the limit and nobody waits.
  /// `in_flight` is then the count including this call.
  /// How an admitted call is timed. Gradient2 times every call until its
  /// open window holds `gradient2::every_call_samples` of them, then one call
  /// in 16 (`one_in_16`), which stands for 16 in the window's mean; the
  /// others read no clock at all. AIMD needs every call's round trip, but
  /// only against `aimd_timeout` (the coarse clock may time it).
  enum class timing : std::uint8_t {
    none,     ///< not timed: the outcome counts, the round trip is not read
    every,    ///< timed, standing for itself
    sampled,  ///< timed, standing for `one_in_16<>::mean_gap` calls
    aimd,     ///< timed for AIMD's `aimd_timeout`
    coarse,   ///< timed for AIMD on the coarse clock: no round trip for Gradient2
  };

  /// Admits a frame's call if the limit has room and nobody waits: `granted`,
  /// with the calls in flight (itself included) and how to time it, and the
  /// frame counted in (it ends with `leave_frame`). Otherwise the frame is
  /// not counted: `queue` (it waits holding a `shared_ptr`, then `frame_in`)
  /// or `full` (counted only while this emits its `limited` event).
  entry try_enter(std::size_t& in_flight, timing& t) noexcept;
  /// Counts in a frame admitted from the queue (the caller holds an owner):
  /// the calls in flight now (for its sample), and how to time it (every
  /// such call is timed).
  timing frame_in(std::size_t& in_flight) noexcept;
  /// Queues `w`, or grants or refuses it at once (completes it outside the lock).
  void enqueue(const std::shared_ptr<waiter>& w);
  /// A waiter's cancellation or the end of its `max_wait`.
  void cancel(waiter& w, boost::system::error_code ec);
  /// A call ends: with a sample (when it ended, `now_ns` on the limiter's
  /// clock; its round trip; the calls in flight when it started; whether it
  /// was a drop), or without one (cancelled, abandoned). A drop is a loss for
  /// AIMD and no round trip for Gradient2 (its latency is not the
  /// downstream's: a call refused in 1 ms would teach a round trip of 1 ms).
  /// The freed room goes to waiters first: all those the limit has room for.
  /// A call ends: `sample` false for an ignored or abandoned one (its slot
  /// freed, nothing learned); otherwise `rtt_ns`, ended at `now_ns`, is read
  /// unless `t` is `timing::none`.
  void leave(bool sample, std::int64_t now_ns, double rtt_ns, std::size_t started_with,
             bool dropped, timing t = timing::every) noexcept {
    leave_impl(sample, now_ns, rtt_ns, started_with, dropped, t, false);
  }
  /// `leave` for a counted frame, which is counted out: the state may be
  /// gone when it returns (the last frame out after the owners).
  void leave_frame(bool sample, std::int64_t now_ns, double rtt_ns, std::size_t started_with,
                   bool dropped, timing t = timing::every) noexcept {
    leave_impl(sample, now_ns, rtt_ns, started_with, dropped, t, true);
  }
  /// A slot granted to a waiter whose completion was destroyed unrun (its
  /// io_context gone): nobody holds it, it goes back (no sample).
  void release_unclaimed() noexcept { leave(false, 0, 0, 0, false); }
  /// The options' classifier on `r` (`default_classify` without one). A
  /// classifier that throws counts the call as a failure, as the breaker does
  /// (levee/classify.hpp): it runs where the call ends, in noexcept code.
  outcome classify(const call_result& r) const noexcept;
  /// The limiter is gone: waiters end with `operation_aborted`.
  void close();

  /// Calls in flight now (for a call admitted from the queue).
  std::size_t in_flight() const noexcept;
  adaptive_limit_metrics metrics() const;
  /// The options in force; kept as long as the state.
  const adaptive_limit_options& options() const noexcept {
    return *options_.load(std::memory_order_acquire);
  }
  /// New options: see `basic_adaptive_limit::reconfigure`.
  void reconfigure(const adaptive_limit_options& o);
  const std::string& name() const noexcept { return listeners_->name; }

  std::uint64_t listen(std::uint32_t mask, std::function<void(const limit_event&)> fn,
                       boost::asio::any_io_executor ex);
  void unlisten(std::uint64_t id);

 private:
  // The round trips timed after a window's first calls.
  struct round_trip_tag;
  using round_trip_samples = one_in_16<round_trip_tag, false, 0xd1b54a32d192ed03u>;
  struct listener_entry {
    std::uint64_t id;
    std::uint32_t mask;
    std::shared_ptr<const std::function<void(const limit_event&)>> fn;
    boost::asio::any_io_executor executor;
  };
  // Replaced as a whole on listen/unlisten; a posted event holds its set
  // (and so the name its view points to).
  struct listener_set {
    std::string name;
    std::vector<listener_entry> entries;
  };
  // With listeners_mutex_ held (and not the spinlock): posts `kind` to the
  // listeners that want it; a post that fails to allocate is counted in
  // events_lost_.
  void emit(std::uint32_t kind, double from, double to, std::size_t in_flight);
  // Outside the spinlock, after a completion moved the limit from `before`:
  // a `changed` event from where the last one ended to the limit now.
  void changed_event(double before) noexcept;

  void leave_impl(bool sample, std::int64_t now_ns, double rtt_ns, std::size_t started_with,
                  bool dropped, timing t, bool counted) noexcept;
  // Under the spinlock: a frame counted out; true when the state must go.
  bool frame_out() noexcept {
    ++frames_out_;
    return orphaned_ && frames_out_ == frames_in_;
  }
  // Outside the spinlock: `frame_out` under it, then the state goes if that
  // was the last frame out.
  void count_out() noexcept;
  ~adaptive_limit_state() = default;  // by `orphan` or the last frame out

  double current() const noexcept;   // the limit, under the lock
  std::size_t cap() const noexcept;  // the limit as a whole number of calls, under the lock
  void limited_event(double limit, std::size_t in_flight) noexcept;
  bool grant_next(waiter_list& granted) noexcept;

  // The options in force, and every one it had (a reconfiguration keeps the
  // ones it replaced: their readers hold no lock), under listeners_mutex_.
  std::atomic<const adaptive_limit_options*> options_{nullptr};
  std::vector<std::unique_ptr<const adaptive_limit_options>> owned_;
  // Guards the members below it down to the counters (the algorithm, the
  // calls in flight, the queue): held for a few instructions, see above.
  mutable spinlock spinlock_;
  std::variant<gradient2, aimd> algorithm_;
  std::size_t in_flight_ = 0;
  std::size_t peak_in_flight_ = 0;
  bool closed_ = false;
  bool orphaned_ = false;                       // the owners are gone (`orphan`)
  std::size_t frames_in_ = 0, frames_out_ = 0;  // the counted frames (see the class)
  waiter_list queue_;
  std::uint64_t admitted_ = 0, limited_ = 0, samples_ = 0, drops_ = 0, reconfigurations_ = 0;
  double min_seen_ = 0, max_seen_ = 0;

  std::atomic<std::uint32_t> listening_{0};  // the union of the listeners' masks
  // A mutex, not the spinlock: events are posted (an allocation, a call out)
  // under it, so that none reaches a listener after its unlisten returned.
  std::mutex listeners_mutex_;
  std::shared_ptr<const listener_set> listeners_;
  std::uint64_t next_id_ = 1;
  double reported_ = 0;          // the `to` of the last `changed` event
  bool reported_valid_ = false;  // false until one, and after a listen
  std::atomic<std::uint64_t> events_lost_{0};
};

}  // namespace levee::detail
