// Deadlines across services (README, "Deadlines across services"): a caller
// gives a request 300 ms with levee::with_deadline; levee's HTTP client sends
// what is left in the Levee-Deadline-Ms header to a middle service (a small
// Beast server here), which reads it with levee::http::deadline_reader and
// calls its own dependency, a slow leaf (the flaky server, 1 s per answer),
// under a with_deadline of what the caller has left minus a margin. When the
// caller gives up, so does the middle: its call to the leaf is cancelled at
// once and its connection closed, instead of waiting the leaf's full second.
// Then the middle is sent a request whose deadline has passed: it answers 504
// without calling anyone.
#include <levee/http.hpp>
#include <levee/http/deadline.hpp>
#include <levee/timeout.hpp>

#include <boost/asio.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <flaky/server.hpp>

#include <chrono>
#include <iostream>
#include <string>
#include <tuple>

namespace asio = boost::asio;
namespace bh = boost::beast::http;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using tcp = asio::ip::tcp;

namespace {

long ms_since(steady::time_point t) {
  return static_cast<long>(
      std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - t).count());
}

// The middle service: one request per connection is enough for the sample.
struct middle_service {
  asio::io_context& ioc;
  std::string leaf_url;
  levee::http::client client{ioc.get_executor()};
  levee::http::deadline_reader reader{{.margin = 20ms}};  // time to answer, and the network's
  tcp::acceptor acceptor{ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  steady::time_point started{};

  std::string origin() const {
    return "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port());
  }

  asio::awaitable<void> serve() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(ioc, handle(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<void> handle(tcp::socket socket) {
    boost::beast::flat_buffer buffer;
    bh::request<bh::string_body> req;
    auto [rec, n] =
        co_await bh::async_read(socket, buffer, req, asio::as_tuple(asio::use_awaitable));
    if (rec) co_return;
    bh::response<bh::string_body> res;
    const levee::http::incoming_deadline deadline = reader.read(req);
    if (deadline.error) {
      // Expired (504) or malformed (400): refused before any work.
      std::cout << "middle: refused a request (" << deadline.error.message() << ")\n";
      res = levee::http::deadline_reader::refusal(deadline, req);
    } else {
      std::cout
          << "middle: got " << req[reader.options().header] << " ms, calls the leaf with "
          << std::chrono::duration_cast<std::chrono::milliseconds>(deadline.remaining()).count()
          << " ms\n";
      // The middle's own call: bounded by the caller's deadline, minus the margin.
      auto [ec, leaf] = co_await levee::with_deadline(
          deadline.remaining(),
          levee::http::async_get(client, leaf_url, asio::as_tuple(asio::use_awaitable)));
      std::cout << "middle: its call to the leaf ended after " << ms_since(started)
                << " ms: " << (ec ? ec.message() : "ok") << "\n";
      res = bh::response<bh::string_body>(ec ? bh::status::gateway_timeout : bh::status::ok, 11);
      res.body() = ec ? "late\n" : leaf.body();
      res.prepare_payload();
    }
    co_await bh::async_write(socket, res, asio::as_tuple(asio::use_awaitable));
  }
};

asio::awaitable<void> run(asio::io_context& ioc, middle_service& middle, flaky::server& leaf) {
  levee::http::client caller(ioc.get_executor());

  // 1. The caller gives the whole chain 300 ms.
  middle.started = steady::now();
  auto [ec, res] = co_await levee::with_deadline(
      300ms, levee::http::async_get(caller, middle.origin() + "/page",
                                    asio::as_tuple(asio::use_awaitable)));
  std::cout << "caller: after " << ms_since(middle.started)
            << " ms: " << (ec ? ec.message() : std::to_string(res.result_int())) << "\n";
  asio::steady_timer settle(ioc, 50ms);  // the middle writes its late answer
  co_await settle.async_wait(asio::use_awaitable);

  // 2. A request whose deadline has passed (another client's, say).
  levee::http::client plain(ioc.get_executor(), {.send_deadline = false});
  levee::http::request late(bh::verb::get, "/page", 11);
  late.set(levee::http::default_deadline_header, "0");
  auto [ec2, refused] = co_await levee::http::async_send(plain, middle.origin(), std::move(late),
                                                         asio::as_tuple(asio::use_awaitable));
  std::cout << "caller: a request already past its deadline got "
            << (ec2 ? ec2.message() : std::to_string(refused.result_int())) << "\n";

  const auto r = middle.reader.stats();
  std::cout << "caller's client: deadline headers sent: " << caller.stats().deadlines_sent << "\n"
            << "middle's reader: accepted " << r.accepted << ", expired " << r.expired
            << ", malformed " << r.malformed << "\n"
            << "middle's client: connections open to the leaf: "
            << middle.client.stats().connections_open << "\n"
            << "leaf: requests received: " << leaf.stats().requests << "\n";
  middle.acceptor.close();
  leaf.stop();
}

}  // namespace

int main() {
  asio::io_context ioc;
  std::string error;
  flaky::server leaf(ioc.get_executor(), {*flaky::parse_phase("slow 1h latency=1s", error)});
  middle_service middle{ioc, "http://127.0.0.1:" + std::to_string(leaf.start()) + "/"};
  asio::co_spawn(ioc, middle.serve(), asio::detached);
  asio::co_spawn(ioc, run(ioc, middle, leaf), [](std::exception_ptr e) {
    if (e) std::rethrow_exception(e);
  });
  ioc.run_for(5s);
}
