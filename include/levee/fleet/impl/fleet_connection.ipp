// levee: the fleet link's connections (fleet/impl/fleet_state.hpp): connecting,
// the watchdog, teardown and reconnection, shutdown. Compiled once in
// levee_fleet (lib/fleet.cpp).
#pragma once

#include <levee/core/detail/saturating.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/fleet/detail/fleet_scripts.hpp>
#include <levee/fleet/impl/fleet_state.hpp>

#include <boost/asio/error.hpp>
#include <boost/asio/post.hpp>

#include <unistd.h>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <sstream>

namespace levee::detail {

namespace asio = boost::asio;

std::string default_instance_id() {
  char host[256] = {};
  if (::gethostname(host, sizeof host - 1) != 0 || host[0] == 0) std::strcpy(host, "host");
  std::string h = host;
  for (char& c : h)
    if (std::isspace(static_cast<unsigned char>(c))) c = '_';
  std::random_device rd;
  std::ostringstream out;
  out << h << ':' << ::getpid() << ':' << std::hex << (std::uint64_t{rd()} << 32 | rd());
  return out.str();
}

fleet_state::fleet_state(asio::any_io_executor ex, fleet_options o)
    : options_(checked(std::move(o))),
      strand_(asio::make_strand(std::move(ex))),
      retry_timer_(strand_),
      connect_timer_(strand_),
      watchdog_(strand_),
      scan_timer_(strand_),
      resolver_(strand_),
      backoff_(options_.reconnect_min, options_.reconnect_max),
      rng_(std::random_device{}()) {
  redis_address::parse(options_.address, address_);
  if (options_.tls && !options_.tls_context) options_.tls_context = default_tls_context();
  if (options_.instance_id.empty()) options_.instance_id = default_instance_id();
  channel_ = options_.key_prefix + ":fleet";
  keep_ms_ = std::max<std::int64_t>(
      10 * std::chrono::ceil<std::chrono::milliseconds>(options_.probe_lease).count(), 1000);
}

fleet_state::~fleet_state() {
  // Frees hiredis's contexts (pending handlers run with null replies and
  // find no state to call back).
  if (cmd_) cmd_->close();
  if (sub_) sub_->close();
}

void fleet_state::start() {
  asio::post(strand_, [self = shared_from_this()] { self->connect(); });
}

// ---- Redis time ---------------------------------------------------------------

namespace {
std::int64_t steady_us() {
  return std::chrono::duration_cast<std::chrono::microseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}
}  // namespace

std::int64_t fleet_state::redis_now_us() const {
  return redis_time_.now(steady_us());
}

// When a command sent now is given up, in Redis time: Redis may still run it
// later (a stopped Redis runs what was queued when it continues), and then it
// must change nothing. Not `command_timeout` after its own sending: an older
// command still unanswered (a round, a PING on either connection) times out
// first and ends both connections, giving this one up with it: counted from
// there (`timed_from`), a publication queued behind a round can no longer run
// when a stopped Redis continues after the link gave up (docs/fleet.md,
// "Commands given up").
std::string fleet_state::deadline() const {
  const auto timeout =
      std::chrono::ceil<std::chrono::microseconds>(options_.command_timeout).count();
  const auto from =
      std::chrono::duration_cast<std::chrono::microseconds>(timed_from().time_since_epoch())
          .count();
  return std::to_string(redis_time_.deadline(from, timeout));
}

auto fleet_state::timed_from() const -> steady::time_point {
  steady::time_point from = steady::now();
  for (const auto* c : {cmd_.get(), sub_.get()})
    if (const auto oldest = c ? c->oldest_pending() : std::nullopt) from = std::min(from, *oldest);
  if (!sent_.empty()) from = std::min(from, sent_.front());
  return from;
}

void fleet_state::learn_redis_time(std::int64_t redis_now) {
  redis_time_.learn(redis_now, steady_us());
}

// ---- connecting ---------------------------------------------------------------

void fleet_state::connect() {
  if (stopped()) return;
  const std::uint64_t epoch = ++epoch_;
  phase_ = phase::connecting;
  connect_timer_.expires_at(saturating_add(steady::now(), options_.connect_timeout));
  connect_timer_.async_wait([weak = weak_from_this(), epoch](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->epoch_ != epoch || self->phase_ == phase::ready) return;
    self->teardown("connect timeout");
  });
  if (!address_.path.empty()) return open(epoch, {});
  boost::system::error_code ec;
  const auto ip = asio::ip::make_address(address_.host, ec);
  if (!ec) return open(epoch, {{ip, static_cast<unsigned short>(address_.port)}});
  resolver_.async_resolve(
      address_.host, std::to_string(address_.port),
      [weak = weak_from_this(), epoch](boost::system::error_code error,
                                       asio::ip::tcp::resolver::results_type r) {
        auto self = weak.lock();
        if (!self || self->epoch_ != epoch) return;
        if (error || r.empty()) return self->teardown("cannot resolve the host");
        // Every address, in the resolver's order (localhost: ::1, then 127.0.0.1).
        std::vector<asio::ip::tcp::endpoint> all;
        for (const auto& e : r) all.push_back(e.endpoint());
        self->open(epoch, std::move(all));
      });
}

// Both connections, then AUTH (with a password), TIME, both SCRIPT LOADs and
// SUBSCRIBE: ready() when every reply came.
void fleet_state::open(std::uint64_t epoch, std::vector<asio::ip::tcp::endpoint> endpoints) {
  cmd_ = std::make_shared<redis_connection>(strand_);
  sub_ = std::make_shared<redis_connection>(strand_);
  std::weak_ptr<fleet_state> weak = weak_from_this();
  // Why a connection failed or ended ("connect failed: ...", "TLS handshake
  // failed: ...", "reply too large: ...", "timeout", "connection closed").
  auto on_connect = [weak, epoch](const std::string& error) {
    auto self = weak.lock();
    if (self && !error.empty() && self->epoch_ == epoch) self->teardown(error);
  };
  auto on_close = on_connect;
  const redis_target target{.endpoints = std::move(endpoints),
                            .path = address_.path,
                            .tls = options_.tls_context,
                            .host = address_.host,
                            .max_reply_size = options_.max_reply_size,
                            .timeout = options_.command_timeout};
  if (!cmd_->start(target, on_connect, on_close) || !sub_->start(target, on_connect, on_close))
    return later_teardown("connect failed");
  needed_ = 4;  // Redis time, the two scripts, the subscription
  auto step = [weak, epoch](const char* what) {
    return [weak, epoch, what](redisReply* r) {
      auto self = weak.lock();
      if (!self || self->epoch_ != epoch) return;
      if (!r) return self->teardown(what);
      if (r->type == REDIS_REPLY_ERROR) return self->teardown(std::string(r->str, r->len));
      if (--self->needed_ == 0) self->ready();
    };
  };
  if (!options_.password.empty()) {
    needed_ += 2;
    std::vector<std::string> auth = {"AUTH", options_.password};
    if (!options_.username.empty()) auth.insert(auth.begin() + 1, options_.username);
    send(auth, step("AUTH failed"));
    if (!sub_->command(auth, step("AUTH failed"))) later_teardown("connection closed");
  } else {
    // Before SUBSCRIBE: a Redis that wants a password answers NOAUTH to a
    // plain command, where a subscribed connection would be ended on it
    // (reported as "connection closed" instead of Redis's text).
    needed_ += 1;
    if (!sub_->command({"PING"}, step("PING failed"))) later_teardown("connection closed");
  }
  // Redis time before anything is sent that has a deadline.
  send({"TIME"}, [weak, epoch](redisReply* r) {
    auto self = weak.lock();
    if (!self || self->epoch_ != epoch) return;
    if (r->type == REDIS_REPLY_ERROR) return self->teardown(std::string(r->str, r->len));
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
      return self->teardown("unexpected reply");
    const long long sec = std::atoll(r->element[0]->str), usec = std::atoll(r->element[1]->str);
    self->learn_redis_time(sec * 1000000 + usec);
    if (--self->needed_ == 0) self->ready();
  });
  const auto load = [&](const char* script, std::string fleet_state::*sha) {
    send({"SCRIPT", "LOAD", script}, [weak, epoch, sha](redisReply* r) {
      auto self = weak.lock();
      if (!self || self->epoch_ != epoch) return;
      if (r->type == REDIS_REPLY_ERROR) return self->teardown(std::string(r->str, r->len));
      if (r->type != REDIS_REPLY_STRING) return self->teardown("SCRIPT LOAD failed");
      (self.get()->*sha).assign(r->str, r->len);
      if (--self->needed_ == 0) self->ready();
    });
  };
  load(round_script, &fleet_state::round_sha_);
  load(publish_script, &fleet_state::publish_sha_);
  const bool subscribing = sub_->subscribe(channel_, [weak, epoch,
                                                      subscribed = false](redisReply* r) mutable {
    auto self = weak.lock();
    if (!self || self->epoch_ != epoch) return;
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3) {
      if (!r) return;  // the end: on_close tells
      if (r->type == REDIS_REPLY_ERROR) return self->teardown(std::string(r->str, r->len));
      return self->teardown("unexpected pub/sub reply");
    }
    const std::string_view kind(r->element[0]->str ? r->element[0]->str : "", r->element[0]->len);
    if (kind == "subscribe" && !subscribed) {
      subscribed = true;
      if (--self->needed_ == 0) self->ready();
    } else if (kind == "message" && r->element[2]->type == REDIS_REPLY_STRING) {
      self->on_message(std::string_view(r->element[2]->str, r->element[2]->len));
    }
  });
  if (!subscribing) later_teardown("connection closed");
}

void fleet_state::send(std::vector<std::string> argv, std::function<void(redisReply*)> h) {
  const std::uint64_t epoch = epoch_;
  std::weak_ptr<fleet_state> weak = weak_from_this();
  const bool ok = cmd_ && cmd_->command(argv, [weak, epoch, h = std::move(h)](redisReply* r) {
    auto self = weak.lock();
    if (!self || self->epoch_ != epoch) return;
    if (!self->sent_.empty()) self->sent_.pop_front();
    if (!r) return self->teardown("connection closed");
    h(r);
  });
  if (ok) {
    sent_.push_back(timed_from());  // the link's watchdog gives it up at its deadline
  } else {
    later_teardown("connection closed");
  }
}

void fleet_state::later_teardown(const char* why) {
  asio::post(strand_, [weak = weak_from_this(), epoch = epoch_, why] {
    auto self = weak.lock();
    if (self && self->epoch_ == epoch) self->teardown(why);
  });
}

void fleet_state::ready() {
  phase_ = phase::ready;
  ready_at_ = steady::now();
  connect_timer_.cancel();
  // Not backoff_.reset(): a connection that fails at once is a failed
  // attempt too (teardown tells the backoff how long it lasted).
  update([](fleet_metrics& m) {
    m.connected = true;
    ++m.connects;
  });
  for (auto& m : all_members())
    if (!m->erroring) gate(*m);
  watch(epoch_);
  emit(fleet_event_kind::connected);
  ended(std::exchange(waiters_, {}), {});
}

void fleet_state::watch(std::uint64_t epoch) {
  const nanos period = std::max<nanos>(options_.command_timeout / 4, std::chrono::milliseconds(1));
  watchdog_.expires_at(saturating_add(steady::now(), period));
  watchdog_.async_wait([weak = weak_from_this(), epoch](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->epoch_ != epoch) return;
    if (!self->sent_.empty() &&
        steady::now() - self->sent_.front() >= self->options_.command_timeout)
      return self->teardown("timeout");
    self->watch(epoch);
  });
}

// ---- down, and back -----------------------------------------------------------

void fleet_state::teardown(const std::string& why) {
  if (phase_ == phase::waiting || phase_ == phase::stopped) return;
  const bool was_ready = phase_ == phase::ready;
  ++epoch_;
  phase_ = phase::waiting;
  redis_time_.forget();
  sent_.clear();
  connect_timer_.cancel();
  watchdog_.cancel();
  resolver_.cancel();
  // Closed now (their pending handlers run with null and find a newer
  // epoch), destroyed later: this may run inside one of their callbacks.
  if (cmd_) cmd_->close();
  if (sub_) sub_->close();
  asio::post(strand_, [c = std::move(cmd_), s = std::move(sub_)] {});
  for (auto& m : all_members()) {
    m->decide.disconnected();
    m->erroring = false;
    m->poll.cancel();
    m->polling = false;
    if (auto b = m->breaker.lock()) b.gate(false);
  }
  if (was_ready) backoff_.connection_lasted(steady::now() - ready_at_);
  update([&](fleet_metrics& m) {
    m.connected = false;
    ++m.errors;
    m.last_error = why;
    if (was_ready) {
      ++m.disconnects;
    } else {
      ++m.connect_failures;
    }
  });
  if (was_ready) emit(fleet_event_kind::disconnected, why);
  if (!was_ready && !stopped()) emit(fleet_event_kind::connect_failed, why);
  if (stopped()) return;
  retry_timer_.expires_at(saturating_add(steady::now(), backoff_.next(rng_)));
  retry_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
    auto self = weak.lock();
    if (ec || !self || self->phase_ != phase::waiting) return;
    self->update([](fleet_metrics& m) { ++m.reconnects; });
    self->connect();
  });
}

void fleet_state::shutdown() {
  ++epoch_;
  phase_ = phase::stopped;
  retry_timer_.cancel();
  connect_timer_.cancel();
  watchdog_.cancel();
  scan_timer_.cancel();
  resolver_.cancel();
  if (cmd_) cmd_->close();
  if (sub_) sub_->close();
  std::map<std::string, std::shared_ptr<member>> gone;
  {
    std::lock_guard g(mutex_);
    gone.swap(members_);
    metrics_.breakers = 0;
  }
  for (auto& [name, m] : gone) {  // outside the lock, as they go
    m->timer.cancel();
    m->poll.cancel();
  }
  ended(std::exchange(waiters_, {}), asio::error::operation_aborted);
}

}  // namespace levee::detail
