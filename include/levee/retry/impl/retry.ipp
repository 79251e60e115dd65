// levee: retry policies, compiled once in lib/.
#pragma once

#include <levee/core/detail/saturating.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/retry/retry.hpp>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <random>
#include <stdexcept>
#include <string>

namespace levee {

void validate(const retry_options& o) {
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("retry_options", member, rule);
  };
  if (o.max_attempts < 1) reject("max_attempts", "must be at least 1");
  if (o.initial_delay < std::chrono::nanoseconds::zero())
    reject("initial_delay", "must not be negative");
  if (!(o.multiplier >= 1.0 && o.multiplier <= 100.0)) reject("multiplier", "must be in [1, 100]");
  if (o.max_delay < o.initial_delay) reject("max_delay", "must not be less than initial_delay");
  if (o.jitter != jitter_kind::none && o.jitter != jitter_kind::full &&
      o.jitter != jitter_kind::equal && o.jitter != jitter_kind::decorrelated)
    reject("jitter", "must be one of jitter_kind's values");
  if (o.max_retry_after < std::chrono::nanoseconds::zero())
    reject("max_retry_after", "must not be negative");
}

bool default_retryable(const call_result& r) noexcept {
  if (const auto* ec = r.error(); ec && *ec) {
    if (is_rejection(*ec) || is_cancellation(*ec)) return false;
    if (*ec == error::deadline_exceeded) return false;
    return true;
  }
  return r.threw();
}

namespace detail {
// std::random_device is read once per thread: a read took 6.1 us on the
// reference machine (its rdrand is slow under the hypervisor), which every
// new breaker, limit and throttle paid (bench/README.md, "A seed without
// std::random_device"). Each seed after that is the thread's splitmix64
// with the steady clock mixed in: a process forked after a thread seeded
// carries on the same sequence, and the clock makes two processes' seeds
// differ (jitter is there to spread them).
std::uint64_t random_seed() noexcept {
  thread_local splitmix64 generator{[] {
    std::random_device device;
    return static_cast<std::uint64_t>(device()) << 32 | device();
  }()};
  generator.state ^=
      static_cast<std::uint64_t>(std::chrono::steady_clock::now().time_since_epoch().count());
  return generator.next() | 1u;
}
}  // namespace detail

std::chrono::nanoseconds retry_schedule::next(const call_result& last) {
  const retry_options& o = *options_;
  ++retries_;
  if (o.retry_after) {
    if (auto hint = o.retry_after(last)) {
      return std::clamp(*hint, std::chrono::nanoseconds::zero(), o.max_retry_after);
    }
  }
  // In double nanoseconds, where nothing overflows (at worst +inf, which the
  // cap takes); the result saturates at nanoseconds::max() ("for ever").
  const double initial = static_cast<double>(o.initial_delay.count());
  const double cap = static_cast<double>(o.max_delay.count());
  const double growth = std::pow(o.multiplier, static_cast<double>(retries_ - 1));
  const double base = initial == 0 ? 0 : std::min(cap, initial * growth);
  double delay = base;
  switch (o.jitter) {
    case jitter_kind::none:
      break;
    case jitter_kind::full:
      delay = base * rng_.unit();
      break;
    case jitter_kind::equal:
      delay = base / 2 + base / 2 * rng_.unit();
      break;
    case jitter_kind::decorrelated: {
      const double high = std::max(initial, 3.0 * static_cast<double>(previous_.count()));
      delay = std::min(cap, initial + (high - initial) * rng_.unit());
      break;
    }
  }
  previous_ = std::min(detail::saturating_from_double(delay), o.max_delay);
  return previous_;
}

}  // namespace levee
