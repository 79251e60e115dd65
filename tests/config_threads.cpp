// Reloading a registry's configuration while calls run on a 4-thread
// io_context: no call is lost or counted twice, every breaker ends with the
// last document's options. Runs under ThreadSanitizer and AddressSanitizer in
// CI (label "concurrency"). Real time (the calls only hop through the
// executor): the race between the calls and the reloads is the point.
#include <levee/config/config.hpp>
#include <levee/registry/registry.hpp>

#include "support.hpp"

#include <boost/asio/post.hpp>

#include <array>
#include <atomic>
#include <thread>
#include <vector>

using namespace levee_test;

namespace {

constexpr int threads = 4;
constexpr int coroutines = 32;
constexpr int calls_each = 100;
constexpr int keys = 6;

asio::awaitable<std::tuple<boost::system::error_code, int>> hop(bool ok) {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  if (ok) co_return std::tuple(boost::system::error_code{}, 0);
  co_return std::tuple(make_error_code(boost::system::errc::connection_reset), 0);
}

std::string doc(int i) {
  // Thresholds, windows (a new length: a fresh window), window kinds,
  // probes and limits all change from one document to the next.
  const bool odd = i % 2 != 0;
  return std::string(R"({"defaults": {"failure_rate_threshold": )") + (odd ? "0.9" : "0.6") +
         R"(, "minimum_calls": )" + (odd ? "50" : "30") + R"(, "window": ")" + (odd ? "2s" : "3s") +
         R"(", "open_duration": "1ms", "limit": {"max_limit": )" + (odd ? "300" : "200") +
         R"(}}, "endpoints": {"k1*": {"window_type": )" + (odd ? R"("count")" : R"("time")") +
         R"(, "minimum_calls": 20, "half_open_probes": )" + (odd ? "3" : "2") + "}}}";
}

}  // namespace

TEST_CASE("threads: reloads race calls through the registry on 4 threads") {
  asio::io_context ioc(threads);
  levee::breaker_registry r(ioc, levee::parse_registry_config(doc(0)));
  std::array<std::atomic<std::uint64_t>, keys> made{};
  std::atomic<int> finished{0};
  for (int c = 0; c < coroutines; ++c) {
    asio::co_spawn(
        ioc,
        [&, c]() -> asio::awaitable<void> {
          for (int i = 0; i < calls_each; ++i) {
            const int k = (c + i) % keys;
            // (no "k" + std::to_string: GCC 12 -O3 -Wrestrict false positive, bug 105329)
            std::string key = std::to_string(k);
            key.insert(0, 1, 'k');
            const auto g = r.guards(key);
            made[static_cast<std::size_t>(k)].fetch_add(1);
            co_await g(hop(i % 3 != 0));
          }
          finished.fetch_add(1);
        },
        asio::detached);
  }
  std::atomic<bool> stop{false};
  std::atomic<bool> reloading{false};
  int reloads = 0;
  std::thread reloader([&] {
    for (int i = 1; !stop.load() || i % 2 == 0; ++i, ++reloads) {
      if (i % 5 == 0) r.set_options("k2", {.failure_rate_threshold = 0.7});
      if (i % 7 == 0) r.remove_options("k2");
      r.reconfigure(levee::parse_registry_config(doc(i)));  // replaces the overrides too
      reloading.store(true);
    }
  });
  // The calls start once the first reload is done, and race the ones after
  // it: started at once, they could all end before the reloader's first (in
  // 0.02 s in a release build; CI saw no reload at all, 1 run in 8).
  while (!reloading.load()) std::this_thread::yield();
  std::vector<std::thread> pool;
  for (int i = 0; i < threads; ++i) pool.emplace_back([&] { ioc.run(); });
  for (auto& t : pool) t.join();
  stop = true;
  reloader.join();
  CHECK(finished == coroutines);
  CHECK(reloads > 0);

  // The last document (an even one) is what every breaker and limit has.
  const auto last = levee::parse_registry_config(doc(0));
  const auto m = r.metrics();
  REQUIRE(m.size() == keys);
  std::uint64_t total = 0;
  for (int k = 0; k < keys; ++k) {
    std::string key = std::to_string(k);  // (the -Wrestrict false positive above)
    key.insert(0, 1, 'k');
    const auto g = r.guards(key);
    const auto& want = k == 1 ? last.overrides.at("k1*").breaker : last.defaults;
    CHECK(g.breaker->options().failure_rate_threshold == want.failure_rate_threshold);
    CHECK(g.breaker->options().minimum_calls == want.minimum_calls);
    CHECK(g.breaker->options().window_type == want.window_type);
    REQUIRE(g.limit);
    CHECK(g.limit->options().max_limit == 200);
    CHECK(g.limit->in_flight() == 0);
    const auto& bm = m[static_cast<std::size_t>(k)].metrics;
    // Every call is counted once: a success, a failure, ignored or rejected.
    CHECK(bm.successes + bm.failures + bm.ignored + bm.rejected ==
          made[static_cast<std::size_t>(k)]);
    total += made[static_cast<std::size_t>(k)];
  }
  CHECK(total == coroutines * calls_each);
}
