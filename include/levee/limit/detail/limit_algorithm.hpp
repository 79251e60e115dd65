// levee: the adaptive limit's algorithms, sans-I/O: samples in, a limit out.
#pragma once

#include <cstddef>
#include <cstdint>

namespace levee::detail {

/// An exponential moving average over about `window` samples, a plain mean
/// for the first `warmup` (Netflix concurrency-limits' ExpAvgMeasurement).
class exp_average {
 public:
  exp_average(std::size_t window, std::size_t warmup) noexcept
      : factor_(2.0 / (static_cast<double>(window) + 1.0)), warmup_(warmup) {}
  double add(double sample) noexcept;
  double value() const noexcept { return value_; }
  void scale(double by) noexcept { value_ *= by; }
  /// A new window (a reconfiguration): the average so far is kept.
  void set_window(std::size_t window) noexcept {
    factor_ = 2.0 / (static_cast<double>(window) + 1.0);
  }

 private:
  double factor_;
  std::size_t warmup_;
  std::size_t count_ = 0;
  double sum_ = 0;
  double value_ = 0;
};

/// Netflix's Gradient2 behind its WindowedLimit: samples are averaged over a
/// window (at least `window_ns` long and `window_samples` samples); each
/// window's round trip is compared with a long-term one (an average over
/// `long_window` windows). When the window's exceeds `tolerance` times the
/// long-term one, calls are queueing somewhere and the limit shrinks in
/// proportion (by half at most per window); otherwise it grows by
/// `queue_size`; both smoothed by `smoothing`. It does not move while fewer
/// than half the limit's calls were in flight (nothing is learned about a
/// limit nobody reaches).
class gradient2 {
 public:
  struct parameters {
    double initial, min, max, smoothing, tolerance, queue_size;
    std::size_t long_window;
    std::int64_t window_ns;
    std::size_t window_samples;
  };
  explicit gradient2(const parameters& p) noexcept
      : p_(p), limit_(p.initial), long_rtt_(p.long_window, 10) {}

  /// One call that ended at `now_ns` after `rtt_ns` (> 0), with `in_flight`
  /// calls running when it started (itself included), standing for `weight`
  /// calls (a call timed as one of a sample: the calls it stands for, so that
  /// the window's mean and count estimate those of every call). Returns the
  /// limit, updated when the sample closes a window.
  double sample(std::int64_t now_ns, double rtt_ns, std::size_t in_flight,
                std::size_t weight = 1) noexcept;
  /// A successful call that was not timed: only its calls in flight count
  /// (the window's peak).
  void note(std::size_t in_flight) noexcept {
    if (in_flight > window_in_flight_) window_in_flight_ = in_flight;
  }
  /// True while the open window has fewer than `every_call_samples` (or
  /// `window_samples`, if more) calls: every call is timed until then, one
  /// in 16 after (adaptive_limit_state::timing).
  bool times_every_call() const noexcept {
    return window_count_ < every_call_samples || window_count_ < p_.window_samples;
  }
  /// The calls of a window that are all timed before sampling starts.
  static constexpr std::size_t every_call_samples = 64;
  /// One window: its mean round trip and the most calls in flight in it.
  double update(double rtt_ns, std::size_t in_flight) noexcept;
  double limit() const noexcept { return limit_; }
  /// New parameters (a reconfiguration): the limit (clamped to the new
  /// bounds), the long-term round trip and the open window are kept.
  void reconfigure(const parameters& p) noexcept {
    p_ = p;
    long_rtt_.set_window(p.long_window);
    limit_ = limit_ < p.min ? p.min : (limit_ > p.max ? p.max : limit_);
  }
  double long_rtt() const noexcept { return long_rtt_.value(); }
  std::uint64_t windows() const noexcept { return windows_; }

 private:
  parameters p_;
  double limit_;
  exp_average long_rtt_;
  bool window_open_ = false;
  std::int64_t window_start_ = 0;
  double window_sum_ = 0;
  std::size_t window_count_ = 0, window_in_flight_ = 0;
  std::uint64_t windows_ = 0;
};

/// Loss-based AIMD (Netflix's AIMDLimit, TCP's congestion avoidance): a drop
/// (an error, a timeout, or a round trip over `timeout_ns`) multiplies the
/// limit by `backoff` (floored); a success while at least half the limit is in
/// flight adds one.
class aimd {
 public:
  struct parameters {
    double initial, min, max, backoff;
    double timeout_ns;
  };
  explicit aimd(const parameters& p) noexcept : p_(p), limit_(p.initial) {}
  double update(double rtt_ns, std::size_t in_flight, bool dropped) noexcept;
  double limit() const noexcept { return limit_; }
  /// New parameters: the limit is kept, clamped to the new bounds.
  void reconfigure(const parameters& p) noexcept {
    p_ = p;
    limit_ = limit_ < p.min ? p.min : (limit_ > p.max ? p.max : limit_);
  }

 private:
  parameters p_;
  double limit_;
};

}  // namespace levee::detail
