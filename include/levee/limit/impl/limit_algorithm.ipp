// levee: the adaptive limit's algorithms (Gradient2, AIMD), compiled once in lib/.
#pragma once

#include <levee/limit/detail/limit_algorithm.hpp>

#include <algorithm>
#include <cmath>

namespace levee::detail {

double exp_average::add(double sample) noexcept {
  if (count_ < warmup_) {
    ++count_;
    sum_ += sample;
    value_ = sum_ / static_cast<double>(count_);
  } else {
    value_ = value_ * (1 - factor_) + sample * factor_;
  }
  return value_;
}

double gradient2::sample(std::int64_t now_ns, double rtt_ns, std::size_t in_flight,
                         std::size_t weight) noexcept {
  if (!window_open_) {
    window_open_ = true;
    window_start_ = now_ns;
  }
  window_sum_ += rtt_ns * static_cast<double>(weight);
  window_count_ += weight;
  window_in_flight_ = std::max(window_in_flight_, in_flight);
  if (now_ns - window_start_ < p_.window_ns || window_count_ < p_.window_samples) return limit_;
  const double mean = window_sum_ / static_cast<double>(window_count_);
  const std::size_t peak = window_in_flight_;
  window_open_ = false;
  window_sum_ = 0;
  window_count_ = window_in_flight_ = 0;
  ++windows_;
  return update(mean, peak);
}

double gradient2::update(double rtt_ns, std::size_t in_flight) noexcept {
  const double short_rtt = rtt_ns;
  const double long_rtt = long_rtt_.add(rtt_ns);
  // After a long spell of high latency the long-term average lags far behind
  // a recovered downstream: pull it down faster than the average would.
  if (long_rtt / short_rtt > 2) long_rtt_.scale(0.9);
  // Nothing is learned about a limit nobody comes near.
  if (static_cast<double>(in_flight) < limit_ / 2) return limit_;
  // At most halve per sample (outliers), never grow from the gradient itself:
  // growth is the queue_size term.
  const double gradient = std::clamp(p_.tolerance * long_rtt_.value() / short_rtt, 0.5, 1.0);
  double next = limit_ * gradient + p_.queue_size;
  next = limit_ * (1 - p_.smoothing) + next * p_.smoothing;
  limit_ = std::clamp(next, p_.min, p_.max);
  return limit_;
}

double aimd::update(double rtt_ns, std::size_t in_flight, bool dropped) noexcept {
  if (dropped || rtt_ns > p_.timeout_ns) {
    limit_ = std::max(p_.min, std::floor(limit_ * p_.backoff));
  } else if (static_cast<double>(in_flight) * 2 >= limit_) {
    limit_ = std::min(p_.max, limit_ + 1);
  }
  return limit_;
}

}  // namespace levee::detail
