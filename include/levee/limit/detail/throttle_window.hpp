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
  // `shared_ptr` (two locked instructions a call): a frame is counted in when
  // admitted (`request_frame`) and out when it ends (`finish_frame`, or
  // with `ignored` when abandoned), and the window goes with the last of its
  // owners (the `shared_ptr`s: handles and token-form operations, whose
  // deleter is `orphan`) and of those frames. A frame must be started while
  // an owner lives (as a breaker's call: docs/shedding.md, "Cost, threads, idle").
  bool request_frame(std::int64_t now) noexcept { return admit(now, frames_in_); }
  void finish_frame(std::int64_t now, outcome o) noexcept;  // may delete the window
  static void orphan(throttle_window* w) noexcept;          // the owners' deleter

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
  bool admit(std::int64_t now, std::atomic<std::uint64_t>& count) noexcept;
  void record(std::int64_t now, bool accepted) noexcept;  // under lock_
  bool frame_out() noexcept;                // under lock_: true when the window must go
  void advance(std::int64_t now) noexcept;  // under lock_
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
  std::atomic<std::uint64_t> admitted_{0};   // by request: try_acquire, the token form
  std::atomic<std::uint64_t> frames_in_{0};  // by request_frame
  std::uint64_t frames_out_ = 0;             // under lock_
  bool orphaned_ = false;                    // under lock_
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> accepted_{0};
  event_hub<throttle_event> events_;
};

}  // namespace levee::detail
