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

  /// A bulkhead refused the call without starting it: every slot was taken
  /// and its queue was full, or the call waited in the queue longer than
  /// `bulkhead_options::max_wait`.
  bulkhead_full = 2,

  /// One attempt ran longer than its timeout (`with_timeout`) and was
  /// cancelled. A breaker counts it as a failure; a retry may try again.
  timeout = 3,

  /// The whole operation, retries included, ran past its deadline
  /// (`with_deadline`) and was cancelled. Not retried.
  deadline_exceeded = 4,

  /// An adaptive concurrency limit refused the call without starting it:
  /// as many calls as the limit allows were running (and its queue was full,
  /// or the call waited in it longer than `adaptive_limit_options::max_wait`).
  limit_exceeded = 5,
};

/// Families of levee errors, for comparison with `==` against any error_code.
enum class condition {
  /// levee refused to start the call; the downstream was not contacted.
  /// (`circuit_open`, `bulkhead_full`, `limit_exceeded`)
  rejected = 1,

  /// levee cancelled the call because it took too long.
  /// (`timeout`, `deadline_exceeded`)
  timed_out = 2,
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
