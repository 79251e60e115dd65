// Linked into every test program labelled `unit` (tests/CMakeLists.txt): the
// programs that run on virtual time (levee::manual_clock).
//
// Asio's epoll reactor on Linux arms a timerfd for its timers, and checks its
// timer queues only on a turn where that timerfd is readable. A manual_clock
// timer asks to be checked "at once" (its wait traits return zero), so the
// reactor arms the timerfd at an absolute 1 ns, and the test's one `poll()`
// after `advance()` finds the due timer only if the kernel has delivered that
// expiry by the time `epoll_wait(..., 0)` looks. On a machine whose timer
// interrupt can be late (a loaded virtual runner), the poll misses it and the
// test sees a call that has not finished: the rare failure once seen in
// tests/timeout.cpp. Boost 1.81 has no macro to build Asio without the
// timerfd, but the reactor falls back to checking its timers on every turn
// when `timerfd_create` fails. This definition makes it fail, for this
// program only (the library and its users are not touched).
// tests/late_timer.cpp delivers the kernel's expiry late on purpose, and fails
// without this file.
//
// Without a timerfd, a real-time wait sleeps in `epoll_wait` with a timeout in
// whole milliseconds (rounded up), so a real timer of under a millisecond
// fires up to a millisecond late in these programs. No test of theirs measures
// real time that finely.
#include <sys/timerfd.h>

#include <cerrno>

extern "C" int timerfd_create(clockid_t, int) noexcept {
  errno = ENOSYS;
  return -1;
}
