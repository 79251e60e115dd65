// Hedged requests (README, "Hedged requests"; docs/hedging.md): a server
// whose answers take 20 ms, but 1 s for 5 % of them, is called 200 times, 8
// calls at a time, first plainly, then through a levee::hedge that sends a
// second copy of a request that has not answered within 35 ms, at most 10 %
// more requests than calls (plus a floor). The same run prints the p99 of
// both and the extra load the hedge cost.
#include <levee/hedge/http.hpp>
#include <levee/http.hpp>

#include <boost/asio.hpp>

#include <algorithm>
#include <chrono>
#include <iostream>
#include <random>
#include <string>
#include <vector>

namespace asio = boost::asio;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using tcp = asio::ip::tcp;

namespace {

// The long-tail server: kept-alive connections, one request at a time each.
struct long_tail_server {
  asio::io_context& ioc;
  tcp::acceptor acceptor{ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  std::mt19937_64 rng{20};
  int requests = 0;

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/";
  }
  asio::awaitable<void> accept() {
    for (;;) {
      auto [ec, s] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(ioc, serve(std::move(s)), asio::detached);
    }
  }
  asio::awaitable<void> serve(tcp::socket s) {
    asio::streambuf in;
    for (;;) {
      auto [ec, n] =
          co_await asio::async_read_until(s, in, "\r\n\r\n", asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      in.consume(n);
      ++requests;
      asio::steady_timer t(ioc, std::bernoulli_distribution(0.05)(rng) ? 1s : 20ms);
      co_await t.async_wait(asio::as_tuple(asio::use_awaitable));
      const std::string reply = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
      auto [wec, w] =
          co_await asio::async_write(s, asio::buffer(reply), asio::as_tuple(asio::use_awaitable));
      if (wec) co_return;
    }
  }
};

int errors = 0;  // calls that did not end in a 200 "ok"

// `calls` calls, `concurrency` at a time; returns the p99 latency in ms.
template <class Call>
double p99_ms(asio::io_context& ioc, int calls, int concurrency, Call call) {
  std::vector<double> ms;
  int left = calls;
  for (int w = 0; w < concurrency; ++w) {
    asio::co_spawn(
        ioc,
        [&]() -> asio::awaitable<void> {
          while (left-- > 0) {
            const auto t0 = steady::now();
            auto [ec, res] = co_await call();
            if (ec || res.body() != "ok") {
              ++errors;
              std::cout << "error: " << (ec ? ec.message() : "unexpected answer") << "\n";
            }
            ms.push_back(std::chrono::duration<double, std::milli>(steady::now() - t0).count());
          }
        },
        asio::detached);
  }
  while (static_cast<int>(ms.size()) < calls) ioc.run_one();
  std::sort(ms.begin(), ms.end());
  return ms[static_cast<std::size_t>(0.99 * static_cast<double>(ms.size()))];
}

}  // namespace

int main() {
  asio::io_context ioc;
  long_tail_server server{ioc};
  asio::co_spawn(ioc, server.accept(), asio::detached);
  levee::http::client client(ioc.get_executor());
  const std::string url = server.url();
  constexpr int calls = 200;

  const double plain = p99_ms(ioc, calls, 8, [&] {
    return levee::http::async_get(client, url, asio::as_tuple(asio::use_awaitable));
  });
  std::cout << "plain: p99 " << plain << " ms\n";

  levee::hedge hedge(ioc, {.max_attempts = 3,
                           .delay = 35ms,  // or .percentile = 0.95 of recent latency
                           .max_extra_ratio = 0.1,
                           .min_extra = 10,
                           .classifier = levee::http::classify});
  const int before = server.requests;
  const double hedged =
      p99_ms(ioc, calls, 8, [&] { return levee::http::hedged_get(hedge, client, url); });
  const auto m = hedge.metrics();
  std::cout << "hedged: p99 " << hedged << " ms, " << server.requests - before << " requests for "
            << calls << " calls (" << m.hedges << " hedges, " << m.hedge_wins << " won, "
            << m.budget_refusals << " refused by the budget)\n";
  server.acceptor.close();
  client.close_idle();
  ioc.run_for(50ms);
  // The claim, checked: the exit code says whether it held (the ctest
  // relies on it). The bound is the 100 ms; the extra load is
  // within the budget: 10 % of the calls plus the floor of 10.
  const int extra = server.requests - before - calls;
  const int allowed = calls / 10 + 10;
  bool held = true;
  auto check = [&](bool ok, const char* what) {
    if (!ok) std::cout << "FAILED: " << what << "\n";
    held = held && ok;
  };
  check(errors == 0, "every call answered 200 ok");
  check(plain >= 900, "without hedging, p99 shows the 1 s tail");
  check(hedged < 100, "with hedging, p99 under 100 ms");
  check(extra <= allowed, "extra requests within the budget (10 % + 10)");
  check(static_cast<int>(m.hedges) <= allowed, "hedges within the budget");
  std::cout << (held ? "claim held" : "claim FAILED") << ": hedged p99 " << hedged
            << " ms (bound 100 ms), " << extra << " extra requests (budget " << allowed << ")\n";
  return held ? 0 : 1;
}
