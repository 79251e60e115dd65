// levee::fleet: this instance's breaker shares its evidence with the other
// instances through Redis. Run several at once against one redis-server:
//   levee-fleet 127.0.0.1:6379
// With Redis unreachable it runs all the same, with a local breaker.
#include <levee/fleet/fleet.hpp>

#include <boost/asio.hpp>

#include <iostream>

namespace asio = boost::asio;
using namespace std::chrono_literals;

int main(int argc, char** argv) {
  asio::io_context ioc;
  levee::circuit_breaker breaker(ioc, {.window = 10s, .minimum_calls = 20}, "recommendations");

  levee::fleet_options options;
  options.address = argc > 1 ? argv[1] : "127.0.0.1:6379";
  options.quorum = 2;  // failures must come from two instances at least
  levee::fleet_link link(ioc.get_executor(), options);
  link.attach(breaker);  // shared under its name, "recommendations"
  link.listen([](const levee::fleet_event& e) {
    std::cout << "fleet: " << levee::to_string(e.kind) << ' ' << e.reason << '\n';
  });

  // At startup: connected within 2 s, or why not (the breaker is local meanwhile).
  link.async_wait_connected(2s, [&](boost::system::error_code ec) {
    if (ec) std::cout << "fleet: not connected: " << link.metrics().last_error << '\n';
  });

  asio::steady_timer end(ioc, 3s);
  end.async_wait([&](boost::system::error_code) {
    levee::write_prometheus(std::cout, link.metrics());
    link.close();  // no pending work left: run() returns
  });
  ioc.run();
}
