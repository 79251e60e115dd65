// levee: one call waiting for its reserved token, and the time point its
// timer waits for.
#pragma once

#include <levee/limit/detail/rate_bucket.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <utility>

namespace levee::detail {

/// Nanoseconds on `Clock` now (its epoch's count, as the bucket keeps time).
template <class Clock>
std::int64_t rate_now() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch())
      .count();
}

/// `ns` (nanoseconds since `Clock`'s epoch) as a time point of `Clock`,
/// rounded up: a waiter never wakes before its token.
template <class Clock>
typename Clock::time_point rate_time_point(std::int64_t ns) noexcept {
  return typename Clock::time_point(
      std::chrono::ceil<typename Clock::duration>(std::chrono::nanoseconds(ns)));
}

/// A reservation that `rate_bucket::take` made: ends the wait once, granted
/// (`grant`) or not (destroyed first: the wait was cancelled, or its frame
/// destroyed with its io_context), so that the bucket's counters and the
/// reserved token are never left behind.
class rate_wait {
 public:
  rate_wait(std::shared_ptr<rate_bucket> b, const rate_decision& d) noexcept
      : bucket_(std::move(b)), decision_(d) {}
  rate_wait(rate_wait&& other) noexcept
      : bucket_(std::move(other.bucket_)), decision_(other.decision_) {}
  rate_wait& operator=(rate_wait&&) = delete;
  ~rate_wait() {
    if (bucket_) bucket_->end_wait(decision_, false);
  }

  /// The token came: the call runs.
  void grant() noexcept {
    if (bucket_) bucket_->end_wait(decision_, true);
    bucket_.reset();
  }

 private:
  std::shared_ptr<rate_bucket> bucket_;
  rate_decision decision_;
};

}  // namespace levee::detail
