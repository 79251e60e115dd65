// levee-demo: each phase's event-loop lag (phase_figures::loop_lag_ms in
// both the demo and --replicas): a stall of the machine, not of levee.
#pragma once

#include <boost/asio/awaitable.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <vector>

namespace demo {

/// On the thread that runs it, a timer due every 2 ms notes how late it
/// fired; `most[phase_now()]` keeps the most of each phase (real ns), until
/// `done`.
template <class PhaseNow>
boost::asio::awaitable<void> watch_lag(const std::atomic<bool>& done,
                                       std::vector<std::atomic<std::int64_t>>& most,
                                       PhaseNow phase_now) {
  using steady = std::chrono::steady_clock;
  boost::asio::steady_timer tick(co_await boost::asio::this_coro::executor);
  while (!done.load()) {
    const auto due = steady::now() + std::chrono::milliseconds(2);
    tick.expires_at(due);
    co_await tick.async_wait(boost::asio::use_awaitable);
    const std::int64_t late = (steady::now() - due).count();
    auto& m = most[phase_now()];
    std::int64_t seen = m.load();
    while (late > seen && !m.compare_exchange_weak(seen, late)) {
    }
  }
}

}  // namespace demo
