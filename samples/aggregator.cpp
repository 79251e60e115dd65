// The aggregator: a product page built from two downstream HTTP APIs, prices
// and stock, called at once on a 2-thread io_context. One levee::pipeline per
// host holds every layer (docs/pipeline.md); a fallback answers when a host
// is down. The stock API answers 503 to everything for 300 ms: its breaker
// opens, the fallback answers at once, and the page is still served.
#include <levee/http.hpp>
#include <levee/pipeline.hpp>

#include <boost/asio.hpp>

#include <flaky/server.hpp>

#include <atomic>
#include <iostream>
#include <memory>
#include <string>
#include <thread>
#include <tuple>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using result = std::tuple<boost::system::error_code, levee::http::response>;

// One pipeline per host: HTTP's rules for every layer in one name, and the
// answer to give when the host is down or refused.
levee::pipeline_options<result> per_host(std::string name, std::string fallback) {
  levee::http::response answer;
  answer.body() = std::move(fallback);
  return {.name = std::move(name),
          .rules = levee::http::rules(),
          .fallback = {{.value = result(boost::system::error_code(), std::move(answer))}},
          .deadline = 1s,
          .retry = levee::retry_options{.max_attempts = 3,
                                        .initial_delay = 5ms,
                                        .max_delay = 20ms,
                                        .budget = std::make_shared<levee::retry_budget>()},
          .breaker = levee::breaker_options{.minimum_calls = 5, .open_duration = 100ms},
          .limit = levee::adaptive_limit_options{},
          .timeout = 200ms};
}

// Both calls at once. Asio 1.81's parallel_group and operator&& can race when
// their operations complete on two threads (Asio issues 1348 and 1630), so:
// the page runs on a strand, each call is co_spawned on that strand with its
// handler bound to it, and the page waits on a timer that the last handler
// cancels. Everything that touches `answers` runs on the strand.
asio::awaitable<std::string> page(levee::pipeline<result>& prices, levee::pipeline<result>& stock,
                                  levee::http::client& client, const std::string& prices_url,
                                  const std::string& stock_url) {
  auto strand = co_await asio::this_coro::executor;  // the page was spawned on a strand
  std::string answers[2];
  int pending = 2;
  asio::steady_timer joined(strand, asio::steady_timer::time_point::max());
  auto call = [&](levee::pipeline<result>& pipe, const std::string& url, std::string& answer) {
    asio::co_spawn(strand,
                   pipe(levee::http::async_get(client, url, asio::as_tuple(asio::deferred))),
                   asio::bind_executor(strand, [&](std::exception_ptr e, result r) {
                     answer = e ? "error" : std::get<1>(r).body();
                     if (--pending == 0) joined.cancel();
                   }));
  };
  call(prices, prices_url, answers[0]);
  call(stock, stock_url, answers[1]);
  if (pending > 0) co_await joined.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return answers[0] + " / " + answers[1];
}

int main() {
  asio::io_context ioc(2);
  // The test servers run on one thread each (flaky/server.hpp): a strand of
  // the 2-thread context, so that stopping one never races its sessions.
  std::string error;
  flaky::server prices_api(asio::make_strand(ioc),
                           {*flaky::parse_phase("ok 1h latency=2ms", error)});
  flaky::server stock_api(asio::make_strand(ioc),
                          {*flaky::parse_phase("ok 100ms latency=2ms", error),
                           *flaky::parse_phase("down 300ms errors=1 status=503", error),
                           *flaky::parse_phase("ok 1h latency=2ms", error)});
  const std::string prices_url = "http://127.0.0.1:" + std::to_string(prices_api.start()) + "/";
  const std::string stock_url = "http://127.0.0.1:" + std::to_string(stock_api.start()) + "/";
  levee::http::client client(ioc.get_executor());
  levee::pipeline<result> prices(ioc, per_host("prices", "price unknown"));
  levee::pipeline<result> stock(ioc, per_host("stock", "stock unknown"));

  constexpr int pages = 60;
  std::atomic<int> served{0}, with_fallback{0};
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer pace(co_await asio::this_coro::executor);
        for (int i = 0; i < pages; ++i) {
          const std::string p = co_await asio::co_spawn(
              asio::make_strand(ioc), page(prices, stock, client, prices_url, stock_url),
              asio::use_awaitable);
          ++served;
          if (p.find("unknown") != std::string::npos) ++with_fallback;
          if (i % 10 == 0) std::cout << "page " << i << ": " << p << "\n";
          pace.expires_after(10ms);
          co_await pace.async_wait(asio::use_awaitable);
        }
        client.close_idle();
        prices_api.stop();
        stock_api.stop();
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  std::thread second([&] { ioc.run(); });
  ioc.run();
  second.join();

  levee::write_pipelines_prometheus(std::cout, {prices.metrics(), stock.metrics()});
  const auto s = stock.metrics();
  std::cout << "pages: " << served << " of " << pages << " served, " << with_fallback
            << " with a fallback; stock: " << s.retry->attempts << " attempts, "
            << s.fallback->used() << " fallbacks, " << s.breaker->rejected << " rejected\n";
  return served == pages && with_fallback > 0 && s.fallback->used() > 0 ? 0 : 1;
}
