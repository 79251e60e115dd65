#include <levee/core/classify.hpp>

#include <boost/asio/error.hpp>
#include <catch2/catch.hpp>

#include <string>

using levee::call_result;
using levee::outcome;

TEST_CASE("classify: the default rules") {
  const boost::system::error_code ok, refused = boost::asio::error::connection_refused,
                                      aborted = boost::asio::error::operation_aborted;
  CHECK(levee::default_classify(call_result()) == outcome::success);
  CHECK(levee::default_classify(call_result(nullptr, nullptr, &ok)) == outcome::success);
  CHECK(levee::default_classify(call_result(nullptr, nullptr, &refused)) == outcome::failure);
  CHECK(levee::default_classify(call_result(nullptr, nullptr, &aborted)) == outcome::ignored);
  const auto ex = std::make_exception_ptr(std::runtime_error("x"));
  CHECK(levee::default_classify(call_result(ex, nullptr)) == outcome::failure);
  CHECK(levee::default_classify(call_result(ex, &aborted)) == outcome::ignored);
  const boost::system::error_code generic_cancel =
      make_error_code(boost::system::errc::operation_canceled);
  CHECK(levee::is_cancellation(generic_cancel));
  CHECK(levee::is_cancellation(aborted));
  CHECK_FALSE(levee::is_cancellation(refused));
}

TEST_CASE("classify: a value is found by type, whole or inside a tuple") {
  const std::string body = "hello";
  const call_result whole = levee::detail::make_value_result(body);
  REQUIRE(whole.value<std::string>() != nullptr);
  CHECK(*whole.value<std::string>() == "hello");
  CHECK(whole.value<int>() == nullptr);
  CHECK(whole.error() == nullptr);

  const std::tuple<boost::system::error_code, int, std::string> t(boost::asio::error::timed_out, 7,
                                                                  "body");
  const call_result r = levee::detail::make_value_result(t);
  REQUIRE(r.error() != nullptr);
  CHECK(*r.error() == boost::asio::error::timed_out);
  CHECK(*r.value<int>() == 7);
  CHECK(*r.value<const std::string&>() == "body");
  CHECK(r.value<decltype(t)>() == &t);
  CHECK(r.value<double>() == nullptr);
  CHECK(levee::default_classify(r) == outcome::failure);
}

TEST_CASE("classify: a thrown exception is visible to a classifier") {
  const auto ex = std::make_exception_ptr(std::invalid_argument("bad request"));
  const call_result r(ex, nullptr);
  CHECK(r.threw());
  CHECK(r.value<int>() == nullptr);
  CHECK_THROWS_AS(std::rethrow_exception(r.exception()), std::invalid_argument);
}
