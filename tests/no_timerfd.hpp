// The switch of tests/no_timerfd.cpp, for a test of real sub-millisecond
// timers in a program on virtual time.
#pragma once

#include <atomic>

namespace levee_test {

/// While true, `timerfd_create` makes a real timerfd (tests/no_timerfd.cpp).
extern std::atomic<bool> real_timerfd;

/// Gives the reactor that Asio makes while it lives a real timerfd. Asio
/// makes an io_context's reactor (and its timerfd) with the context's first
/// timer or socket, not with the context:
///
///     asio::io_context ioc;
///     {
///       with_real_timerfd real;
///       asio::steady_timer make_reactor(ioc);
///     }
struct with_real_timerfd {
  with_real_timerfd() noexcept { real_timerfd = true; }
  ~with_real_timerfd() { real_timerfd = false; }
  with_real_timerfd(const with_real_timerfd&) = delete;
  with_real_timerfd& operator=(const with_real_timerfd&) = delete;
};

}  // namespace levee_test
