// levee: which Asio wait traits go with a clock.
#pragma once

#include <boost/asio/wait_traits.hpp>

#include <type_traits>

namespace levee::detail {

/// `Clock::wait_traits` when the clock defines one (as `manual_clock` does),
/// otherwise `asio::wait_traits<Clock>`.
template <class Clock, class = void>
struct wait_traits_of {
  using type = boost::asio::wait_traits<Clock>;
};
template <class Clock>
struct wait_traits_of<Clock, std::void_t<typename Clock::wait_traits>> {
  using type = typename Clock::wait_traits;
};
template <class Clock>
using wait_traits_of_t = typename wait_traits_of<Clock>::type;

}  // namespace levee::detail
