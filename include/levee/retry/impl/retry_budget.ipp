// levee: the retry budget, compiled once in lib/.
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/retry/retry_budget.hpp>

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

retry_budget::retry_budget(retry_budget_options options)
    : options_(detail::checked(options)),
      width_ns_(options_.ttl.count() / static_cast<std::int64_t>(options_.buckets)),
      ring_(options_.buckets) {}

void retry_budget::advance(std::int64_t index) noexcept {
  if (index <= cursor_.head && cursor_.started()) return;
  detail::ring_advance(ring_.data(), static_cast<std::uint32_t>(ring_.size()), cursor_, index,
                       [this](const bucket& b) {
                         successes_ -= b.successes;
                         retries_ -= b.retries;
                       });
}

double retry_budget::allowance() const noexcept {
  const double seconds = std::chrono::duration<double>(options_.ttl).count();
  return options_.ratio * static_cast<double>(successes_) +
         options_.min_retries_per_second * seconds - static_cast<double>(retries_);
}

void retry_budget::deposit(nanos now) noexcept {
  detail::spin_guard g(ring_lock_);
  advance(detail::floor_div(now.count(), width_ns_));
  ++ring_[cursor_.pos].successes;  // a late deposit counts in the newest bucket
  ++successes_;
}

bool retry_budget::try_withdraw(nanos now) noexcept {
  detail::spin_guard g(ring_lock_);
  advance(detail::floor_div(now.count(), width_ns_));
  if (allowance() < 1.0) return false;
  ++ring_[cursor_.pos].retries;
  ++retries_;
  return true;
}

retry_budget::snapshot retry_budget::state(nanos now) noexcept {
  detail::spin_guard g(ring_lock_);
  advance(detail::floor_div(now.count(), width_ns_));
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
