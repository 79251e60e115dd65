// Test support for levee::fleet: an instance of a service (its own
// io_context and threads, a breaker, optionally a fleet link) calling a fake
// downstream at a steady pace, and bounded waits on real time.
#pragma once

#include <levee/fleet/fleet.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

namespace levee_test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

/// Polls `pred` every 5 ms for up to `limit`.
inline bool wait_until(const std::function<bool()>& pred,
                       std::chrono::milliseconds limit = 3000ms) {
  const auto end = std::chrono::steady_clock::now() + limit;
  while (std::chrono::steady_clock::now() < end) {
    if (pred()) return true;
    std::this_thread::sleep_for(5ms);
  }
  return pred();
}

/// Fast settings: 50 ms buckets, a 300 ms open period.
inline levee::breaker_options fast_breaker(std::size_t minimum_calls = 10) {
  levee::breaker_options o;
  o.window = 500ms;
  o.window_buckets = 10;
  o.minimum_calls = minimum_calls;
  o.failure_rate_threshold = 0.5;
  o.open_duration = 300ms;
  o.max_half_open_duration = 2s;
  return o;
}

inline levee::fleet_options fast_fleet(const std::string& address) {
  levee::fleet_options o;
  o.address = address;
  o.connect_timeout = 300ms;
  o.command_timeout = 200ms;
  o.reconnect_min = 50ms;
  o.reconnect_max = 200ms;
  o.probe_lease = 250ms;
  o.registry_scan = 50ms;
  return o;
}

class fleet_instance {
 public:
  /// Starts calling at once, one call per `period` per coroutine.
  fleet_instance(levee::breaker_options bo, const levee::fleet_options* fo,
                 std::string name = "api", std::chrono::milliseconds period = 10ms, int threads = 1,
                 int coroutines = 1)
      : ioc_(threads), breaker_(ioc_, bo, std::move(name)), period_(period) {
    if (fo) {
      link_ = std::make_unique<levee::fleet_link>(ioc_.get_executor(), *fo);
      link_->attach(breaker_);
    }
    for (int i = 0; i < coroutines; ++i) asio::co_spawn(ioc_, loop(), asio::detached);
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { ioc_.run(); });
  }
  ~fleet_instance() { die(); }

  /// Stops everything without any cleanup: a crashed process (its link and
  /// breaker stay, nothing of them runs any more).
  void die() {
    running_ = false;
    ioc_.stop();
    for (auto& t : threads_)
      if (t.joinable()) t.join();
  }
  /// Destroys the link now (the instance goes on, local).
  void drop_link() { link_.reset(); }

  levee::circuit_breaker& breaker() { return breaker_; }
  levee::fleet_link& link() { return *link_; }
  bool connected() const { return link_ && link_->metrics().connected; }

  std::atomic<bool> sick{false};            ///< the downstream fails this instance's calls
  std::atomic<bool> traffic{true};          ///< calls are made
  std::atomic<int> delay_ms{0};             ///< each call takes this long
  std::atomic<std::uint64_t> reached{0};    ///< calls that reached the downstream
  std::atomic<std::uint64_t> failed{0};     ///< of them, failed
  std::atomic<std::uint64_t> probes{0};     ///< of them, admitted in HALF_OPEN
  std::atomic<std::uint64_t> rejected{0};   ///< refused by the breaker
  std::atomic<std::int64_t> slowest_ns{0};  ///< the longest call, rejected or not

  /// OPEN -> HALF_OPEN transitions so far.
  std::uint64_t half_opens() const {
    return breaker_.metrics().transitions[static_cast<std::size_t>(
        levee::circuit_state::open)][static_cast<std::size_t>(levee::circuit_state::half_open)];
  }
  std::uint64_t opens_from_closed() const {
    return breaker_.metrics().transitions[static_cast<std::size_t>(levee::circuit_state::closed)]
                                         [static_cast<std::size_t>(levee::circuit_state::open)];
  }

 private:
  asio::awaitable<std::tuple<boost::system::error_code, int>> call() {
    reached.fetch_add(1);
    if (breaker_.state() == levee::circuit_state::half_open) probes.fetch_add(1);
    if (const int d = delay_ms.load(); d > 0) {
      asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::milliseconds(d));
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (sick.load()) {
      failed.fetch_add(1);
      co_return std::tuple(make_error_code(boost::system::errc::connection_refused), 0);
    }
    co_return std::tuple(boost::system::error_code(), 1);
  }

  asio::awaitable<void> loop() {
    asio::steady_timer t(co_await asio::this_coro::executor);
    while (running_.load()) {
      t.expires_after(period_);
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      if (!running_.load()) break;
      if (!traffic.load()) continue;
      const auto start = std::chrono::steady_clock::now();
      auto [ec, value] = co_await breaker_(call());
      const auto took = std::chrono::duration_cast<std::chrono::nanoseconds>(
                            std::chrono::steady_clock::now() - start)
                            .count();
      std::int64_t prev = slowest_ns.load();
      while (took > prev && !slowest_ns.compare_exchange_weak(prev, took)) {
      }
      if (ec == levee::error::circuit_open) rejected.fetch_add(1);
    }
  }

  asio::io_context ioc_;
  levee::circuit_breaker breaker_;
  std::chrono::milliseconds period_;
  std::unique_ptr<levee::fleet_link> link_;
  std::atomic<bool> running_{true};
  std::vector<std::thread> threads_;
};

using fleet_vector = std::vector<std::unique_ptr<fleet_instance>>;

/// `n` instances "instance-0".. calling every `period`, linked when `fo`.
inline fleet_vector make_fleet(int n, const levee::breaker_options& bo,
                               const levee::fleet_options* fo,
                               std::chrono::milliseconds period = 10ms) {
  fleet_vector v;
  for (int i = 0; i < n; ++i) {
    auto o = fo ? std::optional<levee::fleet_options>(*fo) : std::nullopt;
    if (o) o->instance_id = "instance-" + std::to_string(i);
    v.push_back(std::make_unique<fleet_instance>(bo, o ? &*o : nullptr, "api", period));
  }
  return v;
}

template <class T, class V>
void set_all(fleet_vector& v, std::atomic<T> fleet_instance::*f, V value) {
  for (auto& i : v) ((*i).*f) = value;
}

inline bool all_in(const fleet_vector& v, levee::circuit_state s) {
  for (auto& i : v)
    if (i->breaker().state() != s) return false;
  return true;
}

inline std::uint64_t total(const fleet_vector& fleet, std::uint64_t (fleet_instance::*f)() const) {
  std::uint64_t n = 0;
  for (auto& i : fleet) n += ((*i).*f)();
  return n;
}

inline std::uint64_t total(const fleet_vector& fleet,
                           std::atomic<std::uint64_t> fleet_instance::*f) {
  std::uint64_t n = 0;
  for (auto& i : fleet) n += ((*i).*f).load();
  return n;
}

/// The links' `opens_received`, summed. A link counts an opening just after
/// the breaker's transition (on its strand): wait for the count, not only for
/// the state.
inline std::uint64_t opens_received(const fleet_vector& fleet) {
  std::uint64_t n = 0;
  for (auto& i : fleet) n += i->link().metrics().opens_received;
  return n;
}

inline bool all_connected(const fleet_vector& fleet) {
  for (auto& i : fleet)
    if (!i->connected()) return false;
  return true;
}

}  // namespace levee_test
