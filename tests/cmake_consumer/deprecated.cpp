// A consumer that still uses Asio's deprecated names (io_context::work,
// io_service): levee must not define BOOST_ASIO_NO_DEPRECATED for it.
#include <levee/levee.hpp>

#include <boost/asio/io_context.hpp>
#include <boost/asio/io_service.hpp>
#include <boost/asio/post.hpp>

#include <iostream>
#include <optional>
#include <thread>

namespace asio = boost::asio;

int main() {
  asio::io_service ioc;  // the deprecated alias of io_context
  std::optional<asio::io_context::work> work(ioc);
  std::thread runner([&] { ioc.run(); });
  levee::circuit_breaker breaker(ioc, {.minimum_calls = 1});
  bool ran = false;
  asio::post(ioc, [&] {
    ran = breaker.state() == levee::circuit_state::closed;
    work.reset();  // run() returns once nothing is left
  });
  runner.join();
  std::cout << "deprecated-names consumer: " << (ran ? "ran" : "did NOT run") << '\n';
  return ran ? 0 : 1;
}
