// levee: the rate limiter's bucket, validation and exposition, compiled once
// in lib/.
#pragma once

#include <levee/core/detail/prometheus_text.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/limit/detail/rate_bucket.hpp>
#include <levee/limit/rate_limiter_options.hpp>
#include <levee/limit/rate_limiter_registry.hpp>

#include <algorithm>
#include <cmath>
#include <ostream>

namespace levee {

void validate(const rate_limiter_options& o) {
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("rate_limiter_options", member, rule);
  };
  if (o.rate < 1) reject("rate", "must be at least 1");
  if (o.period <= std::chrono::nanoseconds::zero()) reject("period", "must be greater than zero");
  if (o.rate > static_cast<std::uint64_t>(o.period.count()))
    reject("rate", "must not exceed period in nanoseconds (at most one token per ns)");
  if (o.burst < 1 || o.burst > (std::uint64_t{1} << 30)) reject("burst", "must be in [1, 2^30]");
  // A full bucket's refill time, period / rate x burst, must fit the bucket's
  // int64 clock with room to spare: at most 2^62 ns (about 146 years).
  if (o.rate >= 1 && o.period > std::chrono::nanoseconds::zero() && o.burst >= 1 &&
      o.burst <= (std::uint64_t{1} << 30)) {
    const auto rate = static_cast<long double>(o.rate);
    const long double refill =
        static_cast<long double>(o.period.count()) / rate * static_cast<long double>(o.burst);
    if (refill > static_cast<long double>(std::int64_t{1} << 62))
      reject("period",
             "must make period / rate x burst (a full bucket's refill) at most 2^62 ns, about "
             "146 years");
  }
  if (o.max_wait < std::chrono::nanoseconds::zero()) reject("max_wait", "must not be negative");
}

void validate(const rate_limiter_registry_options& o) {
  validate(o.defaults);
  for (const auto& [key, options] : o.overrides) validate(options);
  if (o.max_limiters < 1)
    detail::reject_option("rate_limiter_registry_options", "max_limiters", "must be at least 1");
}

void write_rate_limiters_prometheus(std::ostream& out,
                                    const std::vector<named_rate_limiter_metrics>& limiters) {
  using m_t = rate_limiter_metrics;
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
    for (const auto& l : limiters) {
      out << name << "{rate_limiter=\"" << detail::escape(l.name) << "\"} " << value(l.metrics)
          << '\n';
    }
  };
  family("levee_rate_limiter_tokens", "gauge", "Whole tokens in the rate limiter's bucket.",
         [](const m_t& m) { return detail::number(m.tokens); });
  family("levee_rate_limiter_waiting", "gauge", "Calls waiting for their token.",
         [](const m_t& m) { return detail::number(m.waiting); });
  family("levee_rate_limiter_admitted_calls_total", "counter",
         "Calls the rate limiter let through, after a wait or not.",
         [](const m_t& m) { return detail::number(m.admitted); });
  family("levee_rate_limiter_waited_calls_total", "counter",
         "Calls let through after waiting for their token.",
         [](const m_t& m) { return detail::number(m.waited); });
  family("levee_rate_limiter_rejected_calls_total", "counter",
         "Calls refused with rate_limited, without being started.",
         [](const m_t& m) { return detail::number(m.rejected); });
  family("levee_rate_limiter_cancelled_waits_total", "counter",
         "Waits for a token that the caller cancelled.",
         [](const m_t& m) { return detail::number(m.cancelled); });
  family("levee_rate_limiter_reconfigurations_total", "counter",
         "Times reconfigure applied new options to the rate limiter.",
         [](const m_t& m) { return detail::number(m.reconfigurations); });
}

namespace detail {

namespace rate {

constexpr std::int64_t int64_max = std::numeric_limits<std::int64_t>::max();
constexpr std::int64_t int64_min = std::numeric_limits<std::int64_t>::min();

// a + b and a - b, clamped to the range of int64 (any signs: a manual clock
// may read negative times).
inline std::int64_t add_sat(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t r;
  if (__builtin_add_overflow(a, b, &r)) return b > 0 ? int64_max : int64_min;
  return r;
}
inline std::int64_t sub_sat(std::int64_t a, std::int64_t b) noexcept {
  std::int64_t r;
  if (__builtin_sub_overflow(a, b, &r)) return b < 0 ? int64_max : int64_min;
  return r;
}

}  // namespace rate

rate_bucket::params rate_bucket::make_params(const rate_limiter_options& o) noexcept {
  const auto rate = static_cast<std::int64_t>(o.rate);  // <= period.count()
  const std::int64_t period = o.period.count();
  const std::int64_t interval = period / rate + (period % rate != 0);  // rounded up
  const auto more = static_cast<std::int64_t>(o.burst - 1);            // < 2^30
  const std::int64_t tau =
      more != 0 && interval > rate::int64_max / more ? rate::int64_max : interval * more;
  return {o, interval, tau, rate::add_sat(tau, interval)};
}

rate_bucket::rate_bucket(const rate_limiter_options& options) {
  owned_.push_back(std::make_unique<const params>(make_params(options)));
  params_.store(owned_.back().get(), std::memory_order_release);
}

void rate_bucket::reconfigure(const rate_limiter_options& options, std::int64_t now) {
  std::lock_guard g(reconfigure_mutex_);
  const params& before = *params_.load(std::memory_order_relaxed);
  owned_.push_back(std::make_unique<const params>(make_params(options)));
  const params& after = *owned_.back();
  params_.store(&after, std::memory_order_release);
  // The tokens taken ahead of the refill stay owed, as tokens: the time
  // they stand for is rescaled to the new interval.
  std::int64_t tat = tat_.load(std::memory_order_relaxed);
  while (tat > now) {
    const long double owed =
        (static_cast<long double>(tat) - static_cast<long double>(now)) / before.interval;
    const long double ns = owed * after.interval;
    const long double room =
        static_cast<long double>(rate::int64_max) - static_cast<long double>(now);
    const std::int64_t next = ns >= room ? rate::int64_max : now + std::llround(ns);
    if (tat_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) break;
  }
  reconfigurations_.fetch_add(1, std::memory_order_relaxed);
}

rate_decision rate_bucket::take(std::int64_t now, std::int64_t max_wait) noexcept {
  std::int64_t tat = tat_.load(std::memory_order_relaxed);
  for (;;) {
    // Loaded on each try: a reconfigure between two tries rescaled `tat`.
    const params& p = *params_.load(std::memory_order_acquire);
    const std::int64_t base = std::max(tat, now);
    // The bucket's clock cannot go further (a clock near the end of int64):
    // refuse rather than saturate, which would refill the bucket for ever.
    if (base > rate::int64_max - p.interval) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return {rate_decision::kind::reject, 0, 0, 0, rate::int64_max};
    }
    const std::int64_t at = rate::sub_sat(base, p.tau);
    const std::int64_t wait = at > now ? rate::sub_sat(at, now) : 0;
    if (wait > max_wait) {
      rejected_.fetch_add(1, std::memory_order_relaxed);
      return {rate_decision::kind::reject, at, 0, 0, wait};
    }
    const std::int64_t next = base + p.interval;  // no overflow: checked above
    if (tat_.compare_exchange_weak(tat, next, std::memory_order_relaxed)) {
      if (wait == 0) {
        admitted_.fetch_add(1, std::memory_order_relaxed);
        return {rate_decision::kind::admit};
      }
      return {rate_decision::kind::wait, at, next, p.interval, wait};  // rate_wait counts it
    }
  }
}

void rate_bucket::end_wait(const rate_decision& d, bool granted, std::int64_t waited) noexcept {
  const auto kind = granted ? rate_limiter_event_kind::waited : rate_limiter_event_kind::cancelled;
  if (events_.wants(kind)) {
    rate_limiter_event e;
    e.kind = kind;
    e.wait = std::chrono::nanoseconds(waited);
    e.when = std::chrono::system_clock::now();
    events_.emit(e);
  }
  if (granted) {
    admitted_.fetch_add(1, std::memory_order_relaxed);
    waited_.fetch_add(1, std::memory_order_relaxed);
  } else {
    // Back only if this was the last reservation: a later one keeps its time.
    std::int64_t expected = d.reserved_until;
    tat_.compare_exchange_strong(expected, rate::sub_sat(d.reserved_until, d.interval),
                                 std::memory_order_relaxed);
    cancelled_.fetch_add(1, std::memory_order_relaxed);
  }
  waiting_.fetch_sub(1, std::memory_order_relaxed);
}

void rate_bucket::rejected_event(const rate_decision& d, std::int64_t allowed,
                                 bool deadline) noexcept {
  rate_limiter_event e;
  e.wait = std::chrono::nanoseconds(d.wait);
  e.allowed = std::chrono::nanoseconds(allowed);
  e.deadline = deadline;
  e.when = std::chrono::system_clock::now();
  events_.emit(e);
}

rate_limiter_metrics rate_bucket::metrics(std::int64_t now) const noexcept {
  const params& p = *params_.load(std::memory_order_acquire);
  const std::int64_t deficit =
      rate::sub_sat(std::max(tat_.load(std::memory_order_relaxed), now), now);
  const std::int64_t room = rate::add_sat(p.tau, p.interval);  // a full bucket, in time
  rate_limiter_metrics m;
  if (deficit < room) {
    m.tokens = std::min<std::uint64_t>(static_cast<std::uint64_t>((room - deficit) / p.interval),
                                       p.options.burst);
  }
  m.waiting = waiting_.load(std::memory_order_acquire);  // see begin_wait
  m.admitted = admitted_.load(std::memory_order_relaxed);
  for (const auto& c : admitted_own_) m.admitted += c.load(std::memory_order_relaxed);
  m.waited = waited_.load(std::memory_order_relaxed);
  m.rejected = rejected_.load(std::memory_order_relaxed);
  m.cancelled = cancelled_.load(std::memory_order_relaxed);
  m.reconfigurations = reconfigurations_.load(std::memory_order_relaxed);
  m.events_lost = events_.lost();
  return m;
}

}  // namespace detail
}  // namespace levee
