// Linked into every test program labelled `unit` and into the HTTP programs
// that also run on virtual time (tests/CMakeLists.txt): the programs that use
// levee::manual_clock.
//
// Asio's epoll reactor on Linux arms a timerfd for its timers, and checks its
// timer queues only on a turn where that timerfd is readable. A manual_clock
// timer asks to be checked "at once" (its wait traits return zero), so the
// reactor arms the timerfd at an absolute 1 ns, and the test's one `poll()`
// after `advance()` finds the due timer only if the kernel has delivered that
// expiry by the time `epoll_wait(..., 0)` looks. This machine's kernel does so
// within `timerfd_settime` (0 misses in 1,000,000 tries); on a machine whose
// timer interrupt can be late (a loaded virtual runner), the poll misses it
// and the test sees a call that has not finished: the rare failure once seen
// in tests/timeout.cpp. Boost 1.81 has no macro to build Asio without the
// timerfd, but the reactor falls back to checking its timers on every turn
// when `timerfd_create` fails. This definition makes it fail, for this
// program only (the library and its users are not touched).
// tests/late_timer.cpp delivers the kernel's expiry late on purpose, and fails
// without this file.
//
// Without a timerfd, a real-time wait sleeps in `epoll_wait`, whose timeout
// is in whole milliseconds: a real timer due in under a millisecond waits one
// (a longer wait is cut to whole milliseconds, and the reactor waits again
// for the rest). A test of real sub-millisecond timers makes its reactor with
// `with_real_timerfd` (tests/no_timerfd.hpp), as tests/probe_timeout.cpp's
// threaded race does.
#include "no_timerfd.hpp"

#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cerrno>

std::atomic<bool> levee_test::real_timerfd{false};

extern "C" int timerfd_create(clockid_t clock, int flags) noexcept {
  if (levee_test::real_timerfd.load())
    return static_cast<int>(syscall(SYS_timerfd_create, clock, flags));
  errno = ENOSYS;
  return -1;
}
