// levee: the two ways a guarded call reports an error, shared by every layer.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/error.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/system/system_error.hpp>

#include <exception>
#include <tuple>
#include <type_traits>

namespace levee::detail {

/// `{ec, T{}...}` for a `std::tuple<error_code, T...>` result: how levee
/// reports its own errors (rejections, timeouts) without throwing.
template <class Tuple>
struct error_tuple;
template <class... Ts>
struct error_tuple<std::tuple<boost::system::error_code, Ts...>> {
  static_assert((std::is_default_constructible_v<Ts> && ...),
                "levee: the error_code form of a levee error returns {ec, T{}...}: every T must be "
                "default-constructible");
  static std::tuple<boost::system::error_code, Ts...> make(boost::system::error_code ec) {
    return {ec, Ts{}...};
  }
};

/// A levee error in a call's own shape: `{ec, T{}...}` when `T` is
/// `std::tuple<error_code, ...>`, otherwise a thrown `system_error`. (For
/// `void`, `co_return error_result<void>(ec);` throws.)
template <class T>
T error_result(boost::system::error_code ec) {
  if constexpr (is_error_tuple_v<T>) {
    return error_tuple<T>::make(ec);
  } else {
    throw boost::system::system_error(ec);
  }
}

/// The value type of an `asio::awaitable`.
template <class Awaitable>
struct awaitable_traits {
  static constexpr bool is_awaitable = false;
};
template <class T, class Executor>
struct awaitable_traits<boost::asio::awaitable<T, Executor>> {
  static constexpr bool is_awaitable = true;
  using value_type = T;
  using executor_type = Executor;
};

/// The code of the `boost::system::system_error` that `ex` holds, copied
/// into `code`; false (and `code` untouched) for any other exception.
inline bool system_error_code(const std::exception_ptr& ex,
                              boost::system::error_code& code) noexcept {
  try {
    std::rethrow_exception(ex);
  } catch (const boost::system::system_error& e) {
    code = e.code();
    return true;
  } catch (...) {
  }
  return false;
}

/// `co_spawn`'s completion signature for an `awaitable<T>`:
/// `void(std::exception_ptr, T)`, or `void(std::exception_ptr)` for `void`.
template <class T>
struct spawn_signature {
  using type = void(std::exception_ptr, T);
};
template <>
struct spawn_signature<void> {
  using type = void(std::exception_ptr);
};
template <class T>
using spawn_signature_t = typename spawn_signature<T>::type;

}  // namespace levee::detail
