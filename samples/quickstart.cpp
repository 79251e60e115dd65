// Quickstart: guard a coroutine call with a circuit breaker.
//
// A downstream "recommendation API" is healthy, then fails every call for a
// while, then heals. The breaker opens after the failures, fails the next
// calls fast without touching the API, probes it when its open timer fires,
// and closes again once a probe succeeds.
#include <levee/levee.hpp>

#include <boost/asio.hpp>

#include <iostream>
#include <string>
#include <tuple>

namespace asio = boost::asio;
using namespace std::chrono_literals;

// The guarded operation: any asio::awaitable. Here, a 5 ms call that fails
// while the service is down.
asio::awaitable<std::string> fetch_recommendations(bool service_up) {
  asio::steady_timer latency(co_await asio::this_coro::executor, 5ms);
  co_await latency.async_wait(asio::use_awaitable);
  if (!service_up) throw std::runtime_error("API timeout");
  co_return "3 products";
}

// The same call in the error_code style that Beast users write.
asio::awaitable<std::tuple<boost::system::error_code, std::string>> fetch_ec(bool service_up) {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  if (!service_up) co_return std::tuple(asio::error::connection_refused, std::string());
  co_return std::tuple(boost::system::error_code(), "3 products");
}

asio::awaitable<void> agent(levee::circuit_breaker& breaker) {
  asio::steady_timer pace(co_await asio::this_coro::executor);
  for (int i = 0; i < 32; ++i) {
    const bool service_up = i < 4 || i >= 18;
    std::cout << "request " << i << ": ";
    try {
      std::string result = co_await breaker(fetch_recommendations(service_up));
      std::cout << "ok (" << result << ")";
    } catch (const boost::system::system_error& e) {
      if (e.code() != levee::error::circuit_open) throw;
      std::cout << "fast-failed, the API was not called";
    } catch (const std::exception& e) {
      std::cout << "failed (" << e.what() << ")";
    }
    std::cout << ", breaker " << levee::to_string(breaker.state()) << '\n';
    pace.expires_after(25ms);
    co_await pace.async_wait(asio::use_awaitable);
  }

  // The tuple form never throws: a rejection comes back as an error_code.
  auto [ec, body] = co_await breaker(fetch_ec(true));
  std::cout << "tuple form: " << (ec ? ec.message() : body) << '\n';
}

int main() {
  asio::io_context ioc;
  levee::circuit_breaker breaker(
      ioc,
      {.failure_rate_threshold = 0.5, .window = 10s, .minimum_calls = 5, .open_duration = 200ms});
  asio::co_spawn(ioc, agent(breaker), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  ioc.run();  // returns: a closed, idle breaker leaves no pending work
}
