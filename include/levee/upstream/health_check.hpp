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

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
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
 public:
  /// Starts checking every endpoint of `up` through `c`.
  /// \param up The upstream; borrowed.
  /// \param c The client the checks are sent with; borrowed.
  /// \param options The options.
  /// \throws std::invalid_argument naming the member of `options` that is invalid.
  basic_health_check(basic_upstream<Clock, WaitTraits>& up, client& c,
                     health_check_options options = {})
      : state_(std::make_shared<state>(up.get_executor(), up.size(), checked(std::move(options)))) {
    for (std::size_t i = 0; i < up.size(); ++i)
      boost::asio::co_spawn(state_->strand, run(state_, &up, &c, i), boost::asio::detached);
  }
  /// Stops the checks (as `stop()`).
  ~basic_health_check() { stop(); }
  basic_health_check(const basic_health_check&) = delete;
  basic_health_check& operator=(const basic_health_check&) = delete;

  /// Stops the checks: no check starts and no verdict reaches the upstream
  /// after this returns; the timers and the checks in flight are cancelled
  /// on the upstream's executor. Idempotent.
  void stop() noexcept {
    if (!state_ || state_->stopped.exchange(true)) return;
    boost::asio::post(state_->strand, [s = state_] {
      for (auto& e : s->endpoints) {
        e->timer.cancel();
        e->cancel.emit(boost::asio::cancellation_type::terminal);
      }
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

  struct per_endpoint {
    explicit per_endpoint(const strand_type& s) : timer(s) {}
    timer_type timer;
    boost::asio::cancellation_signal cancel;
  };
  struct state {
    state(boost::asio::any_io_executor ex, std::size_t n, health_check_options o)
        : strand(boost::asio::make_strand(std::move(ex))), options(std::move(o)) {
      endpoints.reserve(n);
      for (std::size_t i = 0; i < n; ++i)
        endpoints.push_back(std::make_unique<per_endpoint>(strand));
    }
    strand_type strand;
    const health_check_options options;
    std::vector<std::unique_ptr<per_endpoint>> endpoints;  // never resized
    std::atomic<bool> stopped{false};
    std::atomic<std::uint64_t> checks{0}, failures{0};
  };

  static health_check_options checked(health_check_options o) {
    validate(o);
    return o;
  }

  // One endpoint's loop, on the strand.
  static boost::asio::awaitable<void> run(std::shared_ptr<state> s,
                                          basic_upstream<Clock, WaitTraits>* up, client* c,
                                          std::size_t i) {
    using boost::asio::as_tuple;
    using boost::asio::use_awaitable;
    per_endpoint& e = *s->endpoints[i];
    url_parts origin;
    const std::string address = up->endpoint(i).address;
    const bool valid = !parse_url(address, origin);
    // The verdict goes to the endpoint checked, only while it is still the
    // i-th (after an `update`, the check of an endpoint that left says nothing).
    const auto report = [&](bool ok) {
      try {
        if (up->endpoint(i).address == address) up->report_health(i, ok);
      } catch (const std::out_of_range&) {
      }
    };
    std::size_t failed = 0;
    for (;;) {
      e.timer.expires_after(s->options.interval);
      auto [waited] = co_await e.timer.async_wait(as_tuple(use_awaitable));
      if (waited || s->stopped.load()) co_return;
      bool healthy = false;
      if (valid) {
        auto op = c->async_request(
            origin, request(boost::beast::http::verb::get, s->options.target, 11),
            s->options.timeout,
            boost::asio::bind_cancellation_slot(e.cancel.slot(), as_tuple(use_awaitable)));
        auto [ec, res] = co_await std::move(op);
        healthy = !ec && res.result_int() >= 200 && res.result_int() < 300;
      }
      if (s->stopped.load()) co_return;
      s->checks.fetch_add(1, std::memory_order_relaxed);
      if (healthy) {
        failed = 0;
        report(true);
        continue;
      }
      s->failures.fetch_add(1, std::memory_order_relaxed);
      if (++failed >= s->options.unhealthy_threshold) report(false);
    }
  }

  std::shared_ptr<state> state_;
};

/// The steady_clock health check.
using health_check = basic_health_check<>;

}  // namespace levee::http
