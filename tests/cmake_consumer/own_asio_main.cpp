// A consumer that compiles Asio's sources itself (own_asio_src.cpp): linking
// levee must not bring a second copy of them (no multiple definitions).
#include <levee/levee.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>

#include <iostream>

namespace asio = boost::asio;

int main() {
  asio::io_context ioc;
  levee::circuit_breaker breaker(ioc, {});
  bool done = false;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer timer(ioc, std::chrono::milliseconds(1));
        co_await breaker(timer.async_wait(asio::deferred));
        done = breaker.metrics().successes == 1;
      },
      asio::detached);
  ioc.run();
  std::cout << "own-Asio consumer: " << (done ? "the guarded wait completed" : "FAILED") << '\n';
  return done ? 0 : 1;
}
