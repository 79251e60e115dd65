// levee: the active health check of an HTTP upstream: a GET of a path on
// every endpoint at an interval, with its own deadline (docs/upstream.md).
#pragma once

#include <levee/http/client.hpp>
#include <levee/upstream/options.hpp>
#include <levee/upstream/upstream.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/verb.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_set>
#include <utility>
#include <vector>

namespace levee::http {

/// The active health check of an HTTP upstream whose endpoints are origins
/// (docs/upstream.md). While it runs, each endpoint is sent `GET target`
/// every `interval` (from the end of one check to the start of the next),
/// each check with its own deadline (`timeout`) and outside every breaker.
/// A 2xx passes; anything else, an error or the deadline fails. After
/// `unhealthy_threshold` failed checks in a row an endpoint in service is
/// ejected; a passing check returns an ejected endpoint at once
/// (`basic_upstream::report_health`). The first checks start one interval
/// after construction.
///
/// It follows `basic_upstream::update` (a name watch's lookups included):
/// once an interval, at a turn of any endpoint's checks, it compares the
/// endpoints it checks with the upstream's (O(n) for n endpoints). An endpoint that came is checked
/// from one interval later (so within two intervals and a check's timeout of the update); one that
/// left is checked no more once the check has looked (within an interval and a check's timeout
/// of the update; a check sent before that has its verdict dropped), and a check of it that was
/// due then ends unsent. Checks follow endpoints by
/// address: a verdict goes to the endpoint with that address, whatever its index has become.
///
/// Pending work: one timer per endpoint, or its check in flight, until
/// `stop()` or destruction; that is the only pending work of an upstream
/// that is otherwise idle. `Clock` (the upstream's) times the intervals;
/// the deadline is the client's (real time).
///
/// Thread safety: `stop` may be called from any thread. Lifetime: `up` and
/// `c` are borrowed and must outlive the check; after `stop()` (or the
/// destructor) the checks in flight are cancelled and nothing touches `up`
/// again, but `c` must outlive them (they end at the client's next turn).
/// Destroy it on a thread running the upstream's executor, or when that
/// executor is not running.
template <class Clock = std::chrono::steady_clock,
          class WaitTraits = levee::detail::wait_traits_of_t<Clock>>
class basic_health_check {
  using upstream_type = basic_upstream<Clock, WaitTraits>;

 public:
  /// Starts checking every endpoint of `up` through `c`.
  /// \param up The upstream; borrowed.
  /// \param c The client the checks are sent with; borrowed.
  /// \param options The options.
  /// \throws std::invalid_argument naming the member of `options` that is invalid.
  basic_health_check(upstream_type& up, client& c, health_check_options options = {})
      : state_(std::make_shared<state>(up.get_executor(), &up, &c, checked(std::move(options)))) {
    // On the strand, as every later change of the loops.
    boost::asio::post(state_->strand, [s = state_, all = up.endpoints()] {
      if (s->stopped.load()) return;
      for (const auto& e : all) add(s, e.address);
    });
  }
  /// Stops the checks (as `stop()`).
  ~basic_health_check() { stop(); }
  basic_health_check(const basic_health_check&) = delete;
  basic_health_check& operator=(const basic_health_check&) = delete;

  /// Stops the checks: no check starts and no verdict reaches the upstream
  /// after this returns; the timers and the checks in flight are cancelled
  /// on the upstream's executor. Idempotent.
  void stop() noexcept {
    if (!state_) return;
    {
      // After this, no loop touches the upstream (they look under the lock).
      std::lock_guard g(state_->up_lock);
      if (state_->stopped.exchange(true)) return;
    }
    boost::asio::post(state_->strand, [s = state_] {
      for (auto& [address, e] : s->endpoints) e->end();
    });
  }

  /// \return the checks that ended (passed or failed) so far.
  std::uint64_t checks() const noexcept { return state_->checks.load(std::memory_order_relaxed); }
  /// \return the checks that failed so far.
  std::uint64_t failures() const noexcept {
    return state_->failures.load(std::memory_order_relaxed);
  }

 private:
  using timer_type = boost::asio::basic_waitable_timer<Clock, WaitTraits>;
  using strand_type = boost::asio::strand<boost::asio::any_io_executor>;

  // One endpoint's checks; touched on the strand only.
  struct per_endpoint {
    explicit per_endpoint(const strand_type& s) : timer(s) {}
    void end() {
      gone = true;
      timer.cancel();
      cancel.emit(boost::asio::cancellation_type::terminal);
    }
    timer_type timer;
    boost::asio::cancellation_signal cancel;
    bool gone = false;  // stopped, or its endpoint left the upstream
  };
  struct state {
    state(boost::asio::any_io_executor ex, upstream_type* u, client* cl, health_check_options o)
        : strand(boost::asio::make_strand(std::move(ex))), up(u), c(cl), options(std::move(o)) {}
    strand_type strand;
    upstream_type* const up;
    client* const c;
    const health_check_options options;
    // By address; on the strand.
    std::map<std::string, std::shared_ptr<per_endpoint>, std::less<>> endpoints;
    std::optional<typename Clock::time_point> followed;  // when `follow` last looked
    std::atomic<bool> stopped{false};
    // Held while a loop uses `up`, and by `stop()` to set `stopped`: once
    // `stop()` returns, no thread is in the upstream on the check's behalf.
    std::mutex up_lock;
    std::atomic<std::uint64_t> checks{0}, failures{0};
  };

  // Tells the upstream, unless the check was stopped.
  static void report(state& s, const std::string& address, bool healthy) {
    std::lock_guard g(s.up_lock);
    if (!s.stopped.load()) s.up->report_health(address, healthy);
  }

  static health_check_options checked(health_check_options o) {
    validate(o);
    return o;
  }

  static void add(const std::shared_ptr<state>& s, const std::string& address) {
    auto e = std::make_shared<per_endpoint>(s->strand);
    s->endpoints.emplace(address, e);
    boost::asio::co_spawn(s->strand, run(s, address, std::move(e)), boost::asio::detached);
  }

  // On the strand: starts checking the endpoints that came, ends the checks
  // of those that left. The loops of those that came start before any loop
  // ends, so one always runs while the upstream has endpoints. Every loop
  // calls it at each turn; it looks at the upstream at most once an
  // interval (the first turn at or after one interval since it last looked),
  // and then in O(n): n endpoints cost O(n) an interval, not O(n^2).
  static void follow(const std::shared_ptr<state>& s) {
    const auto at = Clock::now();
    if (s->followed && at - *s->followed < s->options.interval) return;
    s->followed = at;
    std::vector<upstream_endpoint> now;
    {
      std::lock_guard g(s->up_lock);
      if (s->stopped.load()) return;
      now = s->up->endpoints();
    }
    std::unordered_set<std::string_view> stay;
    stay.reserve(now.size());
    for (const auto& e : now) {
      stay.insert(e.address);
      if (!s->endpoints.contains(e.address)) add(s, e.address);
    }
    for (auto it = s->endpoints.begin(); it != s->endpoints.end();) {
      if (stay.contains(it->first)) {
        ++it;
      } else {
        it->second->end();
        it = s->endpoints.erase(it);
      }
    }
  }

  // One endpoint's loop, on the strand.
  static boost::asio::awaitable<void> run(std::shared_ptr<state> s, std::string address,
                                          std::shared_ptr<per_endpoint> e) {
    using boost::asio::as_tuple;
    using boost::asio::use_awaitable;
    url_parts origin;
    const bool valid = !parse_url(address, origin);
    std::size_t failed = 0;
    for (;;) {
      e->timer.expires_after(s->options.interval);
      auto [waited] = co_await e->timer.async_wait(as_tuple(use_awaitable));
      if (waited || e->gone || s->stopped.load()) co_return;
      follow(s);
      if (e->gone) co_return;
      bool healthy = false;
      if (valid) {
        auto op = s->c->async_request(
            origin, request(boost::beast::http::verb::get, s->options.target, 11),
            s->options.timeout,
            boost::asio::bind_cancellation_slot(e->cancel.slot(), as_tuple(use_awaitable)));
        auto [ec, res] = co_await std::move(op);
        healthy = !ec && res.result_int() >= 200 && res.result_int() < 300;
      }
      if (e->gone || s->stopped.load()) co_return;
      s->checks.fetch_add(1, std::memory_order_relaxed);
      if (healthy) {
        failed = 0;
        report(*s, address, true);
        continue;
      }
      s->failures.fetch_add(1, std::memory_order_relaxed);
      if (++failed >= s->options.unhealthy_threshold) report(*s, address, false);
    }
  }

  std::shared_ptr<state> state_;
};

/// The steady_clock health check.
using health_check = basic_health_check<>;

}  // namespace levee::http
