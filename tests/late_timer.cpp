// Virtual time on a machine whose timer interrupt is late.
//
// This program delivers every timerfd expiry that Asio arms "at once" (an
// absolute 1 ns, what a due manual_clock timer asks for) 200 ms late, as a
// loaded virtual runner's late timer interrupt would, and checks that a
// virtual timer due after `advance()` still fires in the one `poll()` that
// follows. It does because tests/no_timerfd.cpp, linked into every program
// labelled `unit`, makes Asio's reactor check its timers on every turn. Built
// without that file, the poll misses the timer in every round.
#include "no_timerfd.hpp"
#include "support.hpp"

#include <dlfcn.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <boost/asio/steady_timer.hpp>

#include <cerrno>
#include <ctime>
#include <filesystem>
#include <system_error>

namespace {
constexpr long late_ns = 200'000'000;

bool at_once(int flags, const itimerspec* value) {
  return (flags & TFD_TIMER_ABSTIME) != 0 && value->it_value.tv_sec == 0 &&
         value->it_value.tv_nsec == 1;
}
}  // namespace

extern "C" int timerfd_settime(int fd, int flags, const itimerspec* value,
                               itimerspec* old) noexcept {
  using settime = int (*)(int, int, const itimerspec*, itimerspec*);
  static const auto real = reinterpret_cast<settime>(dlsym(RTLD_NEXT, "timerfd_settime"));
  if (at_once(flags, value)) {
    itimerspec late = *value;
    late.it_value.tv_nsec = late_ns;
    return real(fd, 0, &late, old);
  }
  return real(fd, flags, value, old);
}

namespace levee_test {
namespace {

TEST_CASE("late timer: this program delivers an at-once timerfd late") {
  int fd = -1;
  {
    with_real_timerfd real;  // a real one, past tests/no_timerfd.cpp
    fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
  }
  REQUIRE(fd >= 0);
  const int ep = epoll_create1(0);
  REQUIRE(ep >= 0);
  epoll_event interest{};
  interest.events = EPOLLIN;
  REQUIRE(epoll_ctl(ep, EPOLL_CTL_ADD, fd, &interest) == 0);
  itimerspec now{};
  now.it_value.tv_nsec = 1;
  REQUIRE(timerfd_settime(fd, TFD_TIMER_ABSTIME, &now, nullptr) == 0);
  epoll_event ready{};
  const int n = epoll_wait(ep, &ready, 1, 0);
  // Without the interposer, this machine's kernel delivers an expiry at an
  // absolute 1 ns within timerfd_settime: readable here (tests/no_timerfd.cpp).
  CHECK(n == 0);
  close(ep);
  close(fd);
}

TEST_CASE("late timer: the reactor of a virtual-time program has no timerfd") {
  errno = 0;
  const int fd = timerfd_create(CLOCK_MONOTONIC, 0);
  const int error = errno;
  if (fd >= 0) close(fd);
  CHECK(fd == -1);
  CHECK(error == ENOSYS);
}

namespace {
/// The timerfds this process has open.
int timerfds() {
  int n = 0;
  for (const auto& fd : std::filesystem::directory_iterator("/proc/self/fd")) {
    std::error_code ec;
    const auto target = std::filesystem::read_symlink(fd.path(), ec);
    n += !ec && target.string() == "anon_inode:[timerfd]";
  }
  return n;
}
}  // namespace

TEST_CASE("late timer: a context's reactor has a timerfd only when asked for") {
  const int before = timerfds();
  asio::io_context plain;
  asio::steady_timer in_plain(plain);  // the reactor is made with the first timer
  CHECK(timerfds() == before);
  asio::io_context real;
  {
    with_real_timerfd asked;
    asio::steady_timer in_real(real);
  }
  CHECK(timerfds() == before + 1);
}

TEST_CASE("late timer: a virtual timer due after advance fires in the next poll") {
  vclock::reset();
  int missed = 0;
  constexpr int rounds = 200;
  for (int round = 0; round < rounds; ++round) {
    asio::io_context ioc;
    timer t(ioc, 10ms);
    bool fired = false;
    t.async_wait([&](boost::system::error_code) { fired = true; });
    settle(ioc);  // the reactor's first turns: the timer is not due
    settle(ioc);
    REQUIRE_FALSE(fired);
    elapse(ioc, 10ms);
    if (!fired) ++missed;
    t.cancel();
    settle(ioc);
  }
  CHECK(missed == 0);
}

}  // namespace
}  // namespace levee_test
