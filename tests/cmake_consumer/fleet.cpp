// Uses the installed levee::fleet (and so its hiredis dependency): a link to
// a Redis that is not there leaves the breaker local.
#include <levee/fleet/fleet.hpp>

#include <boost/asio/io_context.hpp>

#include <iostream>

int main() {
  boost::asio::io_context ioc;
  levee::circuit_breaker breaker(ioc, {}, "api");
  levee::fleet_options o;
  o.address = "127.0.0.1:1";  // nothing listens there
  levee::fleet_link link(ioc.get_executor(), o);
  link.attach(breaker);
  ioc.run_for(std::chrono::milliseconds(100));
  const auto m = link.metrics();
  std::cout << "fleet consumer: connected " << m.connected << ", errors " << m.errors << '\n';
  return m.connected ? 1 : 0;
}
