/// \file
/// What an HTTP outcome means for a breaker and for a retry policy.
#pragma once

#include <levee/core/classify.hpp>

#include <chrono>
#include <optional>
#include <string_view>

namespace levee::http {

/// The breaker classifier for HTTP calls (`breaker_options::classifier =
/// levee::http::classify`). It reads the result of `http_get`/`send` in either
/// form (a `response`, or `std::tuple<error_code, response>`):
///
/// - cancelled (`operation_aborted`): ignored;
/// - the caller's input was wrong (`error::invalid_url`,
///   `error::invalid_request`: nothing was sent): ignored;
/// - a rejection by an inner levee layer (condition `rejected`): ignored;
/// - a transport error, `beast::error::timeout`, `levee::error::timeout`, a
///   malformed response: failure;
/// - 5xx: failure;
/// - 429 Too Many Requests: failure (the downstream is overloaded);
/// - other 4xx: success (the downstream is healthy, the request was wrong);
/// - 1xx, 2xx, 3xx: success.
///
/// A thrown exception follows `default_classify`.
///
/// \param r How the call finished.
/// \return its outcome by those rules.
outcome classify(const call_result& r) noexcept;

/// The retry predicate for HTTP calls (`retry_options::retryable =
/// levee::http::retryable`): transport errors, timeouts, 5xx and 429 are worth
/// another attempt; levee rejections, cancellations, `deadline_exceeded` and
/// other 4xx are not.
/// \param r How the attempt finished.
/// \return whether another attempt is worth it.
bool retryable(const call_result& r) noexcept;

/// The delay a 429 or 503 response asks for in its Retry-After header
/// (`retry_options::retry_after = levee::http::retry_after`); nothing for other
/// outcomes or a malformed header.
/// \param r How the attempt finished.
/// \return the delay (an HTTP-date measured from the response's Date header,
/// or from the local clock without one), or nothing.
std::optional<std::chrono::nanoseconds> retry_after(const call_result& r) noexcept;

/// HTTP's rules for a pipeline, in one name: `classify`, `retryable` and
/// `retry_after`, so that every layer sees a 503 as a failure:
/// `pipeline_options{.rules = levee::http::rules()}`.
/// \return the three functions of this header.
inline call_rules rules() {
  return {&classify, &retryable, &retry_after};
}

/// Parses a Retry-After value (RFC 9110, 10.2.3): delay-seconds (`"120"`), or
/// an HTTP-date in any of its three forms (IMF-fixdate `"Sun, 06 Nov 1994
/// 08:49:37 GMT"`, obsolete RFC 850 `"Sunday, 06-Nov-94 08:49:37 GMT"`, ANSI
/// C asctime `"Sun Nov  6 08:49:37 1994"`), which is measured from `now` (the
/// response's Date header, or the local clock). A date in the past is a zero
/// delay. Malformed input gives nothing.
/// \param value The header's value.
/// \param now What a date is measured from.
/// \return the delay, or nothing.
std::optional<std::chrono::nanoseconds> parse_retry_after(
    std::string_view value, std::chrono::system_clock::time_point now) noexcept;

/// Parses an HTTP-date (RFC 9110, 5.6.7).
/// \param text A date in any of the three forms.
/// \return the time point, or nothing when `text` is not such a date.
std::optional<std::chrono::system_clock::time_point> parse_http_date(
    std::string_view text) noexcept;

}  // namespace levee::http
