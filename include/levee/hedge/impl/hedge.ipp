// levee: the hedge's validation, shared state and exposition, compiled once
// in lib/.
#pragma once

#include <levee/core/detail/prometheus_text.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/hedge/detail/hedge_state.hpp>
#include <levee/hedge/options.hpp>

#include <algorithm>
#include <bit>
#include <cmath>
#include <limits>
#include <ostream>

namespace levee {

void validate(const hedge_options& o) {
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("hedge_options", member, rule);
  };
  using ns = std::chrono::nanoseconds;
  if (o.max_attempts < 1 || o.max_attempts > 8) reject("max_attempts", "must be in [1, 8]");
  if (o.delay < ns::zero()) reject("delay", "must not be negative");
  if (!(o.percentile == 0.0 || (o.percentile > 0.0 && o.percentile < 1.0)))
    reject("percentile", "must be 0 (a fixed delay) or in (0, 1)");
  if (o.min_delay < ns::zero()) reject("min_delay", "must not be negative");
  if (o.max_delay < o.min_delay) reject("max_delay", "must not be less than min_delay");
  if (o.min_samples < 1 || o.min_samples > (std::size_t{1} << 30))
    reject("min_samples", "must be in [1, 2^30]");
  if (o.window <= ns::zero()) reject("window", "must be greater than zero");
  if (!(o.max_extra_ratio >= 0.0 && o.max_extra_ratio <= 1.0))
    reject("max_extra_ratio", "must be in [0, 1]");
  if (o.min_extra > (std::size_t{1} << 30)) reject("min_extra", "must not exceed 2^30");
}

void write_hedges_prometheus(std::ostream& out, const std::vector<named_hedge_metrics>& hedges) {
  using m_t = hedge_metrics;
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
    for (const auto& h : hedges)
      out << name << "{hedge=\"" << detail::escape(h.name) << "\"} " << value(h.metrics) << '\n';
  };
  auto n = [](std::uint64_t v) { return detail::number(v); };
  family("levee_hedge_calls_total", "counter", "Calls started through the hedge.",
         [&](const m_t& m) { return n(m.calls); });
  family("levee_hedge_attempts_total", "counter", "Attempts started, first ones included.",
         [&](const m_t& m) { return n(m.attempts); });
  family("levee_hedge_hedges_total", "counter", "Extra attempts started after the delay.",
         [&](const m_t& m) { return n(m.hedges); });
  family("levee_hedge_wins_total", "counter", "Calls answered by an extra attempt.",
         [&](const m_t& m) { return n(m.hedge_wins); });
  family("levee_hedge_budget_refusals_total", "counter",
         "Extra attempts not started because the budget was spent.",
         [&](const m_t& m) { return n(m.budget_refusals); });
  family("levee_hedge_not_idempotent_total", "counter",
         "Calls run once because they were not idempotent.",
         [&](const m_t& m) { return n(m.not_idempotent); });
  family("levee_hedge_rejections_total", "counter", "Attempts answered by a levee rejection.",
         [&](const m_t& m) { return n(m.rejections); });
  family("levee_hedge_cancelled_total", "counter",
         "Losing attempts cancelled after another attempt won.",
         [&](const m_t& m) { return n(m.cancelled); });
  family("levee_hedge_delay_seconds", "gauge", "The delay before the next call's first hedge.",
         [](const m_t& m) { return detail::number(detail::seconds(m.delay)); });
  family("levee_hedge_window_samples", "gauge", "Latency samples in the hedge's window.",
         [&](const m_t& m) { return n(m.window_samples); });
}

namespace detail {

std::size_t latency_buckets::index(std::int64_t ns) noexcept {
  if (ns < 8) return ns < 0 ? 0 : static_cast<std::size_t>(ns);
  const auto v = static_cast<std::uint64_t>(ns);
  const int msb = 63 - std::countl_zero(v);  // >= 3
  const auto mantissa = static_cast<std::size_t>((v >> (msb - 3)) & 7);
  return 8 + static_cast<std::size_t>(msb - 3) * 8 + mantissa;
}

std::int64_t latency_buckets::upper(std::size_t i) noexcept {
  if (i < 8) return static_cast<std::int64_t>(i) + 1;
  const std::size_t shift = (i - 8) / 8;  // msb - 3
  const std::uint64_t top = 9 + (i - 8) % 8;
  if (shift + 4 >= 64 || (top << shift) > std::uint64_t(std::numeric_limits<std::int64_t>::max()))
    return std::numeric_limits<std::int64_t>::max();
  return static_cast<std::int64_t>(top << shift);
}

hedge_state::hedge_state(const hedge_options& options)
    : options_(checked(options)),
      fixed_ns_(options_.delay.count()),
      window_ns_(options_.window.count()),
      delay_ns_(options_.delay.count()) {}

void hedge_state::rotate(std::int64_t now) noexcept {
  if (!started_) {
    started_ = true;
    start_ = now;
    return;
  }
  // Negative when `now` is a coarse read (begin_call) a tick behind a
  // precise one that set start_: no rotation, as within the window.
  const std::int64_t elapsed = now - start_;
  if (elapsed < window_ns_) return;
  // Whole windows passed: the windows stay aligned on start + k * window,
  // so each covers exactly its width (a start set to `now` would slip, and
  // a window's calls would count for longer than two widths).
  const std::int64_t passed = elapsed / window_ns_;  // >= 1
  cur_ ^= 1;
  current() = window{};
  if (passed >= 2) previous() = window{};
  start_ += passed * window_ns_;  // <= now: no overflow
  estimate();
}

void hedge_state::estimate() noexcept {
  since_estimate_ = 0;
  if (options_.percentile == 0.0) return;
  const window& a = current();
  const window& b = previous();
  const std::uint64_t total = a.samples + b.samples;
  if (total < options_.min_samples) {
    delay_ns_.store(fixed_ns_, std::memory_order_relaxed);
    return;
  }
  const auto rank =
      static_cast<std::uint64_t>(std::ceil(options_.percentile * static_cast<double>(total)));
  std::uint64_t seen = 0;
  std::int64_t at = std::numeric_limits<std::int64_t>::max();
  for (std::size_t i = 0; i < latency_buckets::count; ++i) {
    seen += a.buckets[i] + b.buckets[i];
    if (seen >= rank) {
      at = latency_buckets::upper(i);
      break;
    }
  }
  at = std::clamp(at, options_.min_delay.count(), options_.max_delay.count());
  delay_ns_.store(at, std::memory_order_relaxed);
}

std::int64_t hedge_state::begin_call(std::int64_t now) noexcept {
  {
    spin_guard g(lock_);
    rotate(now);
    ++current().calls;
  }
  calls.fetch_add(1, std::memory_order_relaxed);
  return delay_ns_.load(std::memory_order_relaxed);
}

bool hedge_state::try_hedge(std::int64_t now) noexcept {
  {
    spin_guard g(lock_);
    rotate(now);
    const double calls_in = static_cast<double>(current().calls + previous().calls);
    const double allowed =
        options_.max_extra_ratio * calls_in + static_cast<double>(options_.min_extra);
    // The hedge's own budget, then the shared retry budget (its own short
    // lock, a leaf: never held while taking this one).
    if (static_cast<double>(current().hedges + previous().hedges) + 1.0 <= allowed &&
        (!options_.shared_retry_budget ||
         options_.shared_retry_budget->try_withdraw(std::chrono::nanoseconds(now)))) {
      ++current().hedges;
    } else {
      budget_refusals.fetch_add(1, std::memory_order_relaxed);
      return false;
    }
  }
  hedges.fetch_add(1, std::memory_order_relaxed);
  return true;
}

void hedge_state::sample(std::int64_t now, std::int64_t latency_ns) noexcept {
  if (options_.percentile == 0.0) return;
  spin_guard g(lock_);
  rotate(now);
  window& w = current();
  auto& b = w.buckets[latency_buckets::index(latency_ns)];
  if (b != std::numeric_limits<std::uint32_t>::max()) ++b;
  ++w.samples;
  if (++since_estimate_ >= 16 || w.samples + previous().samples == options_.min_samples) estimate();
}

hedge_metrics hedge_state::metrics(std::int64_t now) noexcept {
  hedge_metrics m;
  {
    spin_guard g(lock_);
    rotate(now);
    m.window_samples = current().samples + previous().samples;
    m.window_calls = current().calls + previous().calls;
    m.window_hedges = current().hedges + previous().hedges;
  }
  constexpr auto r = std::memory_order_relaxed;
  m.calls = calls.load(r);
  m.attempts = attempts.load(r);
  m.hedges = hedges.load(r);
  m.hedge_wins = hedge_wins.load(r);
  m.budget_refusals = budget_refusals.load(r);
  m.not_idempotent = not_idempotent.load(r);
  m.rejections = rejections.load(r);
  m.events_lost = events.lost();
  m.cancelled = cancelled.load(r);
  m.delay = std::chrono::nanoseconds(delay_ns_.load(r));
  return m;
}

}  // namespace detail
}  // namespace levee
