// The HTTP classifier, retry predicate and Retry-After parsing: no I/O.
#include <levee/http/classify.hpp>

#include <levee/core/error.hpp>
#include <levee/http/client.hpp>

#include <boost/asio/error.hpp>
#include <boost/beast/core/error.hpp>
#include <catch2/catch.hpp>

using levee::call_result;
using levee::outcome;
using levee::detail::make_value_result;
using namespace std::chrono_literals;
namespace http = levee::http;

namespace {

http::result answer(unsigned status, const char* retry_after = nullptr,
                    const char* date = nullptr) {
  http::response res(static_cast<boost::beast::http::status>(status), 11);
  if (retry_after) res.set(boost::beast::http::field::retry_after, retry_after);
  if (date) res.set(boost::beast::http::field::date, date);
  return {boost::system::error_code(), std::move(res)};
}

http::result failed(boost::system::error_code ec) {
  return {ec, http::response()};
}

std::chrono::system_clock::time_point at(int y, unsigned m, unsigned d, int h, int min, int s) {
  using namespace std::chrono;
  return sys_days(year(y) / month(m) / day(d)) + hours(h) + minutes(min) + seconds(s);
}

}  // namespace

TEST_CASE("http classify: status classes, transport errors, cancellation") {
  auto classify = [](const http::result& r) { return http::classify(make_value_result(r)); };
  CHECK(classify(answer(200)) == outcome::success);
  CHECK(classify(answer(204)) == outcome::success);
  CHECK(classify(answer(302)) == outcome::success);
  CHECK(classify(answer(400)) == outcome::success);  // the request was wrong, the server is fine
  CHECK(classify(answer(404)) == outcome::success);
  CHECK(classify(answer(429)) == outcome::failure);
  CHECK(classify(answer(500)) == outcome::failure);
  CHECK(classify(answer(502)) == outcome::failure);
  CHECK(classify(answer(503)) == outcome::failure);
  CHECK(classify(failed(boost::asio::error::connection_refused)) == outcome::failure);
  CHECK(classify(failed(boost::beast::error::timeout)) == outcome::failure);
  CHECK(classify(failed(levee::error::timeout)) == outcome::failure);
  CHECK(classify(failed(boost::asio::error::operation_aborted)) == outcome::ignored);

  // The exception form returns a bare response.
  const http::response bare(boost::beast::http::status::bad_gateway, 11);
  CHECK(http::classify(make_value_result(bare)) == outcome::failure);
  const auto thrown = std::make_exception_ptr(std::runtime_error("x"));
  CHECK(http::classify(call_result(thrown, nullptr)) == outcome::failure);
}

TEST_CASE("http retryable: 5xx, 429 and transport errors, never rejections or other 4xx") {
  auto retryable = [](const http::result& r) { return http::retryable(make_value_result(r)); };
  CHECK(retryable(answer(500)));
  CHECK(retryable(answer(503)));
  CHECK(retryable(answer(429)));
  CHECK(retryable(failed(boost::asio::error::connection_reset)));
  CHECK(retryable(failed(boost::beast::error::timeout)));
  CHECK_FALSE(retryable(answer(200)));
  CHECK_FALSE(retryable(answer(404)));
  CHECK_FALSE(retryable(answer(400)));
  CHECK_FALSE(retryable(failed(levee::error::circuit_open)));
  CHECK_FALSE(retryable(failed(levee::error::bulkhead_full)));
  CHECK_FALSE(retryable(failed(levee::error::deadline_exceeded)));
  CHECK_FALSE(retryable(failed(boost::asio::error::operation_aborted)));
}

TEST_CASE("http retry_after: delay-seconds and HTTP-dates on 429 and 503 only") {
  auto hint = [](const http::result& r) { return http::retry_after(make_value_result(r)); };
  CHECK(hint(answer(429, "120")) == std::optional<std::chrono::nanoseconds>(120s));
  CHECK(hint(answer(503, " 7 ")) == std::optional<std::chrono::nanoseconds>(7s));
  CHECK(hint(answer(503, "Sun, 06 Nov 1994 08:49:37 GMT", "Sun, 06 Nov 1994 08:49:07 GMT")) ==
        std::optional<std::chrono::nanoseconds>(30s));
  CHECK(hint(answer(503, "Sunday, 06-Nov-94 08:50:37 GMT", "Sun, 06 Nov 1994 08:49:37 GMT")) ==
        std::optional<std::chrono::nanoseconds>(60s));
  CHECK(hint(answer(503, "Sun Nov  6 08:49:47 1994", "Sun, 06 Nov 1994 08:49:37 GMT")) ==
        std::optional<std::chrono::nanoseconds>(10s));
  CHECK(hint(answer(500, "120")) == std::nullopt);  // only 429 and 503 carry a hint
  CHECK(hint(answer(200, "120")) == std::nullopt);
  CHECK(hint(answer(503)) == std::nullopt);
  CHECK(hint(answer(503, "soon")) == std::nullopt);
  CHECK(hint(answer(503, "-5")) == std::nullopt);
  CHECK(hint(failed(boost::asio::error::connection_reset)) == std::nullopt);
}

TEST_CASE("http parse_retry_after: forms, the past, limits") {
  const auto now = at(2026, 11, 27, 12, 0, 0);
  CHECK(http::parse_retry_after("0", now) == std::optional<std::chrono::nanoseconds>(0s));
  CHECK(http::parse_retry_after("Fri, 27 Nov 2026 12:00:05 GMT", now) ==
        std::optional<std::chrono::nanoseconds>(5s));
  CHECK(http::parse_retry_after("Fri, 27 Nov 2026 11:00:00 GMT", now) ==
        std::optional<std::chrono::nanoseconds>(0s));  // a date in the past: retry now
  CHECK(http::parse_retry_after("99999999", now) ==
        std::optional<std::chrono::nanoseconds>(86400s));  // clamped to a day
  CHECK_FALSE(http::parse_retry_after("", now));
  CHECK_FALSE(http::parse_retry_after("12s", now));
  CHECK_FALSE(http::parse_retry_after("1.5", now));
  CHECK_FALSE(http::parse_retry_after("99999999999999999999999", now));
}

TEST_CASE("http parse_http_date: the three forms, and nothing else") {
  const auto expected = at(1994, 11, 6, 8, 49, 37);
  CHECK(http::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT") == expected);
  CHECK(http::parse_http_date("Sunday, 06-Nov-94 08:49:37 GMT") == expected);
  CHECK(http::parse_http_date("Sun Nov  6 08:49:37 1994") == expected);
  CHECK(http::parse_http_date("Thursday, 01-Jan-26 00:00:00 GMT") == at(2026, 1, 1, 0, 0, 0));
  CHECK_FALSE(http::parse_http_date("Sun, 06 Nov 1994 08:49:37 UTC"));
  CHECK_FALSE(http::parse_http_date("Sun, 30 Feb 1994 08:49:37 GMT"));  // no such day
  CHECK_FALSE(http::parse_http_date("Sun, 06 Foo 1994 08:49:37 GMT"));
  CHECK_FALSE(http::parse_http_date("Sun, 06 Nov 1994 25:49:37 GMT"));
  CHECK_FALSE(http::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT trailing"));
  CHECK_FALSE(http::parse_http_date(""));
  // Out of the clock's range: refused, not overflowed (found by the fuzzer).
  CHECK_FALSE(http::parse_http_date("Sun, 06 Nov 0997 08:49:07 GMT"));
  CHECK_FALSE(http::parse_http_date("Sun, 06 Nov 9999 08:49:07 GMT"));
}

TEST_CASE("http parse_url") {
  http::url_parts u;
  REQUIRE_FALSE(http::parse_url("http://127.0.0.1:8080/recommendations?user=7", u));
  CHECK(u.host == "127.0.0.1");
  CHECK(u.port == 8080);
  CHECK(u.target == "/recommendations?user=7");
  REQUIRE_FALSE(http::parse_url("HTTP://example.com", u));
  CHECK(u.host == "example.com");
  CHECK(u.port == 80);
  CHECK(u.target == "/");
  REQUIRE_FALSE(http::parse_url("http://[::1]:81/x", u));
  CHECK(u.host == "::1");
  CHECK(u.port == 81);
  REQUIRE_FALSE(http::parse_url("https://example.com/", u));  // HTTPS is supported
  CHECK(u.scheme == "https");
  CHECK(u.port == 443);
  for (const char* bad : {"ftp://x", "http://", "http://:80/", "http://h:0/", "http://h:65536/",
                          "http://h:12ab/", "http://user@h/", "example.com"}) {
    INFO(bad);
    CHECK(http::parse_url(bad, u) == boost::system::errc::invalid_argument);
  }
}
