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
  std::atomic<std::uint64_t> admitted_{0};
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> accepted_{0};
  event_hub<throttle_event> events_;
};

}  // namespace levee::detail
