// A DNS server of the tests' own (UDP on 127.0.0.1, for
// client_options::dns_servers), and HTTP replicas on 127.0.0.x sharing one
// port (the endpoints a name with several A records resolves to).
#pragma once

#include "http_support.hpp"

#include <boost/asio/ip/udp.hpp>

#include <array>
#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

namespace levee_test {

/// A DNS server on 127.0.0.1 (UDP). Each name answers as `set`, `fail` or
/// `silence` made it: its A records with a TTL, SERVFAIL, or nothing at all.
/// `fast.test` is 127.0.0.1 (TTL 60), `slow.test` never answers, any other
/// name is NXDOMAIN. AAAA questions get no records. Thread-safe.
struct dns_server {
  enum class mode { answer, servfail, silent };
  struct name_entry {
    mode how = mode::answer;
    std::vector<std::string> addresses;  // IPv4
    std::uint32_t ttl = 60;
  };

  explicit dns_server(asio::io_context& ioc) : ctx(ioc) {
    set("fast.test", {"127.0.0.1"}, 60);
    silence("slow.test");
    start();
  }

  asio::io_context& ctx;
  std::vector<std::unique_ptr<asio::ip::udp::socket>> sockets;  // the last one listens
  std::uint16_t bound = 0;
  std::atomic<int> queries{0};  // A questions only
  std::mutex lock;
  std::map<std::string, name_entry> names;  // under lock

  std::string address() const { return "127.0.0.1:" + std::to_string(bound); }

  void set(const std::string& name, std::vector<std::string> addresses, std::uint32_t ttl) {
    std::lock_guard g(lock);
    names[name] = {mode::answer, std::move(addresses), ttl};
  }
  void fail(const std::string& name) {
    std::lock_guard g(lock);
    names[name].how = mode::servfail;
  }
  void silence(const std::string& name) {
    std::lock_guard g(lock);
    names[name].how = mode::silent;
  }

  /// Listens (again, on the same port after `stop`).
  void start() {
    auto& s = *sockets.emplace_back(std::make_unique<asio::ip::udp::socket>(ctx));
    const asio::ip::udp::endpoint at(asio::ip::make_address("127.0.0.1"), bound);
    s.open(at.protocol());
    s.set_option(asio::socket_base::reuse_address(true));
    s.bind(at);
    bound = s.local_endpoint().port();
    asio::co_spawn(ctx, serve(&s), asio::detached);
  }
  /// The server goes away: its port refuses (ICMP port unreachable).
  void stop() {
    boost::system::error_code ignored;
    sockets.back()->close(ignored);
  }

  asio::awaitable<void> serve(asio::ip::udp::socket* s) {
    std::array<unsigned char, 512> q{};
    for (;;) {
      asio::ip::udp::endpoint from;
      auto [ec, n] = co_await s->async_receive_from(asio::buffer(q), from,
                                                    asio::as_tuple(asio::use_awaitable));
      if (ec == asio::error::operation_aborted || !s->is_open()) co_return;
      if (ec || n < 12) continue;
      // The question: labels up to a zero, then type and class.
      std::size_t at = 12;
      std::string name;
      while (at < n && q[at] != 0 && at + 1 + q[at] <= n) {
        const std::size_t len = q[at];
        if (!name.empty()) name += '.';
        name.append(reinterpret_cast<const char*>(&q[at + 1]), len);
        at += len + 1;
      }
      const std::size_t question_end = at + 5;  // zero, type, class
      if (question_end > n) continue;
      const unsigned qtype = (q[at + 1] << 8) | q[at + 2];
      name_entry e;
      bool known = false;
      {
        std::lock_guard g(lock);
        const auto it = names.find(name);
        if (it != names.end()) e = it->second, known = true;
      }
      if (qtype == 1) ++queries;
      if (known && e.how == mode::silent) continue;
      std::vector<unsigned char> a(q.begin(),
                                   q.begin() + static_cast<std::ptrdiff_t>(question_end));
      a[2] = 0x81;                                                   // QR, RD
      a[3] = !known ? 0x83 : e.how == mode::servfail ? 0x82 : 0x80;  // RA; rcode
      a[6] = a[7] = a[8] = a[9] = a[10] = a[11] = 0;  // no answer, authority, additional yet
      if (known && e.how == mode::answer && qtype == 1) {
        a[7] = static_cast<unsigned char>(e.addresses.size());
        for (const auto& address : e.addresses) {
          const auto b = asio::ip::make_address_v4(address).to_bytes();
          const unsigned char answer[] = {0xc0,
                                          0x0c,
                                          0,
                                          1,
                                          0,
                                          1,
                                          static_cast<unsigned char>(e.ttl >> 24),
                                          static_cast<unsigned char>(e.ttl >> 16),
                                          static_cast<unsigned char>(e.ttl >> 8),
                                          static_cast<unsigned char>(e.ttl),
                                          0,
                                          4,
                                          b[0],
                                          b[1],
                                          b[2],
                                          b[3]};
          a.insert(a.end(), std::begin(answer), std::end(answer));
        }
      }
      co_await s->async_send_to(asio::buffer(a), from, asio::as_tuple(asio::use_awaitable));
    }
  }
};

/// HTTP replicas on 127.0.0.1, 127.0.0.2, ... all on one port: each answers
/// every request "200 <its address>" and counts them. Thread-safe counts.
struct replica_set {
  struct replica {
    replica(asio::io_context& ioc, const std::string& ip, std::uint16_t port)
        : address(ip), acceptor(ioc) {
      const tcp::endpoint at(asio::ip::make_address(ip), port);
      acceptor.open(at.protocol());
      acceptor.set_option(asio::socket_base::reuse_address(true));
      acceptor.bind(at);
      acceptor.listen();
    }
    std::string address;
    tcp::acceptor acceptor;
    std::atomic<int> requests{0};
  };

  /// `n` replicas, 127.0.0.1 to 127.0.0.n.
  replica_set(asio::io_context& ioc, int n) {
    // The first one picks a free port; the others take it on their address
    // (should one be taken there, all start over on another).
    for (int attempt = 0; attempt < 20 && replicas.empty(); ++attempt) {
      try {
        std::uint16_t p = 0;
        for (int i = 1; i <= n; ++i) {
          replicas.push_back(std::make_unique<replica>(ioc, "127.0.0." + std::to_string(i), p));
          p = replicas.front()->acceptor.local_endpoint().port();
        }
        port = p;
      } catch (const boost::system::system_error&) {
        replicas.clear();
      }
    }
    REQUIRE(!replicas.empty());
    for (auto& r : replicas) asio::co_spawn(ioc, accept(ioc, r.get()), asio::detached);
  }

  std::vector<std::unique_ptr<replica>> replicas;
  std::uint16_t port = 0;

  replica& operator[](std::size_t i) { return *replicas.at(i); }
  void stop(std::size_t i) {
    boost::system::error_code ignored;
    replicas.at(i)->acceptor.close(ignored);
  }

  static asio::awaitable<void> accept(asio::io_context& ioc, replica* r) {
    for (;;) {
      auto [ec, socket] = co_await r->acceptor.async_accept(asio::as_tuple(asio::use_awaitable));
      if (ec) co_return;
      asio::co_spawn(ioc, serve(std::move(socket), r), asio::detached);
    }
  }
  static asio::awaitable<void> serve(tcp::socket s, replica* r) {
    asio::streambuf in;
    const std::string reply =
        "HTTP/1.1 200 OK\r\nContent-Length: " + std::to_string(r->address.size()) + "\r\n\r\n" +
        r->address;
    for (;;) {
      const std::string head = co_await read_head(s, in);
      if (head.empty()) co_return;
      r->requests.fetch_add(1, std::memory_order_relaxed);
      const bool written = co_await write_all(s, reply);
      if (!written) co_return;
    }
  }
};

}  // namespace levee_test
