// Deadlines across services: the header's format, the server-side reader, the
// deadline a with_deadline's executor carries, and a two-hop chain on real
// sockets (caller, a Beast server of this test's own, the flaky leaf).
#include <levee/http/client.hpp>
#include <levee/http/deadline.hpp>

#include "http_support.hpp"
#include "promtool.hpp"

#include <levee/http/classify.hpp>
#include <levee/http/error.hpp>
#include <levee/pipeline.hpp>
#include <levee/timeout.hpp>
#include <levee/timeout/deadline.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/deferred.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/write.hpp>

#include <atomic>
#include <sstream>
#include <stdexcept>
#include <thread>

using namespace levee_test;
namespace http = levee::http;
namespace bh = boost::beast::http;
using steady = std::chrono::steady_clock;

namespace {

using ns = std::chrono::nanoseconds;

ns parsed(std::string_view v) {
  ns out{-1};
  const auto ec = http::parse_deadline(v, out);
  return ec ? ns{-2} : out;
}

bh::request<bh::string_body> with_header(std::initializer_list<std::string> values) {
  bh::request<bh::string_body> req(bh::verb::get, "/", 11);
  for (const auto& v : values) req.insert("Levee-Deadline-Ms", v);
  return req;
}

}  // namespace

TEST_CASE("deadline header: format rounds down to whole ms, nothing under 1 ms", "[deadline]") {
  CHECK(http::format_deadline(180ms) == "180");
  CHECK(http::format_deadline(180999us) == "180");
  CHECK(http::format_deadline(1ms) == "1");
  CHECK(http::format_deadline(999us) == std::nullopt);
  CHECK(http::format_deadline(0ns) == std::nullopt);
  CHECK(http::format_deadline(-5s) == std::nullopt);
  CHECK(http::format_deadline(ns::min()) == std::nullopt);
  CHECK(http::format_deadline(ns::max()) == std::nullopt);  // no deadline
  CHECK(http::format_deadline(ns::max() - 1ns) == "9223372036854");
}

TEST_CASE("deadline header: parse digits only, saturate absurd values", "[deadline]") {
  CHECK(parsed("180") == 180ms);
  CHECK(parsed("0") == 0ns);
  CHECK(parsed("000042") == 42ms);
  CHECK(parsed("9223372036854") == 9223372036854ms);                  // still fits
  CHECK(parsed("9223372036855") == ns::max());                        // saturates
  CHECK(parsed("9999999999999999999") == ns::max());                  // 19 digits: no overflow
  CHECK(parsed("18446744073709551615") == ns{-2});                    // 20 digits
  CHECK(parsed("99999999999999999999999999999999999999") == ns{-2});  // absurd
  for (const char* bad : {"", "-1", "+1", " 1", "1 ", "1.5", "1e3", "abc", "0x10", "12ms"}) {
    INFO(bad);
    CHECK(parsed(bad) == ns{-2});
  }
  ns untouched{7};
  CHECK(http::parse_deadline("x", untouched) == http::error::malformed_deadline);
  CHECK(untouched == 7ns);
}

TEST_CASE("deadline reader: the caller's time minus the margin", "[deadline]") {
  http::deadline_reader reader({.margin = 10ms});
  const auto now = steady::now();
  const auto d = reader.read(with_header({"100"}), now);
  CHECK_FALSE(d.error);
  CHECK(d.present);
  CHECK(d.at == now + 90ms);
  CHECK(d.remaining(now) == 90ms);
  CHECK(d.remaining(now + 1h) == 0ns);  // never negative
  const auto none = reader.read(bh::request<bh::string_body>(bh::verb::get, "/", 11), now);
  CHECK_FALSE(none.error);
  CHECK_FALSE(none.present);
  CHECK(none.at == steady::time_point::max());
  CHECK(none.remaining(now) == ns::max());
  const auto s = reader.stats();
  CHECK(s.accepted == 1);
  CHECK(s.absent == 1);
  CHECK(s.expired == 0);
  CHECK(s.malformed == 0);
}

TEST_CASE("deadline reader: the cap bounds absent and absurd headers", "[deadline]") {
  http::deadline_reader reader({.margin = 0ns, .cap = 2s});
  const auto now = steady::now();
  CHECK(reader.read(bh::request<bh::string_body>(), now).at == now + 2s);
  CHECK(reader.read(with_header({"9999999999999999999"}), now).at == now + 2s);
  CHECK(reader.read(with_header({"500"}), now).at == now + 500ms);
  // No cap and an absurd header: saturates, never overflows.
  http::deadline_reader uncapped({.margin = 1ms});
  const auto far = uncapped.read(with_header({"9999999999999999999"}), now);
  CHECK_FALSE(far.error);
  CHECK(far.at > now + std::chrono::hours(24 * 365 * 100));
  CHECK(far.remaining(now) > std::chrono::hours(24 * 365 * 100));
}

TEST_CASE("deadline reader: expired and malformed headers are refused (504, 400)", "[deadline]") {
  http::deadline_reader reader({.margin = 5ms});
  const auto now = steady::now();
  const auto zero = reader.read(with_header({"0"}), now);
  CHECK(zero.error == http::error::deadline_expired);
  CHECK(reader.read(with_header({"5"}), now).error == http::error::deadline_expired);  // = margin
  CHECK_FALSE(reader.read(with_header({"6"}), now).error);
  CHECK(reader.read(with_header({"-3"}), now).error == http::error::malformed_deadline);
  CHECK(reader.read(with_header({"soon"}), now).error == http::error::malformed_deadline);
  const auto twice = reader.read(with_header({"100", "200"}), now);
  CHECK(twice.error == http::error::malformed_deadline);
  const auto s = reader.stats();
  CHECK(s.expired == 2);
  CHECK(s.malformed == 3);
  CHECK(s.accepted == 1);

  auto req = with_header({"0"});
  req.keep_alive(true);
  const auto gone = http::deadline_reader::refusal(zero, req);
  CHECK(gone.result() == bh::status::gateway_timeout);
  CHECK(gone.keep_alive());
  CHECK(gone.version() == 11);
  const auto bad = http::deadline_reader::refusal(twice, req);
  CHECK(bad.result() == bh::status::bad_request);
  CHECK_FALSE(
      http::error_category().message(static_cast<int>(http::error::deadline_expired)).empty());
}

TEST_CASE("deadline reader: the Prometheus exposition, one reader and several", "[deadline]") {
  http::deadline_reader reader({.margin = 5ms});
  const auto now = steady::now();
  (void)reader.read(with_header({"100"}), now);
  (void)reader.read(with_header({"0"}), now);
  (void)reader.read(with_header({"soon"}), now);
  (void)reader.read(bh::request<bh::empty_body>(bh::verb::get, "/", 11), now);
  std::ostringstream one;
  http::write_prometheus(one, reader.stats());
  CHECK_THAT(one.str(), Catch::Contains("# TYPE levee_http_deadline_requests_total counter"));
  CHECK_THAT(one.str(),
             Catch::Contains("levee_http_deadline_requests_total{outcome=\"accepted\"} 1"));
  CHECK_THAT(one.str(),
             Catch::Contains("levee_http_deadline_requests_total{outcome=\"absent\"} 1"));
  CHECK_THAT(one.str(),
             Catch::Contains("levee_http_deadline_requests_total{outcome=\"expired\"} 1"));
  CHECK_THAT(one.str(),
             Catch::Contains("levee_http_deadline_requests_total{outcome=\"malformed\"} 1"));
  CHECK(promtool_clean(one.str()));

  http::deadline_reader other;
  (void)other.read(with_header({"50"}), now);
  std::ostringstream several;
  http::write_deadline_readers_prometheus(several,
                                          {{"api\"x", reader.stats()}, {"admin", other.stats()}});
  const std::string text = several.str();
  CHECK_THAT(text, Catch::Contains("levee_http_deadline_requests_total{reader=\"api\\\"x\","
                                   "outcome=\"expired\"} 1"));
  CHECK_THAT(text, Catch::Contains("levee_http_deadline_requests_total{reader=\"admin\","
                                   "outcome=\"accepted\"} 1"));
  CHECK(promtool_clean(text));
}

TEST_CASE("deadline options: invalid members are named", "[deadline]") {
  auto names = [](http::deadline_options o, const char* member) {
    try {
      http::validate(o);
      return false;
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).find(member) != std::string::npos;
    }
  };
  CHECK(names({.header = ""}, "header"));
  CHECK(names({.header = "Bad Header"}, "header"));
  CHECK(names({.header = "Bad:Header"}, "header"));
  CHECK(names({.margin = -1ns}, "margin"));
  CHECK(names({.cap = 0ns}, "cap"));
  CHECK_NOTHROW(http::validate(http::deadline_options{}));
  CHECK_THROWS_AS(http::deadline_reader({.margin = -1ms}), std::invalid_argument);

  auto client_names = [](http::client_options o) {
    try {
      http::validate(o);
      return false;
    } catch (const std::invalid_argument& e) {
      return std::string(e.what()).find("deadline_header") != std::string::npos;
    }
  };
  CHECK(client_names({.deadline_header = ""}));
  CHECK(client_names({.deadline_header = "X Deadline"}));
  CHECK(client_names({.deadline_header = "content-length"}));
  CHECK(client_names({.deadline_header = "Host"}));
  CHECK_FALSE(client_names({.send_deadline = false, .deadline_header = ""}));
  CHECK_NOTHROW(http::validate(http::client_options{.deadline_header = "grpc-timeout-ms"}));
}

namespace {

asio::awaitable<std::optional<ns>> left_here() {
  co_return levee::remaining_deadline(co_await asio::this_coro::executor);
}

asio::awaitable<std::optional<ns>> left_after(std::chrono::nanoseconds virtual_wait) {
  timer t(co_await asio::this_coro::executor, virtual_wait);
  co_await t.async_wait(asio::use_awaitable);
  co_return co_await left_here();
}

}  // namespace

TEST_CASE("with_deadline's executor carries its deadline, nested: the earliest", "[deadline]") {
  // Stored inline in any_io_executor (no shared target: its reference count's
  // fence is what ThreadSanitizer cannot follow).
  STATIC_REQUIRE(sizeof(levee::deadline_executor<asio::strand<asio::io_context::executor_type>>) <=
                 3 * sizeof(void*));
  virtual_time vt;
  asio::io_context ioc;
  auto outside = run(ioc, left_here());
  REQUIRE(outside->done);
  CHECK(*outside->value == std::nullopt);

  auto inside = run(ioc, levee::with_deadline<vclock>(300ms, left_here()));
  REQUIRE(inside->done);
  CHECK(*inside->value == std::optional<ns>(300ms));

  auto later = spawn(ioc, levee::with_deadline<vclock>(300ms, left_after(120ms)));
  settle(ioc);
  elapse(ioc, 120ms);
  REQUIRE(later->done);
  CHECK(*later->value == std::optional<ns>(180ms));

  auto inner_earlier = run(
      ioc, levee::with_deadline<vclock>(300ms, levee::with_deadline<vclock>(50ms, left_here())));
  CHECK(*inner_earlier->value == std::optional<ns>(50ms));
  auto outer_earlier = run(
      ioc, levee::with_deadline<vclock>(50ms, levee::with_deadline<vclock>(300ms, left_here())));
  CHECK(*outer_earlier->value == std::optional<ns>(50ms));
  // A with_timeout inside keeps the deadline (it is no deadline itself).
  auto timed =
      run(ioc, levee::with_deadline<vclock>(300ms, levee::with_timeout<vclock>(10ms, left_here())));
  CHECK(*timed->value == std::optional<ns>(300ms));
  auto only_timeout = run(ioc, levee::with_timeout<vclock>(10ms, left_here()));
  CHECK(*only_timeout->value == std::nullopt);
  // The way back: after the deadline's call, the caller carries none.
  auto after = run(ioc, left_here());
  CHECK(*after->value == std::nullopt);
}

namespace {

/// The middle hop: a small Beast server of this test's own. It reads the
/// caller's deadline with `deadline_reader` and calls the leaf with levee's
/// client under `with_deadline`, again and again until the leaf answers 200
/// (a retry loop that would go on for ever without the deadline).
struct middle_server {
  middle_server(asio::io_context& context, std::string leaf)
      : ioc(context), leaf_url(std::move(leaf)) {}
  asio::io_context& ioc;
  std::string leaf_url;
  http::client client{ioc.get_executor(), {.timeout = 10s}};
  http::deadline_reader reader{{.margin = 20ms}};
  tcp::acceptor acceptor{ioc, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)};
  // What the middle's own call did.
  std::vector<boost::system::error_code> call_errors;
  std::vector<steady::time_point> call_ends;
  int leaf_attempts = 0;

  std::string url() const {
    return "http://127.0.0.1:" + std::to_string(acceptor.local_endpoint().port()) + "/";
  }
  void start() { asio::co_spawn(ioc, accept_loop(), asio::detached); }
  void stop() {
    boost::system::error_code ignored;
    acceptor.close(ignored);
  }

  asio::awaitable<void> accept_loop() {
    for (;;) {
      auto [ec, socket] = co_await acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(ioc, session(std::move(socket)), asio::detached);
    }
  }

  asio::awaitable<std::tuple<boost::system::error_code, unsigned>> call_leaf() {
    for (;;) {
      ++leaf_attempts;
      auto [ec, res] =
          co_await http::async_get(client, leaf_url, asio::as_tuple(asio::use_awaitable));
      if (ec || res.result_int() == 200) co_return std::tuple(ec, res.result_int());
    }
  }

  asio::awaitable<void> session(tcp::socket socket) {
    boost::beast::flat_buffer buffer;
    for (;;) {
      bh::request<bh::string_body> req;
      auto [rec, n] =
          co_await bh::async_read(socket, buffer, req, asio::as_tuple(asio::use_awaitable));
      (void)n;
      if (rec) co_return;
      bh::response<bh::string_body> res;
      const auto d = reader.read(req);
      if (d.error) {
        res = http::deadline_reader::refusal(d, req);
      } else {
        auto [ec, status] = co_await levee::with_deadline(d.remaining(), call_leaf());
        call_errors.push_back(ec);
        call_ends.push_back(steady::now());
        res = bh::response<bh::string_body>(ec ? bh::status::gateway_timeout : bh::status::ok, 11);
        res.body() = ec ? "late" : "ok";
        res.prepare_payload();
      }
      auto [wec, m] = co_await bh::async_write(socket, res, asio::as_tuple(asio::use_awaitable));
      (void)m;
      if (wec) co_return;
    }
  }
};

using call_result = std::tuple<boost::system::error_code, http::response>;

}  // namespace

TEST_CASE("two hops: the caller's deadline stops the middle's retries at the leaf",
          "[deadline][chain]") {
  asio::io_context ioc;
  flaky::server leaf(ioc.get_executor(),
                     phases({"sick 1h errors=1 status=503 latency=5ms", "ok 1h latency=0"}));
  leaf.hold_phase(0);
  const std::string leaf_url = "http://127.0.0.1:" + std::to_string(leaf.start()) + "/";
  middle_server middle(ioc, leaf_url);
  middle.start();
  http::client caller(ioc.get_executor());

  const auto start = steady::now();
  const auto deadline = start + 300ms;
  auto call = spawn(
      ioc, levee::with_deadline(
               300ms, http::async_get(caller, middle.url(), asio::as_tuple(asio::use_awaitable))));
  // The leaf's count when the caller's deadline passes.
  std::optional<std::uint64_t> at_deadline;
  asio::steady_timer snapshot(ioc, deadline);
  snapshot.async_wait([&](boost::system::error_code) { at_deadline = leaf.stats().requests; });
  run_until(ioc, call, 2000ms);
  REQUIRE(call->done);
  REQUIRE(call->value);
  run_for(ioc, 300ms);  // the middle would go on calling the leaf without the deadline
  REQUIRE(at_deadline);

  CHECK(caller.stats().deadlines_sent == 1);
  CHECK(middle.reader.stats().accepted == 1);
  REQUIRE(middle.call_errors.size() == 1);
  CHECK(middle.call_errors[0] == levee::error::deadline_exceeded);
  CHECK(middle.call_ends[0] <= deadline + 50ms);  // stopped at once, before the caller's end
  CHECK(*at_deadline >= 3);                       // it was calling the leaf
  CHECK(leaf.stats().requests == *at_deadline);   // and nothing started after the deadline
  // Every request the leaf saw carried the header.
  CHECK(middle.client.stats().deadlines_sent >= leaf.stats().requests);
  // The caller: the middle's 504 (sent at its own, earlier deadline) or its
  // own deadline.
  const auto& [ec, res] = *call->value;
  if (ec) {
    CHECK(ec == levee::error::deadline_exceeded);
  } else {
    CHECK(res.result() == bh::status::gateway_timeout);
  }

  // The way back: the leaf heals, and the same chain answers within its deadline.
  leaf.hold_phase(1);
  auto again = spawn(
      ioc, levee::with_deadline(
               2s, http::async_get(caller, middle.url(), asio::as_tuple(asio::use_awaitable))));
  run_until(ioc, again, 3000ms);
  REQUIRE(again->done);
  REQUIRE(again->value);
  CHECK_FALSE(std::get<0>(*again->value));
  CHECK(std::get<1>(*again->value).result() == bh::status::ok);
  REQUIRE(middle.call_errors.size() == 2);
  CHECK_FALSE(middle.call_errors[1]);
  middle.stop();
  leaf.stop();
}

TEST_CASE("two hops: a slow leaf's call is stopped at once at the caller's deadline",
          "[deadline][chain]") {
  asio::io_context ioc;
  flaky::server leaf(ioc.get_executor(), phases({"slow 1h latency=1h"}));
  const std::string leaf_url = "http://127.0.0.1:" + std::to_string(leaf.start()) + "/";
  middle_server middle(ioc, leaf_url);
  middle.start();
  http::client caller(ioc.get_executor(), {.timeout = 10s});

  const auto deadline = steady::now() + 200ms;
  auto call = spawn(
      ioc, levee::with_deadline(
               200ms, http::async_get(caller, middle.url(), asio::as_tuple(asio::use_awaitable))));
  run_until(ioc, call, 2000ms);
  REQUIRE(call->done);
  const auto caller_end = steady::now();
  CHECK(caller_end <= deadline + 100ms);
  run_for(ioc, 50ms);
  REQUIRE(middle.call_errors.size() == 1);
  CHECK(middle.call_errors[0] == levee::error::deadline_exceeded);
  CHECK(middle.call_ends[0] <= deadline + 50ms);
  CHECK(middle.leaf_attempts == 1);
  CHECK(leaf.stats().requests == 1);
  // The middle's connection to the leaf was closed, never pooled mid-response.
  CHECK(middle.client.stats().connections_open == 0);
  CHECK(middle.client.stats().connections_idle == 0);
  middle.stop();
  leaf.stop();
}

TEST_CASE("two hops: expired and malformed headers are refused before any call",
          "[deadline][chain]") {
  asio::io_context ioc;
  flaky::server leaf(ioc.get_executor(), phases({"ok 1h latency=0"}));
  const std::string leaf_url = "http://127.0.0.1:" + std::to_string(leaf.start()) + "/";
  middle_server middle(ioc, leaf_url);
  middle.start();
  // A caller that writes the header itself (another client, or a hand-made one).
  http::client caller(ioc.get_executor(), {.send_deadline = false});
  auto ask = [&](const char* value) {
    http::request req(bh::verb::get, "/", 11);
    req.set("Levee-Deadline-Ms", value);
    return finish(ioc, http::async_send(caller, middle.url().substr(0, middle.url().size() - 1),
                                        std::move(req), asio::as_tuple(asio::use_awaitable)));
  };
  auto expired = ask("0");
  CHECK_FALSE(std::get<0>(expired));
  CHECK(std::get<1>(expired).result() == bh::status::gateway_timeout);
  auto within_margin = ask("20");
  CHECK(std::get<1>(within_margin).result() == bh::status::gateway_timeout);
  auto malformed = ask("-1");
  CHECK(std::get<1>(malformed).result() == bh::status::bad_request);
  auto absurd = ask("184467440737095516150");
  CHECK(std::get<1>(absurd).result() == bh::status::bad_request);
  CHECK(leaf.stats().requests == 0);
  CHECK(middle.call_errors.empty());
  const auto s = middle.reader.stats();
  CHECK(s.expired == 2);
  CHECK(s.malformed == 2);
  // The way back: a valid header is served.
  auto fine = ask("1000");
  CHECK(std::get<1>(fine).result() == bh::status::ok);
  CHECK(leaf.stats().requests == 1);
  CHECK(caller.stats().deadlines_sent == 0);
  middle.stop();
  leaf.stop();
}

namespace {

/// A script for `script_server`: a kept-alive "200 ok" to every request,
/// each request's head kept in `heads`.
script_server::script recording_ok(std::vector<std::string>& heads) {
  return [&heads](tcp::socket s, int) -> asio::awaitable<void> {
    asio::streambuf in;
    for (;;) {
      auto head = co_await read_head(s, in);
      if (head.empty()) co_return;
      heads.push_back(head);
      if (!co_await write_all(s, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")) co_return;
    }
  };
}

}  // namespace

TEST_CASE("client: the header carries what is left, and only inside with_deadline", "[deadline]") {
  asio::io_context ioc;
  std::vector<std::string> heads;
  script_server server(ioc, recording_ok(heads));
  server.start();
  http::client client(ioc.get_executor(), {.deadline_header = "X-Budget-Ms"});
  auto header_of = [](const std::string& head) -> std::optional<long> {
    const auto at = head.find("X-Budget-Ms: ");
    if (at == std::string::npos) return std::nullopt;
    return std::stol(head.substr(at + 13));
  };
  auto r1 = finish(
      ioc, levee::with_deadline(
               2s, http::async_get(client, server.url(), asio::as_tuple(asio::use_awaitable))));
  CHECK_FALSE(std::get<0>(r1));
  auto r2 = finish(ioc, http::async_get(client, server.url(), asio::as_tuple(asio::use_awaitable)));
  CHECK_FALSE(std::get<0>(r2));
  REQUIRE(heads.size() == 2);
  const auto sent = header_of(heads[0]);
  REQUIRE(sent);
  CHECK(*sent <= 2000);
  CHECK(*sent > 1000);
  CHECK(header_of(heads[1]) == std::nullopt);  // no deadline, no header
  CHECK(client.stats().deadlines_sent == 1);

  // Off: nothing sent, but the deadline still bounds the request.
  http::client quiet(ioc.get_executor(),
                     {.send_deadline = false, .deadline_header = "X-Budget-Ms"});
  auto r3 = finish(
      ioc, levee::with_deadline(
               2s, http::async_get(quiet, server.url(), asio::as_tuple(asio::use_awaitable))));
  CHECK_FALSE(std::get<0>(r3));
  REQUIRE(heads.size() == 3);
  CHECK(header_of(heads[2]) == std::nullopt);
  CHECK(quiet.stats().deadlines_sent == 0);
  server.stop();
}

TEST_CASE("client: under 1 ms left, nothing is sent (deadline_exceeded)", "[deadline]") {
  virtual_time vt;
  asio::io_context ioc;
  script_server server(ioc, serve_ok);
  server.start();
  http::client client(ioc.get_executor());
  // Virtual time stands still: only the client's own check can end this call.
  auto r = finish(
      ioc, levee::with_deadline<vclock>(
               500us, http::async_get(client, server.url(), asio::as_tuple(asio::use_awaitable))));
  CHECK(std::get<0>(r) == levee::error::deadline_exceeded);
  CHECK(server.accepted == 0);
  CHECK(client.stats().requests == 0);
  // The way back: with time left, the same client sends.
  auto ok = finish(
      ioc, levee::with_deadline<vclock>(
               1s, http::async_get(client, server.url(), asio::as_tuple(asio::use_awaitable))));
  CHECK_FALSE(std::get<0>(ok));
  CHECK(server.accepted == 1);
  server.stop();
}

TEST_CASE("client: its own timeout is capped by the deadline (deadline_exceeded)", "[deadline]") {
  virtual_time vt;
  asio::io_context ioc;
  flaky::server slow(ioc.get_executor(), phases({"slow 1h latency=1h"}));
  const std::string url = "http://127.0.0.1:" + std::to_string(slow.start()) + "/";
  http::client client(ioc.get_executor(), {.timeout = 10s});
  // The race's own timer is on virtual time and never fires: the client's
  // timeout, capped at the deadline's 150 ms of real time, ends the call.
  const auto start = steady::now();
  auto r =
      finish(ioc, levee::with_deadline<vclock>(
                      150ms, http::async_get(client, url, asio::as_tuple(asio::use_awaitable))));
  CHECK(std::get<0>(r) == levee::error::deadline_exceeded);
  CHECK(steady::now() - start < 2s);
  CHECK(slow.stats().requests == 1);
  slow.stop();
}

namespace {

using get_result = std::tuple<boost::system::error_code, http::response>;

asio::awaitable<get_result> get_through_pipeline(levee::pipeline<get_result>& pipe,
                                                 http::client& client, std::string url) {
  co_return co_await pipe.async_call(http::async_get(client, url, asio::as_tuple(asio::deferred)),
                                     asio::use_awaitable);
}

}  // namespace

TEST_CASE("client: a pipeline's completion-token form sends the caller's deadline", "[deadline]") {
  asio::io_context ioc;
  std::vector<std::string> heads;
  script_server server(ioc, recording_ok(heads));
  server.start();
  http::client client(ioc.get_executor());
  // The pipeline runs its calls on the io_context's executor, not the caller's.
  levee::pipeline<get_result> pipe(ioc.get_executor(), {.rules = http::rules()});
  auto r1 = finish(ioc, levee::with_deadline(2s, get_through_pipeline(pipe, client, server.url())));
  CHECK_FALSE(std::get<0>(r1));
  // The way back: outside a with_deadline, no header.
  auto r2 = finish(ioc, get_through_pipeline(pipe, client, server.url()));
  CHECK_FALSE(std::get<0>(r2));
  REQUIRE(heads.size() == 2);
  CHECK(heads[0].find("Levee-Deadline-Ms: 1") != std::string::npos);  // 1000 to 1999 ms left
  CHECK(heads[1].find("Levee-Deadline-Ms") == std::string::npos);
  CHECK(client.stats().deadlines_sent == 1);
  server.stop();
}
