// levee: the rate limiter's token bucket, a GCRA on one atomic (sans-I/O, any
// thread).
#pragma once

#include <levee/core/detail/event_hub.hpp>
#include <levee/core/detail/thread_slot.hpp>
#include <levee/limit/rate_limiter_options.hpp>

#include <atomic>
#include <cstdint>
#include <limits>
#include <memory>
#include <mutex>
#include <vector>

namespace levee::detail {

/// What `rate_bucket::take` decided for one call.
struct rate_decision {
  enum class kind { admit, wait, reject };
  kind what = kind::reject;
  /// `wait`: when the token comes (ns on the bucket's clock).
  std::int64_t at = 0;
  /// `wait`: the bucket's "full again" time this reservation set, and the
  /// interval it added, for `rate_bucket::end_wait` to give the token back.
  std::int64_t reserved_until = 0;
  std::int64_t interval = 0;
  /// `wait`, `reject`: how long the call waits, or would have waited, for
  /// its token (`int64` max: never, the bucket's clock is at its end).
  std::int64_t wait = 0;
};

/// The token bucket as a GCRA: `tat_` is the time at which the bucket would
/// be full again ("theoretical arrival time"). A call at `now` takes a token
/// by moving it from `max(tat, now)` to that plus one emission interval, when
/// `max(tat, now) - now <= tau`, tau = interval * (burst - 1); otherwise its
/// token comes at `max(tat, now) - tau`, and it may reserve it (move `tat_`
/// the same way) and wait until then. One compare-and-swap per call, no
/// lock; the counters are relaxed atomics. Times are nanoseconds on the
/// limiter's clock; every sum saturates.
class rate_bucket : public std::enable_shared_from_this<rate_bucket> {
 public:
  /// `options` must be valid.
  explicit rate_bucket(const rate_limiter_options& options);

  /// The options in force; kept as long as the bucket.
  const rate_limiter_options& options() const noexcept {
    return params_.load(std::memory_order_acquire)->options;
  }

  /// New options (valid) at `now`: the rate and the bucket's size apply
  /// from now on; the tokens taken ahead of the refill stay owed (the time
  /// they stand for is rescaled to the new interval) and reserved waits keep
  /// their time.
  void reconfigure(const rate_limiter_options& options, std::int64_t now);

  /// Decides a call at `now` that may wait up to `max_wait` ns (>= 0).
  /// `admit` and `reject` are counted now; `wait` by `begin_wait` and `end_wait`.
  rate_decision take(std::int64_t now, std::int64_t max_wait) noexcept;

  /// The fast path, at `now` read on a coarse clock (one that lags the
  /// bucket's by at most a tick, `line` / 100): takes a token when there is
  /// one at `now` and the full bucket's time (`period / rate x burst`) is at
  /// least `line`, and counts the admission. Otherwise it changes nothing
  /// and returns false: decide with `take` at the precise now.
  /// Inline: the fast path's only call into the bucket.
  bool admit_now(std::int64_t now, std::int64_t line) noexcept {
    std::int64_t tat = tat_.load(std::memory_order_relaxed);
    for (;;) {
      const params& p = *params_.load(std::memory_order_acquire);
      if (p.full < line) return false;  // a tick's lag would show: the precise clock decides
      const std::int64_t base = tat > now ? tat : now;
      std::int64_t at;  // base - tau; an overflow (a clock near the end of int64): no
      if (base > std::numeric_limits<std::int64_t>::max() - p.interval ||
          __builtin_sub_overflow(base, p.tau, &at) || at > now)
        return false;
      if (tat_.compare_exchange_weak(tat, base + p.interval, std::memory_order_relaxed)) {
        // The first threads count on a word of their own, beside `tat_` on
        // the cache line the compare-and-swap just took: a plain store, no
        // second locked instruction. The others share `admitted_`.
        if (const unsigned slot = thread_slot(); slot < own_slots) {
          std::atomic<std::uint64_t>& c = admitted_own_[slot];
          c.store(c.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        } else {
          admitted_.fetch_add(1, std::memory_order_relaxed);
        }
        return true;
      }
    }
  }

  /// A wait that `take` started ended: `granted` (its token came, the call
  /// runs) or not (cancelled: the token goes back if nobody reserved one
  /// after it, else it is lost, never letting more than the rate through).
  /// `waited`: how long it waited (for the event; read only while some
  /// listener wants `waited` or `cancelled` events).
  void end_wait(const rate_decision& d, bool granted, std::int64_t waited) noexcept;
  /// A `wait` decision's wait began: counted in `waiting` until `end_wait`
  /// (by `rate_wait`, once the call holds its share of the bucket).
  /// Released, and read in `metrics` with acquire: a wait seen there holds
  /// its share.
  void begin_wait() noexcept { waiting_.fetch_add(1, std::memory_order_release); }

  /// A rejection `take` decided, for the listeners (call it only when some
  /// listener wants `rejected`): `allowed` is the wait the call was allowed,
  /// `deadline` whether its caller's time left was the bound.
  void rejected_event(const rate_decision& d, std::int64_t allowed, bool deadline) noexcept;

  /// The listeners.
  event_hub<rate_limiter_event>& events() noexcept { return events_; }

  /// The bucket and counters at `now`.
  rate_limiter_metrics metrics(std::int64_t now) const noexcept;

 private:
  struct params {
    rate_limiter_options options;
    std::int64_t interval;  // ns per token, >= 1
    std::int64_t tau;       // interval * (burst - 1), saturated
    std::int64_t full;      // tau + interval, saturated: a full bucket's refill
  };
  static params make_params(const rate_limiter_options& o) noexcept;

  std::atomic<const params*> params_{nullptr};
  std::mutex reconfigure_mutex_;                      // one reconfiguration at a time; owned_
  std::vector<std::unique_ptr<const params>> owned_;  // the current and the replaced
  // `tat_` and the admissions the fast path counted for the first
  // `own_slots` threads (`thread_slot`), each word written by its thread
  // only, on one cache line.
  static constexpr unsigned own_slots = 4;
  alignas(64) std::atomic<std::int64_t> tat_{std::numeric_limits<std::int64_t>::min()};  // full
  std::atomic<std::uint64_t> admitted_own_[own_slots] = {};
  std::atomic<std::uint64_t> waiting_{0};
  std::atomic<std::uint64_t> admitted_{0};
  std::atomic<std::uint64_t> waited_{0};
  std::atomic<std::uint64_t> rejected_{0};
  std::atomic<std::uint64_t> cancelled_{0};
  std::atomic<std::uint64_t> reconfigurations_{0};
  event_hub<rate_limiter_event> events_;
};

}  // namespace levee::detail
