// levee: the upstream's sans-I/O part (docs/upstream.md).
//
// A set of endpoints with their outstanding calls, their consecutive
// failures and their ejection. It picks an endpoint (power of two choices on
// least outstanding, ejected endpoints skipped), records how a call ended,
// and decides ejections and returns. It takes the current time and the
// random bits as plain numbers, never reads a clock, never touches Asio and
// allocates nothing after construction.
//
// Thread safety: every member function may be called from any thread.
// Picking reads one atomic word per endpoint and increments one (the chosen
// endpoint's outstanding count); taking an ejected endpoint's probe is a CAS.
// No lock is held across a call: ejections and returns, which are rare, are
// serialised by `lock_` for a handful of stores.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/detail/spinlock.hpp>
#include <levee/upstream/observe.hpp>
#include <levee/upstream/options.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <span>
#include <utility>
#include <vector>

namespace levee::detail {

/// An endpoint's place in the picking.
enum class endpoint_state : std::uint8_t {
  in_service = 0,  ///< picked as usual
  ejected = 1,     ///< skipped until its ejection time is over, then probed
  probing = 2,     ///< ejected, its one probe in flight
};

/// What `endpoint_set::pick` chose. `probe`: the call is the ejected
/// endpoint's probe (its outcome decides the return); `panic`: ejection was
/// ignored for this pick (too few endpoints in service).
struct endpoint_choice {
  static constexpr std::size_t none = std::numeric_limits<std::size_t>::max();
  std::size_t index = none;
  bool probe = false;
  bool panic = false;
  std::chrono::nanoseconds at{0};  ///< when it was picked (the latency sample's start)
  explicit operator bool() const noexcept { return index != none; }
};

/// What a completed call changed.
struct endpoint_change {
  enum kind_type : std::uint8_t { nothing, ejected, returned } kind = nothing;
  std::chrono::nanoseconds ejected_for{0};  ///< when `kind == ejected`
  std::uint32_t level = 0;                  ///< the ejection's level (1 for a first one)
  upstream_cause cause = upstream_cause::consecutive_failures;  ///< why
};

/// An ejection decided for an endpoint other than the call's (success rate).
struct indexed_change {
  std::size_t index = 0;
  endpoint_change change;
};

/// One endpoint as seen now.
struct endpoint_view {
  endpoint_state state = endpoint_state::in_service;
  std::uint32_t outstanding = 0;
  std::uint32_t consecutive_failures = 0;
  std::uint32_t level = 0;                    ///< the level of its last ejection (before decay)
  std::chrono::nanoseconds ejected_until{0};  ///< meaningful when not in service
  std::uint64_t ejections = 0;
  std::uint64_t returns = 0;
  std::uint64_t ejections_by[upstream_causes] = {};
  std::uint64_t returns_by[upstream_causes] = {};
  double success_rate = -1;             ///< in the last success-rate interval; -1: none
  std::chrono::nanoseconds latency{0};  ///< the latency estimate at its last sample
};

class endpoint_set {
 public:
  using nanos = std::chrono::nanoseconds;

  /// `options` must be valid (`validate`). `latency_decay`: the time
  /// constant of the latency estimate (`upstream_options::latency_decay`),
  /// 0 to pick on outstanding calls only.
  endpoint_set(std::size_t endpoints, const outlier_options& options,
               nanos latency_decay = nanos(0))
      : options_(options),
        decay_(double(latency_decay.count())),
        size_(endpoints),
        slots_(std::make_unique<slot[]>(endpoints)) {}

  std::size_t size() const noexcept { return size_; }

  /// How many endpoints may be ejected at once (see `outlier_options`).
  std::size_t max_ejected() const noexcept {
    if (size_ < 2 || options_.max_ejected_share <= 0) return 0;
    const auto share = static_cast<std::size_t>(options_.max_ejected_share * double(size_));
    return std::min(size_ - 1, std::max<std::size_t>(1, share));
  }
  std::size_t ejected_count() const noexcept { return ejected_.load(std::memory_order_relaxed); }
  /// True when picking ignores ejection now.
  bool panicking() const noexcept {
    const std::size_t in_service = size_ - ejected_count();
    return double(in_service) < options_.panic_threshold * double(size_);
  }

  /// Chooses an endpoint for a call at `now` and counts it outstanding.
  /// `random`: 64 random bits (the two choices are drawn from them). `tried`:
  /// endpoints this call already failed on, avoided while another endpoint
  /// can be picked. An ejected endpoint whose time is over is picked as a
  /// probe (one at a time). Empty only for an empty set.
  endpoint_choice pick(nanos now, std::uint64_t random,
                       std::span<const std::size_t> tried = {}) noexcept {
    if (size_ == 0) return {};
    const bool panic = panicking();
    // Rounds from strict to loose: avoid the tried ones, then not; with
    // ejection respected (unless panicking), then ignored.
    for (int round = panic ? 2 : 0; round < 4; ++round) {
      if (round % 2 == 1 && tried.empty()) continue;  // the same as the round before
      const bool avoid = round % 2 == 0 && !tried.empty();
      const bool ignore_ejection = round >= 2;
      const std::size_t k = count(now, tried, avoid, ignore_ejection);
      if (k == 0) continue;
      const std::size_t r1 = random % k;
      std::size_t r2 = r1;
      if (k > 1) r2 = (r1 + 1 + (random >> 32) % (k - 1)) % k;
      std::size_t a = endpoint_choice::none, b = endpoint_choice::none;
      for (std::size_t i = 0, rank = 0; i < size_; ++i) {
        if (!eligible(i, now, tried, avoid, ignore_ejection)) continue;
        if (rank == r1) a = i;
        if (rank == r2) b = i;
        ++rank;
      }
      if (a == endpoint_choice::none) a = b;
      if (b == endpoint_choice::none) b = a;
      if (a == endpoint_choice::none) continue;  // the set changed under us
      std::size_t first = better(b, a, now) ? b : a;
      std::size_t second = first == a ? b : a;
      for (std::size_t i : {first, second}) {
        if (auto c = take(i, now, ignore_ejection)) {
          c.panic = ignore_ejection && panic;
          c.at = now;
          return c;
        }
      }
    }
    // Every probe taken and nothing in service: the first endpoint, as panic.
    slots_[0].outstanding.fetch_add(1, std::memory_order_relaxed);
    return {0, false, true, now};
  }

  /// The call `c` ended with `o` at `now`. May eject the endpoint (after
  /// `consecutive_failures` failures in a row, or when its probe failed) or
  /// return it (its probe succeeded).
  endpoint_change complete(endpoint_choice c, outcome o, nanos now) noexcept {
    slot& s = slots_[c.index];
    s.outstanding.fetch_sub(1, std::memory_order_relaxed);
    if (decay_ > 0) {
      if (o != outcome::ignored)
        sample(s, now - c.at, now);
      else
        raise(s, now - c.at, now);  // cancelled (a hedge's loser, a deadline)
    }
    if (c.probe) return end_probe(s, o, now);
    if (o != outcome::ignored && options_.success_rate_interval.count() != 0)
      s.window.fetch_add((std::uint64_t{1} << 32) | (o == outcome::success ? 1u : 0u),
                         std::memory_order_relaxed);
    if (o == outcome::success) {
      if (s.consecutive.load(std::memory_order_relaxed) != 0)
        s.consecutive.store(0, std::memory_order_relaxed);
      return {};
    }
    if (o != outcome::failure) return {};
    const auto failures = s.consecutive.fetch_add(1, std::memory_order_relaxed) + 1;
    if (options_.consecutive_failures == 0 || failures < options_.consecutive_failures ||
        s.state.load(std::memory_order_relaxed) != endpoint_state::in_service)
      return {};
    spin_guard g(lock_);
    if (s.state.load(std::memory_order_relaxed) != endpoint_state::in_service) return {};
    if (ejected_.load(std::memory_order_relaxed) >= max_ejected()) return {};
    return eject_in_service(s, now, upstream_cause::consecutive_failures);
  }

  /// Ends the success-rate interval if `now` is past it (the first caller
  /// after its end does; the others return at once) and ejects the outliers
  /// (`outlier_options::success_rate_interval`). Allocates only when it
  /// ejects. \return the ejections, the worst first.
  std::vector<indexed_change> sweep(nanos now);

  /// The active health check of endpoint `i` answered at `now`: a success
  /// returns it if it is ejected (not while its probe is in flight: the
  /// probe decides); a failure ejects it if it is in service (within the
  /// share).
  endpoint_change health(std::size_t i, bool healthy, nanos now) noexcept;

  /// Endpoint `i` takes over endpoint `j` of `from` (an earlier generation
  /// of the same upstream): its ejection, level and counts; a probe in
  /// flight there leaves it ejected here. Before this set is shared.
  void adopt(std::size_t i, const endpoint_set& from, std::size_t j) noexcept;

  /// Gives `c` back uncounted: the call never reached the endpoint (its
  /// breaker rejected it) or was abandoned. A probe's slot is freed.
  void release(endpoint_choice c) noexcept {
    slot& s = slots_[c.index];
    s.outstanding.fetch_sub(1, std::memory_order_relaxed);
    if (c.probe) s.state.store(endpoint_state::ejected, std::memory_order_release);
  }

  endpoint_view view(std::size_t i) const noexcept {
    const slot& s = slots_[i];
    spin_guard g(lock_);
    return {s.state.load(std::memory_order_relaxed),
            s.outstanding.load(std::memory_order_relaxed),
            s.consecutive.load(std::memory_order_relaxed),
            s.level,
            nanos(s.until.load(std::memory_order_relaxed)),
            s.ejections,
            s.returns,
            {s.ejections_by[0], s.ejections_by[1], s.ejections_by[2], s.ejections_by[3]},
            {s.returns_by[0], s.returns_by[1], s.returns_by[2], s.returns_by[3]},
            s.rate,
            nanos(s.ewma.load(std::memory_order_relaxed))};
  }

 private:
  struct alignas(64) slot {
    std::atomic<std::uint32_t> outstanding{0};
    std::atomic<std::uint32_t> consecutive{0};
    std::atomic<endpoint_state> state{endpoint_state::in_service};
    std::atomic<std::int64_t> until{0};  // ejected until (ns)
    // This success-rate interval: calls << 32 | successes.
    std::atomic<std::uint64_t> window{0};
    // Under lock_:
    std::uint32_t level = 0;
    nanos returned_at{0};
    std::uint64_t ejections = 0;
    std::uint64_t returns = 0;
    std::uint64_t ejections_by[upstream_causes] = {};
    std::uint64_t returns_by[upstream_causes] = {};
    double rate = -1;  // in the last interval
    // The latency estimate (ns) and when its last sample came (`unset`:
    // never). Racing samples may lose one: an estimate, not a count.
    std::atomic<std::int64_t> ewma{0};
    std::atomic<std::int64_t> sampled{std::numeric_limits<std::int64_t>::min()};
  };
  static constexpr std::int64_t unset = std::numeric_limits<std::int64_t>::min();

  // Whether endpoint `x` is the better pick than `y` at `now`: fewer
  // outstanding calls, each weighed by the latency estimate (at least 1 ns). An estimate
  // fades toward the rival's by exp(-age / decay); one never sampled is the
  // rival's. Ties go to fewer outstanding calls, then to `y`.
  bool better(std::size_t x, std::size_t y, nanos now) const noexcept {
    const slot& sx = slots_[x];
    const slot& sy = slots_[y];
    const auto ox = sx.outstanding.load(std::memory_order_relaxed);
    const auto oy = sy.outstanding.load(std::memory_order_relaxed);
    if (decay_ > 0) {
      const auto tx = sx.sampled.load(std::memory_order_relaxed);
      const auto ty = sy.sampled.load(std::memory_order_relaxed);
      if (tx != unset || ty != unset) {
        double ex = double(sx.ewma.load(std::memory_order_relaxed));
        double ey = double(sy.ewma.load(std::memory_order_relaxed));
        if (tx == unset) ex = ey;
        if (ty == unset) ey = ex;
        const double fx = tx == unset ? ex : fade(ex, ey, now.count() - tx);
        const double fy = ty == unset ? ey : fade(ey, ex, now.count() - ty);
        // At least 1 ns: an estimate of 0 (calls that ended within a clock
        // tick) must not make the outstanding calls count for nothing.
        const double cx = std::max(fx, 1.0) * double(ox + 1);
        const double cy = std::max(fy, 1.0) * double(oy + 1);
        if (cx != cy) return cx < cy;
      }
    }
    return ox < oy;
  }
  // `own`, faded toward `rival` over `age` ns.
  double fade(double own, double rival, std::int64_t age) const noexcept {
    if (age <= 0) return own;
    const double w = std::exp(-double(age) / decay_);
    return own * w + rival * (1 - w);
  }
  // One latency sample `rtt` at `now`: a peak replaces the estimate; a lower
  // sample moves it by 1 - exp(-dt / decay).
  void sample(slot& s, nanos rtt, nanos now) noexcept {
    const auto r = std::max<std::int64_t>(0, rtt.count());
    const auto last = s.sampled.load(std::memory_order_relaxed);
    const auto prev = s.ewma.load(std::memory_order_relaxed);
    std::int64_t next = r;
    if (last != unset && r < prev && now.count() > last)
      next = std::int64_t(fade(double(prev), double(r), now.count() - last));
    else if (last != unset && r < prev)
      next = prev;  // samples at the same instant: the peak stays
    s.ewma.store(next, std::memory_order_relaxed);
    s.sampled.store(std::max(last, now.count()), std::memory_order_relaxed);
  }

  // An attempt cancelled after `rtt` (a hedge's loser, a deadline): it says
  // the endpoint took at least that long, so it may raise the estimate but
  // never lower it (else an endpoint whose slow calls are all cut off would
  // keep its fast estimate).
  void raise(slot& s, nanos rtt, nanos now) noexcept {
    const auto last = s.sampled.load(std::memory_order_relaxed);
    if (last != unset && rtt.count() <= s.ewma.load(std::memory_order_relaxed)) return;
    sample(s, rtt, now);
  }

  static bool listed(std::span<const std::size_t> tried, std::size_t i) noexcept {
    return std::find(tried.begin(), tried.end(), i) != tried.end();
  }

  bool eligible(std::size_t i, nanos now, std::span<const std::size_t> tried, bool avoid,
                bool ignore_ejection) const noexcept {
    if (avoid && listed(tried, i)) return false;
    if (ignore_ejection) return true;
    const slot& s = slots_[i];
    switch (s.state.load(std::memory_order_acquire)) {
      case endpoint_state::in_service:
        return true;
      case endpoint_state::ejected:
        return now.count() >= s.until.load(std::memory_order_relaxed);
      default:
        return false;
    }
  }

  std::size_t count(nanos now, std::span<const std::size_t> tried, bool avoid,
                    bool ignore_ejection) const noexcept {
    std::size_t k = 0;
    for (std::size_t i = 0; i < size_; ++i) k += eligible(i, now, tried, avoid, ignore_ejection);
    return k;
  }

  // Takes endpoint i for a call: a plain call in service (or when ejection is
  // ignored), its probe when ejected and due. Empty if someone took the probe.
  endpoint_choice take(std::size_t i, nanos now, bool ignore_ejection) noexcept {
    slot& s = slots_[i];
    auto st = s.state.load(std::memory_order_acquire);
    if (st == endpoint_state::ejected && now.count() >= s.until.load(std::memory_order_relaxed)) {
      if (s.state.compare_exchange_strong(st, endpoint_state::probing, std::memory_order_acq_rel)) {
        s.outstanding.fetch_add(1, std::memory_order_relaxed);
        return {i, true, false};
      }
    }
    if (st != endpoint_state::in_service && !ignore_ejection) return {};
    s.outstanding.fetch_add(1, std::memory_order_relaxed);
    return {i, false, false};
  }

  endpoint_change end_probe(slot& s, outcome o, nanos now) noexcept;

  // Under lock_: returns `s` to service.
  endpoint_change back(slot& s, nanos now, upstream_cause why) noexcept;

  // Under lock_, `s` in service and the share permitting: ejects it. Its
  // level first decays by one per base_ejection_time in service.
  endpoint_change eject_in_service(slot& s, nanos now, upstream_cause why) noexcept;

  // Under lock_: ejects `s` at `now` one level higher.
  endpoint_change eject(slot& s, nanos now, upstream_cause why) noexcept;

  outlier_options options_;
  double decay_;  // latency_decay in ns; 0: off
  std::size_t size_;
  std::unique_ptr<slot[]> slots_;
  mutable spinlock lock_;
  std::atomic<std::size_t> ejected_{0};            // ejected or probing
  std::atomic<std::int64_t> interval_end_{unset};  // of the success-rate interval (ns)
};

}  // namespace levee::detail

#include <levee/upstream/detail/impl/endpoint_set.hpp>  // sweep, health, adopt, ejections
