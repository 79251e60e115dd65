// levee: the adaptive throttle's sliding window (sans-I/O, any thread).
#pragma once

#include <levee/core/detail/bucket_ring.hpp>
#include <levee/core/detail/event_hub.hpp>
#include <levee/core/detail/random.hpp>
#include <levee/core/detail/spinlock.hpp>
#include <levee/limit/throttle_options.hpp>

#include <atomic>
#include <cstdint>
#include <limits>
#include <vector>

namespace levee::detail {

/// Requests and accepts in a ring of time buckets, with running sums, and the
/// draw that decides a rejection. Every member function takes a short
/// internal lock (a few stores) or reads atomics: callers on any thread.
class throttle_window {
 public:
  explicit throttle_window(const throttle_options& options);

  /// Decides a request at `now` (ns on any one clock): true to let it
  /// through (it is counted when it ends, by `finish`); false to reject it,
  /// counted now as a request without an accept.
  bool request(std::int64_t now) noexcept;
  /// An admitted request ended at `now`: `success` counts a request and an
  /// accept, `failure` a request, `ignored` nothing.
  void finish(std::int64_t now, outcome o) noexcept;

  // The awaitable form's frames hold the window by address, not by a
  // `shared_ptr` (two locked instructions a call): a frame is counted in
  // `frames_` when admitted (`request_frame`) and out when it ends
  // (`finish_frame`, or with `ignored` when abandoned), and the window goes
  // with the last of its owners (the `shared_ptr`s: handles and token-form
  // operations, which hold one count between them and whose deleter is
  // `orphan`) and of those frames. A frame must be started while an owner
  // lives (as a breaker's call: docs/shedding.md, "Cost, threads, idle").
  bool request_frame(std::int64_t now) noexcept { return admit(now, frames_); }
  /// May delete the window.
  void finish_frame(std::int64_t now, outcome o) noexcept {
    // An accept that cannot move the probability: counted and the frame out
    // in one locked instruction (see accept_until_); about 2^30 of them at
    // most wait to be folded (threads between the check and the add may
    // pass it together; the high half holds 2^32).
    if (o == outcome::success && now < accept_until_.load(std::memory_order_relaxed) &&
        frames_.load(std::memory_order_relaxed) < (one_accept << 30)) {
      if (end_unfolded()) last_out();
      return;
    }
    finish_frame_locked(now, o);
  }
  static void orphan(throttle_window* w) noexcept;  // the owners' deleter
  /// For tests: a frame's end as `finish_frame` counts an accept without the
  /// lock, after its check of accept_until_ (as a thread preempted between
  /// the two does, once the window has moved).
  void end_frame_unfolded_for_test() noexcept {
    if (end_unfolded()) last_out();
  }

  /// The window and counters at `now`.
  throttle_metrics metrics(std::int64_t now) noexcept;

  const throttle_options& options() const noexcept { return options_; }

  /// The listeners: a rejection is posted to those that want it.
  event_hub<throttle_event>& events() noexcept { return events_; }

 private:
  struct bucket {
    std::uint64_t requests = 0;
    std::uint64_t accepts = 0;
  };
  // Lock-free while nothing could be rejected: the probability was 0 at the
  // last change to the window, and no bucket has expired since. Inline:
  // the awaitable form's admission.
  bool admit(std::int64_t now, std::atomic<std::uint64_t>& count) noexcept {
    if (now < admit_until_.load(std::memory_order_relaxed)) {
      count.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    return admit_locked(now, count);
  }
  bool admit_locked(std::int64_t now, std::atomic<std::uint64_t>& count) noexcept;
  // A frame's end counted in `frames_`: an accept without the lock, and the
  // frame out. True when it held the window's last count.
  bool end_unfolded() noexcept {
    return (frames_.fetch_add(one_accept - 1, std::memory_order_acq_rel) & held_mask) == 1;
  }
  // A frame (or the owners) out of `frames_`: true when it held the last count.
  bool count_out() noexcept {
    return (frames_.fetch_sub(1, std::memory_order_acq_rel) & held_mask) == 1;
  }
  void record(std::int64_t now, bool accepted) noexcept;  // under lock_
  // Under lock_: the accepts `finish_frame` left in `frames_` go into the
  // newest bucket (before it moves) and the sums.
  void fold() noexcept;
  void finish_frame_locked(std::int64_t now, outcome o) noexcept;
  // After the last count of `frames_` went: waits out a holder of lock_,
  // which may have given up its count under it, then deletes the window.
  void last_out() noexcept;
  void advance(std::int64_t now) noexcept;  // under lock_, folds first
  double probability() const noexcept;      // under lock_, after advance
  // Under lock_, after the sums or the cursor changed: `p` is probability().
  void refresh_admit_until(double p) noexcept;

  throttle_options options_;
  std::int64_t width_ns_;
  spinlock lock_;  // the ring, its cursor, the sums and the generator
  std::vector<bucket> ring_;
  ring_cursor cursor_;
  std::uint64_t requests_ = 0;  // sums over the ring
  std::uint64_t accepts_ = 0;
  splitmix64 random_;
  // The fast path (issue 23): while the probability is 0, a request before
  // this time (the end of the newest bucket, as of the last change to the
  // sums) is let through without the lock. Only the sums (changed under
  // lock_, which refreshes this) and the ring's expiry (at the next bucket,
  // never before this time) change the probability. INT64_MIN: take the lock.
  std::atomic<std::int64_t> admit_until_{std::numeric_limits<std::int64_t>::min()};
  // While the probability is 0 and the sums hold at least minimum_requests,
  // an accept cannot raise it (each adds 1 - k <= 0 to the formula's
  // numerator): one ending before this time (admit_until_, or INT64_MIN
  // below minimum_requests) is counted in `frames_` without the lock, and
  // folded into the newest bucket by the next holder of lock_ that moves or
  // reads the window (`advance`), before that bucket can move: the bucket it
  // ended in, unless its thread was delayed between its clock read and its
  // add, when it is a later one (as for a late end under the lock). Folded
  // accepts that take the sums to minimum_requests make the probability be
  // decided again (`fold`).
  std::atomic<std::int64_t> accept_until_{std::numeric_limits<std::int64_t>::min()};
  // Low 32 bits: the counts that keep the window (1 for the owners until
  // `orphan`, 1 per frame in flight); high 32 bits: accepts of frames that
  // ended without the lock, not yet folded (see accept_until_). One word, so
  // that such a frame's end is one locked instruction.
  static constexpr std::uint64_t held_mask = 0xffff'ffffu;
  static constexpr std::uint64_t one_accept = std::uint64_t{1} << 32;
  std::atomic<std::uint64_t> frames_{1};
  std::uint64_t frames_done_ = 0;           // under lock_: frames ended, folded ones included
  std::atomic<std::uint64_t> admitted_{0};  // by request: try_acquire, the token form
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> accepted_{0};
  event_hub<throttle_event> events_;
};

}  // namespace levee::detail
