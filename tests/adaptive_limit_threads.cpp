// The adaptive limit shared by coroutines on four threads (its queue's
// max_wait timers racing grants): calls in flight
// never exceed the limit. Run under ThreadSanitizer in CI (label concurrency).
#include <levee/adaptive_limit.hpp>

#include "support.hpp"

#include <boost/asio/steady_timer.hpp>

#include <atomic>
#include <thread>
#include <vector>

using namespace levee_test;

TEST_CASE("adaptive limit threads: in flight never exceeds the limit on 4 threads") {
  asio::io_context ioc(4);
  // A fixed limit of 8, and a queue: the bound is exact.
  levee::adaptive_limit fixed(ioc, {.initial_limit = 8,
                                    .min_limit = 8,
                                    .max_limit = 8,
                                    .max_queue = 16,
                                    .max_wait = std::chrono::milliseconds(50)});
  // A moving one: never more than max_limit.
  levee::adaptive_limit moving(ioc, {.algorithm = levee::limit_algorithm::aimd,
                                     .initial_limit = 4,
                                     .min_limit = 2,
                                     .max_limit = 12});
  std::atomic<int> running{0}, peak{0}, running_moving{0}, peak_moving{0}, ended{0};
  auto note = [](std::atomic<int>& now, std::atomic<int>& top) {
    const int n = ++now;
    for (int p = top.load(); n > p && !top.compare_exchange_weak(p, n);) {
    }
  };
  auto work = [&](std::atomic<int>& now, std::atomic<int>& top,
                  int i) -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
    note(now, top);
    asio::steady_timer t(co_await asio::this_coro::executor, std::chrono::microseconds(i % 7 * 50));
    co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    --now;
    co_return std::tuple(i % 5 == 0 ? boost::system::error_code(asio::error::connection_reset)
                                    : boost::system::error_code(),
                         i);
  };
  constexpr int coroutines = 32, calls = 50;
  for (int c = 0; c < coroutines; ++c) {
    asio::co_spawn(
        ioc,
        [&, c]() -> asio::awaitable<void> {
          for (int k = 0; k < calls; ++k) {
            co_await fixed(work(running, peak, c * calls + k));
            co_await moving(work(running_moving, peak_moving, c * calls + k));
          }
          ++ended;
        },
        asio::detached);
  }
  std::vector<std::thread> others;
  for (int t = 0; t < 3; ++t) others.emplace_back([&] { ioc.run(); });
  ioc.run();
  for (auto& t : others) t.join();
  CHECK(ended == coroutines);
  CHECK(peak <= 8);
  CHECK(peak_moving <= 12);
  CHECK(fixed.in_flight() == 0);
  CHECK(moving.in_flight() == 0);
  CHECK(moving.metrics().peak_in_flight <= 12);
}
