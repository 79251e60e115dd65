// levee: the upstream's shared state and one call's attempts (the Asio side
// of levee/upstream/detail/endpoint_set.hpp).
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/random.hpp>
#include <levee/core/detail/spinlock.hpp>
#include <levee/core/error.hpp>
#include <levee/retry/retry.hpp>
#include <levee/upstream/detail/endpoint_set.hpp>
#include <levee/upstream/observe.hpp>
#include <levee/upstream/options.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/post.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iterator>
#include <limits>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace levee {

/// One endpoint of an upstream, as the call it was picked for sees it.
struct upstream_endpoint {
  std::string address;  ///< as given: a URL, an origin or "host:port"
  std::size_t index = 0;
};

namespace detail {

/// The state an upstream shares with its calls in flight.
template <class Clock, class WaitTraits>
struct upstream_state {
  using breaker_type = basic_circuit_breaker<Clock, WaitTraits>;
  using listener = std::function<void(const upstream_event&)>;
  /// Where an endpoint's breaker comes from, by address (a registry's
  /// `get`); empty: the upstream makes its own.
  using breaker_source = std::function<std::shared_ptr<breaker_type>(const std::string&)>;
  struct entry {
    upstream_endpoint info;                 // its index in this generation
    std::shared_ptr<breaker_type> breaker;  // shared by the generations it is in
  };
  /// The endpoints at one time: `update` makes a new generation, calls in
  /// flight keep theirs (so their indexes stay valid).
  struct generation {
    generation(std::size_t n, const upstream_options& o) : core(n, o.outlier, o.latency_decay) {}
    endpoint_set core;
    std::vector<entry> endpoints;  // built once, never resized
  };

  static upstream_options prepared(upstream_options o) {
    if (!o.classify) o.classify = default_classify;
    if (!o.retryable) o.retryable = default_retryable;
    o.endpoint_breaker.classifier = o.classify;
    o.upstream_breaker.classifier = o.classify;
    return o;
  }

  upstream_state(boost::asio::any_io_executor ex, const std::vector<std::string>& addresses,
                 upstream_options o, std::string n, breaker_source from = {})
      : source(std::move(from)),
        options(prepared(std::move(o))),
        name(std::move(n)),
        whole(ex, options.upstream_breaker, name),
        seed(options.seed != 0 ? options.seed : random_seed()),
        executor(std::move(ex)) {
    update(addresses);
  }

  /// The current generation (a copy of a pointer, under a short lock).
  std::shared_ptr<generation> current() const {
    std::lock_guard g(generation_lock);
    return now_serving;
  }

  /// Makes `addresses` the endpoints: one that stays keeps its breaker and
  /// its ejection state; a new one starts in service; a removed one leaves
  /// the picking (its calls in flight end on the old generation).
  /// \return whether the list changed.
  bool update(const std::vector<std::string>& addresses) {
    std::lock_guard u(update_lock);  // one update at a time
    const auto old = current();
    if (old && old->endpoints.size() == addresses.size() &&
        std::equal(addresses.begin(), addresses.end(), old->endpoints.begin(),
                   [](const std::string& a, const entry& e) { return a == e.info.address; }))
      return false;
    auto next = std::make_shared<generation>(addresses.size(), options);
    next->endpoints.reserve(addresses.size());
    // Each old address's first index (a repeated address adopts from its
    // first: adopting twice would count twice): O(n), not O(n^2).
    std::unordered_map<std::string_view, std::size_t> was;
    if (old) {
      was.reserve(old->endpoints.size());
      for (std::size_t j = 0; j < old->endpoints.size(); ++j)
        was.emplace(old->endpoints[j].info.address, j);
    }
    for (std::size_t i = 0; i < addresses.size(); ++i) {
      std::shared_ptr<breaker_type> b;
      if (const auto at = was.find(addresses[i]); at != was.end()) {
        b = old->endpoints[at->second].breaker;
        next->core.adopt(i, old->core, at->second);
      }
      if (!b && source) b = source(addresses[i]);
      if (!b) b = std::make_shared<breaker_type>(executor, options.endpoint_breaker, addresses[i]);
      next->endpoints.push_back(entry{{addresses[i], i}, std::move(b)});
    }
    std::lock_guard g(generation_lock);
    now_serving = std::move(next);
    if (old) updates.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  /// The first call at or after `refresh_due` runs the refresh hook (a
  /// name watch's: it only posts a lookup); one call does, the others go on.
  void maybe_refresh(std::chrono::nanoseconds at) {
    auto due = refresh_due.load(std::memory_order_relaxed);
    if (at.count() < due) return;
    if (!refresh_due.compare_exchange_strong(due, never, std::memory_order_relaxed)) return;
    std::lock_guard g(refresh_lock);
    if (refresh) refresh();
  }

  static std::chrono::nanoseconds now() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
  }

  /// 64 random bits: a counter through splitmix64, no lock.
  std::uint64_t random() noexcept {
    splitmix64 g{seed + 0x9e3779b97f4a7c15ull * draws.fetch_add(1, std::memory_order_relaxed)};
    return g.next();
  }

  /// Tells the listeners about an ejection or a return (posted, outside every lock).
  void note(const generation& gen, std::size_t i, const endpoint_change& ch) {
    if (ch.kind == endpoint_change::nothing) return;
    upstream_event ev;
    ev.kind =
        ch.kind == endpoint_change::ejected ? upstream_event::ejected : upstream_event::returned;
    ev.endpoint = i;
    ev.address = gen.endpoints[i].info.address;
    ev.ejected_for = ch.ejected_for;
    ev.level = ch.level;
    ev.cause = ch.cause;
    std::lock_guard g(listeners_lock);
    for (const auto& [id, fn] : listeners) boost::asio::post(executor, [fn = fn, ev] { fn(ev); });
  }

  upstream_metrics metrics() const {
    upstream_metrics m;
    m.name = name;
    const auto gen = current();
    const auto& endpoints = gen->endpoints;
    m.endpoints.reserve(endpoints.size());
    for (std::size_t i = 0; i < endpoints.size(); ++i) {
      const endpoint_view v = gen->core.view(i);
      upstream_endpoint_metrics e;
      e.address = endpoints[i].info.address;
      e.ejected = v.state != endpoint_state::in_service;
      e.probing = v.state == endpoint_state::probing;
      e.outstanding = v.outstanding;
      e.consecutive_failures = v.consecutive_failures;
      e.level = v.level;
      e.ejections = v.ejections;
      e.returns = v.returns;
      std::copy(std::begin(v.ejections_by), std::end(v.ejections_by), e.ejections_by);
      std::copy(std::begin(v.returns_by), std::end(v.returns_by), e.returns_by);
      e.success_rate = v.success_rate;
      e.latency = v.latency;
      e.breaker = endpoints[i].breaker->metrics();
      m.endpoints.push_back(std::move(e));
    }
    m.ejected = gen->core.ejected_count();
    m.panicking = gen->core.panicking();
    m.retries = retries.load(std::memory_order_relaxed);
    m.updates = updates.load(std::memory_order_relaxed);
    m.resolutions = resolutions.load(std::memory_order_relaxed);
    m.resolution_failures = resolution_failures.load(std::memory_order_relaxed);
    m.breaker = whole.metrics();
    return m;
  }

  breaker_source source;  // before `options`: the constructor uses both
  const upstream_options options;
  const std::string name;
  mutable std::mutex generation_lock;  // guards now_serving (a pointer's copy)
  std::mutex update_lock;
  std::shared_ptr<generation> now_serving;
  breaker_type whole;
  const std::uint64_t seed;
  std::atomic<std::uint64_t> draws{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> updates{0};
  // Re-resolution (levee::http::basic_name_watch): `refresh` and
  // `refresh_owner` under `refresh_lock`; `refresh_due` in Clock's ns.
  static constexpr std::int64_t never = std::numeric_limits<std::int64_t>::max();
  std::atomic<std::int64_t> refresh_due{never};
  std::mutex refresh_lock;
  std::function<void()> refresh;
  std::uint64_t refresh_owner = 0;
  std::atomic<std::uint64_t> resolutions{0};
  std::atomic<std::uint64_t> resolution_failures{0};
  boost::asio::any_io_executor executor;
  std::mutex listeners_lock;
  std::vector<std::pair<std::uint64_t, listener>> listeners;
  std::uint64_t next_listener = 1;
};

/// The endpoints that several concurrent calls of one logical request
/// picked (`basic_upstream::operator()(fn, tried)`: a hedge's attempts), so
/// that each one avoids the others' while another endpoint is left. An
/// endpoint is known by its breaker, which it keeps across `update`s: an
/// index is only valid in its generation, and the attempts of one request
/// may start on different generations. Any thread (a short lock).
class shared_tried {
 public:
  static constexpr std::size_t kept = 16;
  /// Notes that the endpoint whose breaker is `id` was picked. The breaker
  /// is kept alive while this is: its address cannot be reused by another
  /// endpoint's breaker (after an `update` freed it) and mistaken for it.
  void add(const std::shared_ptr<const void>& id) noexcept {
    spin_guard g(lock_);
    if (n_ >= kept) return;
    for (std::size_t k = 0; k < n_; ++k)
      if (at_[k].get() == id.get()) return;
    at_[n_++] = id;
  }
  /// Adds to `out[0, n)` the indexes, in `endpoints` (a generation's), of
  /// the endpoints noted here, without duplicates, up to `kept`; a noted
  /// endpoint that `endpoints` lacks is skipped.
  /// \return the new count.
  template <class Entries>
  std::size_t merge_into(std::array<std::size_t, kept>& out, std::size_t n,
                         const Entries& endpoints) noexcept {
    spin_guard g(lock_);
    for (std::size_t k = 0; k < n_; ++k)
      for (std::size_t i = 0; i < endpoints.size() && n < kept; ++i)
        if (endpoints[i].breaker.get() == at_[k].get() &&
            std::find(out.begin(), out.begin() + n, i) == out.begin() + n)
          out[n++] = i;  // every index of a repeated address
    return n;
  }

 private:
  spinlock lock_;
  std::array<std::shared_ptr<const void>, kept> at_{};
  std::size_t n_ = 0;
};

/// One call: picks an endpoint, runs `fn(endpoint)` under the endpoint's
/// breaker, records the outcome, and on a retryable failure tries another
/// endpoint (the budget permitting), up to `max_attempts`. An endpoint
/// whose breaker refused (nothing was sent) is passed over without using an
/// attempt; when every endpoint refused, that refusal is the result.
template <class T, class Executor, class State, class Fn>
boost::asio::awaitable<T, Executor> upstream_attempts(std::shared_ptr<State> s, Fn fn,
                                                      shared_tried* shared = nullptr) {
  constexpr std::size_t kept = shared_tried::kept;  // the endpoints a call remembers having tried
  std::array<std::size_t, kept> tried{};
  std::size_t n_tried = 0;
  const auto remember = [&](std::size_t i) {
    if (n_tried < kept) tried[n_tried++] = i;
  };
  const upstream_options& o = s->options;
  const auto gen = s->current();  // this call's endpoints, whatever `update` does meanwhile
  endpoint_set& core = gen->core;
  std::size_t refused = 0;
  for (std::size_t attempt = 1;;) {
    const auto at = State::now();
    if (attempt == 1) s->maybe_refresh(at);  // at most a post; never waits
    // A hedge's attempts avoid each other's endpoints (as retries do).
    if (shared) n_tried = shared->merge_into(tried, n_tried, gen->endpoints);
    const endpoint_choice c = core.pick(at, s->random(), {tried.data(), n_tried});
    auto& e = gen->endpoints[c.index];
    if (shared) shared->add(e.breaker);
    std::optional<T> value;
    std::exception_ptr ex;
    boost::system::error_code thrown;
    bool threw_code = false;
    try {
      // No temporary inside the co_await expression: GCC 12 has destroyed
      // such temporaries twice (tests/upstream_http.cpp's server met it).
      auto guarded = (*e.breaker)(fn(std::as_const(e.info)));
      T v = co_await std::move(guarded);
      value.emplace(std::move(v));
    } catch (const boost::system::system_error& err) {
      ex = std::current_exception();
      thrown = err.code();
      threw_code = true;
    } catch (...) {
      ex = std::current_exception();
    }
    const call_result r =
        value ? make_value_result(*value) : call_result(ex, threw_code ? &thrown : nullptr);
    if (r.error() && *r.error() == error::circuit_open) {
      // The endpoint's breaker said no: nothing was sent. Another endpoint,
      // unless every one of them refused.
      core.release(c);
      remember(c.index);
      if (++refused < core.size()) continue;
    } else {
      const outcome out = o.classify(r);
      const auto now = State::now();
      s->note(*gen, c.index, core.complete(c, out, now));
      for (const auto& [i, ch] : core.sweep(now)) s->note(*gen, i, ch);
      const bool again = out == outcome::failure && o.retryable(r);
      if (again && attempt < o.max_attempts &&
          (!o.budget || o.budget->try_withdraw(State::now()))) {
        remember(c.index);
        ++attempt;
        s->retries.fetch_add(1, std::memory_order_relaxed);
        continue;
      }
      // As levee::retry: only a real success earns retries.
      if (o.budget && !again && !o.retryable(r) && default_classify(r) == outcome::success)
        o.budget->deposit(State::now());
    }
    if (value) co_return std::move(*value);
    std::rethrow_exception(ex);
  }
}

}  // namespace detail
}  // namespace levee
