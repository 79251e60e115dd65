// levee: one call waiting for its reserved token, and the time point its
// timer waits for.
#pragma once

#include <levee/breaker/detail/window_clock.hpp>
#include <levee/limit/detail/rate_bucket.hpp>

#include <algorithm>
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

/// Decides a call that may wait up to `max_wait` ns, as `rate_bucket::take`
/// at `Clock`'s now. The fast path: when the coarse clock may time the
/// bucket (`rate_bucket::admit_now`), a token there at the coarse clock's
/// now admits the call with no precise read; anything else (no token then,
/// a wait, a rejection) is decided on the precise clock, read into `now`
/// (left unread, 0, on an admission on the fast path).
template <class Clock>
rate_decision rate_take(rate_bucket& b, std::int64_t max_wait, std::int64_t& now) noexcept {
  const std::int64_t line = coarse_line<Clock>().count();
  if (line != std::chrono::nanoseconds::max().count() &&
      b.admit_now(window_now<Clock>().count(), line))
    return {rate_decision::kind::admit};
  now = rate_now<Clock>();
  return b.take(now, max_wait);
}

/// Posts a rejection to the listeners that want it. `allowed`: the wait the
/// call was allowed; `may_wait`: whether the caller could wait at all (not
/// `try_acquire`), for the event's `deadline`.
inline void rate_rejected(rate_bucket& b, const rate_decision& d, std::int64_t allowed,
                          bool may_wait) noexcept {
  if (!b.events().wants(rate_limiter_event_kind::rejected)) return;
  const std::int64_t most = b.options().max_wait.count();
  b.rejected_event(d, allowed, may_wait && allowed < most && d.wait <= most);
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
/// `now` reads the bucket's clock, for the time a cancelled wait lasted
/// (read only while some listener wants `cancelled` events).
class rate_wait {
 public:
  using clock_fn = std::int64_t (*)() noexcept;
  rate_wait(std::shared_ptr<rate_bucket> b, const rate_decision& d, std::int64_t start,
            clock_fn now) noexcept
      : bucket_(std::move(b)), decision_(d), start_(start), now_(now) {
    bucket_->begin_wait();  // visible in `waiting` once the wait holds its share
  }
  rate_wait(rate_wait&& other) noexcept
      : bucket_(std::move(other.bucket_)),
        decision_(other.decision_),
        start_(other.start_),
        now_(other.now_) {}
  rate_wait& operator=(rate_wait&&) = delete;
  ~rate_wait() {
    if (!bucket_) return;
    const bool wanted = bucket_->events().wants(rate_limiter_event_kind::cancelled);
    bucket_->end_wait(decision_, false, wanted ? std::max<std::int64_t>(0, now_() - start_) : 0);
  }

  /// The token came: the call runs (it waited until the token's time).
  void grant() noexcept {
    if (bucket_) bucket_->end_wait(decision_, true, decision_.wait);
    bucket_.reset();
  }

 private:
  std::shared_ptr<rate_bucket> bucket_;
  rate_decision decision_;
  std::int64_t start_;
  clock_fn now_;
};

}  // namespace levee::detail
