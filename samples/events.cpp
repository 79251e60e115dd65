// Events: the seed's log messages, from the breaker's event API.
//
//   Circuit breaker OPENED at 2026-11-27 14:03:07 UTC: failure rate 0.62 over 8 calls,
//     last error: Connection reset by peer
//   Circuit breaker entering HALF_OPEN (testing recovery)
//   Circuit breaker CLOSED (recovery confirmed)
//
// The downstream fails for a while, then heals; a listener logs every
// transition, and an operator alert fires if the breaker stays open longer
// than its recovery window. At the end, the metrics in Prometheus format.
#include <levee/levee.hpp>

#include <boost/asio.hpp>

#include <ctime>
#include <exception>
#include <iomanip>
#include <iostream>
#include <sstream>
#include <string>

namespace asio = boost::asio;
using namespace std::chrono_literals;

asio::awaitable<std::tuple<boost::system::error_code, int>> call_api(bool up) {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  if (!up) co_return std::tuple(asio::error::connection_reset, 0);
  co_return std::tuple(boost::system::error_code(), 42);
}

std::string wall_clock(std::chrono::system_clock::time_point t) {
  const std::time_t seconds = std::chrono::system_clock::to_time_t(t);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  std::ostringstream out;
  out << std::put_time(&utc, "%Y-%m-%d %H:%M:%S UTC");
  return out.str();
}

// What tripped the breaker, from the transition event to OPEN.
std::string cause(const levee::breaker_event& e) {
  std::ostringstream out;
  out << std::setprecision(2);
  switch (e.reason) {
    case levee::transition_reason::failure_rate:
      out << "failure rate " << e.rate << " over " << e.calls << " calls";
      break;
    case levee::transition_reason::slow_call_rate:
      out << "slow-call rate " << e.rate << " over " << e.calls << " calls";
      break;
    case levee::transition_reason::consecutive_failures:
      out << e.calls << " failures in a row";
      break;
    default:
      out << levee::to_string(e.reason);
  }
  if (e.last_error) {
    out << ", last error: " << e.last_error.message();
  } else if (e.last_exception) {
    try {
      std::rethrow_exception(e.last_exception);
    } catch (const std::exception& x) {
      out << ", last error: " << x.what();
    } catch (...) {
      out << ", last error: an exception";
    }
  }
  return out.str();
}

void log_event(const levee::breaker_event& e) {
  if (e.kind == levee::event_kind::stuck_open) {
    std::cout << "ALERT: circuit breaker '" << e.breaker
              << "' has not recovered within its recovery window\n";
    return;
  }
  switch (e.to) {
    case levee::circuit_state::open:
      std::cout << "Circuit breaker OPENED at " << wall_clock(e.when) << ": " << cause(e) << '\n';
      break;
    case levee::circuit_state::half_open:
      std::cout << "Circuit breaker entering HALF_OPEN (testing recovery)\n";
      break;
    case levee::circuit_state::closed:
      std::cout << "Circuit breaker CLOSED (recovery confirmed)\n";
      break;
    default:
      std::cout << "Circuit breaker " << levee::to_string(e.to) << " ("
                << levee::to_string(e.reason) << ")\n";
  }
}

int main() {
  asio::io_context ioc;
  levee::breaker_registry registry(
      ioc, {.defaults = {.minimum_calls = 5, .open_duration = 100ms, .recovery_window = 250ms}});
  auto breaker = registry.get("recommendations:443");
  breaker->listen(levee::transition_events, log_event);

  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer pace(co_await asio::this_coro::executor);
        const auto start = std::chrono::steady_clock::now();
        while (std::chrono::steady_clock::now() - start < 800ms) {
          // Down between 100 ms and 500 ms after the start.
          const auto t = std::chrono::steady_clock::now() - start;
          (void)co_await (*breaker)(call_api(t < 100ms || t > 500ms));
          pace.expires_after(10ms);
          co_await pace.async_wait(asio::use_awaitable);
        }
      },
      asio::detached);
  ioc.run();

  std::cout << "\n" << registry.prometheus_text();
}
