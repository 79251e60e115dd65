// levee: a completion signature's arguments seen by the breaker's
// completion-token form (`async_execute`, breaker/detail/breaker_call.hpp):
// how it carries a rejection or a probe's timeout, and the view of the
// arguments a classifier reads.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/error.hpp>

#include <boost/system/error_code.hpp>
#include <boost/system/system_error.hpp>

#include <exception>
#include <tuple>
#include <type_traits>
#include <utility>

namespace levee::detail {

// ---- result shapes ----------------------------------------------------------

/// How a completion signature carries errors, for `async_execute`.
template <class... Args>
struct error_arguments {
  static constexpr bool supported = false;
};
// `throws`: the rejection is an exception (a `circuit_open_error`, made when
// the call is rejected and passed to `reject`); otherwise an error_code.
template <class... Rest>
struct error_arguments<boost::system::error_code, Rest...> {
  static constexpr bool supported = (std::is_default_constructible_v<std::decay_t<Rest>> && ...);
  static constexpr bool throws = false;
  template <class Self>
  static void reject(Self& self, std::exception_ptr) {
    self.complete(make_error_code(error::circuit_open), std::decay_t<Rest>{}...);
  }
  template <class Self>
  static void timed_out(Self& self) {  // a probe past its deadline
    self.complete(make_error_code(error::timeout), std::decay_t<Rest>{}...);
  }
};
template <class... Rest>
struct error_arguments<std::exception_ptr, Rest...> {
  static constexpr bool supported = (std::is_default_constructible_v<std::decay_t<Rest>> && ...);
  static constexpr bool throws = true;
  template <class Self>
  static void reject(Self& self, std::exception_ptr rejection) {
    self.complete(std::move(rejection), std::decay_t<Rest>{}...);
  }
  template <class Self>
  static void timed_out(Self& self) {
    self.complete(std::make_exception_ptr(boost::system::system_error(error::timeout)),
                  std::decay_t<Rest>{}...);
  }
};
template <class... Ts>
struct error_arguments<std::tuple<boost::system::error_code, Ts...>> {  // as_tuple
  static constexpr bool supported = (std::is_default_constructible_v<Ts> && ...);
  static constexpr bool throws = false;
  template <class Self>
  static void reject(Self& self, std::exception_ptr) {
    self.complete(error_tuple<std::tuple<boost::system::error_code, Ts...>>::make(
        make_error_code(error::circuit_open)));
  }
  template <class Self>
  static void timed_out(Self& self) {
    self.complete(error_tuple<std::tuple<boost::system::error_code, Ts...>>::make(
        make_error_code(error::timeout)));
  }
};

/// A call that ended with `ex` (an `exception_ptr` completion argument): as a
/// thrown exception, a `system_error` inside it is seen through `error()` too,
/// so a cancellation is ignored and a classifier sees the code. The code is
/// copied into `thrown`, which must outlive the view.
inline call_result exception_result(const std::exception_ptr& ex,
                                    boost::system::error_code& thrown) noexcept {
  return call_result(ex, system_error_code(ex, thrown) ? &thrown : nullptr);
}

/// The view of a completion handler's arguments.
inline call_result make_arguments_result(const boost::system::error_code& ec) noexcept {
  return call_result(&ec, &value_lookup<boost::system::error_code>::find, &ec);
}
/// \param thrown Where the code of an `exception_ptr` argument holding a
/// `system_error` is kept; it must outlive the view.
template <class First, class... Rest>
call_result make_arguments_result(const std::tuple<const First&, const Rest&...>& args,
                                  boost::system::error_code& thrown) noexcept {
  using view = std::tuple<const First&, const Rest&...>;
  if constexpr (std::is_same_v<First, boost::system::error_code>) {
    return call_result(&args, &value_lookup<view>::find, &std::get<0>(args));
  } else if constexpr (std::is_same_v<First, std::exception_ptr>) {
    if (std::get<0>(args)) return exception_result(std::get<0>(args), thrown);
    return call_result(&args, &value_lookup<view>::find, nullptr);
  } else if constexpr (sizeof...(Rest) == 0) {
    return make_value_result(std::get<0>(args));  // a single value, e.g. an as_tuple tuple
  } else {
    return call_result(&args, &value_lookup<view>::find, nullptr);
  }
}

}  // namespace levee::detail
