/// \file
/// A retry budget shared by many callers.
#pragma once

#include <levee/core/detail/bucket_ring.hpp>
#include <levee/core/detail/spinlock.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <vector>

namespace levee {

/// Finagle's retry budget: retries may add at most `ratio` of the recent
/// successful traffic, plus a small floor so that a quiet or just-started
/// client can still retry.
///
/// Over the last `ttl`, a retry is allowed while
///
///     retries + 1 <= ratio * successes + min_retries_per_second * ttl_in_seconds
///
/// where `successes` counts calls that succeeded and `retries` counts retries
/// already granted, both within the window. With the defaults (20 %, 10 per
/// second, 10 s) a client that succeeds 1,000 times in 10 s may retry 300
/// times in that window; a client whose every call fails may retry 100 times,
/// however many calls it makes. So retries can never multiply load on a
/// failing dependency the way "retry each call up to 3 times" does.
///
/// (gRPC's token bucket was the other candidate; Finagle's has a rate that does
/// not depend on the failure rate in between and a floor stated in retries per
/// second, which is what operators reason about.)
struct retry_budget_options {
  /// Retries allowed per success in the window. In [0, 10].
  double ratio = 0.2;
  /// Retries always allowed per second, even with no success. >= 0.
  double min_retries_per_second = 10;
  /// How long a success or a retry counts. > 0, up to `nanoseconds::max()`.
  std::chrono::nanoseconds ttl = std::chrono::seconds(10);
  /// Granularity of the window: `ttl / buckets` each. In [1, 1000].
  std::size_t buckets = 10;
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const retry_budget_options& options);

/// The budget. Sans-I/O: callers pass the current time, any clock's, as a
/// duration since that clock's epoch (the retry layer does it for you). Safe to
/// share between threads: every member function takes a short internal lock.
class retry_budget {
 public:
  /// A time: since any clock's epoch, the same clock for every call.
  using nanos = std::chrono::nanoseconds;

  /// An empty budget: only the floor (`min_retries_per_second`) allows
  /// retries until successes come.
  /// \param options Its settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  explicit retry_budget(retry_budget_options options = {});

  /// A call succeeded: it earns `ratio` retries for the next `ttl`.
  /// \param now The time of the success.
  void deposit(nanos now) noexcept;

  /// Asks for one retry.
  /// \param now The time of the request.
  /// \return true: granted and counted. False: the budget is spent; the
  /// caller should give up and return its last error.
  bool try_withdraw(nanos now) noexcept;

  /// Successes and granted retries in the window, and how many more retries
  /// would be granted now.
  struct snapshot {
    std::uint64_t successes = 0;  ///< successes deposited in the window
    std::uint64_t retries = 0;    ///< retries granted in the window
    std::uint64_t available = 0;  ///< retries `try_withdraw` would grant now
  };
  /// The budget's window at `now`.
  /// \param now The current time (the window moves to it).
  /// \return the counts.
  snapshot state(nanos now) noexcept;

  /// The options in force: the constructor's, or the last `reconfigure`'s.
  /// \return them, as validated; valid as long as the budget (a
  /// reconfiguration keeps the options it replaced).
  const retry_budget_options& options() const noexcept {
    return *options_.load(std::memory_order_acquire);
  }

  /// Applies new options to the running budget (docs/reconfigure.md),
  /// thread-safe against every other member function. A new `ratio` and
  /// `min_retries_per_second` apply to the next request, over the window as
  /// it is: the successes and retries it holds are kept. A new `ttl` or
  /// `buckets` rebuilds the window with the new width: what the old window
  /// held is carried into the new one's current bucket (it then counts for
  /// up to one new `ttl`, and leaves with that bucket).
  /// \param options The new options; validated as by the constructor.
  /// \throws std::invalid_argument naming the member when `options` is
  /// invalid; nothing changes then.
  void reconfigure(const retry_budget_options& options);

  /// Times `reconfigure` applied new options.
  /// \return that count, since construction.
  std::uint64_t reconfigurations() const noexcept;

 private:
  struct bucket {
    std::uint64_t successes = 0;
    std::uint64_t retries = 0;
  };
  void advance(std::int64_t index) noexcept;  // under ring_lock_: makes `index` the head if newer
  double allowance() const noexcept;          // under ring_lock_, after advance

  // The options in force (written under ring_lock_ too), and every one the
  // budget had (their readers hold no lock), under reconfigure_mutex_.
  std::atomic<const retry_budget_options*> options_{nullptr};
  std::vector<std::unique_ptr<const retry_budget_options>> owned_;
  std::mutex reconfigure_mutex_;
  std::uint64_t reconfigurations_ = 0;  // under ring_lock_
  std::int64_t width_ns_;
  mutable detail::spinlock ring_lock_;  // the ring, its cursor and sums, width_ns_
  std::vector<bucket> ring_;
  detail::ring_cursor cursor_;
  std::uint64_t successes_ = 0;  // sums over the ring
  std::uint64_t retries_ = 0;
};

}  // namespace levee
