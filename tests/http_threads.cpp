// The HTTP client shared by coroutines on a 4-thread io_context: slot waits,
// deadlines, pooled connections and cancellations racing each other. Run
// under ThreadSanitizer and AddressSanitizer in CI (label concurrency).
#include <levee/http/client.hpp>
#include <levee/timeout.hpp>

#include "http_support.hpp"

#include <boost/beast/core/error.hpp>

#include <atomic>
#include <thread>

using namespace levee_test;
namespace http = levee::http;

TEST_CASE("http threads: 4 threads, 64 coroutines, deadlines and cancellations racing") {
  // The upstream on its own thread: answers after 0 to 20 ms.
  asio::io_context server_ioc(1);
  flaky::server upstream(server_ioc.get_executor(), phases({"ok 1h latency=0ms..20ms"}));
  const std::string url = "http://127.0.0.1:" + std::to_string(upstream.start()) + "/";
  std::thread server_thread([&] { server_ioc.run(); });

  asio::io_context ioc(4);
  // Few connections and short deadlines: requests wait for slots, some time
  // out waiting, some while reading; with_timeout cancels others from outside.
  http::client client(ioc.get_executor(),
                      {.max_connections_per_host = 4, .timeout = 15ms, .idle_timeout = 5ms});
  std::atomic<int> done{0}, ok{0}, timed_out{0}, cancelled{0};
  constexpr int coroutines = 64, calls = 8;
  for (int i = 0; i < coroutines; ++i) {
    asio::co_spawn(
        ioc,
        [&, i]() -> asio::awaitable<void> {
          for (int k = 0; k < calls; ++k) {
            http::result r;
            if ((i + k) % 3 == 0) {
              r = co_await levee::with_timeout(
                  std::chrono::milliseconds(1 + (i + k) % 10),
                  http::async_get(client, url, asio::as_tuple(asio::use_awaitable)));
            } else {
              r = co_await http::async_get(client, url, asio::as_tuple(asio::use_awaitable));
            }
            const auto ec = std::get<0>(r);
            if (!ec) {
              ++ok;
            } else if (ec == boost::beast::error::timeout) {
              ++timed_out;
            } else {
              ++cancelled;
            }
            ++done;
          }
        },
        asio::detached);
  }
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t)
    threads.emplace_back([&] {
      const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(20);
      while (done < coroutines * calls && std::chrono::steady_clock::now() < end)
        ioc.run_one_for(std::chrono::milliseconds(10));
    });
  for (auto& t : threads) t.join();
  CHECK(done == coroutines * calls);  // every request ended: none hung
  CHECK(ok > 0);
  CHECK(timed_out + cancelled > 0);
  client.close_idle();
  upstream.stop();
  server_thread.join();
  ioc.restart();
  ioc.poll();
  CHECK(client.stats().connections_idle == 0);
}
