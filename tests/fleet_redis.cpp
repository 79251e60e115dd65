// levee::fleet against a production-like Redis: ACL users, TLS, replies
// bounded in size (a hostile fake Redis in this process), a silent Redis
// seen with no round pending, every resolved address tried; and the
// connection's reply bound alone (sans I/O).
#include "fixture_support.hpp"
#include "fleet_support.hpp"
#include "redis_fixture.hpp"

#include <flaky/tls.hpp>
#include <levee/fleet/detail/redis_connection.hpp>
#include <levee/fleet/detail/redis_reply_bound.hpp>
#include <levee/fleet/fleet.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/write.hpp>

#include <catch2/catch.hpp>

#include <mutex>
#include <random>

using namespace levee_test;
using levee::circuit_state;
using tcp = asio::ip::tcp;

// ---- the reply bound, sans I/O ------------------------------------------------

TEST_CASE("reply bound: replies within the limit pass, in any pieces") {
  const std::string stream =
      "+OK\r\n-ERR no\r\n:42\r\n$5\r\nhello\r\n$-1\r\n*-1\r\n*0\r\n"
      "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n*2\r\n:1\r\n$3\r\nabc\r\n";
  for (std::size_t piece : {std::size_t{1}, std::size_t{2}, std::size_t{7}, stream.size()}) {
    levee::detail::redis_reply_bound b(4096);
    for (std::size_t i = 0; i < stream.size(); i += piece)
      REQUIRE(b.feed(stream.data() + i, std::min(piece, stream.size() - i)));
    CHECK(b.buffered() == 0);  // every reply complete
  }
  levee::detail::redis_reply_bound b(4096);
  REQUIRE(b.feed("$10\r\nhel", 8));
  CHECK(b.buffered() > 8);
}

TEST_CASE("reply bound: what is announced or streamed beyond the limit is refused") {
  using bound = levee::detail::redis_reply_bound;
  const auto refused = [](std::size_t limit, const std::string& text) {
    bound b(limit);
    return b.feed(text.data(), text.size()) ? std::string() : b.error();
  };
  CHECK(refused(1 << 20, "$4294967296\r\n").starts_with("reply too large: a bulk string of "));
  CHECK(refused(1 << 20, "*4294967295\r\n").starts_with("reply too large: an array of "));
  CHECK(refused(1 << 20, "*2\r\n$100\r\n").empty());
  CHECK(refused(1000, "*2\r\n$1000\r\n") != "");
  CHECK(refused(1 << 20, "*99999999\r\n") != "");  // 64 bytes per element
  // Nothing announced, a line that never ends: refused at the limit.
  bound b(4096);
  const std::string line(1000, 'x');
  REQUIRE(b.feed("+", 1));
  bool ok = true;
  std::size_t fed = 1;
  while (ok && fed < 100000) {
    ok = b.feed(line.data(), line.size());
    fed += line.size();
  }
  CHECK_FALSE(ok);
  CHECK(fed < 6000);
  CHECK(b.buffered() <= 4096);
  CHECK(b.error().find("(max_reply_size 4096)") != std::string::npos);
  CHECK_FALSE(b.feed("\r\n", 2));  // failed for good
  CHECK(refused(4096, "?") == "protocol error: unexpected byte 63");
  CHECK(refused(4096, "$-2\r\n") == "protocol error: a bad length");
  CHECK(refused(4096, "$1x\r\n") == "protocol error: a bad length");
}

TEST_CASE("reply bound: hiredis's reader never holds more than the bound (random streams)") {
  // Valid replies, mutated at random (lengths, types, line ends), fed in
  // random pieces: the reader gets only what the bound accepted, and holds
  // at most the bound's limit between replies.
  const std::vector<std::string> seeds = {"+OK\r\n",
                                          ":7\r\n",
                                          "$3\r\nabc\r\n",
                                          "$-1\r\n",
                                          "*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n",
                                          "*2\r\n*2\r\n:1\r\n:2\r\n$4\r\nabcd\r\n",
                                          "-ERR x\r\n"};
  const char alphabet[] = "0123456789$*+-:\r\n-x";
  std::mt19937 rng(18);
  const std::size_t limit = 4096;
  int refused = 0;
  for (int round = 0; round < 3000; ++round) {
    std::string stream;
    while (stream.size() < 200) stream += seeds[rng() % seeds.size()];
    for (int k = static_cast<int>(rng() % 6); k > 0; --k)
      stream[rng() % stream.size()] = alphabet[rng() % (sizeof alphabet - 1)];
    if (rng() % 4 == 0) stream.insert(rng() % stream.size(), std::string(5000, 'x'));
    levee::detail::redis_reply_bound bound(limit);
    std::unique_ptr<redisReader, void (*)(redisReader*)> reader(redisReaderCreate(),
                                                                &redisReaderFree);
    for (std::size_t i = 0; i < stream.size();) {
      const std::size_t n = std::min<std::size_t>(1 + rng() % 700, stream.size() - i);
      const bool within = bound.feed(stream.data() + i, n);
      REQUIRE(redisReaderFeed(reader.get(), stream.data() + i, bound.accepted()) == REDIS_OK);
      i += n;
      void* reply = nullptr;
      bool error = false;
      while (redisReaderGetReply(reader.get(), &reply) == REDIS_OK && reply) freeReplyObject(reply);
      error = reader->err != 0;
      REQUIRE(reader->len - reader->pos <= limit);
      REQUIRE(bound.buffered() <= limit);
      if (!within) ++refused;
      if (!within || error) break;
    }
  }
  CHECK(refused > 100);
}

// ---- every address -------------------------------------------------------------

TEST_CASE("every resolved address is tried: ::1 refuses, 127.0.0.1 answers") {
  redis_fixture redis;  // on 127.0.0.1 only
  asio::io_context ioc;
  auto strand = asio::make_strand(ioc.get_executor());
  auto c = std::make_shared<levee::detail::redis_connection>(strand);
  levee::detail::redis_target t;
  // What `localhost` resolves to on a host with IPv6 first: ::1, then
  // 127.0.0.1 (and a port nothing listens on, for good measure).
  t.endpoints = {tcp::endpoint(asio::ip::make_address("::1"), redis.port()),
                 tcp::endpoint(asio::ip::make_address("127.0.0.1"), free_port()),
                 tcp::endpoint(asio::ip::make_address("127.0.0.1"), redis.port())};
  std::string connected = "(not yet)", pong;
  REQUIRE(c->start(
      t, [&](const std::string& e) { connected = e; }, [](const std::string&) {}));
  REQUIRE(
      c->command({"PING"}, [&](redisReply* r) { pong = r ? std::string(r->str, r->len) : ""; }));
  ioc.run_for(2s);
  CHECK(connected.empty());
  CHECK(pong == "PONG");
  c->close();
}

TEST_CASE("a link given a host name connects") {
  redis_fixture redis;
  const auto fo = fast_fleet("localhost:" + std::to_string(redis.port()));
  fleet_instance i(fast_breaker(), &fo);
  REQUIRE(wait_until([&] { return i.connected() && i.link().metrics().rounds >= 2; }));
}

// ---- ACL users -----------------------------------------------------------------

TEST_CASE("an ACL user: AUTH user password, the wrong one refused") {
  redis_fixture redis({.password = "admin-secret"});
  // Only the link's keys and channel.
  REQUIRE(redis.command({"ACL", "SETUSER", "fleet", "on", ">fleet-secret", "resetkeys", "~levee:*",
                         "resetchannels", "&levee:*", "+@all"}) == "OK");
  auto good = fast_fleet(redis.address());
  good.username = "fleet";
  good.password = "fleet-secret";
  auto wrong = good;
  wrong.password = "admin-secret";
  auto no_user = good;  // the default user with the fleet user's password
  no_user.username = "";
  fleet_instance a(fast_breaker(), &good);
  std::vector<std::string> reasons;
  std::mutex m;
  asio::io_context ioc;
  levee::fleet_link b(ioc.get_executor(), wrong), c(ioc.get_executor(), no_user);
  b.listen([&](const levee::fleet_event& e) {
    std::lock_guard g(m);
    reasons.push_back(std::string(to_string(e.kind)) + ":" + e.reason);
  });
  std::thread t([&] { ioc.run_for(3s); });
  REQUIRE(wait_until([&] { return a.connected() && a.link().metrics().rounds >= 2; }));
  REQUIRE(wait_until([&] { return b.metrics().errors >= 2 && c.metrics().errors >= 2; }));
  ioc.stop();
  t.join();
  CHECK(a.link().metrics().errors == 0);
  CHECK_FALSE(b.metrics().connected);
  CHECK_FALSE(c.metrics().connected);
  CHECK(b.metrics().connects == 0);
  CHECK(c.metrics().connects == 0);
  REQUIRE_FALSE(reasons.empty());
  // Redis's own text (issue 27): WRONGPASS for a wrong user or password.
  CHECK(reasons[0].rfind("connect_failed:WRONGPASS", 0) == 0);
  CHECK_THROWS_AS(levee::validate(levee::fleet_options{.password = "", .username = "fleet"}),
                  std::invalid_argument);
}

// ---- TLS -----------------------------------------------------------------------

namespace {

using fleet_vector = std::vector<std::unique_ptr<fleet_instance>>;

fleet_vector make_fleet(int n, const levee::fleet_options& fo) {
  fleet_vector v;
  for (int i = 0; i < n; ++i) {
    auto o = fo;
    o.instance_id = "instance-" + std::to_string(i);
    v.push_back(std::make_unique<fleet_instance>(fast_breaker(40), &o));
  }
  return v;
}

// A fleet whose instances all fail: the fleet's window opens them together
// before each reaches its own 40 calls (a published opening reaches them).
void expect_sharing(fleet_vector& fleet) {
  for (auto& i : fleet) i->sick = true;
  REQUIRE(wait_until([&] {
    for (auto& i : fleet)
      if (i->breaker().state() != circuit_state::open) return false;
    return true;
  }));
  wait_until([&] { return opens_received(fleet) >= 1; });  // counted just after
  CHECK(opens_received(fleet) >= 1);
}

redis_options tls_redis(const flaky::test_certificates& certs) {
  return {
      .password = "", .tls_cert = certs.cert_pem, .tls_key = certs.key_pem, .tls_ca = certs.ca_pem};
}

}  // namespace

TEST_CASE("TLS with an ACL user: the fleet shares through a TLS Redis") {
  const auto certs = flaky::make_test_certificates({"IP:127.0.0.1", "DNS:localhost"});
  redis_fixture redis(tls_redis(certs));
  REQUIRE(redis.command(
              {"ACL", "SETUSER", "fleet", "on", ">pw", "~levee:*", "&levee:*", "+@all"}) == "OK");
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    auto fo = fast_fleet(host + ":" + std::to_string(redis.port()));
    fo.tls = true;
    fo.tls_context = flaky::make_client_context(certs.ca_pem);
    fo.username = "fleet";
    fo.password = "pw";
    auto fleet = make_fleet(3, fo);
    REQUIRE(wait_until([&] { return all_connected(fleet); }));
    REQUIRE(wait_until([&] { return fleet[0]->link().metrics().rounds >= 3; }));
    expect_sharing(fleet);
    for (auto& i : fleet) CHECK(i->link().metrics().errors == 0);
  }
}

TEST_CASE("TLS: a certificate the context does not trust, or naming another host, is refused") {
  const auto certs = flaky::make_test_certificates({"DNS:localhost"});
  const auto other = flaky::make_test_certificates({"IP:127.0.0.1"});
  redis_fixture redis(tls_redis(certs));
  const auto refused = [&](const std::string& host, const std::string& ca_pem) {
    auto fo = fast_fleet(host + ":" + std::to_string(redis.port()));
    fo.tls = true;
    fo.tls_context = flaky::make_client_context(ca_pem);
    asio::io_context ioc;
    levee::fleet_link link(ioc.get_executor(), fo);
    std::string reason;
    link.listen([&](const levee::fleet_event& e) {
      if (reason.empty()) reason = std::string(to_string(e.kind)) + ":" + e.reason;
    });
    ioc.run_for(500ms);
    CHECK_FALSE(link.metrics().connected);
    CHECK(link.metrics().connects == 0);
    return reason;
  };
  // Signed by a CA the context does not trust.
  const auto untrusted = refused("localhost", other.ca_pem);
  CHECK(untrusted.starts_with("connect_failed:TLS handshake failed: certificate verify failed"));
  CHECK(untrusted.ends_with("(self-signed certificate in certificate chain)"));
  // Trusted, but it names localhost, not 127.0.0.1.
  CHECK(refused("127.0.0.1", certs.ca_pem).starts_with("connect_failed:TLS handshake failed: "));
  // The system's trust store (no context given) does not know the test CA.
  levee::fleet_options fo = fast_fleet("localhost:" + std::to_string(redis.port()));
  fo.tls = true;
  asio::io_context ioc;
  levee::fleet_link link(ioc.get_executor(), fo);
  ioc.run_for(400ms);
  CHECK(link.metrics().connects == 0);
  CHECK(link.metrics().errors >= 1);
  // Options: TLS is over TCP; a context only with tls.
  CHECK_THROWS_AS(levee::validate({.address = "/run/redis.sock", .tls = true}),
                  std::invalid_argument);
  CHECK_THROWS_AS(levee::validate({.tls_context = flaky::make_client_context(certs.ca_pem)}),
                  std::invalid_argument);
}

// ---- replies bounded in size ---------------------------------------------------

namespace {

// A fake Redis on 127.0.0.1 that answers the link's handshake (AUTH, TIME,
// SCRIPT LOAD, SUBSCRIBE, PING) and, while `hostile`, 100 ms after the
// subscription's confirmation, sends `attack` and `stream` bytes of 'x' (64
// KiB writes, until the link closes the connection).
class fake_redis {
 public:
  fake_redis(std::string attack, std::uint64_t stream)
      : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)),
        attack_(std::move(attack)),
        stream_(stream) {
    asio::co_spawn(ioc_, accept(), asio::detached);
    thread_ = std::thread([this] { ioc_.run(); });
  }
  ~fake_redis() {
    ioc_.stop();
    thread_.join();
  }
  std::string address() const {
    return "127.0.0.1:" + std::to_string(acceptor_.local_endpoint().port());
  }

  std::atomic<bool> hostile{true};
  std::atomic<int> connections{0};
  std::atomic<std::uint64_t> streamed{0};  ///< bytes of attack written, all connections

 private:
  asio::awaitable<void> accept() {
    for (;;) {
      auto [ec, s] = co_await acceptor_.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      ++connections;
      asio::co_spawn(ioc_, serve(std::move(s)), asio::detached);
    }
  }

  // The commands in `in` (arrays of bulk strings), their names only.
  static std::vector<std::string> commands(std::string& in) {
    std::vector<std::string> out;
    for (;;) {
      std::size_t pos = 0, name_at = 0, name_len = 0;
      if (in.empty() || in[0] != '*') return out;
      auto line = [&](std::size_t& at) -> long {
        const auto end = in.find("\r\n", at);
        if (end == std::string::npos) return -1;
        const long v = std::stol(in.substr(at + 1, end - at - 1));
        at = end + 2;
        return v;
      };
      const long n = line(pos);
      bool complete = n > 0;
      for (long i = 0; complete && i < n; ++i) {
        const long len = line(pos);
        if (len < 0 || pos + static_cast<std::size_t>(len) + 2 > in.size()) complete = false;
        if (!complete) break;
        if (i == 0) name_at = pos, name_len = static_cast<std::size_t>(len);
        pos += static_cast<std::size_t>(len) + 2;
      }
      if (!complete) return out;
      out.push_back(in.substr(name_at, name_len));
      in.erase(0, pos);
    }
  }

  asio::awaitable<void> serve(tcp::socket s) {
    std::string in;
    char buf[4096];
    for (;;) {
      auto [ec, n] =
          co_await s.async_read_some(asio::buffer(buf), asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      in.append(buf, n);
      std::string out;
      bool attack = false;
      for (const auto& c : commands(in)) {
        if (c == "TIME") out += "*2\r\n$10\r\n1700000000\r\n$1\r\n0\r\n";
        if (c == "SCRIPT") out += "$40\r\n" + std::string(40, 'a') + "\r\n";
        if (c == "AUTH") out += "+OK\r\n";
        if (c == "PING") out += "+PONG\r\n";
        if (c == "SUBSCRIBE") {
          out += "*3\r\n$9\r\nsubscribe\r\n$11\r\nlevee:fleet\r\n:1\r\n";
          attack = hostile.load();
        }
      }
      auto [wec, w] =
          co_await asio::async_write(s, asio::buffer(out), asio::as_tuple(asio::use_awaitable));
      if (wec) co_return;
      if (!attack) continue;
      // Once the link is surely ready (its other connection answered at once).
      asio::steady_timer wait(s.get_executor(), 100ms);
      co_await wait.async_wait(asio::as_tuple(asio::use_awaitable));
      auto [aec, a] =
          co_await asio::async_write(s, asio::buffer(attack_), asio::as_tuple(asio::use_awaitable));
      if (aec) co_return;
      const std::string chunk(64 * 1024, 'x');
      for (std::uint64_t sent = 0; sent < stream_; sent += chunk.size()) {
        auto [e, k] =
            co_await asio::async_write(s, asio::buffer(chunk), asio::as_tuple(asio::use_awaitable));
        if (e) co_return;
        streamed += k;
      }
    }
  }

  asio::io_context ioc_;
  tcp::acceptor acceptor_;
  std::string attack_;
  std::uint64_t stream_;
  std::thread thread_;
};

}  // namespace

TEST_CASE("a message announcing 4 GiB ends the connection at once, and the link reconnects") {
  // A hostile or impersonated Redis: a pub/sub message of 4 GiB announced,
  // 256 MiB streamed. No breaker attached: nothing else is pending.
  fake_redis fake("*3\r\n$7\r\nmessage\r\n$11\r\nlevee:fleet\r\n$4294967296\r\n", 256 << 20);
  auto fo = fast_fleet(fake.address());
  asio::io_context ioc;
  levee::fleet_link link(ioc.get_executor(), fo);
  std::vector<std::string> seen;
  std::mutex m;
  link.listen([&](const levee::fleet_event& e) {
    std::lock_guard g(m);
    seen.push_back(std::string(to_string(e.kind)) + ":" + e.reason);
  });
  std::thread t([&] { ioc.run_for(6s); });
  const auto disconnected = [&] {
    std::lock_guard g(m);
    return std::count_if(seen.begin(), seen.end(),
                         [](const std::string& s) { return s.starts_with("disconnected:"); });
  };
  const bool twice = wait_until([&] { return disconnected() >= 2; }, 4000ms);
  // The way back: a well-behaved server again, the link stays connected.
  fake.hostile = false;
  const bool back = wait_until([&] { return link.metrics().connected; }, 2000ms);
  std::this_thread::sleep_for(300ms);
  const bool stays = link.metrics().connected;
  ioc.stop();
  t.join();
  CHECK(twice);
  CHECK(back);
  CHECK(stays);
  REQUIRE(seen.size() >= 3);
  CHECK(seen[0] == "connected:");
  CHECK(seen[1] ==
        "disconnected:reply too large: a bulk string of 4294967296 bytes announced "
        "(max_reply_size 4194304)");
  CHECK(fake.connections.load() >= 6);  // two connections per attempt
}

TEST_CASE("a reply that never ends is refused at max_reply_size") {
  // Nothing announced: a status line streamed without its end, 256 MiB.
  fake_redis fake("*3\r\n$7\r\nmessage\r\n$11\r\nlevee:fleet\r\n+", 256 << 20);
  auto fo = fast_fleet(fake.address());
  fo.max_reply_size = 64 * 1024;
  asio::io_context ioc;
  levee::fleet_link link(ioc.get_executor(), fo);
  std::string reason;
  link.listen([&](const levee::fleet_event& e) {
    if (e.kind == levee::fleet_event_kind::disconnected && reason.empty()) reason = e.reason;
  });
  ioc.run_for(1500ms);
  REQUIRE(reason.starts_with("reply too large: "));
  CHECK(reason.ends_with(" more coming (max_reply_size 65536)"));
  // What was buffered when it was refused: within the bound.
  const auto buffered = std::stoull(reason.substr(std::string("reply too large: ").size()));
  CHECK(buffered <= 65536);
  CHECK(buffered > 65536 - 16 * 1024);         // the bytes of one read more would have passed it
  CHECK(fake.streamed.load() < (256u << 20));  // the link stopped reading: the server gave up
}

// ---- a silent Redis ------------------------------------------------------------

TEST_CASE("a stopped Redis is seen within about command_timeout with no round pending") {
  redis_fixture redis;
  auto fo = fast_fleet(redis.address());  // command_timeout 200 ms
  asio::io_context ioc;
  levee::fleet_link idle(ioc.get_executor(), fo);  // no breaker: nothing is ever pending
  std::thread t([&] { ioc.run_for(8s); });
  REQUIRE(wait_until([&] { return idle.metrics().connected; }));
  std::this_thread::sleep_for(300ms);
  CHECK(idle.metrics().connected);  // idle and healthy: the heartbeat keeps it
  CHECK(idle.metrics().errors == 0);
  redis.pause();
  const auto paused = std::chrono::steady_clock::now();
  const bool seen = wait_until([&] { return !idle.metrics().connected; }, 2000ms);
  const auto took = std::chrono::steady_clock::now() - paused;
  redis.resume();
  CHECK(seen);
  CHECK(took < 1000ms);  // about command_timeout (200 ms) and a heartbeat period
  WARN("a stopped Redis seen after "
       << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
       << " ms (command_timeout 200 ms, no round pending)");
  // The way back: connected again, and sharing works through it.
  REQUIRE(wait_until([&] { return idle.metrics().connected; }));
  levee::circuit_breaker mine(ioc, fast_breaker(1000));
  idle.attach(mine, "api");
  auto fo2 = fo;
  auto fleet = make_fleet(2, fo2);
  REQUIRE(wait_until([&] { return all_connected(fleet); }));
  expect_sharing(fleet);
  // The opening published by the others reached the breaker of the link
  // that was cut off.
  CHECK(wait_until([&] { return mine.state() == circuit_state::open; }));
  wait_until([&] { return idle.metrics().opens_received >= 1; });  // counted just after
  CHECK(idle.metrics().opens_received >= 1);
  ioc.stop();
  t.join();
}
