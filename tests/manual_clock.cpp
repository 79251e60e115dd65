#include <levee/core/manual_clock.hpp>

#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/io_context.hpp>
#include <catch2/catch.hpp>

using namespace std::chrono_literals;
using clock_type = levee::manual_clock;

TEST_CASE("manual_clock: moves only when told") {
  clock_type::reset();
  const auto t0 = clock_type::now();
  CHECK(clock_type::now() == t0);
  clock_type::advance(1500ms);
  CHECK(clock_type::now() - t0 == 1500ms);
  clock_type::set(clock_type::time_point(5s));
  CHECK(clock_type::now().time_since_epoch() == 5s);
}

TEST_CASE("manual_clock: an Asio timer fires when the clock passes its expiry, on poll") {
  clock_type::reset();
  boost::asio::io_context ioc;
  boost::asio::basic_waitable_timer<clock_type, clock_type::wait_traits> timer(ioc, 10s);
  bool fired = false;
  timer.async_wait([&](boost::system::error_code ec) { fired = !ec; });
  ioc.poll();
  CHECK_FALSE(fired);
  clock_type::advance(9999ms);
  ioc.poll();
  CHECK_FALSE(fired);
  clock_type::advance(1ms);
  ioc.poll();
  CHECK(fired);
}

TEST_CASE("manual_clock: clocks with different tags are independent") {
  struct other_tag {};
  using other = levee::basic_manual_clock<other_tag>;
  clock_type::reset();
  other::reset();
  other::advance(1h);
  CHECK(clock_type::now().time_since_epoch() == 0s);
  CHECK(other::now().time_since_epoch() == 1h);
}
