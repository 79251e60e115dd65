// levee: the adaptive limit's non-template code, compiled once in lib/ (its
// listeners and events: limit/impl/adaptive_limit_events.ipp, included here).
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/limit/impl/adaptive_limit_events.ipp>

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <string>

namespace levee {

void validate(const adaptive_limit_options& o) {
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("adaptive_limit_options", member, rule);
  };
  if (o.min_limit < 1) reject("min_limit", "must be at least 1");
  if (o.max_limit < o.min_limit) reject("max_limit", "must be at least min_limit");
  if (o.max_limit > 1000000) reject("max_limit", "must be at most 1000000");
  if (o.initial_limit < o.min_limit || o.initial_limit > o.max_limit)
    reject("initial_limit", "must be in [min_limit, max_limit]");
  if (!(o.smoothing > 0 && o.smoothing <= 1)) reject("smoothing", "must be in (0, 1]");
  if (!(o.rtt_tolerance >= 1 && std::isfinite(o.rtt_tolerance)))
    reject("rtt_tolerance", "must be at least 1 and finite");
  if (o.long_window < 1) reject("long_window", "must be at least 1");
  if (!(o.queue_size >= 0 && std::isfinite(o.queue_size)))
    reject("queue_size", "must be at least 0 and finite");
  if (!(o.backoff_ratio >= 0.5 && o.backoff_ratio < 1))
    reject("backoff_ratio", "must be in [0.5, 1)");
  if (o.aimd_timeout <= std::chrono::nanoseconds::zero())
    reject("aimd_timeout", "must be greater than zero");
  if (o.max_wait < std::chrono::nanoseconds::zero()) reject("max_wait", "must not be negative");
  if (o.sample_window < std::chrono::nanoseconds::zero())
    reject("sample_window", "must not be negative");
  if (o.min_window_samples < 1) reject("min_window_samples", "must be at least 1");
}

namespace detail {

namespace {
aimd::parameters aimd_parameters(const adaptive_limit_options& o, double initial) {
  return {initial, static_cast<double>(o.min_limit), static_cast<double>(o.max_limit),
          o.backoff_ratio, static_cast<double>(o.aimd_timeout.count())};
}
gradient2::parameters gradient2_parameters(const adaptive_limit_options& o, double initial) {
  return {initial,
          static_cast<double>(o.min_limit),
          static_cast<double>(o.max_limit),
          o.smoothing,
          o.rtt_tolerance,
          o.queue_size,
          o.long_window,
          o.sample_window.count(),
          o.min_window_samples};
}
std::variant<gradient2, aimd> make_algorithm(const adaptive_limit_options& o, double initial) {
  if (o.algorithm == limit_algorithm::aimd) return aimd(aimd_parameters(o, initial));
  return gradient2(gradient2_parameters(o, initial));
}
std::variant<gradient2, aimd> make_algorithm(const adaptive_limit_options& o) {
  return make_algorithm(o, static_cast<double>(o.initial_limit));
}
}  // namespace

adaptive_limit_state::adaptive_limit_state(adaptive_limit_options o, std::string name)
    : algorithm_(make_algorithm(o)),
      min_seen_(static_cast<double>(o.initial_limit)),
      max_seen_(static_cast<double>(o.initial_limit)),
      listeners_(std::make_shared<const listener_set>(listener_set{std::move(name), {}})) {
  owned_.push_back(std::make_unique<const adaptive_limit_options>(std::move(o)));
  options_.store(owned_.back().get(), std::memory_order_release);
}

std::shared_ptr<adaptive_limit_state> adaptive_limit_state::make(adaptive_limit_options o,
                                                                 std::string name) {
  // A shared_ptr made from a pointer deletes it (here, `orphan`s it) when
  // its control block cannot be allocated.
  return std::shared_ptr<adaptive_limit_state>(
      new adaptive_limit_state(std::move(o), std::move(name)), &orphan);
}

void adaptive_limit_state::orphan(adaptive_limit_state* s) noexcept {
  bool last = false;
  {
    spin_guard g(s->spinlock_);
    s->orphaned_ = true;
    // Every frame counted in was started while an owner lived, before this.
    last = s->frames_out_ == s->frames_in_;
  }
  if (last) delete s;
}

adaptive_limit_state::timing adaptive_limit_state::frame_in(std::size_t& in_flight) noexcept {
  spin_guard g(spinlock_);
  ++frames_in_;
  in_flight = in_flight_;
  return std::holds_alternative<aimd>(algorithm_) ? timing::aimd : timing::every;
}

void adaptive_limit_state::reconfigure(const adaptive_limit_options& o) {
  validate(o);  // throws, naming the member: nothing changed
  auto next = std::make_unique<const adaptive_limit_options>(o);
  waiter_list granted;  // completed, and freed, after the spinlock
  double before = 0, after = 0;
  std::size_t running = 0;
  {
    std::lock_guard g(listeners_mutex_);  // one reconfiguration at a time; owned_; the event
    owned_.reserve(owned_.size() + 1);
    const bool same = o.algorithm == options().algorithm;
    {
      spin_guard s(spinlock_);
      before = current();
      // The limit it learned, within the new bounds; with the same
      // algorithm, what else it learned too.
      const double kept =
          std::clamp(before, static_cast<double>(o.min_limit), static_cast<double>(o.max_limit));
      if (!same) {
        algorithm_ = make_algorithm(o, kept);
      } else if (auto* a = std::get_if<aimd>(&algorithm_)) {
        a->reconfigure(aimd_parameters(o, kept));
      } else {
        std::get<gradient2>(algorithm_).reconfigure(gradient2_parameters(o, kept));
      }
      after = current();
      min_seen_ = std::min(min_seen_, after);
      max_seen_ = std::max(max_seen_, after);
      owned_.push_back(std::move(next));
      options_.store(owned_.back().get(), std::memory_order_release);
      ++reconfigurations_;
      while (grant_next(granted)) {  // a higher limit: the waiters it has room for
      }
      running = in_flight_;
    }
    if (listening_.load(std::memory_order_relaxed) & 4)
      emit(static_cast<std::uint32_t>(limit_event_kind::reconfigured), before, after, running);
  }
  for (const auto& w : granted) w->complete({});
  if (std::floor(before) != std::floor(after) && (listening_.load(std::memory_order_relaxed) & 1))
    changed_event(before);
}

outcome adaptive_limit_state::classify(const call_result& r) const noexcept {
  const auto& classifier = options().classifier;
  if (!classifier) return default_classify(r);
  try {
    return classifier(r);
  } catch (...) {
    return outcome::failure;
  }
}

std::size_t adaptive_limit_state::cap() const noexcept {
  return static_cast<std::size_t>(current());  // in [min_limit, max_limit]: no overflow
}

adaptive_limit_state::entry adaptive_limit_state::try_enter(std::size_t& in_flight,
                                                            timing& t) noexcept {
  double limit = 0;
  std::size_t running = 0;
  bool event = false;  // a refusal's, see below
  {
    spin_guard g(spinlock_);
    if (closed_) return entry::queue;  // enqueue refuses it with operation_aborted
    if (in_flight_ < cap() && queue_.empty()) {
      ++frames_in_;  // ends with leave_frame
      in_flight = ++in_flight_;
      peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
      ++admitted_;
      if (const auto* g2 = std::get_if<gradient2>(&algorithm_)) {
        t = g2->times_every_call()       ? timing::every
            : round_trip_samples::pick() ? timing::sampled
                                         : timing::none;
      } else {
        t = timing::aimd;
      }
      return entry::granted;
    }
    if (queue_.size() < options().max_queue) return entry::queue;
    ++limited_;
    limit = current();
    running = in_flight_;
    // The refusal is visible in `metrics()` from here on, and the limiter
    // may then go: a refused frame with an event to emit after the lock is
    // counted in until it has.
    event = listening_.load(std::memory_order_relaxed) & 2;
    frames_in_ += event;
  }
  if (event) {
    limited_event(limit, running);
    count_out();  // may delete the state
  }
  return entry::full;
}

double adaptive_limit_state::current() const noexcept {
  return std::visit([](const auto& a) { return a.limit(); }, algorithm_);
}

void adaptive_limit_state::enqueue(const std::shared_ptr<waiter>& w) {
  boost::system::error_code ec;
  // The queue's node, made before the spinlock is taken (spliced in under
  // it; freed after it, if the waiter was not queued).
  waiter_list node{w};
  {
    spin_guard g(spinlock_);
    if (closed_) {
      ec = boost::asio::error::operation_aborted;
    } else if (in_flight_ < cap() && queue_.empty()) {
      ++in_flight_;
      peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
      ++admitted_;
    } else if (queue_.size() < options().max_queue) {
      w->position = node.begin();  // stays valid across the splice
      queue_.splice(queue_.end(), node);
      w->queued = true;
      return;
    } else {
      ++limited_;
      ec = make_error_code(error::limit_exceeded);
    }
  }
  if (ec == error::limit_exceeded && (listening_.load(std::memory_order_relaxed) & 2))
    limited_event(metrics().limit, in_flight());
  w->complete(ec);
}

void adaptive_limit_state::cancel(waiter& w, boost::system::error_code ec) {
  waiter_list removed;  // the node leaves the queue under the spinlock, is freed after it
  {
    spin_guard g(spinlock_);
    if (!w.queued) return;
    removed.splice(removed.end(), queue_, w.position);
    w.queued = false;
    if (ec == error::limit_exceeded) ++limited_;
  }
  if (ec == error::limit_exceeded && (listening_.load(std::memory_order_relaxed) & 2))
    limited_event(metrics().limit, in_flight());
  removed.front()->complete(ec);
}

// Under the spinlock: moves the first waiter to `granted` if the limit has
// room for it (a splice: nothing allocated or freed).
bool adaptive_limit_state::grant_next(waiter_list& granted) noexcept {
  if (queue_.empty() || in_flight_ >= cap()) return false;
  queue_.front()->queued = false;
  granted.splice(granted.end(), queue_, queue_.begin());
  ++in_flight_;
  peak_in_flight_ = std::max(peak_in_flight_, in_flight_);
  ++admitted_;
  return true;
}

void adaptive_limit_state::leave_impl(bool sample, std::int64_t now_ns, double rtt_ns,
                                      std::size_t started_with, bool dropped, timing t,
                                      bool counted) noexcept {
  // A raised limit admits every waiter it has room for (a window may raise
  // it by more than one call; the queue is at most max_queue long). Spliced
  // under the spinlock; completed, and their nodes freed, after it is
  // released.
  std::optional<waiter_list> granted;  // only while calls wait in the queue
  double before = 0, after = 0;
  bool changed = false, last = false;
  {
    spin_guard g(spinlock_);
    --in_flight_;
    before = after = current();
    if (sample) {
      ++samples_;
      drops_ += dropped;
      const double limit = std::visit(
          [&](auto& a) {
            if constexpr (std::is_same_v<std::decay_t<decltype(a)>, aimd>) {
              // A drop: a loss. (A call timed for Gradient2 before a
              // reconfiguration to AIMD may come back untimed: no timeout.)
              return a.update(t == timing::none ? 0 : rtt_ns, started_with, dropped);
            } else if (dropped) {
              // A drop is no round trip: a failure's latency is not the
              // downstream's (a call refused in 1 ms, or cut by a timeout).
              return a.limit();
            } else if (t == timing::none || t == timing::coarse) {
              // Not timed, or timed for AIMD on the coarse clock before a
              // reconfiguration to Gradient2 (a tick-quantised round trip).
              a.note(started_with);
              return a.limit();
            } else {
              return a.sample(now_ns, rtt_ns, started_with,
                              t == timing::sampled ? round_trip_samples::mean_gap : 1);
            }
          },
          algorithm_);
      min_seen_ = std::min(min_seen_, limit);
      max_seen_ = std::max(max_seen_, limit);
      after = limit;
    }
    if (!queue_.empty()) [[unlikely]] {
      granted.emplace();
      while (grant_next(*granted)) {
      }
      if (granted->empty()) granted.reset();  // nothing to complete after the lock
    }
    changed =
        std::floor(before) != std::floor(after) && (listening_.load(std::memory_order_relaxed) & 1);
    // A counted frame is counted out here, unless work on the state is left
    // for after the lock (then once it is done): out, the state may go.
    if (counted && !granted && !changed) {
      counted = false;
      last = frame_out();
    }
  }
  if (granted) [[unlikely]]
    for (const auto& w : *granted) w->complete({});
  if (changed) changed_event(before);
  if (counted) [[unlikely]]
    count_out();  // may delete the state
  else if (last)
    delete this;
}

void adaptive_limit_state::count_out() noexcept {
  bool last = false;
  {
    spin_guard g(spinlock_);
    last = frame_out();
  }
  if (last) delete this;
}

void adaptive_limit_state::close() {
  waiter_list waiting;  // completed, and freed, after the spinlock is released
  {
    spin_guard g(spinlock_);
    closed_ = true;
    waiting.swap(queue_);
    for (auto& w : waiting) w->queued = false;
  }
  for (auto& w : waiting) w->complete(boost::asio::error::operation_aborted);
}

std::size_t adaptive_limit_state::in_flight() const noexcept {
  spin_guard g(spinlock_);
  return in_flight_;
}

adaptive_limit_metrics adaptive_limit_state::metrics() const {
  spin_guard g(spinlock_);
  adaptive_limit_metrics m;
  m.limit = current();
  m.min_limit_seen = min_seen_;
  m.max_limit_seen = max_seen_;
  m.in_flight = in_flight_;
  m.peak_in_flight = peak_in_flight_;
  m.queued = queue_.size();
  m.admitted = admitted_;
  m.limited = limited_;
  m.samples = samples_;
  m.drops = drops_;
  m.events_lost = events_lost_.load(std::memory_order_relaxed);
  m.reconfigurations = reconfigurations_;
  return m;
}

}  // namespace detail
}  // namespace levee
