// levee: the retry budget, compiled once in lib/.
#pragma once

#include <levee/detail/validate.hpp>
#include <levee/retry_budget.hpp>

#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>

namespace levee {

void validate(const retry_budget_options& o) {
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("retry_budget_options", member, rule);
  };
  if (!(o.ratio >= 0.0 && o.ratio <= 10.0)) reject("ratio", "must be in [0, 10]");
  if (!(o.min_retries_per_second >= 0.0 && o.min_retries_per_second <= 1e9))
    reject("min_retries_per_second", "must be in [0, 1e9]");
  if (o.ttl <= std::chrono::nanoseconds::zero()) reject("ttl", "must be greater than zero");
  if (o.buckets < 1 || o.buckets > 1000) reject("buckets", "must be in [1, 1000]");
  if (o.ttl.count() / static_cast<std::int64_t>(o.buckets) < 1)
    reject("buckets", "must not exceed ttl in nanoseconds");
}

namespace {
std::int64_t floor_div(std::int64_t a, std::int64_t b) {
  return a / b - (a % b != 0 && a < 0 ? 1 : 0);  // no negation: safe down to min()
}
}  // namespace

retry_budget::retry_budget(retry_budget_options options)
    : options_(detail::checked(options)),
      width_ns_(options_.ttl.count() / static_cast<std::int64_t>(options_.buckets)),
      ring_(options_.buckets) {}

void retry_budget::advance(std::int64_t index) noexcept {
  if (!started_ || index - head_ >= static_cast<std::int64_t>(ring_.size())) {
    for (auto& b : ring_) b = {};
    successes_ = retries_ = 0;
    head_pos_ = 0;
    started_ = true;
  } else {
    for (std::int64_t i = head_; i < index; ++i) {
      if (++head_pos_ == ring_.size()) head_pos_ = 0;
      successes_ -= ring_[head_pos_].successes;
      retries_ -= ring_[head_pos_].retries;
      ring_[head_pos_] = {};
    }
  }
  head_ = index;
}

double retry_budget::allowance() const noexcept {
  const double seconds = std::chrono::duration<double>(options_.ttl).count();
  return options_.ratio * static_cast<double>(successes_) +
         options_.min_retries_per_second * seconds - static_cast<double>(retries_);
}

void retry_budget::deposit(nanos now) noexcept {
  detail::spin_guard g(lock_);
  const std::int64_t index = floor_div(now.count(), width_ns_);
  if (!started_ || index > head_) advance(index);
  ++ring_[head_pos_].successes;  // a late deposit counts in the newest bucket
  ++successes_;
}

bool retry_budget::try_withdraw(nanos now) noexcept {
  detail::spin_guard g(lock_);
  const std::int64_t index = floor_div(now.count(), width_ns_);
  if (!started_ || index > head_) advance(index);
  if (allowance() < 1.0) return false;
  ++ring_[head_pos_].retries;
  ++retries_;
  return true;
}

retry_budget::snapshot retry_budget::state(nanos now) noexcept {
  detail::spin_guard g(lock_);
  const std::int64_t index = floor_div(now.count(), width_ns_);
  if (!started_ || index > head_) advance(index);
  const double a = std::floor(allowance());
  std::uint64_t available = 0;
  if (a >= 18446744073709551616.0) {  // 2^64
    available = std::numeric_limits<std::uint64_t>::max();
  } else if (a > 0) {
    available = static_cast<std::uint64_t>(a);
  }
  return {successes_, retries_, available};
}

}  // namespace levee
