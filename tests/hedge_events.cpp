// The hedge's events, and its completion-token form inside a caller's
// with_deadline, on virtual time.
#include <levee/hedge/hedge.hpp>
#include <levee/timeout/deadline.hpp>

#include "support.hpp"

#include <optional>
#include <tuple>
#include <vector>

using namespace levee_test;
using hedge_type = levee::basic_hedge<vclock>;
using ec_t = boost::system::error_code;
using ns = std::chrono::nanoseconds;

namespace {

/// An attempt that answers after `latency`, with `value`.
asio::awaitable<std::tuple<ec_t, int>> answer(ns latency, int value) {
  timer t(co_await asio::this_coro::executor, latency);
  auto [ec] = co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
  co_return std::tuple(ec, ec ? 0 : value);
}

template <class T>
std::shared_ptr<pending<T>> run_to_end(asio::io_context& ioc, asio::awaitable<T> aw) {
  auto p = spawn(ioc, std::move(aw));
  settle(ioc);
  for (int i = 0; i < 10'000 && !p->done; ++i) elapse(ioc, 1ms);
  return p;
}

}  // namespace

TEST_CASE("hedge events: hedged, hedge_won and budget_refused, each once, with its attempt") {
  virtual_time vt;
  asio::io_context ioc;
  // A budget of one hedge (floor 1, no ratio) in a window (10 s) longer than the test.
  hedge_type h(ioc, {.delay = 30ms, .max_extra_ratio = 0, .min_extra = 1});
  std::vector<levee::hedge_event> seen;
  const auto id =
      h.listen(levee::all_hedge_events, [&](const levee::hedge_event& e) { seen.push_back(e); });
  int n = 0;
  const auto slow_first = [&] {
    const int k = ++n;
    return answer(k == 1 ? 100ms : 10ms, k);
  };
  auto p = run_to_end(ioc, h(slow_first));
  REQUIRE(p->done);
  CHECK(std::get<1>(*p->value) == 2);  // the hedge's answer
  REQUIRE(seen.size() == 2);
  CHECK(seen[0].kind == levee::hedge_event_kind::hedged);
  CHECK(seen[0].attempt == 1);
  CHECK(seen[0].after == 30ms);
  CHECK(seen[1].kind == levee::hedge_event_kind::hedge_won);
  CHECK(seen[1].attempt == 1);
  CHECK(seen[1].after == 40ms);
  // The budget is spent: the next slow call's hedge is refused, once.
  n = 0;
  auto q = run_to_end(ioc, h(slow_first));
  REQUIRE(q->done);
  REQUIRE(seen.size() == 3);
  CHECK(seen[2].kind == levee::hedge_event_kind::budget_refused);
  CHECK(seen[2].attempt == 1);
  CHECK(seen[2].after == 30ms);
  CHECK(h.metrics().budget_refusals == 1);
  CHECK(h.metrics().events_lost == 0);
  // A mask: only the wins; and nothing after unlisten.
  h.unlisten(id);
  std::vector<levee::hedge_event> wins;
  h.listen(static_cast<std::uint32_t>(levee::hedge_event_kind::hedge_won),
           [&](const levee::hedge_event& e) { wins.push_back(e); });
  n = 0;
  auto r = run_to_end(ioc, h(slow_first));
  REQUIRE(r->done);
  CHECK(seen.size() == 3);
  CHECK(wins.empty());  // refused again: no hedge, no win
}

TEST_CASE("hedge: the completion-token form carries the caller's with_deadline") {
  virtual_time vt;
  asio::io_context ioc;
  hedge_type h(ioc, {.delay = 30ms});
  std::vector<std::optional<ns>> seen;
  const auto attempt = [&]() -> asio::awaitable<std::tuple<ec_t, int>> {
    seen.push_back(levee::remaining_deadline(co_await asio::this_coro::executor));
    co_return co_await answer(10ms, 1);
  };
  const auto through_token = [&]() -> asio::awaitable<int> {
    auto [ec, v] = co_await h.async_execute(attempt, asio::use_awaitable);
    co_return ec ? -1 : v;
  };
  auto p = run_to_end(ioc, levee::with_deadline<vclock>(100ms, through_token()));
  REQUIRE(p->done);
  REQUIRE(seen.size() == 1);
  CHECK(seen[0] == std::optional<ns>(100ms));
  // The way back: outside a with_deadline, none.
  auto q = run_to_end(ioc, through_token());
  REQUIRE(q->done);
  REQUIRE(seen.size() == 2);
  CHECK(seen[1] == std::nullopt);
}
