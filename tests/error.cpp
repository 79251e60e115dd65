#include <levee/core/error.hpp>
// The header stands alone: included first.

#include <boost/asio/error.hpp>
#include <catch2/catch.hpp>

TEST_CASE("error::circuit_open is a levee error_code with a message") {
  boost::system::error_code ec = levee::error::circuit_open;
  CHECK(ec.value() == 1);
  CHECK(std::string(ec.category().name()) == "levee");
  CHECK(ec.message().find("circuit breaker is open") != std::string::npos);
  CHECK(ec == levee::error::circuit_open);
  CHECK(ec != boost::asio::error::operation_aborted);
}

TEST_CASE("condition::rejected matches every rejection and nothing else") {
  CHECK(boost::system::error_code(levee::error::circuit_open) == levee::condition::rejected);
  CHECK(levee::is_rejection(levee::error::circuit_open));
  CHECK_FALSE(levee::is_rejection(boost::asio::error::connection_refused));
  CHECK_FALSE(levee::is_rejection({}));
}

TEST_CASE("throw_error throws a system_error carrying the code") {
  try {
    levee::detail::throw_error(levee::error::circuit_open);
    FAIL("no exception");
  } catch (const boost::system::system_error& e) {
    CHECK(e.code() == levee::error::circuit_open);
  }
}
