// Deterministic cost of the CLOSED path, in instructions: run under
// `valgrind --tool=callgrind` by bench/instructions.sh, which subtracts two runs
// of different lengths so that start-up cancels out. Unlike nanoseconds on a
// shared virtual machine, the count is the same on every run.
//
//   levee-bench-instructions
//   bare|floor|guarded|listened|count|throttle|adaptive|pair|calls|yielding|
//   hedge|rate|timeout N
//
// `listened` is `guarded` with a listener for transitions: the instructions it
// adds are what an idle listener costs every call (none expected). `count` is
// `guarded` with a count window (`window_type = window_kind::count`), as
// `closed/guarded_count_window` in bench.cpp. `throttle` is `guarded` inside a
// `levee::throttle` (default options), as `closed/guarded_throttle`.
// `adaptive` is `breaker(limit(call))` with a `levee::adaptive_limit`
// (default options), as `closed/guarded_adaptive`; `pair` is the same breaker
// and limit as one registry guard set (`registry.guards(key)`), as
// `closed/guarded_pair`. Callgrind runs without the vDSO: a clock read's own
// instructions are in the kernel and not counted, so these two undercount
// what their clock reads cost (bench/README.md). `calls` is `guarded` with a
// listener for every call, yielding every 64 calls so that the listener runs,
// and `yielding` the same loop without the listener, as
// `closed/guarded_call_listener` and `closed/guarded_yielding`. `hedge` is
// `guarded` through a `levee::hedge` (default options), answered before the
// delay, as `closed/guarded_hedge`; `rate` is `guarded` inside a rate limiter
// it never slows, as `closed/guarded_rate_limiter`; `timeout` is `guarded`
// inside `with_timeout(1s, ...)`, answered at once.
#include <levee/levee.hpp>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace asio = boost::asio;

asio::awaitable<int> trivial(int x) {
  co_return x + 1;
}

// The floor of any guard that returns an awaitable: a frame that only awaits.
template <class T>
asio::awaitable<T> wrapper_only(asio::awaitable<T> aw) {
  T value = co_await std::move(aw);
  co_return value;
}

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(
        stderr,
        "usage: %s bare|floor|guarded|listened|count|throttle|adaptive|pair|calls|yielding|"
        "hedge|rate|timeout N\n",
        argv[0]);
    return 2;
  }
  const char* mode = argv[1];
  const long n = std::atol(argv[2]);
  asio::io_context ioc(1);
  levee::breaker_options options;
  if (!std::strcmp(mode, "count")) options.window_type = levee::window_kind::count;
  levee::circuit_breaker breaker(ioc, options);
  levee::throttle throttle(ioc);
  levee::adaptive_limit limit(ioc);
  levee::hedge hedge(ioc);
  levee::rate_limiter rate(
      ioc, {.rate = 1'000'000'000, .period = std::chrono::seconds(1), .burst = 1 << 30});
  levee::breaker_registry registry(ioc, {.limits = levee::adaptive_limit_options{}});
  const auto guards = registry.guards("pair");
  long transitions = 0;
  if (!std::strcmp(mode, "listened"))
    breaker.listen(levee::transition_events, [&](const levee::breaker_event&) { ++transitions; });
  if (!std::strcmp(mode, "calls"))
    breaker.listen(levee::call_events, [&](const levee::breaker_event&) { ++transitions; });
  const bool yields = !std::strcmp(mode, "calls") || !std::strcmp(mode, "yielding");
  long result = 0;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        int x = 0;
        if (!std::strcmp(mode, "bare")) {
          for (long i = 0; i < n; ++i) x = co_await trivial(x);
        } else if (!std::strcmp(mode, "throttle")) {
          for (long i = 0; i < n; ++i) x = co_await throttle(breaker(trivial(x)));
        } else if (!std::strcmp(mode, "hedge")) {
          for (long i = 0; i < n; ++i) x = co_await hedge([&] { return breaker(trivial(x)); });
        } else if (!std::strcmp(mode, "rate")) {
          for (long i = 0; i < n; ++i) x = co_await rate(breaker(trivial(x)));
        } else if (!std::strcmp(mode, "timeout")) {
          for (long i = 0; i < n; ++i)
            x = co_await levee::with_timeout(std::chrono::seconds(1), breaker(trivial(x)));
        } else if (!std::strcmp(mode, "adaptive")) {
          for (long i = 0; i < n; ++i) x = co_await breaker(limit(trivial(x)));
        } else if (!std::strcmp(mode, "pair")) {
          for (long i = 0; i < n; ++i) x = co_await guards(trivial(x));
        } else if (!std::strcmp(mode, "floor")) {
          for (long i = 0; i < n; ++i) x = co_await wrapper_only(trivial(x));
        } else if (yields) {
          for (long i = 0; i < n; ++i) {
            x = co_await breaker(trivial(x));
            if (i % 64 == 63) co_await asio::post(ioc, asio::use_awaitable);
          }
        } else {
          for (long i = 0; i < n; ++i) x = co_await breaker(trivial(x));
        }
        result = x;
      },
      asio::detached);
  ioc.run();
  std::printf("%ld %ld\n", result, transitions);
}
