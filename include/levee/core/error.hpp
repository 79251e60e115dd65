/// \file
/// levee's error codes, their conditions, and the exception a breaker throws.
#pragma once

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <chrono>
#include <memory>
#include <string>
#include <string_view>
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

  /// Client-side adaptive throttling (`basic_throttle`) refused the call
  /// without starting it: the downstream's recent success rate made this
  /// call one of the share the throttle sheds.
  throttled = 6,

  /// A rate limiter (`basic_rate_limiter`) refused the call without starting
  /// it: its bucket had no token, and none would come within the call's
  /// allowed wait (`rate_limiter_options::max_wait`, the caller's deadline).
  rate_limited = 7,
};

/// Families of levee errors, for comparison with `==` against any error_code.
enum class condition {
  /// levee refused to start the call; the downstream was not contacted.
  /// (`circuit_open`, `bulkhead_full`, `limit_exceeded`, `throttled`,
  /// `rate_limited`)
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

/// The category of `levee::error`.
/// \return the one category named "levee".
const boost::system::error_category& error_category() noexcept;

/// The category of `levee::condition`.
/// \return the one category named "levee.condition".
const boost::system::error_category& condition_category() noexcept;

/// Makes `levee::error` values convertible to `error_code` (found by
/// argument-dependent lookup): `ec == levee::error::circuit_open` works.
/// \param e A levee error.
/// \return `e` in `error_category()`.
inline boost::system::error_code make_error_code(error e) noexcept {
  return {static_cast<int>(e), error_category()};
}

/// Makes `levee::condition` values usable as error conditions:
/// `ec == levee::condition::rejected` works for any error_code.
/// \param c A levee condition.
/// \return `c` in `condition_category()`.
inline boost::system::error_condition make_error_condition(condition c) noexcept {
  return {static_cast<int>(c), condition_category()};
}

/// True when `ec` is a levee rejection: the call was never started, so the
/// downstream saw nothing. A rejected call must not be retried immediately.
/// \param ec Any error_code.
/// \return `ec == condition::rejected`: `circuit_open`, `bulkhead_full`,
/// `limit_exceeded`, `throttled` or `rate_limited`.
bool is_rejection(const boost::system::error_code& ec) noexcept;

/// What a circuit breaker throws when it rejects a call (the coroutine form,
/// and the `exception_ptr` of the token form): a `boost::system::system_error`
/// whose `code()` is `error::circuit_open`, so `catch (const
/// boost::system::system_error& e)` and `e.code() == levee::error::circuit_open`
/// work as before, plus when to retry (as Polly's
/// `BrokenCircuitException.RetryAfter`) and which breaker refused.
class circuit_open_error : public boost::system::system_error {
 public:
  /// \param retry_after The time until the breaker was due to admit a call.
  /// \param breaker The breaker's name (copied), or "": a named breaker's
  /// exception says its name in `what()`.
  circuit_open_error(std::chrono::nanoseconds retry_after, std::string_view breaker);

  /// The time from the rejection until the breaker was due to admit a call
  /// again (see \ref basic_circuit_breaker::retry_after): 0 when it may already;
  /// `nanoseconds::max()` when only an operator can open it (FORCED_OPEN).
  /// \return that time, measured on the breaker's clock when it rejected the call.
  std::chrono::nanoseconds retry_after() const noexcept { return retry_after_; }

  /// The name of the breaker that refused the call.
  /// \return its name ("" when unnamed; a registry's key), valid as long as
  /// this exception (or a copy of it) exists.
  std::string_view breaker() const noexcept {
    return breaker_ ? std::string_view(*breaker_) : std::string_view();
  }

 private:
  std::chrono::nanoseconds retry_after_;
  std::shared_ptr<const std::string> breaker_;  // shared: copying stays noexcept
};

namespace detail {
/// Throws `boost::system::system_error` carrying `e`. Out of line: keeps the
/// throwing code away from hot paths.
[[noreturn]] void throw_error(error e);

/// Throws `circuit_open_error`. Out of line.
[[noreturn]] void throw_circuit_open(std::chrono::nanoseconds retry_after,
                                     std::string_view breaker);

/// A `circuit_open_error` in an exception_ptr (empty if out of memory).
std::exception_ptr make_circuit_open(std::chrono::nanoseconds retry_after,
                                     std::string_view breaker) noexcept;
}  // namespace detail

}  // namespace levee
