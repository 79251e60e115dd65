// levee: one connection to Redis on Asio (fleet/detail/redis_connection.hpp),
// compiled once in levee_fleet.
#pragma once

#include <levee/core/detail/saturating.hpp>
#include <levee/fleet/detail/redis_connection.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/write.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <algorithm>
#include <charconv>
#include <string_view>
#include <utility>

namespace levee::detail {

namespace asio = boost::asio;
namespace ssl = boost::asio::ssl;

bool redis_address::parse(const std::string& text, redis_address& out) {
  out = {};
  if (text.empty()) return false;
  if (text.front() == '/') {
    out.path = text;
    return true;
  }
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) return false;
  std::string host = text.substr(0, colon);
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return false;
    host = host.substr(1, host.size() - 2);
  } else if (host.find(':') != std::string::npos) {
    return false;  // an IPv6 address needs brackets
  }
  int port = 0;
  const char* first = text.data() + colon + 1;
  const char* last = text.data() + text.size();
  const auto [end, ec] = std::from_chars(first, last, port);
  if (ec != std::errc() || end != last || port < 1 || port > 65535) return false;
  out.host = std::move(host);
  out.port = port;
  return true;
}

namespace {

// A pub/sub push (RESP2): ["message", channel, payload], ["subscribe", ...].
bool push_kind(const redisReply* r, std::string_view& kind) {
  if (r->type != REDIS_REPLY_ARRAY || r->elements < 3 || r->element[0]->type != REDIS_REPLY_STRING)
    return false;
  kind = std::string_view(r->element[0]->str, r->element[0]->len);
  return kind == "message" || kind == "pmessage" || kind == "subscribe" || kind == "psubscribe" ||
         kind == "unsubscribe" || kind == "punsubscribe";
}

std::string closed_because(const boost::system::error_code& ec) {
  if (ec == asio::error::eof || ec == asio::error::connection_reset ||
      ec == ssl::error::stream_truncated)
    return "connection closed";
  return "connection error: " + ec.message();
}

}  // namespace

std::shared_ptr<ssl::context> default_tls_context() {
  auto c = std::make_shared<ssl::context>(ssl::context::tls_client);
  c->set_default_verify_paths();
  c->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                 ssl::context::no_sslv3 | ssl::context::no_tlsv1 | ssl::context::no_tlsv1_1);
  return c;
}

redis_connection::redis_connection(asio::any_io_executor strand)
    : strand_(std::move(strand)), timer_(strand_), reader_(nullptr, &redisReaderFree) {}

redis_connection::~redis_connection() {
  on_connect_ = nullptr;
  on_close_ = nullptr;
  close();
}

bool redis_connection::start(redis_target target,
                             std::function<void(const std::string&)> on_connect,
                             std::function<void(const std::string&)> on_close) {
  if (state_ != state::idle || (target.endpoints.empty() && target.path.empty())) return false;
  reader_.reset(redisReaderCreate());
  if (!reader_) return false;
  target_ = std::move(target);
  bound_.emplace(target_.max_reply_size);
  on_connect_ = std::move(on_connect);
  on_close_ = std::move(on_close);
  state_ = state::connecting;
  if (target_.path.empty()) {
    connect_next(0);
    return true;
  }
  unix_.emplace(strand_);
  unix_->async_connect(asio::local::stream_protocol::endpoint(target_.path),
                       [self = shared_from_this()](boost::system::error_code ec) {
                         if (self->state_ != state::connecting) return;
                         if (ec) return self->fail("connect failed: " + ec.message());
                         self->established();
                       });
  return true;
}

template <class F>
void redis_connection::with_stream(F&& f) {
  if (tls_) {
    f(*tls_);
  } else if (tcp_) {
    f(*tcp_);
  } else if (unix_) {
    f(*unix_);
  }
}

// One address after the other: the first that accepts is kept.
void redis_connection::connect_next(std::size_t i) {
  if (target_.tls) {
    if (!tls_) tls_.emplace(strand_, *target_.tls);
  } else if (!tcp_) {
    tcp_.emplace(strand_);
  }
  tcp::socket& socket = tls_ ? tls_->next_layer() : *tcp_;
  boost::system::error_code closed;
  socket.close(closed);
  socket.async_connect(
      target_.endpoints[i], [self = shared_from_this(), i](boost::system::error_code ec) {
        if (self->state_ != state::connecting) return;
        if (ec) {
          if (i + 1 < self->target_.endpoints.size()) return self->connect_next(i + 1);
          return self->fail("connect failed: " + ec.message());
        }
        boost::system::error_code ignored;
        tcp::socket& s = self->tls_ ? self->tls_->next_layer() : *self->tcp_;
        s.set_option(tcp::no_delay(true), ignored);
        if (!self->tls_) return self->established();
        auto& t = *self->tls_;
        // SNI for names (not for IP literals, RFC 6066); the certificate must
        // name the host whatever the context's own callback says.
        const std::string& host = self->target_.host;
        asio::ip::make_address(host, ec);
        ::ERR_clear_error();
        if (ec && !SSL_set_tlsext_host_name(t.native_handle(), host.c_str()))
          return self->fail("TLS: cannot set the server name");
        t.set_verify_mode(ssl::verify_peer);
        t.set_verify_callback(ssl::host_name_verification(host));
        t.async_handshake(ssl::stream_base::client, [self](boost::system::error_code hec) {
          if (self->state_ != state::connecting) return;
          if (!hec) return self->established();
          std::string why = "TLS handshake failed: " + hec.message();
          const long v = SSL_get_verify_result(self->tls_->native_handle());
          if (v != X509_V_OK) why += std::string(" (") + X509_verify_cert_error_string(v) + ")";
          self->fail(std::move(why));
        });
      });
}

void redis_connection::established() {
  state_ = state::up;
  last_reply_ = steady::now();
  for (request& r : pending_) r.sent = last_reply_;  // queued while connecting
  if (auto h = std::exchange(on_connect_, nullptr)) h(std::string());
  if (state_ != state::up) return;
  if (target_.timeout > std::chrono::nanoseconds::zero()) beat();
  flush();
  read();
}

bool redis_connection::command(const std::vector<std::string>& argv, reply_handler h) {
  return queue(argv, request{std::move(h), steady::now()});
}

bool redis_connection::subscribe(const std::string& channel, reply_handler h) {
  if (subscription_ || !h) return false;
  if (!queue({"SUBSCRIBE", channel}, request{nullptr, steady::now(), true})) return false;
  subscription_ = std::move(h);
  return true;
}

bool redis_connection::queue(const std::vector<std::string>& argv, request r) {
  if (!open() || argv.empty()) return false;
  std::vector<const char*> args;
  std::vector<std::size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  char* formatted = nullptr;
  const int n = redisFormatCommandArgv(&formatted, static_cast<int>(args.size()), args.data(),
                                       lengths.data());
  if (n < 0 || !formatted) return false;
  try {
    out_.append(formatted, static_cast<std::size_t>(n));
    redisFreeCommand(formatted);
  } catch (...) {
    redisFreeCommand(formatted);
    throw;
  }
  pending_.push_back(std::move(r));
  flush();
  return true;
}

// One write at a time, of everything queued meanwhile.
void redis_connection::flush() {
  if (state_ != state::up || !writing_.empty() || out_.empty()) return;
  writing_.swap(out_);
  with_stream([this](auto& s) {
    asio::async_write(s, asio::buffer(writing_),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t) {
                        if (self->state_ != state::up) return;
                        if (ec) return self->fail(closed_because(ec));
                        self->writing_.clear();
                        self->flush();
                      });
  });
}

void redis_connection::read() {
  with_stream([this](auto& s) {
    s.async_read_some(asio::buffer(in_),
                      [self = shared_from_this()](boost::system::error_code ec, std::size_t n) {
                        if (self->state_ != state::up) return;
                        if (ec) return self->fail(closed_because(ec));
                        self->received(n);
                        if (self->state_ == state::up) self->read();
                      });
  });
}

// The bound first: hiredis's reader gets only bytes of replies within it
// (the replies complete before a refused one are delivered, then it fails).
void redis_connection::received(std::size_t n) {
  const bool within = bound_->feed(in_.data(), n);
  if (redisReaderFeed(reader_.get(), in_.data(), bound_->accepted()) != REDIS_OK)
    return fail("protocol error: " + std::string(reader_->errstr));
  for (;;) {
    void* r = nullptr;
    if (redisReaderGetReply(reader_.get(), &r) != REDIS_OK)
      return fail("protocol error: " + std::string(reader_->errstr));
    if (!r) return within ? void() : fail(bound_->error());
    std::unique_ptr<redisReply, void (*)(void*)> reply(static_cast<redisReply*>(r),
                                                       &freeReplyObject);
    last_reply_ = steady::now();
    dispatch(reply.get());
    if (state_ != state::up) return;
  }
}

void redis_connection::dispatch(redisReply* reply) {
  std::string_view kind;
  if (subscription_ && push_kind(reply, kind)) {
    if (kind == "subscribe" && !pending_.empty() && pending_.front().subscribe)
      pending_.pop_front();
    auto h = subscription_;  // a copy: the handler may end the connection
    h(reply);
    return;
  }
  if (pending_.empty()) return fail("protocol error: a reply to no command");
  request r = std::move(pending_.front());
  pending_.pop_front();
  if (r.subscribe) {
    auto h = subscription_;  // SUBSCRIBE refused (an error reply)
    if (h) h(reply);
  } else if (r.handler) {
    r.handler(reply);
  }
}

// The heartbeat: a command unanswered for `timeout` ends the connection; an
// idle one is asked PING.
void redis_connection::beat() {
  const auto period =
      std::max<std::chrono::nanoseconds>(target_.timeout / 4, std::chrono::milliseconds(1));
  timer_.expires_at(saturating_add(steady::now(), period));
  timer_.async_wait([self = shared_from_this(), period](boost::system::error_code ec) {
    if (ec || self->state_ != state::up) return;
    const auto now = steady::now();
    if (!self->pending_.empty() && now - self->pending_.front().sent >= self->target_.timeout)
      return self->fail("timeout");
    if (self->pending_.empty() && now - self->last_reply_ >= period)
      self->queue({"PING"}, request{nullptr, now});
    self->beat();
  });
}

void redis_connection::fail(std::string why) {
  if (state_ == state::closed || state_ == state::idle) return;
  auto h = std::exchange(state_ == state::connecting ? on_connect_ : on_close_, nullptr);
  on_connect_ = nullptr;
  on_close_ = nullptr;
  state_ = state::closed;
  error_ = std::move(why);
  if (h) h(error_);
  end();
}

void redis_connection::close() noexcept {
  if (state_ == state::closed) return;
  state_ = state::closed;
  on_connect_ = nullptr;
  on_close_ = nullptr;
  end();
}

void redis_connection::end() noexcept {
  boost::system::error_code ignored;
  if (tls_) tls_->next_layer().close(ignored);
  if (tcp_) tcp_->close(ignored);
  if (unix_) unix_->close(ignored);
  timer_.cancel();
  out_.clear();
  auto pending = std::move(pending_);
  pending_.clear();
  auto subscription = std::move(subscription_);
  subscription_ = nullptr;
  for (request& r : pending)
    if (r.handler) r.handler(nullptr);
  if (subscription) subscription(nullptr);
}

}  // namespace levee::detail
