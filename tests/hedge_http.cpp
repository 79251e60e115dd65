// Hedged HTTP requests on real sockets (127.0.0.1): the losing attempt's
// connection, another connection for the hedge, and the tail it cuts.
#include <levee/hedge/http.hpp>
#include <levee/http/classify.hpp>

#include "http_support.hpp"

#include <boost/asio/steady_timer.hpp>

#include <algorithm>
#include <random>
#include <vector>

using namespace levee_test;
namespace http = levee::http;
using ec_t = boost::system::error_code;

namespace {

const std::string ok_reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

asio::awaitable<void> pause(std::chrono::milliseconds d) {
  asio::steady_timer t(co_await asio::this_coro::executor, d);
  co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
}

}  // namespace

TEST_CASE(
    "hedge http: the hedge goes to another connection, the loser's is closed mid-response "
    "and never pooled") {
  asio::io_context ioc;
  bool first_saw_close = false;
  // Connection 0 sends the head and half the body, then stalls; the others
  // answer at once and stay open.
  script_server server(ioc, [&](tcp::socket s, int index) -> asio::awaitable<void> {
    if (index != 0) co_return co_await serve_ok(std::move(s), index);
    asio::streambuf in;
    if ((co_await read_head(s, in)).empty()) co_return;
    co_await write_all(s, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf-");
    char byte;
    auto [ec, n] =
        co_await s.async_read_some(asio::buffer(&byte, 1), asio::as_tuple(asio::use_awaitable));
    (void)n;
    first_saw_close = ec == asio::error::eof || ec == asio::error::connection_reset;
  });
  server.start();
  http::client c(ioc.get_executor());
  levee::hedge h(ioc, {.delay = std::chrono::milliseconds(50)});
  auto r = finish(ioc, http::hedged_get(h, c, server.url("/a")));
  CHECK(std::get<0>(r) == ec_t());
  CHECK(std::get<1>(r).body() == "ok");
  CHECK(server.accepted == 2);  // the hedge did not wait for the busy connection
  run_for(ioc, std::chrono::milliseconds(50));
  CHECK(first_saw_close);  // the loser's connection was closed
  auto s = c.stats();
  CHECK(s.connections_open == 1);  // the winner's, idle in the pool
  CHECK(s.connections_idle == 1);
  // The next request reuses the winner's connection, not the loser's.
  auto again = finish(ioc, http::hedged_get(h, c, server.url("/b")));
  CHECK(std::get<0>(again) == ec_t());
  CHECK(std::get<1>(again).body() == "ok");
  CHECK(server.accepted == 2);
  CHECK(c.stats().connections_reused == 1);
  CHECK(h.metrics().hedges == 1);
  CHECK(h.metrics().cancelled == 1);
  server.stop();
}

TEST_CASE("hedge http: POST is not hedged unless told safe, GET and PUT are") {
  asio::io_context ioc;
  script_server server(ioc, [&](tcp::socket s, int) -> asio::awaitable<void> {
    asio::streambuf in;
    while (!(co_await read_head(s, in)).empty()) {
      co_await pause(std::chrono::milliseconds(100));
      if (!co_await write_all(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) co_return;
    }
  });
  server.start();
  http::client c(ioc.get_executor());
  levee::hedge h(ioc, {.delay = std::chrono::milliseconds(20)});
  const std::string origin = "http://127.0.0.1:" + std::to_string(server.port());
  http::request post(boost::beast::http::verb::post, "/", 11);
  post.body() = "x";
  auto r = finish(ioc, http::hedged_send(h, c, origin, post));
  CHECK(std::get<0>(r) == ec_t());
  CHECK(h.metrics().attempts == 1);
  CHECK(h.metrics().not_idempotent == 1);
  r = finish(ioc, http::hedged_send(h, c, origin, post, /*safe=*/true));
  CHECK(std::get<0>(r) == ec_t());
  CHECK(h.metrics().attempts == 3);
  http::request put(boost::beast::http::verb::put, "/", 11);
  r = finish(ioc, http::hedged_send(h, c, origin, put));
  CHECK(std::get<0>(r) == ec_t());
  CHECK(h.metrics().attempts == 5);
  server.stop();
}

TEST_CASE(
    "hedge http: the helpers classify with levee::http::classify: a fast 503 does not win "
    "over a slower 200, and is kept only when every attempt fails") {
  asio::io_context ioc;
  // Connection 0 answers 200 after 150 ms; the others answer 503 at once.
  // The hedge has no classifier of its own: the helpers must bring HTTP's.
  bool all_fail = false;
  script_server server(ioc, [&](tcp::socket s, int index) -> asio::awaitable<void> {
    asio::streambuf in;
    while (!(co_await read_head(s, in)).empty()) {
      if (index == 0) {
        co_await pause(std::chrono::milliseconds(150));
        if (all_fail) {
          if (!co_await write_all(s, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"))
            co_return;
          continue;
        }
        if (!co_await write_all(s, ok_reply)) co_return;
      } else if (!co_await write_all(
                     s, "HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n")) {
        co_return;
      }
    }
  });
  server.start();
  http::client c(ioc.get_executor());
  levee::hedge h(ioc, {.delay = std::chrono::milliseconds(20)});
  SECTION("hedged_get") {
    auto r = finish(ioc, http::hedged_get(h, c, server.url("/a")));
    CHECK(std::get<0>(r) == ec_t());
    CHECK(std::get<1>(r).result_int() == 200);
    CHECK(h.metrics().hedges == 1);
    CHECK(h.metrics().hedge_wins == 0);  // the first attempt's 200 won
  }
  SECTION("hedged_send") {
    const std::string origin = "http://127.0.0.1:" + std::to_string(server.port());
    http::request get(boost::beast::http::verb::get, "/", 11);
    auto r = finish(ioc, http::hedged_send(h, c, origin, get));
    CHECK(std::get<0>(r) == ec_t());
    CHECK(std::get<1>(r).result_int() == 200);
  }
  SECTION("every attempt fails: the last failing answer is the result") {
    all_fail = true;
    auto r = finish(ioc, http::hedged_get(h, c, server.url("/a")));
    CHECK(std::get<0>(r) == ec_t());
    CHECK(std::get<1>(r).result_int() == 502);  // the 503 came first, the 502 last
  }
  server.stop();
}

TEST_CASE("hedge http: hedged_send honours hedge_options::idempotent = false") {
  asio::io_context ioc;
  script_server server(ioc, [&](tcp::socket s, int) -> asio::awaitable<void> {
    asio::streambuf in;
    while (!(co_await read_head(s, in)).empty()) {
      co_await pause(std::chrono::milliseconds(100));
      if (!co_await write_all(s, ok_reply)) co_return;
    }
  });
  server.start();
  http::client c(ioc.get_executor());
  levee::hedge h(ioc, {.delay = std::chrono::milliseconds(20), .idempotent = false});
  const std::string origin = "http://127.0.0.1:" + std::to_string(server.port());
  http::request get(boost::beast::http::verb::get, "/", 11);
  auto r = finish(ioc, http::hedged_send(h, c, origin, get));
  CHECK(std::get<0>(r) == ec_t());
  CHECK(h.metrics().attempts == 1);  // the hedge's calls are not idempotent: a GET too
  CHECK(h.metrics().not_idempotent == 1);
  r = finish(ioc, http::hedged_get(h, c, server.url("/")));
  CHECK(std::get<0>(r) == ec_t());
  CHECK(h.metrics().attempts == 2);
  // The caller says it is safe: hedged.
  r = finish(ioc, http::hedged_send(h, c, origin, get, /*safe=*/true));
  CHECK(std::get<0>(r) == ec_t());
  CHECK(h.metrics().attempts == 4);
  server.stop();
}

namespace {

/// A server whose answers take 20 ms, or 1 s for 5 % of them (a seeded
/// draw per request).
struct long_tail_server {
  explicit long_tail_server(asio::io_context& ioc)
      : server(ioc, [this](tcp::socket s, int) { return serve(std::move(s)); }) {}
  asio::awaitable<void> serve(tcp::socket s) {
    asio::streambuf in;
    while (!(co_await read_head(s, in)).empty()) {
      ++requests;
      const bool slow = std::bernoulli_distribution(0.05)(rng);
      co_await pause(slow ? std::chrono::milliseconds(1000) : std::chrono::milliseconds(20));
      if (!co_await write_all(s, ok_reply)) co_return;
    }
  }
  script_server server;
  std::mt19937_64 rng{20};
  int requests = 0;
};

struct run_figures {
  std::chrono::nanoseconds p50{}, p99{}, max{};
  int requests = 0;
  int failures = 0;
};

/// `calls` GETs, `concurrency` at a time; `get` makes one.
template <class Get>
run_figures measure(asio::io_context& ioc, long_tail_server& srv, int calls, int concurrency,
                    Get get) {
  std::vector<std::chrono::nanoseconds> latencies;
  int failures = 0;
  int left = calls;
  int running = concurrency;
  const int before = srv.requests;
  for (int w = 0; w < concurrency; ++w) {
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          while (left > 0) {
            --left;
            const auto t0 = std::chrono::steady_clock::now();
            auto [ec, res] = co_await get();
            latencies.push_back(std::chrono::steady_clock::now() - t0);
            if (ec || res.body() != "ok") ++failures;
          }
          --running;
        },
        asio::detached);
  }
  const auto end = std::chrono::steady_clock::now() + std::chrono::seconds(12);
  ioc.restart();
  while (running > 0 && std::chrono::steady_clock::now() < end)
    ioc.run_one_for(std::chrono::milliseconds(10));
  REQUIRE(running == 0);
  std::sort(latencies.begin(), latencies.end());
  run_figures f;
  const auto at = [&](double q) {
    return latencies[std::min(latencies.size() - 1,
                              static_cast<std::size_t>(q * static_cast<double>(latencies.size())))];
  };
  f.p50 = at(0.50);
  f.p99 = at(0.99);
  f.max = latencies.back();
  f.requests = srv.requests - before;
  f.failures = failures;
  return f;
}

double ms(std::chrono::nanoseconds d) {
  return static_cast<double>(d.count()) / 1e6;
}

}  // namespace

TEST_CASE(
    "hedge http: a long tail (5 % at 1 s, the rest at 20 ms): p99 with and without "
    "hedging, and the extra load, in one run") {
  asio::io_context ioc;
  long_tail_server srv(ioc);
  srv.server.start();
  http::client c(ioc.get_executor());
  const std::string url = srv.server.url("/");
  constexpr int calls = 400;
  constexpr int concurrency = 8;
  const auto plain = measure(ioc, srv, calls, concurrency, [&] {
    return http::async_get(c, url, asio::as_tuple(asio::use_awaitable));
  });
  levee::hedge h(ioc, {.max_attempts = 3,
                       .delay = std::chrono::milliseconds(35),
                       .max_extra_ratio = 0.1,
                       .min_extra = 10,
                       .classifier = levee::http::classify});
  const auto hedged =
      measure(ioc, srv, calls, concurrency, [&] { return http::hedged_get(h, c, url); });
  const auto m = h.metrics();
  const double extra = static_cast<double>(hedged.requests - calls) / calls;
  WARN("long tail, " << calls << " calls, " << concurrency << " at a time: without hedging p50 "
                     << ms(plain.p50) << " ms, p99 " << ms(plain.p99) << " ms, max "
                     << ms(plain.max) << " ms; with hedging (fixed delay 35 ms, 3 attempts) p50 "
                     << ms(hedged.p50) << " ms, p99 " << ms(hedged.p99) << " ms, max "
                     << ms(hedged.max) << " ms; extra load " << 100 * extra << " % ("
                     << hedged.requests - calls << " extra requests, " << m.hedges << " hedges, "
                     << m.budget_refusals << " refused by the budget)");
  CHECK(plain.failures == 0);
  CHECK(hedged.failures == 0);
  CHECK(plain.p99 >= std::chrono::milliseconds(900));  // the tail is there without hedging
  CHECK(hedged.p99 < std::chrono::milliseconds(100));  // the claim
  CHECK(static_cast<std::uint64_t>(hedged.requests - calls) <= m.hedges);
  CHECK(m.hedges <= static_cast<std::uint64_t>(0.1 * calls) + 10);  // within the budget
  srv.server.stop();
}
