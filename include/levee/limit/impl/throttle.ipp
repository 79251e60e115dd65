// levee: the adaptive throttle's window and exposition, compiled once in lib/.
#pragma once

#include <levee/core/detail/prometheus_text.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/limit/detail/throttle_window.hpp>
#include <levee/limit/throttle_options.hpp>

#include <algorithm>
#include <limits>
#include <ostream>

namespace levee {

void validate(const throttle_options& o) {
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("throttle_options", member, rule);
  };
  if (!(o.k >= 1.0 && o.k <= 1000.0)) reject("k", "must be in [1, 1000]");
  if (o.window <= std::chrono::nanoseconds::zero()) reject("window", "must be greater than zero");
  if (o.buckets < 1 || o.buckets > 1000) reject("buckets", "must be in [1, 1000]");
  if (o.window.count() / static_cast<std::int64_t>(o.buckets) < 1)
    reject("buckets", "must not exceed window in nanoseconds");
  if (o.minimum_requests > (std::size_t{1} << 30))
    reject("minimum_requests", "must not exceed 2^30");
  if (!(o.max_rejection_probability >= 0.0 && o.max_rejection_probability <= 1.0))
    reject("max_rejection_probability", "must be in [0, 1]");
}

void write_throttles_prometheus(std::ostream& out,
                                const std::vector<named_throttle_metrics>& throttles) {
  using m_t = throttle_metrics;
  auto family = [&](const char* name, const char* type, const char* help, auto value) {
    out << "# HELP " << name << ' ' << help << '\n' << "# TYPE " << name << ' ' << type << '\n';
    for (const auto& t : throttles)
      out << name << "{throttle=\"" << detail::escape(t.name) << "\"} " << value(t.metrics) << '\n';
  };
  family("levee_throttle_rejection_probability", "gauge",
         "The probability that the throttle rejects the next call.",
         [](const m_t& m) { return detail::number(m.rejection_probability); });
  family("levee_throttle_window_requests", "gauge", "Requests counted in the throttle's window.",
         [](const m_t& m) { return detail::number(m.requests); });
  family("levee_throttle_window_accepts", "gauge", "Accepts counted in the throttle's window.",
         [](const m_t& m) { return detail::number(m.accepts); });
  family("levee_throttle_admitted_calls_total", "counter", "Calls the throttle let through.",
         [](const m_t& m) { return detail::number(m.admitted); });
  family("levee_throttle_rejected_calls_total", "counter",
         "Calls refused with throttled, without being started.",
         [](const m_t& m) { return detail::number(m.rejected); });
  family("levee_throttle_accepted_calls_total", "counter",
         "Calls let through that the downstream accepted.",
         [](const m_t& m) { return detail::number(m.accepted); });
}

namespace detail {

throttle_window::throttle_window(const throttle_options& options)
    : options_(checked(options)),
      width_ns_(options_.window.count() / static_cast<std::int64_t>(options_.buckets)),
      ring_(options_.buckets),
      random_{random_seed()} {}

void throttle_window::fold() noexcept {
  const std::uint64_t n = frames_.load(std::memory_order_relaxed) >> 32;
  if (n == 0) return;
  frames_.fetch_sub(n << 32, std::memory_order_relaxed);
  ring_[cursor_.pos].requests += n;
  ring_[cursor_.pos].accepts += n;
  // Folded accepts that take the sums to minimum_requests make the formula
  // apply (an accept ended without the lock just before an old bucket left,
  // taking the sums below it): the probability is decided again
  // (`record` does when admission's fast path is closed; `admit` and
  // `metrics` always do).
  if (requests_ < options_.minimum_requests && requests_ + n >= options_.minimum_requests)
    admit_until_.store(std::numeric_limits<std::int64_t>::min(), std::memory_order_relaxed);
  requests_ += n;
  accepts_ += n;
  frames_done_ += n;
  accepted_.store(accepted_.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
}

void throttle_window::advance(std::int64_t now) noexcept {
  fold();
  const std::int64_t index = floor_div(now, width_ns_);
  if (index <= cursor_.head && cursor_.started()) return;
  ring_advance(ring_.data(), static_cast<std::uint32_t>(ring_.size()), cursor_, index,
               [this](const bucket& b) {
                 requests_ -= b.requests;
                 accepts_ -= b.accepts;
               });
}

double throttle_window::probability() const noexcept {
  if (requests_ < options_.minimum_requests) return 0.0;
  const double r = static_cast<double>(requests_);
  const double p = (r - options_.k * static_cast<double>(accepts_)) / (r + 1.0);
  return std::clamp(p, 0.0, options_.max_rejection_probability);
}

void throttle_window::refresh_admit_until(double p) noexcept {
  constexpr auto lowest = std::numeric_limits<std::int64_t>::min();
  std::int64_t until = lowest;
  if (p <= 0) {
    // The start of the bucket after the head: saturated (a far-future clock
    // keeps the fast path; a far-past one loses it, which is only slower).
    std::int64_t next = 0;
    if (__builtin_add_overflow(cursor_.head, 1, &next) ||
        __builtin_mul_overflow(next, width_ns_, &until))
      until = next > 0 ? std::numeric_limits<std::int64_t>::max() : lowest;
  }
  admit_until_.store(until, std::memory_order_relaxed);
  const bool counted = requests_ >= options_.minimum_requests;
  accept_until_.store(counted ? until : lowest, std::memory_order_relaxed);
}

bool throttle_window::request(std::int64_t now) noexcept {
  return admit(now, admitted_);
}

bool throttle_window::admit_locked(std::int64_t now, std::atomic<std::uint64_t>& count) noexcept {
  throttle_event e;
  {
    spin_guard g(lock_);
    advance(now);
    const double p = probability();
    refresh_admit_until(p);
    if (p <= 0 || random_.unit() >= p) {
      count.fetch_add(1, std::memory_order_relaxed);
      return true;
    }
    ++ring_[cursor_.pos].requests;  // a late request counts in the newest bucket
    ++requests_;                    // p > 0 stays so: admit_until_ is already INT64_MIN
    e.probability = p;
    e.requests = requests_;
    e.accepts = accepts_;
    // Written under the lock only: no locked instruction.
    rejected_.store(rejected_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  }
  if (events_.wants(throttle_event_kind::rejected)) {  // built and posted outside the lock
    e.when = std::chrono::system_clock::now();
    events_.emit(e);
  }
  return false;
}

void throttle_window::finish(std::int64_t now, outcome o) noexcept {
  if (o == outcome::ignored) return;
  spin_guard g(lock_);
  record(now, o == outcome::success);
}

void throttle_window::finish_frame_locked(std::int64_t now, outcome o) noexcept {
  bool last = false;
  {
    spin_guard g(lock_);
    if (o != outcome::ignored) record(now, o == outcome::success);
    // Out under the lock, so that metrics() sees it ended and left at once.
    ++frames_done_;
    last = count_out();
  }
  if (last) delete this;  // nobody else holds a count, so nobody holds the lock
}

void throttle_window::last_out() noexcept {
  // A frame that ended under the lock gave up its count there: it may not
  // have released the lock yet.
  { spin_guard g(lock_); }
  delete this;
}

void throttle_window::orphan(throttle_window* w) noexcept {
  // Every frame counted in was started while an owner lived, before this.
  if (w->count_out()) w->last_out();
}

void throttle_window::record(std::int64_t now, bool accepted) noexcept {
  advance(now);
  ++ring_[cursor_.pos].requests;
  ++requests_;
  ring_[cursor_.pos].accepts += accepted;
  accepts_ += accepted;
  // While nothing can be rejected (before admit_until_, so no bucket has
  // left since it was set), an accept keeps the probability at 0: with
  // the formula's numerator at or below 0, one more request and accept
  // add 1 - k <= 0 to it. Unless it is the request that reaches
  // minimum_requests, where the formula starts to apply.
  if (!accepted || now >= admit_until_.load(std::memory_order_relaxed) ||
      requests_ == options_.minimum_requests)
    refresh_admit_until(probability());
  // Written under the lock only: no locked instruction.
  if (accepted)
    accepted_.store(accepted_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
}

throttle_metrics throttle_window::metrics(std::int64_t now) noexcept {
  throttle_metrics m;
  {
    spin_guard g(lock_);
    advance(now);
    m.requests = requests_;
    m.accepts = accepts_;
    m.rejection_probability = probability();
    refresh_admit_until(m.rejection_probability);
    // Frames ended, then those ended since the fold, then those in flight
    // (the count held besides them is the owners', one of which calls this).
    const std::uint64_t f = frames_.load(std::memory_order_relaxed);
    const std::uint64_t held = f & held_mask;
    m.admitted = frames_done_ + (f >> 32) + (held > 0 ? held - 1 : 0);
    // Under the lock, where it is written: every accept it holds was
    // admitted before, so it never exceeds `admitted` (whose other part, the
    // token form's, only grows and is read after it).
    m.accepted = accepted_.load(std::memory_order_relaxed);
  }
  m.admitted += admitted_.load(std::memory_order_relaxed);
  m.rejected = rejected_.load(std::memory_order_relaxed);
  m.events_lost = events_.lost();
  return m;
}

}  // namespace detail
}  // namespace levee
