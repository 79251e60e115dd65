// Composition: every layer of levee around one call, in levee's order (README, "Composing levee")
// (outermost first): fallback, total deadline, retry with a retry budget,
// circuit breaker, bulkhead, per-attempt timeout, the call.
//
// The downstream here is simulated: it answers in 20 ms and fails 20 % of its
// calls, except between 250 ms and 700 ms after the start, when it fails them
// all. The output shows retries absorbing the occasional failure, the breaker
// opening and the fallback taking over during the outage, probes, and the
// breaker closing once the downstream is back.
#include <levee/levee.hpp>

#include <boost/asio.hpp>

#include <iostream>
#include <map>
#include <random>
#include <string>
#include <tuple>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using result = std::tuple<boost::system::error_code, std::string>;

// The downstream call, in the error_code style.
asio::awaitable<result> fetch_recommendations(int user) {
  static std::minstd_rand rng(7);
  static const auto start = std::chrono::steady_clock::now();
  asio::steady_timer latency(co_await asio::this_coro::executor, 20ms);
  co_await latency.async_wait(asio::use_awaitable);
  const auto t = std::chrono::steady_clock::now() - start;
  const bool down = t > 250ms && t < 700ms;
  if (down || rng() % 10 < 2) co_return result(asio::error::connection_reset, "");
  co_return result(boost::system::error_code(), "recommendations for user " + std::to_string(user));
}

// One set of guards per dependency, shared by every session that calls it.
struct recommendation_api {
  explicit recommendation_api(asio::io_context& ioc)
      : breaker(ioc, {.window = 5s, .minimum_calls = 10, .open_duration = 150ms}),
        bulkhead(ioc, {.max_concurrent = 32, .max_queue = 64, .max_wait = 100ms}),
        retry({.max_attempts = 3,
               .initial_delay = 10ms,
               .max_delay = 100ms,
               .jitter = levee::jitter_kind::full,
               .budget = std::make_shared<levee::retry_budget>()}) {}

  levee::circuit_breaker breaker;
  levee::bulkhead bulkhead;
  levee::retry_policy retry;
};

asio::awaitable<std::string> recommendations(recommendation_api& api, int user) {
  auto [ec, body] = co_await levee::with_deadline(  // total deadline
      500ms, levee::retry(api.retry, [&] {          // retry, under the budget
        return api.breaker(                         // circuit breaker
            api.bulkhead(                           // bulkhead
                levee::with_timeout(                // per-attempt timeout
                    100ms, fetch_recommendations(user))));
      }));
  if (ec) co_return "bestsellers (fallback: " + ec.message() + ")";  // fallback
  co_return body;
}

int main() {
  asio::io_context ioc;
  recommendation_api api(ioc);
  std::map<std::string, int> answers;
  asio::co_spawn(
      ioc,
      [&]() -> asio::awaitable<void> {
        asio::steady_timer pace(co_await asio::this_coro::executor);
        for (int user = 0; user < 60; ++user) {
          std::string answer = co_await recommendations(api, user);
          std::cout << "user " << user << ": " << answer << " [breaker "
                    << levee::to_string(api.breaker.state()) << "]\n";
          ++answers[answer.substr(0, answer.find(' '))];
          pace.expires_after(10ms);
          co_await pace.async_wait(asio::use_awaitable);
        }
      },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  ioc.run();
  const auto c = api.breaker.counters();
  std::cout << "breaker: " << c.successes << " successes, " << c.failures << " failures, "
            << c.rejected << " rejected without calling the API\n";
}
