/// \file
/// Outcomes of guarded calls and how they are classified.
#pragma once

#include <levee/core/error.hpp>

#include <boost/system/error_code.hpp>

#include <chrono>
#include <exception>
#include <functional>
#include <optional>
#include <tuple>
#include <type_traits>
#include <typeinfo>

namespace levee {

/// What a finished call means for the breaker.
enum class outcome {
  success,  ///< counts as a success in the window (and towards closing in HALF_OPEN)
  failure,  ///< counts as a failure in the window (and reopens in HALF_OPEN)
  ignored,  ///< not counted at all; a probe slot is given back
};

/// A read-only view of how a guarded call finished, handed to a classifier.
///
/// A call ends in one of three ways, and the view answers for each:
/// - it threw: `exception()` is set; when the exception is a
///   `boost::system::system_error`, `error()` points at its code too;
/// - it returned an error_code (the first element of a
///   `std::tuple<error_code, T...>`, or the first argument of a completion
///   handler): `error()` points at it;
/// - it returned a value: `value<T>()` finds it by type, whether it is the
///   whole result or one element of a tuple result.
///
/// The view refers to the call's result, which lives only while the classifier
/// runs: do not keep the pointers.
class call_result {
 public:
  /// Finds, in the returned `object`, the value of type `type` (the whole
  /// result, or one element of a tuple), or returns null. levee makes these;
  /// a test that builds a `call_result` by hand may too.
  using lookup_fn = const void* (*)(const void* object, const std::type_info& type) noexcept;

  /// A call that returned nothing (`awaitable<void>`) and did not throw.
  call_result() noexcept = default;

  /// A call that threw.
  /// \param ex The exception.
  /// \param ec The code of a thrown `boost::system::system_error`, or null;
  /// borrowed: it must outlive the view.
  call_result(std::exception_ptr ex, const boost::system::error_code* ec) noexcept
      : error_(ec), exception_(std::move(ex)) {}

  /// A call that returned a value.
  /// \param object The returned value; borrowed.
  /// \param lookup How to find a value of a given type in `object`.
  /// \param ec The error_code the call returned (the first element of its
  /// tuple), or null; borrowed.
  call_result(const void* object, lookup_fn lookup, const boost::system::error_code* ec) noexcept
      : error_(ec), object_(object), lookup_(lookup) {}

  /// The error_code the call produced, or null when there is none. A zero
  /// error_code is reported too (the pointer is non-null, `!*error()`).
  /// \return that code, or null.
  const boost::system::error_code* error() const noexcept { return error_; }

  /// The exception the call threw.
  /// \return the exception, or a null `exception_ptr`.
  const std::exception_ptr& exception() const noexcept { return exception_; }

  /// Whether the call threw.
  /// \return true when `exception()` is set.
  bool threw() const noexcept { return static_cast<bool>(exception_); }

  /// The returned value of type `T` (cv and references ignored), or one
  /// element of type `T` of a returned tuple, or null.
  /// \tparam T The type to look for.
  /// \return a pointer into the call's result, valid while the classifier
  /// runs, or null (the call threw, returned nothing, or no such value).
  template <class T>
  const std::remove_cvref_t<T>* value() const noexcept {
    using type = std::remove_cvref_t<T>;
    if (!lookup_) return nullptr;
    return static_cast<const type*>(lookup_(object_, typeid(type)));
  }

 private:
  const boost::system::error_code* error_ = nullptr;
  std::exception_ptr exception_;
  const void* object_ = nullptr;
  lookup_fn lookup_ = nullptr;
};

/// True for the codes that mean "the operation was cancelled":
/// `asio::error::operation_aborted` and anything equivalent to
/// `errc::operation_canceled`.
/// \param ec Any error_code.
/// \return whether `ec` means a cancellation.
bool is_cancellation(const boost::system::error_code& ec) noexcept;

/// The default rules (README, "How the breaker behaves"):
/// - cancellation (`operation_aborted`), thrown or returned: ignored;
/// - a rejection by an inner levee layer (`limit_exceeded`, `bulkhead_full`,
///   an inner breaker's `circuit_open`: condition `rejected`), thrown or
///   returned: ignored (the downstream was not contacted: it says nothing of
///   its health);
/// - any other exception: failure;
/// - a non-zero error_code: failure;
/// - anything else: success.
///
/// \param r How the call finished.
/// \return its outcome by those rules.
outcome default_classify(const call_result& r) noexcept;

/// A per-breaker classifier. Empty means `default_classify`. It runs on the
/// thread that completes the call, must be thread-safe when the breaker is
/// shared, and should not throw: an exception escaping it counts the call as a
/// failure.
using classifier = std::function<outcome(const call_result&)>;

/// What a protocol says about its results, in one place, for every layer of
/// a pipeline (levee/pipeline.hpp): which results are failures, which are
/// worth another attempt, and what delay the downstream asked for.
/// `levee::http::rules()` is HTTP's. Empty members: levee's default rules.
struct call_rules {
  /// Success, failure or ignored: for the breaker, the limit and the fallback.
  /// Empty: `default_classify`.
  levee::classifier classify = {};
  /// Whether another attempt is worth it. Empty: `default_retryable`, plus
  /// every result that `classify` calls a failure (when `classify` is set).
  std::function<bool(const call_result&)> retryable = {};
  /// A delay the downstream asked for (HTTP Retry-After). Empty: no hints.
  std::function<std::optional<std::chrono::nanoseconds>(const call_result&)> retry_after = {};
};

namespace detail {

template <class T>
struct is_error_tuple : std::false_type {};
template <class... Ts>
struct is_error_tuple<std::tuple<boost::system::error_code, Ts...>> : std::true_type {};

template <class T>
inline constexpr bool is_error_tuple_v = is_error_tuple<std::remove_cvref_t<T>>::value;

template <class T>
struct value_lookup {
  static const void* find(const void* object, const std::type_info& type) noexcept {
    return type == typeid(T) ? object : nullptr;
  }
};

template <class... Ts>
struct value_lookup<std::tuple<Ts...>> {
  using tuple_type = std::tuple<Ts...>;
  static const void* find(const void* object, const std::type_info& type) noexcept {
    const auto& t = *static_cast<const tuple_type*>(object);
    if (type == typeid(tuple_type)) return object;
    const void* found = nullptr;
    std::apply(
        [&](const auto&... element) {
          ((found == nullptr && type == typeid(std::remove_cvref_t<decltype(element)>)
                ? (found = &element, 0)
                : 0),
           ...);
        },
        t);
    return found;
  }
};

/// The view of a returned value: a tuple whose first element is an error_code
/// reports that code through `error()`.
template <class T>
call_result make_value_result(const T& value) noexcept {
  const boost::system::error_code* ec = nullptr;
  if constexpr (is_error_tuple_v<T>) ec = &std::get<0>(value);
  return call_result(&value, &value_lookup<T>::find, ec);
}

}  // namespace detail
}  // namespace levee
