// levee: the hiredis adapter on Asio, compiled once in levee_fleet.
#pragma once

#include <levee/detail/redis_connection.hpp>

#include <boost/asio/post.hpp>

#include <charconv>
#include <utility>

namespace levee::detail {

namespace asio = boost::asio;

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

struct redis_connection::request {
  redis_connection* connection;
  reply_handler handler;
};

redis_connection::redis_connection(asio::any_io_executor strand) : strand_(std::move(strand)) {}

redis_connection::~redis_connection() {
  on_close_ = nullptr;  // nothing is posted from here
  close();
}

bool redis_connection::start(const std::string& ip, int port, const std::string& path,
                             std::function<void(bool)> on_connect, std::function<void()> on_close) {
  if (ac_) return false;
  redisAsyncContext* ac =
      path.empty() ? redisAsyncConnect(ip.c_str(), port) : redisAsyncConnectUnix(path.c_str());
  if (!ac) return false;
  if (ac->err) {
    redisAsyncFree(ac);  // nothing is pending, no hook is set
    return false;
  }
  try {
    fd_ = std::make_unique<asio::posix::stream_descriptor>(strand_, ac->c.fd);
  } catch (...) {
    redisAsyncFree(ac);
    return false;
  }
  ac_ = ac;
  ac->data = this;
  ac->ev.data = this;
  ac->ev.addRead = &add_read;
  ac->ev.delRead = &del_read;
  ac->ev.addWrite = &add_write;
  ac->ev.delWrite = &del_write;
  ac->ev.cleanup = &cleanup;
  on_connect_ = std::move(on_connect);
  on_close_ = std::move(on_close);
  // With the hooks set: hiredis waits for the socket to be writable, which
  // tells that the connection is established (or failed).
  redisAsyncSetConnectCallback(ac, &on_connected);
  return true;
}

bool redis_connection::command(const std::vector<std::string>& argv, reply_handler h) {
  if (!ac_ || argv.empty()) return false;
  std::vector<const char*> args;
  std::vector<std::size_t> lengths;
  args.reserve(argv.size());
  lengths.reserve(argv.size());
  for (const std::string& a : argv) {
    args.push_back(a.data());
    lengths.push_back(a.size());
  }
  auto* r = new request{this, std::move(h)};
  if (redisAsyncCommandArgv(ac_, &on_reply, r, static_cast<int>(args.size()), args.data(),
                            lengths.data()) != REDIS_OK) {
    delete r;
    return false;
  }
  ++pending_;
  return true;
}

bool redis_connection::subscribe(const std::string& channel, reply_handler h) {
  if (!ac_ || subscription_) return false;
  subscription_ = std::move(h);
  const char* args[] = {"SUBSCRIBE", channel.c_str()};
  const std::size_t lengths[] = {9, channel.size()};
  if (redisAsyncCommandArgv(ac_, &on_sub_reply, this, 2, args, lengths) != REDIS_OK) {
    subscription_ = nullptr;
    return false;
  }
  return true;
}

void redis_connection::close() noexcept {
  if (redisAsyncContext* ac = std::exchange(ac_, nullptr)) {
    // Pending handlers run now with null; from inside a hiredis callback the
    // free is deferred by hiredis until the callback returns.
    redisAsyncFree(ac);
  }
}

void redis_connection::on_reply(redisAsyncContext*, void* reply, void* privdata) {
  std::unique_ptr<request> r(static_cast<request*>(privdata));
  --r->connection->pending_;
  if (r->handler) r->handler(static_cast<redisReply*>(reply));
}

void redis_connection::on_sub_reply(redisAsyncContext*, void* reply, void* privdata) {
  auto* self = static_cast<redis_connection*>(privdata);
  if (!self->subscription_) return;
  if (!reply) {
    auto h = std::move(self->subscription_);
    self->subscription_ = nullptr;
    h(nullptr);
    return;
  }
  self->subscription_(static_cast<redisReply*>(reply));
}

void redis_connection::on_connected(const redisAsyncContext* ac, int status) {
  auto* self = static_cast<redis_connection*>(ac->data);
  if (!self->on_connect_) return;
  // Posted: hiredis frees a context that failed to connect right after this
  // callback, and must not be freed from inside it.
  asio::post(self->strand_, [h = std::move(self->on_connect_), ok = status == REDIS_OK] { h(ok); });
  self->on_connect_ = nullptr;
}

void redis_connection::add_read(void* p) {
  auto* self = static_cast<redis_connection*>(p);
  self->want_read_ = true;
  self->wait_read();
}
void redis_connection::del_read(void* p) {
  static_cast<redis_connection*>(p)->want_read_ = false;
}
void redis_connection::add_write(void* p) {
  auto* self = static_cast<redis_connection*>(p);
  self->want_write_ = true;
  self->wait_write();
}
void redis_connection::del_write(void* p) {
  static_cast<redis_connection*>(p)->want_write_ = false;
}
void redis_connection::cleanup(void* p) {
  static_cast<redis_connection*>(p)->released();
}

void redis_connection::wait_read() {
  if (reading_ || !fd_) return;
  reading_ = true;
  fd_->async_wait(asio::posix::stream_descriptor::wait_read,
                  [self = shared_from_this()](boost::system::error_code ec) {
                    self->reading_ = false;
                    if (ec || !self->ac_ || !self->want_read_) return;
                    redisAsyncHandleRead(self->ac_);  // may free the context (cleanup)
                    if (self->ac_ && self->want_read_) self->wait_read();
                  });
}

void redis_connection::wait_write() {
  if (writing_ || !fd_) return;
  writing_ = true;
  fd_->async_wait(asio::posix::stream_descriptor::wait_write,
                  [self = shared_from_this()](boost::system::error_code ec) {
                    self->writing_ = false;
                    if (ec || !self->ac_ || !self->want_write_) return;
                    redisAsyncHandleWrite(self->ac_);  // may free the context (cleanup)
                    if (self->ac_ && self->want_write_) self->wait_write();
                  });
}

void redis_connection::released() noexcept {
  ac_ = nullptr;
  want_read_ = want_write_ = false;
  if (fd_) {
    // hiredis closes the socket: the descriptor gives it back without closing
    // it (its waits complete with operation_aborted).
    boost::system::error_code ignored;
    fd_->cancel(ignored);
    fd_->release();
    fd_.reset();
  }
  if (auto h = std::exchange(on_close_, nullptr)) {
    try {
      asio::post(strand_, std::move(h));
    } catch (...) {
    }
  }
}

}  // namespace levee::detail
