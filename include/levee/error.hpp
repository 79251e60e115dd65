// levee: error codes.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <type_traits>

namespace levee {

/// Errors that levee itself produces. The values and names are permanent.
///
/// Category name: "levee". Every value is also an instance of a `condition`
/// below, so code can test a family ("levee refused the call") rather than a
/// single value.
enum class error {
  /// The circuit breaker refused the call without starting it: the breaker
  /// is OPEN, or HALF_OPEN with every probe slot taken.
  circuit_open = 1,
};

/// Families of levee errors, for comparison with `==` against any error_code.
enum class condition {
  /// levee refused to start the call; the downstream was not contacted.
  rejected = 1,
};

}  // namespace levee

namespace boost::system {
template <>
struct is_error_code_enum<::levee::error> : std::true_type {};
template <>
struct is_error_condition_enum<::levee::condition> : std::true_type {};
}  // namespace boost::system

namespace levee {

/// The "levee" error category.
const boost::system::error_category& error_category() noexcept;

/// The "levee.condition" category.
const boost::system::error_category& condition_category() noexcept;

inline boost::system::error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), error_category()};
}

inline boost::system::error_condition make_error_condition(condition c) noexcept {
  return {static_cast<int>(c), condition_category()};
}

/// True when `ec` is a levee rejection: the call was never started, so the
/// downstream saw nothing. A rejected call must not be retried immediately.
inline bool is_rejection(const boost::system::error_code& ec) noexcept {
  return ec == condition::rejected;
}

namespace detail {
/// Throws `boost::system::system_error` carrying `e`. Out of line: keeps the
/// throwing code away from hot paths.
[[noreturn]] void throw_error(error e);
}  // namespace detail

}  // namespace levee
