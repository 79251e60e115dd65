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
    : width_ns_(detail::checked(options).ttl.count() / static_cast<std::int64_t>(options.buckets)),
      ring_(options.buckets) {
  owned_.push_back(std::make_unique<const retry_budget_options>(options));
  options_.store(owned_.back().get(), std::memory_order_release);
}

void retry_budget::reconfigure(const retry_budget_options& o) {
  validate(o);  // throws, naming the member: nothing changed
  auto next = std::make_unique<const retry_budget_options>(o);
  std::lock_guard r(reconfigure_mutex_);  // one at a time: only it changes the options
  const retry_budget_options& old = options();
  const bool rebuild = o.ttl != old.ttl || o.buckets != old.buckets;
  std::vector<bucket> ring(rebuild ? o.buckets : 0);  // allocated before the spinlock
  owned_.reserve(owned_.size() + 1);
  detail::spin_guard g(ring_lock_);
  if (rebuild) {
    const std::int64_t width = o.ttl.count() / static_cast<std::int64_t>(o.buckets);
    if (cursor_.started()) {
      // What the window holds goes into the new window's current bucket.
      ring[0] = {successes_, retries_};
      const std::int64_t head_start = cursor_.head * width_ns_;  // a time within the clock's range
      cursor_.head = detail::floor_div(head_start, width);
      cursor_.pos = 0;
    }
    ring_.swap(ring);
    width_ns_ = width;
  }
  owned_.push_back(std::move(next));
  options_.store(owned_.back().get(), std::memory_order_release);
  ++reconfigurations_;
}

std::uint64_t retry_budget::reconfigurations() const noexcept {
  detail::spin_guard g(ring_lock_);
  return reconfigurations_;
}

void retry_budget::advance(std::int64_t index) noexcept {
  if (index <= cursor_.head && cursor_.started()) return;
  detail::ring_advance(ring_.data(), static_cast<std::uint32_t>(ring_.size()), cursor_, index,
                       [this](const bucket& b) {
                         successes_ -= b.successes;
                         retries_ -= b.retries;
                       });
}

double retry_budget::allowance() const noexcept {
  const retry_budget_options& o = options();  // under ring_lock_: as the window
  const double seconds = std::chrono::duration<double>(o.ttl).count();
  return o.ratio * static_cast<double>(successes_) + o.min_retries_per_second * seconds -
         static_cast<double>(retries_);
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
