// levee: the steady_clock breaker's shell, compiled once in lib/.
#pragma once

#include <levee/breaker/detail/breaker_shell.hpp>

namespace levee::detail {
template class breaker_impl<std::chrono::steady_clock,
                            boost::asio::wait_traits<std::chrono::steady_clock>>;
}  // namespace levee::detail
