// The bulkhead: limits, queue, waits, cancellation.
#include <levee/core/detail/slot_waiter.hpp>
#include <levee/limit/bulkhead.hpp>

#include "support.hpp"

#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_signal.hpp>

#include <vector>

using namespace levee_test;

namespace {

using bulkhead = levee::basic_bulkhead<levee_test::vclock>;

/// Calls that run until released by the test, and report how many ran at once.
struct gate {
  int running = 0;
  int most = 0;
  std::vector<int> order;

  asio::awaitable<std::tuple<boost::system::error_code, int>> call(int id,
                                                                   std::chrono::nanoseconds d) {
    order.push_back(id);
    most = std::max(most, ++running);
    timer t(co_await asio::this_coro::executor, d);
    co_await t.async_wait(asio::use_awaitable);
    --running;
    co_return std::tuple(boost::system::error_code(), id);
  }
};

}  // namespace

TEST_CASE("bulkhead: a full bulkhead without a queue rejects at once") {
  virtual_time vt;
  asio::io_context ioc;
  bulkhead b(ioc, {.max_concurrent = 2});
  gate g;
  auto a = run(ioc, b(g.call(1, 10ms)));
  auto c = run(ioc, b(g.call(2, 10ms)));
  CHECK(b.in_flight() == 2);
  auto rejected = run(ioc, b(g.call(3, 10ms)));
  REQUIRE(rejected->done);
  CHECK(std::get<0>(*rejected->value) == levee::error::bulkhead_full);
  CHECK(std::get<0>(*rejected->value) == levee::condition::rejected);
  CHECK(g.order == std::vector<int>{1, 2});  // the third never started
  auto thrown = run(ioc, b([]() -> asio::awaitable<int> { co_return 1; }()));
  CHECK(thrown->thrown_code() == levee::error::bulkhead_full);
  elapse(ioc, 10ms);
  CHECK(b.in_flight() == 0);
  CHECK(g.most == 2);
}

TEST_CASE("bulkhead: queued calls run in order as slots free") {
  virtual_time vt;
  asio::io_context ioc;
  bulkhead b(ioc, {.max_concurrent = 1, .max_queue = 2});
  gate g;
  auto a = run(ioc, b(g.call(1, 10ms)));
  auto c = run(ioc, b(g.call(2, 10ms)));
  auto d = run(ioc, b(g.call(3, 10ms)));
  auto e = run(ioc, b(g.call(4, 10ms)));  // the queue is full
  CHECK(std::get<0>(*e->value) == levee::error::bulkhead_full);
  CHECK(b.queued() == 2);
  elapse(ioc, 10ms);
  elapse(ioc, 10ms);
  elapse(ioc, 10ms);
  CHECK(g.order == std::vector<int>{1, 2, 3});
  CHECK(g.most == 1);
  CHECK(std::get<1>(*d->value) == 3);
  CHECK(b.in_flight() == 0);
  CHECK(b.queued() == 0);
}

TEST_CASE("bulkhead: a waiter gives up after max_wait with bulkhead_full") {
  virtual_time vt;
  asio::io_context ioc;
  bulkhead b(ioc, {.max_concurrent = 1, .max_queue = 5, .max_wait = 50ms});
  gate g;
  auto a = run(ioc, b(g.call(1, 1h)));
  auto waiter = run(ioc, b(g.call(2, 1ms)));
  CHECK(b.queued() == 1);
  elapse(ioc, 49ms);
  CHECK_FALSE(waiter->done);
  elapse(ioc, 1ms);
  REQUIRE(waiter->done);
  CHECK(std::get<0>(*waiter->value) == levee::error::bulkhead_full);
  CHECK(b.queued() == 0);
  CHECK(b.in_flight() == 1);
  CHECK(g.order == std::vector<int>{1});
  elapse(ioc, 1h);  // the bulkhead must outlive its calls: let the first one end
  CHECK(b.in_flight() == 0);
}

TEST_CASE("bulkhead: a cancelled waiter leaves the queue with operation_aborted") {
  virtual_time vt;
  asio::io_context ioc;
  bulkhead b(ioc, {.max_concurrent = 1, .max_queue = 5});
  gate g;
  auto a = run(ioc, b(g.call(1, 10ms)));
  asio::cancellation_signal cancel;
  std::tuple<boost::system::error_code, int> result;
  asio::co_spawn(
      ioc, b(g.call(2, 1ms)),
      asio::bind_cancellation_slot(cancel.slot(), [&](std::exception_ptr, auto r) { result = r; }));
  settle(ioc);
  CHECK(b.queued() == 1);
  cancel.emit(asio::cancellation_type::terminal);
  settle(ioc);
  CHECK(std::get<0>(result) == boost::asio::error::operation_aborted);
  CHECK(b.queued() == 0);
  elapse(ioc, 10ms);
  CHECK(b.in_flight() == 0);  // the slot was not handed to the cancelled waiter
  CHECK(g.order == std::vector<int>{1});
}

TEST_CASE("bulkhead: async_acquire and release, with callbacks") {
  virtual_time vt;
  asio::io_context ioc;
  bulkhead b(ioc, {.max_concurrent = 1, .max_queue = 1});
  std::vector<boost::system::error_code> got;
  b.async_acquire([&](boost::system::error_code ec) { got.push_back(ec); });
  b.async_acquire([&](boost::system::error_code ec) { got.push_back(ec); });
  b.async_acquire([&](boost::system::error_code ec) { got.push_back(ec); });
  CHECK(got.empty());  // never inside the call
  settle(ioc);
  REQUIRE(got.size() == 2);
  CHECK_FALSE(got[0]);
  CHECK(got[1] == levee::error::bulkhead_full);
  b.release();  // the waiting one gets the slot
  settle(ioc);
  REQUIRE(got.size() == 3);
  CHECK_FALSE(got[2]);
  b.release();
  CHECK(b.in_flight() == 0);
}

TEST_CASE("bulkhead: invalid options are refused by name") {
  asio::io_context ioc;
  CHECK_THROWS_WITH(bulkhead(ioc, {.max_concurrent = 0}),
                    "bulkhead_options::max_concurrent must be at least 1");
  CHECK_THROWS_WITH(bulkhead(ioc, {.max_wait = -1s}),
                    "bulkhead_options::max_wait must not be negative");
}

namespace {

/// Counts the frames it lives in that were destroyed.
struct sentinel {
  std::shared_ptr<int> destroyed;
  ~sentinel() { ++*destroyed; }
};

asio::awaitable<void> guarded_hour(bulkhead& b, std::shared_ptr<int> destroyed,
                                   std::shared_ptr<int> finished) {
  sentinel s{std::move(destroyed)};
  auto slow = []() -> asio::awaitable<std::tuple<boost::system::error_code, int>> {
    timer t(co_await asio::this_coro::executor, 1h);
    auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
    co_return std::tuple(ec, 1);
  };
  auto [ec, v] = co_await b(slow());
  (void)v;
  if (ec == boost::asio::error::operation_aborted) ++*finished;
}

}  // namespace

TEST_CASE("bulkhead: destroyed before its io_context with calls in a slot and in the queue") {
  // The README's declaration order: io_context first, bulkhead second, so the
  // bulkhead goes first and ~io_context then destroys the pending frames.
  virtual_time vt;
  auto destroyed = std::make_shared<int>(0);
  auto finished = std::make_shared<int>(0);
  {
    asio::io_context ioc;
    bulkhead b(ioc, {.max_concurrent = 1, .max_queue = 2, .max_wait = 1h});
    for (int i = 0; i < 3; ++i) {
      asio::co_spawn(ioc, guarded_hour(b, destroyed, finished), asio::detached);
    }
    settle(ioc);
    CHECK(b.in_flight() == 1);
    CHECK(b.queued() == 2);
  }
  // The call holding a slot gave it back to a live state; the two waiting
  // were destroyed, not leaked (LeakSanitizer would see their frames).
  CHECK(*destroyed == 3);
  CHECK(*finished == 0);
}

TEST_CASE("bulkhead: destroyed while its io_context runs on, waiters end with operation_aborted") {
  virtual_time vt;
  asio::io_context ioc;
  auto b = std::make_unique<bulkhead>(
      ioc, levee::bulkhead_options{.max_concurrent = 1, .max_queue = 2, .max_wait = 1h});
  gate g;
  auto holder = run(ioc, (*b)(g.call(1, 10ms)));
  auto waiter = run(ioc, (*b)(g.call(2, 10ms)));
  std::vector<boost::system::error_code> acquired;
  b->async_acquire([&](boost::system::error_code ec) { acquired.push_back(ec); });
  settle(ioc);
  CHECK(b->queued() == 2);
  b.reset();
  settle(ioc);
  REQUIRE(waiter->done);
  CHECK(std::get<0>(*waiter->value) == boost::asio::error::operation_aborted);
  CHECK(acquired == std::vector<boost::system::error_code>{boost::asio::error::operation_aborted});
  elapse(ioc, 10ms);
  REQUIRE(holder->done);
  CHECK(std::get<1>(*holder->value) == 1);  // the running call finished normally
  CHECK(g.order == std::vector<int>{1});
}

TEST_CASE("bulkhead: max_wait at nanoseconds::max() (or just below) waits for ever") {
  virtual_time vt;
  asio::io_context ioc;
  for (const auto wait : {std::chrono::nanoseconds::max(), std::chrono::nanoseconds::max() - 1ns}) {
    bulkhead b(ioc, {.max_concurrent = 1, .max_queue = 1, .max_wait = wait});
    gate g;
    auto a = run(ioc, b(g.call(1, 1000h)));
    auto waiter = run(ioc, b(g.call(2, 1ms)));
    elapse(ioc, 999h);
    CHECK_FALSE(waiter->done);
    CHECK(b.queued() == 1);
    elapse(ioc, 1h);
    elapse(ioc, 1ms);
    REQUIRE(waiter->done);
    CHECK(std::get<1>(*waiter->value) == 2);
  }
}

TEST_CASE("bulkhead: movable, the queue goes with it") {
  virtual_time vt;
  asio::io_context ioc;
  bulkhead first(ioc, {.max_concurrent = 1, .max_queue = 1});
  gate g;
  auto a = run(ioc, first(g.call(1, 10ms)));
  auto waiter = run(ioc, first(g.call(2, 10ms)));
  bulkhead moved(std::move(first));
  CHECK(moved.queued() == 1);
  elapse(ioc, 10ms);
  elapse(ioc, 10ms);
  REQUIRE(waiter->done);
  CHECK(std::get<1>(*waiter->value) == 2);
  bulkhead other(ioc, {.max_concurrent = 1});
  other = std::move(moved);
  CHECK(other.in_flight() == 0);
  CHECK(other.options().max_queue == 1);
}

TEST_CASE("bulkhead: a coroutine waiting in the queue at shutdown is destroyed, not leaked") {
  virtual_time vt;
  auto destroyed = std::make_shared<int>(0);
  auto finished = std::make_shared<int>(0);
  {
    asio::io_context ioc;
    bulkhead b(ioc, {.max_concurrent = 1, .max_queue = 1});
    b.async_acquire([](boost::system::error_code) {});  // the slot, never released
    settle(ioc);
    asio::co_spawn(ioc, guarded_hour(b, destroyed, finished), asio::detached);
    settle(ioc);
    CHECK(b.queued() == 1);
  }
  CHECK(*destroyed == 1);
  CHECK(*finished == 0);
}

namespace {
struct recorded_waiter : levee::detail::slot_waiter {
  explicit recorded_waiter(int i) : id(i) {}
  void complete(boost::system::error_code) override {}
  int id;
};
int id_of(const std::shared_ptr<levee::detail::slot_waiter>& w) {
  return static_cast<const recorded_waiter&>(*w).id;
}
}  // namespace

TEST_CASE("bulkhead: the intrusive waiter queue keeps FIFO order through erase and take_all") {
  levee::detail::waiter_queue q;
  std::vector<std::weak_ptr<levee::detail::slot_waiter>> made;
  for (int i = 1; i <= 4; ++i) {
    auto w = std::make_shared<recorded_waiter>(i);
    made.push_back(w);
    q.push_back(std::move(w));  // the queue owns it now
  }
  CHECK(q.size() == 4);
  CHECK_FALSE(made[1].expired());
  auto second = made[1].lock();
  CHECK(second->queued);
  auto removed = q.erase(*second);  // from the middle
  CHECK_FALSE(second->queued);
  CHECK(id_of(removed) == 2);
  removed.reset();
  second.reset();
  CHECK(made[1].expired());  // nothing else held it
  CHECK(id_of(q.pop_front()) == 1);
  q.push_back(std::make_shared<recorded_waiter>(5));
  levee::detail::waiter_queue taken;
  taken.push_back(std::make_shared<recorded_waiter>(0));
  q.take_all(taken);  // appended, each marked not queued
  CHECK(q.empty());
  CHECK(q.size() == 0);
  CHECK(taken.size() == 4);
  std::vector<int> order;
  while (auto w = taken.pop_taken()) order.push_back(id_of(w));
  CHECK(order == std::vector<int>{0, 3, 4, 5});
  CHECK(taken.empty());
  for (auto& w : made) CHECK(w.expired());  // no waiter leaked
}

TEST_CASE("bulkhead: a granted waiter whose completion is destroyed unrun frees its slot") {
  // The waiter type the adaptive limit shares (issue 18, check): the slot
  // passes to a waiter whose io_context is destroyed without running it.
  virtual_time vt;
  asio::io_context ioc;
  fake_service api;
  bulkhead b(ioc, {.max_concurrent = 1, .max_queue = 1});
  auto first = spawn(ioc, b(api.call_ec({}, 1s)));
  settle(ioc);
  {
    asio::io_context other;
    auto waiting = spawn(other, b(api.call_ec({}, 1s)));
    settle(other);
    CHECK(b.queued() == 1);
    elapse(ioc, 1s);
    REQUIRE(first->done);
    CHECK(b.in_flight() == 1);
    CHECK_FALSE(waiting->done);
  }
  CHECK(b.in_flight() == 0);
  CHECK(b.queued() == 0);
  auto again = run(ioc, b(api.call_ec({})));
  REQUIRE(again->value);
  CHECK_FALSE(std::get<0>(*again->value));
  CHECK(b.in_flight() == 0);
}
