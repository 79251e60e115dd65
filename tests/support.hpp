// Test support: a virtual-time breaker, a fake downstream, and helpers to run
// coroutines on an io_context without sleeping.
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
#include <levee/core/manual_clock.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <catch2/catch.hpp>

#include <atomic>
#include <exception>
#include <memory>
#include <optional>
#include <stdexcept>
#include <thread>
#include <vector>

namespace levee_test {

namespace asio = boost::asio;
using namespace std::chrono_literals;

using vclock = levee::manual_clock;
using breaker = levee::basic_circuit_breaker<vclock>;  // manual_clock's wait_traits are found
using timer = asio::basic_waitable_timer<vclock, vclock::wait_traits>;

/// Runs what is ready, without blocking. Virtual timers that are due fire.
inline void settle(asio::io_context& ioc) {
  ioc.restart();
  ioc.poll();
}

/// Moves virtual time, then runs what became due.
inline void elapse(asio::io_context& ioc, std::chrono::nanoseconds d) {
  vclock::advance(d);
  settle(ioc);
}

/// The result of a spawned coroutine, filled in when it completes.
template <class T>
struct pending {
  bool done = false;
  std::optional<T> value;
  std::exception_ptr error;

  /// The code of a thrown system_error, or a default code.
  boost::system::error_code thrown_code() const {
    if (!error) return {};
    try {
      std::rethrow_exception(error);
    } catch (const boost::system::system_error& e) {
      return e.code();
    } catch (...) {
      return {};
    }
  }
};

template <class T>
std::shared_ptr<pending<T>> spawn(asio::io_context& ioc, asio::awaitable<T> aw) {
  auto p = std::make_shared<pending<T>>();
  asio::co_spawn(ioc, std::move(aw), [p](std::exception_ptr e, T v) {
    p->done = true;
    p->error = e;
    if (!e) p->value = std::move(v);
  });
  return p;
}

/// Spawns and settles: for calls that finish without time passing.
template <class T>
std::shared_ptr<pending<T>> run(asio::io_context& ioc, asio::awaitable<T> aw) {
  auto p = spawn(ioc, std::move(aw));
  settle(ioc);
  return p;
}

struct service_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

/// A downstream service whose calls succeed or fail as told, after an
/// optional virtual latency. Counts the calls that actually started.
struct fake_service {
  int started = 0;
  int finished = 0;

  asio::awaitable<int> call(bool ok, std::chrono::nanoseconds latency = 0ns) {
    ++started;
    if (latency > 0ns) {
      timer t(co_await asio::this_coro::executor, latency);
      co_await t.async_wait(asio::use_awaitable);
    }
    ++finished;
    if (!ok) throw service_error("API timeout");
    co_return 42;
  }

  asio::awaitable<std::tuple<boost::system::error_code, int>> call_ec(
      boost::system::error_code result, std::chrono::nanoseconds latency = 0ns) {
    ++started;
    if (latency > 0ns) {
      timer t(co_await asio::this_coro::executor, latency);
      auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return std::tuple(ec, 0);
    }
    ++finished;
    co_return std::tuple(result, result ? 0 : 42);
  }
};

/// Resets virtual time for each test that creates one.
struct virtual_time {
  virtual_time() { vclock::reset(); }
};

/// Steps that must never run at once (the handlers of one hedged call, or
/// of one race: their attempts, their timer and their emits run on one
/// strand, docs/hedging.md, "Threads, hot path, pending work"). `step` is
/// such a handler's work, long enough for two threads to meet in it when
/// nothing serialises them; a meeting counts in `overlaps`.
struct call_steps {
  std::atomic<int>& overlaps;
  int spin_count = 20000;
  std::atomic<bool> inside{false};
  std::atomic<int> spins{0};
  void step() {
    if (inside.exchange(true)) overlaps.fetch_add(1);
    for (int i = 0; i < spin_count; ++i) spins.fetch_add(1, std::memory_order_relaxed);
    inside.store(false);
  }
};

/// Runs `ioc` on `n` threads (this one waiting) until it runs out of work.
inline void run_threads(asio::io_context& ioc, int n = 4) {
  std::vector<std::thread> pool;
  for (int i = 0; i < n; ++i) pool.emplace_back([&] { ioc.run(); });
  for (auto& t : pool) t.join();
}

}  // namespace levee_test
