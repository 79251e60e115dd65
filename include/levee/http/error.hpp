/// \file
/// The HTTP layer's own error codes.
#pragma once

#include <boost/system/error_code.hpp>

#include <type_traits>

namespace levee::http {

/// Errors the HTTP client produces itself, before or after the network. The
/// values and names are permanent. Category name: "levee.http".
///
/// `invalid_url` and `invalid_request` compare equal to
/// `boost::system::errc::invalid_argument`; `levee::http::classify` counts
/// them as neither a success nor a failure (the downstream was never
/// contacted: the caller's input was wrong), and `levee::http::retryable`
/// never retries them.
enum class error {
  /// The URL is not `http[s]://host[:port][/path][?query][#fragment]`
  /// (RFC 3986): an unknown scheme, user information, an empty or malformed
  /// host, a port outside [1, 65535], or a space, control or non-ASCII
  /// character anywhere (percent-encode them).
  invalid_url = 1,

  /// The request would be sent differently from what it says: its target,
  /// method, a header name or a header value holds a character that would
  /// split or change the request (CR, LF, NUL, another control character, or
  /// a space in the target). Nothing was sent.
  invalid_request = 2,

  /// The server answered `101 Switching Protocols`, which the client never
  /// asks for.
  unexpected_upgrade = 3,

  /// The server sent more interim (1xx) responses before the final one than
  /// the client accepts (8).
  too_many_interim_responses = 4,
  /// A request's deadline header (`deadline_reader`) says its caller's
  /// deadline has passed, or leaves no more than the margin: refused with 504.
  deadline_expired = 5,
  /// A request's deadline header is not one decimal integer of at most 19
  /// digits, or appears twice: refused with 400.
  malformed_deadline = 6,
};

/// The category of `levee::http::error`.
/// \return the one category named "levee.http".
const boost::system::error_category& error_category() noexcept;

/// Makes `levee::http::error` values convertible to `error_code` (found by
/// argument-dependent lookup).
/// \param e An HTTP layer error.
/// \return `e` in `levee::http::error_category()`.
inline boost::system::error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// True for the errors that mean "the caller's input was wrong, nothing was
/// sent": `invalid_url`, `invalid_request`.
/// \param ec Any error_code.
/// \return whether `ec` is one of those two, in this category.
inline bool is_invalid_input(const boost::system::error_code& ec) noexcept {
  return ec.category() == error_category() &&
         (ec.value() == static_cast<int>(error::invalid_url) ||
          ec.value() == static_cast<int>(error::invalid_request));
}

}  // namespace levee::http

namespace boost::system {
template <>
struct is_error_code_enum<::levee::http::error> : std::true_type {};
}  // namespace boost::system
