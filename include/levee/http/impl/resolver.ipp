// levee: the c-ares resolver, compiled once in lib/.
#pragma once

#include <levee/http/detail/resolver.hpp>

#include <boost/asio/associated_cancellation_slot.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/execution/outstanding_work.hpp>
#include <boost/asio/posix/stream_descriptor.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/prefer.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/beast/core/error.hpp>

#include <ares.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <stdexcept>
#include <unordered_map>

namespace levee::http::detail {

namespace asio = boost::asio;

namespace {

boost::system::error_code from_ares(int status) {
  switch (status) {
    case ARES_SUCCESS:
      return {};
    case ARES_ENOTFOUND:
    case ARES_ENODATA:
    case ARES_ENONAME:
      return asio::error::host_not_found;
    case ARES_ETIMEOUT:
    case ARES_ESERVFAIL:
    case ARES_ECONNREFUSED:
      return asio::error::host_not_found_try_again;
    case ARES_ECANCELLED:
    case ARES_EDESTRUCTION:
      return asio::error::operation_aborted;
    case ARES_ENOMEM:
      return asio::error::no_memory;
    default:
      return asio::error::no_recovery;
  }
}

}  // namespace

struct dns_resolver::state : std::enable_shared_from_this<dns_resolver::state> {
  using handler_type = asio::any_completion_handler<signature>;

  struct query {
    query(const asio::strand<asio::any_io_executor>& s, handler_type h, asio::any_io_executor w,
          std::uint16_t p)
        : handler(std::move(h)), work(std::move(w)), timer(s), port(p) {}
    handler_type handler;
    asio::any_io_executor work;  // keeps the handler's executor busy while pending
    asio::steady_timer timer;    // the deadline
    std::uint16_t port;
    bool done = false;
  };

  // What c-ares hands back to `on_addrinfo`.
  struct pending {
    std::shared_ptr<query> q;
    state* owner;
  };

  struct watcher {
    watcher(const asio::strand<asio::any_io_executor>& s, int fd) : descriptor(s, fd) {}
    asio::posix::stream_descriptor descriptor;
    bool want_read = false, want_write = false, reading = false, writing = false, gone = false;
  };

  state(asio::any_io_executor ex, const std::string& servers, std::chrono::milliseconds timeout)
      : strand(asio::make_strand(ex)), ares_timer(strand) {
    static std::once_flag once;
    std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
    ares_options options{};
    options.sock_state_cb = &state::on_socket_state;
    options.sock_state_cb_data = this;
    options.timeout = static_cast<int>(timeout.count());
    options.tries = 2;
    int mask = ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES;
#if defined(ARES_OPT_QUERY_CACHE)
    // c-ares 1.23 and later cache answers by default: off, so that a name
    // watch's interval and max_ttl reach the DNS server (docs/upstream.md).
    options.qcache_max_ttl = 0;
    mask |= ARES_OPT_QUERY_CACHE;
#endif
    if (ares_init_options(&channel, &options, mask) != ARES_SUCCESS)
      throw std::runtime_error("levee::http: c-ares could not be initialised");
    if (!servers.empty() && ares_set_servers_ports_csv(channel, servers.c_str()) != ARES_SUCCESS) {
      ares_destroy(channel);
      throw std::invalid_argument("client_options::dns_servers is not a valid server list");
    }
  }

  ~state() {
    destroying = true;
    if (channel) ares_destroy(channel);  // each callback sees `destroying` and drops its handler
    for (auto& [fd, w] : watchers) w->descriptor.release();
  }

  // On the strand, from ~dns_resolver: every pending query ends now.
  void shut_down() {
    if (!channel) return;
    ares_destroy(channel);  // completes each query with ARES_EDESTRUCTION
    channel = nullptr;
    for (auto& [fd, w] : watchers) {
      w->gone = true;
      boost::system::error_code ignored;
      w->descriptor.cancel(ignored);
      w->descriptor.release();
    }
    watchers.clear();
    ares_timer.cancel();
  }

  void begin(const std::shared_ptr<query>& q, const std::string& host) {
    if (!channel) return complete(q, asio::error::operation_aborted, {});
    if (q->done) return;  // cancelled before it began
    q->timer.async_wait([self = shared_from_this(), q](boost::system::error_code ec) {
      if (!ec) self->complete(q, boost::beast::error::timeout, {});
    });
    ares_addrinfo_hints hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = ARES_AI_NUMERICSERV | ARES_AI_NOSORT;
    const std::string service = std::to_string(q->port);
    auto* arg = new pending{q, this};
    ares_getaddrinfo(channel, host.c_str(), service.c_str(), &hints, &state::on_addrinfo, arg);
    update_timeout();
  }

  static void on_addrinfo(void* arg, int status, int, ares_addrinfo* info) {
    std::unique_ptr<pending> p(static_cast<pending*>(arg));
    const std::shared_ptr<query>& q = p->q;
    endpoints found;
    int ttl = -1;  // the smallest of the answer's TTLs
    const auto shortest = [&ttl](int t) { ttl = ttl < 0 ? t : std::min(ttl, t); };
    if (status == ARES_SUCCESS && info) {
      for (auto* c = info->cnames; c; c = c->next) shortest(c->ttl);
      for (auto* node = info->nodes; node; node = node->ai_next) {
        shortest(node->ai_ttl);
        if (node->ai_family == AF_INET && node->ai_addrlen >= sizeof(sockaddr_in)) {
          sockaddr_in in{};
          std::memcpy(&in, node->ai_addr, sizeof in);
          asio::ip::address_v4::bytes_type b;
          std::memcpy(b.data(), &in.sin_addr, 4);
          found.emplace_back(asio::ip::address_v4(b), q->port);
        } else if (node->ai_family == AF_INET6 && node->ai_addrlen >= sizeof(sockaddr_in6)) {
          sockaddr_in6 in{};
          std::memcpy(&in, node->ai_addr, sizeof in);
          asio::ip::address_v6::bytes_type b;
          std::memcpy(b.data(), &in.sin6_addr, 16);
          found.emplace_back(asio::ip::address_v6(b, in.sin6_scope_id), q->port);
        }
      }
    }
    if (info) ares_freeaddrinfo(info);
    if (p->owner->destroying) return;  // ~state: nobody to tell
    boost::system::error_code ec = from_ares(status);
    if (!ec && found.empty()) ec = asio::error::host_not_found;
    p->owner->complete(q, ec, std::move(found), std::chrono::seconds(ec ? 0 : std::max(ttl, 0)));
  }

  // Exactly once per query, on the strand.
  void complete(const std::shared_ptr<query>& q, boost::system::error_code ec, endpoints eps,
                std::chrono::seconds ttl = std::chrono::seconds(0)) {
    if (q->done) return;
    q->done = true;
    q->timer.cancel();
    auto ex = std::move(q->work);
    asio::post(ex, [h = std::move(q->handler), ec, eps = std::move(eps), ttl]() mutable {
      asio::get_associated_cancellation_slot(h).clear();
      std::move(h)(ec, std::move(eps), ttl);
    });
  }

  static void on_socket_state(void* data, ares_socket_t fd, int readable, int writable) {
    auto* self = static_cast<state*>(data);
    if (!readable && !writable) {
      const auto it = self->watchers.find(fd);
      if (it == self->watchers.end()) return;
      it->second->gone = true;
      boost::system::error_code ignored;
      it->second->descriptor.cancel(ignored);
      it->second->descriptor.release();  // c-ares closes the socket itself
      self->watchers.erase(it);
      return;
    }
    if (self->destroying) return;
    auto& w = self->watchers[fd];
    if (!w) w = std::make_shared<watcher>(self->strand, fd);
    w->want_read = readable != 0;
    w->want_write = writable != 0;
    self->arm(w, fd);
  }

  void arm(const std::shared_ptr<watcher>& w, int fd) {
    if (w->want_read && !w->reading) {
      w->reading = true;
      w->descriptor.async_wait(asio::posix::stream_descriptor::wait_read,
                               [self = shared_from_this(), w, fd](boost::system::error_code ec) {
                                 w->reading = false;
                                 if (w->gone || !self->channel) return;
                                 if (!ec) self->process(fd, ARES_SOCKET_BAD);
                                 if (!w->gone) self->arm(w, fd);
                               });
    }
    if (w->want_write && !w->writing) {
      w->writing = true;
      w->descriptor.async_wait(asio::posix::stream_descriptor::wait_write,
                               [self = shared_from_this(), w, fd](boost::system::error_code ec) {
                                 w->writing = false;
                                 if (w->gone || !self->channel) return;
                                 if (!ec) self->process(ARES_SOCKET_BAD, fd);
                                 if (!w->gone) self->arm(w, fd);
                               });
    }
  }

  void process(ares_socket_t read_fd, ares_socket_t write_fd) {
    ares_process_fd(channel, read_fd, write_fd);
    update_timeout();
  }

  // c-ares' own retransmissions and timeouts.
  void update_timeout() {
    if (!channel) return;
    timeval tv{};
    if (!ares_timeout(channel, nullptr, &tv)) {
      ares_timer.cancel();
      return;
    }
    ares_timer.expires_after(std::chrono::seconds(tv.tv_sec) +
                             std::chrono::microseconds(tv.tv_usec));
    ares_timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      if (ec || !self->channel) return;
      self->process(ARES_SOCKET_BAD, ARES_SOCKET_BAD);
    });
  }

  asio::strand<asio::any_io_executor> strand;
  asio::steady_timer ares_timer;
  ares_channel channel = nullptr;
  std::unordered_map<int, std::shared_ptr<watcher>> watchers;
  bool destroying = false;
};

dns_resolver::dns_resolver(asio::any_io_executor ex, const std::string& servers,
                           std::chrono::milliseconds attempt_timeout)
    : state_(std::make_shared<state>(std::move(ex), servers, attempt_timeout)) {}

dns_resolver::~dns_resolver() {
  shutdown();
}

void dns_resolver::shutdown() {
  asio::post(state_->strand, [s = state_] { s->shut_down(); });
}

asio::any_io_executor dns_resolver::get_executor() const noexcept {
  return state_->strand.get_inner_executor();
}

void dns_resolver::start(std::string host, std::uint16_t port,
                         std::chrono::steady_clock::time_point deadline,
                         asio::any_completion_handler<signature> handler,
                         asio::any_io_executor handler_ex) {
  asio::any_io_executor work = asio::prefer(handler_ex, asio::execution::outstanding_work.tracked);
  auto q =
      std::make_shared<state::query>(state_->strand, std::move(handler), std::move(work), port);
  q->timer.expires_at(deadline);
  auto slot = asio::get_associated_cancellation_slot(q->handler);
  if (slot.is_connected()) {
    std::weak_ptr<state::query> weak = q;
    std::weak_ptr<state> owner = state_;
    slot.assign([weak, owner](asio::cancellation_type type) {
      if ((type & (asio::cancellation_type::terminal | asio::cancellation_type::partial |
                   asio::cancellation_type::total)) == asio::cancellation_type::none)
        return;
      auto s = owner.lock();
      if (!s) return;
      asio::post(s->strand, [s, weak] {
        if (auto query = weak.lock()) s->complete(query, asio::error::operation_aborted, {});
      });
    });
  }
  asio::post(state_->strand, [s = state_, q, h = std::move(host)] { s->begin(q, h); });
}

}  // namespace levee::http::detail
