// Uses the installed package: headers, the compiled library, the error category.
#include <levee/levee.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>

#include <iostream>

namespace asio = boost::asio;

asio::awaitable<std::tuple<boost::system::error_code, int>> failing() {
  co_return std::tuple(asio::error::connection_refused, 0);
}

int main() {
  asio::io_context ioc;
  levee::circuit_breaker breaker(ioc, {.minimum_calls = 1});
  boost::system::error_code last;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        (void)co_await breaker(failing());
        last = std::get<0>(co_await breaker(failing()));
      },
      asio::detached);
  ioc.run_for(std::chrono::milliseconds(100));
  const bool ok =
      last == levee::error::circuit_open && breaker.state() == levee::circuit_state::open;
  std::cout << "consumer: " << last.message() << (ok ? " (as expected)" : " (UNEXPECTED)") << '\n';
  return ok ? 0 : 1;
}
