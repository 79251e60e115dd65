// Registry-wide listeners on a 4-thread io_context: breakers created, called,
// evicted, removed and reconfigured while listeners come and go, from 4 threads at
// once. Runs under ThreadSanitizer and AddressSanitizer in CI (label
// "concurrency").
#include <levee/registry/registry.hpp>

#include "support.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/strand.hpp>

#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

using namespace levee_test;

namespace {

constexpr int threads = 4;
constexpr int rounds = 400;
constexpr int keys = 6;

asio::awaitable<std::tuple<boost::system::error_code, int>> outcome(bool ok) {
  co_await asio::post(co_await asio::this_coro::executor, asio::use_awaitable);
  if (ok) co_return std::tuple(boost::system::error_code(), 1);
  co_return std::tuple(make_error_code(boost::system::errc::connection_reset), 0);
}

/// Per key: the registry events seen, in order of delivery.
struct ledger {
  std::mutex mutex;
  std::map<std::string, std::vector<levee::event_mask>> by_key;
  std::atomic<int> breaker_events{0};
  void operator()(const levee::registry_event& e) {
    if ((e.kind & levee::all_events) != 0) {
      breaker_events.fetch_add(1, std::memory_order_relaxed);
      return;
    }
    std::lock_guard g(mutex);
    by_key[std::string(e.key)].push_back(e.kind);
  }
};

constexpr auto added = static_cast<levee::event_mask>(levee::registry_event_kind::added);

}  // namespace

TEST_CASE(
    "registry threads: listeners see every key's breakers while 4 threads churn the registry") {
  asio::io_context ioc;
  auto work = asio::make_work_guard(ioc);
  std::vector<std::thread> runners;
  for (int i = 0; i < threads; ++i) runners.emplace_back([&] { ioc.run(); });

  levee::breaker_registry r(ioc, {.defaults = {.minimum_calls = 2, .open_duration = 1ms},
                                  .idle_timeout = std::chrono::microseconds(200),
                                  .max_breakers = 4});
  ledger steady;  // listens from the start to the end, on a strand: in order
  r.listen(
      levee::all_events | levee::registry_events,
      [&steady](const levee::registry_event& e) { steady(e); }, asio::make_strand(ioc));
  std::atomic<int> churn_events{0};

  std::vector<std::thread> users;
  for (int t = 0; t < threads; ++t) {
    users.emplace_back([&, t] {
      for (int i = 0; i < rounds; ++i) {
        // (no "k" + std::to_string: GCC 12 -O3 -Wrestrict false positive, bug 105329)
        const std::string key = std::to_string((i * 7 + t) % keys);
        switch ((i + t) % 8) {
          case 0:
            r.remove(key);
            break;
          case 1:
            r.set_options(key, {.minimum_calls = 3, .open_duration = 1ms});
            break;
          case 2:
            r.evict_idle();
            break;
          case 3:
            if (t == 0) {  // a listener that comes and goes
              const auto id = r.listen(levee::call_events | levee::registry_events,
                                       [&](const levee::registry_event&) { ++churn_events; });
              r.unlisten(id);
            }
            break;
          default: {
            auto b = r.get(key);
            asio::co_spawn(
                ioc,
                [b, ok = i % 3 != 0]() -> asio::awaitable<void> {
                  (void)co_await (*b)(outcome(ok));
                },
                asio::detached);
          }
        }
      }
    });
  }
  for (auto& u : users) u.join();
  work.reset();
  for (auto& runner : runners) runner.join();

  // Every key's registry events alternate: added, then one drop (evicted,
  // removed), then added again; a key the registry still keeps
  // ends with `added`, the others with a drop.
  std::vector<std::string> kept;
  for (const auto& m : r.metrics()) kept.push_back(m.name);
  for (auto& [key, events] : steady.by_key) {
    INFO(key);
    for (std::size_t i = 0; i < events.size(); ++i) {
      if (i % 2 == 0) {
        CHECK(events[i] == added);
      } else {
        CHECK(events[i] != added);
      }
    }
    const bool is_kept = std::find(kept.begin(), kept.end(), key) != kept.end();
    CHECK(is_kept == (events.size() % 2 == 1));
  }
  CHECK(steady.breaker_events.load() > 0);
  for (const auto& key : kept) CHECK(steady.by_key.count(key) == 1);
}

TEST_CASE(
    "registry threads: the idle sweep, in batches, evicts every idle key while 3 threads add, "
    "get and remove others") {
  using registry = levee::basic_breaker_registry<vclock>;
  virtual_time vt;
  asio::io_context ioc;  // the breakers' executor; nothing runs on it
  constexpr int old_keys = 3000;
  constexpr int new_keys = 1500;  // per thread
  registry r(ioc, {.idle_timeout = 10min, .max_breakers = 100000});
  for (int i = 0; i < old_keys; ++i) r.get(std::to_string(i));
  vclock::advance(11min);  // every key so far idle; the threads' first gets sweep too

  std::vector<std::thread> users;
  users.emplace_back([&] { r.evict_idle(); });
  for (int t = 1; t < threads; ++t) {
    users.emplace_back([&r, t] {
      for (int i = 0; i < new_keys; ++i) {
        const std::string key = std::to_string(t) + "/" + std::to_string(i);
        r.get(key);
        if (i % 2 == 0) r.remove(key);  // entries move while the sweeps run
      }
    });
  }
  for (auto& u : users) u.join();

  // Whichever sweep evicted them, every idle key went and no new one did.
  CHECK(r.evictions() == old_keys);
  CHECK(r.size() == (threads - 1) * new_keys / 2);
  for (const auto& m : r.metrics()) CHECK(m.name.find('/') != std::string::npos);
  CHECK(r.detail_work().sweep_most_per_hold.load() <= levee::detail::registry_sweep_batch);
}
