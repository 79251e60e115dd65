// levee: the fleet link, compiled once in levee_fleet (lib/fleet.cpp).
#pragma once

#include <levee/detail/fleet_decisions.hpp>
#include <levee/detail/fleet_scripts.hpp>
#include <levee/detail/redis_connection.hpp>
#include <levee/detail/saturating.hpp>
#include <levee/fleet.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <unistd.h>
#include <algorithm>
#include <cctype>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <limits>
#include <map>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <vector>

#include <levee/impl/fleet_decisions.ipp>

namespace levee {

const char* to_string(fleet_event_kind k) noexcept {
  switch (k) {
    case fleet_event_kind::connected:
      return "connected";
    case fleet_event_kind::disconnected:
      return "disconnected";
  }
  return "unknown";
}

namespace {
bool has_space(const std::string& s) {
  return std::any_of(s.begin(), s.end(),
                     [](unsigned char c) { return std::isspace(c) || std::iscntrl(c); });
}
}  // namespace

void validate(const fleet_options& o) {
  using std::chrono::nanoseconds;
  detail::redis_address a;
  if (!detail::redis_address::parse(o.address, a))
    detail::reject_option("fleet_options", "address", "must be host:port or a socket path");
  if (o.key_prefix.empty() || has_space(o.key_prefix) ||
      o.key_prefix.find_first_of("{}") != std::string::npos)
    detail::reject_option("fleet_options", "key_prefix",
                          "must not be empty nor hold whitespace or braces");
  if (has_space(o.instance_id) || o.instance_id.size() > 200)
    detail::reject_option("fleet_options", "instance_id",
                          "must hold no whitespace and at most 200 characters");
  if (o.quorum < 1) detail::reject_option("fleet_options", "quorum", "must be at least 1");
  if (o.connect_timeout <= nanoseconds::zero())
    detail::reject_option("fleet_options", "connect_timeout", "must be positive");
  if (o.command_timeout <= nanoseconds::zero())
    detail::reject_option("fleet_options", "command_timeout", "must be positive");
  if (o.reconnect_min <= nanoseconds::zero())
    detail::reject_option("fleet_options", "reconnect_min", "must be positive");
  if (o.reconnect_max < o.reconnect_min)
    detail::reject_option("fleet_options", "reconnect_max", "must be at least reconnect_min");
  if (o.probe_lease < std::chrono::milliseconds(1))
    detail::reject_option("fleet_options", "probe_lease", "must be at least 1 ms");
  if (o.registry_scan <= nanoseconds::zero())
    detail::reject_option("fleet_options", "registry_scan", "must be positive");
}

void write_prometheus(std::ostream& out, const fleet_metrics& m) {
  const auto gauge = [&](const char* name, const char* help, std::uint64_t v) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " gauge\n"
        << name << ' ' << v << '\n';
  };
  const auto counter = [&](const char* name, const char* help, std::uint64_t v) {
    out << "# HELP " << name << ' ' << help << "\n# TYPE " << name << " counter\n"
        << name << ' ' << v << '\n';
  };
  gauge("levee_fleet_connected", "1 while the fleet link is connected to Redis, else 0.",
        m.connected ? 1 : 0);
  gauge("levee_fleet_breakers", "Breakers attached to the fleet link.", m.breakers);
  counter("levee_fleet_connects_total", "Connections to Redis established.", m.connects);
  counter("levee_fleet_reconnects_total", "Connection attempts after the first.", m.reconnects);
  counter("levee_fleet_disconnects_total", "Established connections lost.", m.disconnects);
  counter("levee_fleet_rounds_total", "Evidence round trips answered.", m.rounds);
  counter("levee_fleet_errors_total", "Failed connects, timeouts and error replies.", m.errors);
  counter("levee_fleet_opens_published_total", "Openings this instance published.",
          m.opens_published);
  counter("levee_fleet_opens_received_total", "Breakers opened by the fleet.", m.opens_received);
  counter("levee_fleet_closes_published_total", "Closings this instance published.",
          m.closes_published);
  counter("levee_fleet_closes_received_total", "Breakers closed by the fleet's prober.",
          m.closes_received);
  counter("levee_fleet_probe_leases_won_total", "Probe leases this instance won.",
          m.probe_leases_won);
  counter("levee_fleet_probe_leases_lost_total", "Probe leases another instance held.",
          m.probe_leases_lost);
}

namespace detail {

namespace asio = boost::asio;
using fleet_breaker =
    std::remove_cvref_t<decltype(*std::declval<circuit_breaker&>().shared_state())>;
using steady = std::chrono::steady_clock;

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

class fleet_state : public std::enable_shared_from_this<fleet_state> {
 public:
  fleet_state(asio::any_io_executor ex, fleet_options o)
      : options_(checked(std::move(o))),
        strand_(asio::make_strand(std::move(ex))),
        retry_timer_(strand_),
        connect_timer_(strand_),
        watchdog_(strand_),
        scan_timer_(strand_),
        resolver_(strand_),
        backoff_(options_.reconnect_min),
        rng_(std::random_device{}()) {
    redis_address::parse(options_.address, address_);
    if (options_.instance_id.empty()) options_.instance_id = default_instance_id();
    channel_ = options_.key_prefix + ":fleet";
    keep_ms_ = std::max<std::int64_t>(
        10 * std::chrono::ceil<std::chrono::milliseconds>(options_.probe_lease).count(), 1000);
  }

  ~fleet_state() {
    // Frees hiredis's contexts (pending handlers run with null replies and
    // find no state to call back).
    if (cmd_) cmd_->close();
    if (sub_) sub_->close();
  }

  const fleet_options& options() const noexcept { return options_; }

  void start() {
    asio::post(strand_, [self = shared_from_this()] { self->connect(); });
  }

  void attach(const std::shared_ptr<fleet_breaker>& b, std::string name) {
    if (b->options().window_type != window_kind::time)
      throw std::invalid_argument("fleet_link::attach: only a time-window breaker can share");
    if (name.empty() || name.find_first_of("{}") != std::string::npos ||
        name.find('\n') != std::string::npos)
      throw std::invalid_argument(
          "fleet_link::attach: the name must not be empty nor hold braces or newlines");
    auto m = std::make_shared<member>(strand_);
    m->name = name;
    m->base = options_.key_prefix + ":{" + name + "}";
    m->breaker = b;
    const breaker_options& bo = b->options();
    m->buckets = static_cast<std::uint32_t>(bo.window_buckets);
    m->width = bo.window / static_cast<std::int64_t>(bo.window_buckets);
    m->width_us = std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::microseconds>(m->width).count());
    m->width = std::max<nanos>(m->width, std::chrono::milliseconds(1));  // rounds: <= 1000/s
    m->failure = decimal_ratio::from_double(bo.failure_rate_threshold);
    m->slow = decimal_ratio::from_double(bo.slow_call_rate_threshold);
    m->slow_on = bo.slow_call_duration > nanos::zero();
    m->minimum =
        options_.fleet_minimum_calls != 0 ? options_.fleet_minimum_calls : bo.minimum_calls;
    m->last = b->core().counters();
    std::weak_ptr<fleet_state> weak = weak_from_this();
    std::weak_ptr<member> wm = m;
    m->listen_id = b->telemetry().listen(
        static_cast<event_mask>(event_kind::transition),
        [weak, wm](const breaker_event& e) {
          auto self = weak.lock();
          auto mm = wm.lock();
          if (self && mm) self->on_transition(*mm, e);
        },
        strand_);
    std::shared_ptr<member> old;
    {
      std::lock_guard g(mutex_);
      if (stopped_) {
        b->telemetry().unlisten(m->listen_id);
        return;
      }
      auto& slot = members_[name];
      old = std::move(slot);
      slot = m;
      metrics_.breakers = members_.size();
    }
    if (old) forget(*old);
    asio::post(strand_, [self = shared_from_this(), m] { self->start_member(m); });
  }

  void attach_registry(breaker_registry& r) {
    asio::post(strand_, [self = shared_from_this(), r = &r] {
      self->registries_.push_back(r);
      if (self->registries_.size() == 1) self->scan();
    });
  }

  void listen(std::function<void(const fleet_event&)> fn) {
    std::lock_guard g(mutex_);
    listeners_.push_back(std::move(fn));
  }

  fleet_metrics metrics() const {
    std::lock_guard g(mutex_);
    return metrics_;
  }

  /// ~fleet_link: the breakers are local again at once; the rest on the strand.
  void stop() {
    std::map<std::string, std::shared_ptr<member>> all;
    {
      std::lock_guard g(mutex_);
      stopped_ = true;
      all = members_;
      listeners_.clear();
      metrics_.connected = false;
    }
    for (auto& [name, m] : all) forget(*m);
    asio::post(strand_, [self = shared_from_this()] { self->shutdown(); });
  }

 private:
  struct member {
    explicit member(const asio::strand<asio::any_io_executor>& s) : timer(s) {}
    std::string name, base;
    std::weak_ptr<fleet_breaker> breaker;
    std::uint64_t listen_id = 0;
    asio::steady_timer timer;
    nanos width{};
    std::int64_t width_us = 1;
    std::uint32_t buckets = 1;
    decimal_ratio failure, slow;
    bool slow_on = false;
    std::uint64_t minimum = 1;
    // Strand only, from here.
    breaker_counters last{};
    bool in_flight = false;
    std::uint64_t want_generation = 0;  // the OPEN generation a probe race is for
    std::uint64_t seen = 0;             // the newest record generation seen
    bool fleet_open = false;            // the breaker's opening is the fleet's
    std::int64_t half_open_us = 0;
    bool probing = false;  // this instance won the lease of generation `probing_gen`
    std::uint64_t probing_gen = 0;
  };

  void forget(member& m) {
    if (auto b = m.breaker.lock()) {
      b->telemetry().unlisten(m.listen_id);
      b->fleet_gate(false);
    }
  }

  std::vector<std::shared_ptr<member>> all_members() {
    std::lock_guard g(mutex_);
    std::vector<std::shared_ptr<member>> v;
    for (auto& [name, m] : members_) v.push_back(m);
    return v;
  }

  std::shared_ptr<member> find(const std::string& name) {
    std::lock_guard g(mutex_);
    auto it = members_.find(name);
    return it == members_.end() ? nullptr : it->second;
  }

  bool stopped() {
    std::lock_guard g(mutex_);
    return stopped_;
  }

  template <class F>
  void update(F f) {
    std::lock_guard g(mutex_);
    f(metrics_);
  }

  void emit(fleet_event_kind kind, std::string reason = {}) {
    std::vector<std::function<void(const fleet_event&)>> ls;
    {
      std::lock_guard g(mutex_);
      ls = listeners_;
    }
    const fleet_event e{kind, std::move(reason)};
    for (auto& l : ls) {
      try {
        l(e);
      } catch (...) {
      }
    }
  }

  // When a command sent now is given up (`command_timeout`), in Redis time:
  // Redis may still run it later (a stopped Redis runs what was queued when
  // it continues), and then it must change nothing. "0" (no deadline) before
  // a round told Redis time.
  std::string deadline() const {
    if (!have_offset_) return "0";
    const auto timeout =
        std::chrono::ceil<std::chrono::microseconds>(options_.command_timeout).count();
    const std::int64_t now = redis_now_us();
    constexpr auto max = std::numeric_limits<std::int64_t>::max();
    return std::to_string(timeout > max - now ? max : now + timeout);
  }

  void set_offset(std::int64_t redis_now) {
    have_offset_ = true;
    offset_us_ = redis_now - std::chrono::duration_cast<std::chrono::microseconds>(
                                 steady::now().time_since_epoch())
                                 .count();
  }

  std::int64_t redis_now_us() const {
    return std::chrono::duration_cast<std::chrono::microseconds>(steady::now().time_since_epoch())
               .count() +
           offset_us_;
  }

  // ---- connection ---------------------------------------------------------

  void connect() {
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
    if (!ec) return open(epoch, ip.to_string());
    resolver_.async_resolve(
        address_.host, std::to_string(address_.port),
        [weak = weak_from_this(), epoch](boost::system::error_code error,
                                         asio::ip::tcp::resolver::results_type r) {
          auto self = weak.lock();
          if (!self || self->epoch_ != epoch) return;
          if (error || r.empty()) return self->teardown("cannot resolve the host");
          self->open(epoch, r.begin()->endpoint().address().to_string());
        });
  }

  void open(std::uint64_t epoch, const std::string& ip) {
    cmd_ = std::make_shared<redis_connection>(strand_);
    sub_ = std::make_shared<redis_connection>(strand_);
    std::weak_ptr<fleet_state> weak = weak_from_this();
    auto on_connect = [weak, epoch](bool ok) {
      auto self = weak.lock();
      if (self && !ok && self->epoch_ == epoch) self->teardown("connect failed");
    };
    auto on_close = [weak, epoch] {
      auto self = weak.lock();
      if (self && self->epoch_ == epoch) self->teardown("connection closed");
    };
    if (!cmd_->start(ip, address_.port, address_.path, on_connect, on_close) ||
        !sub_->start(ip, address_.port, address_.path, on_connect, on_close))
      return later_teardown("connect failed");
    needed_ = 4;  // Redis time, the two scripts, the subscription
    auto step = [weak, epoch](const char* what) {
      return [weak, epoch, what](redisReply* r) {
        auto self = weak.lock();
        if (!self || self->epoch_ != epoch) return;
        if (!r || r->type == REDIS_REPLY_ERROR) return self->teardown(what);
        if (--self->needed_ == 0) self->ready();
      };
    };
    if (!options_.password.empty()) {
      needed_ += 2;
      send({"AUTH", options_.password}, step("AUTH failed"));
      if (!sub_->command({"AUTH", options_.password}, step("AUTH failed")))
        later_teardown("connection closed");
    }
    // Redis time before anything is sent that has a deadline.
    send({"TIME"}, [weak, epoch](redisReply* r) {
      auto self = weak.lock();
      if (!self || self->epoch_ != epoch) return;
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
          r->element[0]->type != REDIS_REPLY_STRING || r->element[1]->type != REDIS_REPLY_STRING)
        return self->teardown("unexpected reply");
      const long long sec = std::atoll(r->element[0]->str), usec = std::atoll(r->element[1]->str);
      self->set_offset(sec * 1000000 + usec);
      if (--self->needed_ == 0) self->ready();
    });
    send({"SCRIPT", "LOAD", round_script}, [weak, epoch](redisReply* r) {
      auto self = weak.lock();
      if (!self || self->epoch_ != epoch) return;
      if (!r || r->type != REDIS_REPLY_STRING) return self->teardown("SCRIPT LOAD failed");
      self->round_sha_.assign(r->str, r->len);
      if (--self->needed_ == 0) self->ready();
    });
    send({"SCRIPT", "LOAD", publish_script}, [weak, epoch](redisReply* r) {
      auto self = weak.lock();
      if (!self || self->epoch_ != epoch) return;
      if (!r || r->type != REDIS_REPLY_STRING) return self->teardown("SCRIPT LOAD failed");
      self->publish_sha_.assign(r->str, r->len);
      if (--self->needed_ == 0) self->ready();
    });
    const bool subscribing = sub_->subscribe(channel_, [weak, epoch,
                                                        subscribed = false](redisReply* r) mutable {
      auto self = weak.lock();
      if (!self || self->epoch_ != epoch) return;
      if (!r || r->type != REDIS_REPLY_ARRAY || r->elements < 3) {
        if (!r) return;  // the end: on_close tells
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

  // Sends on the command connection; `h` gets the reply (never null: a
  // connection that ends tears the link down instead).
  void send(std::vector<std::string> argv, std::function<void(redisReply*)> h) {
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
      sent_.push_back(steady::now());
    } else {
      later_teardown("connection closed");
    }
  }

  // Not from inside a caller that goes on using the connections.
  void later_teardown(const char* why) {
    asio::post(strand_, [weak = weak_from_this(), epoch = epoch_, why] {
      auto self = weak.lock();
      if (self && self->epoch_ == epoch) self->teardown(why);
    });
  }

  void ready() {
    phase_ = phase::ready;
    connect_timer_.cancel();
    backoff_ = options_.reconnect_min;
    update([](fleet_metrics& m) {
      m.connected = true;
      ++m.connects;
    });
    for (auto& m : all_members()) gate(*m);
    watch(epoch_);
    emit(fleet_event_kind::connected);
  }

  // A command unanswered for `command_timeout` ends the connection.
  void watch(std::uint64_t epoch) {
    const nanos period =
        std::max<nanos>(options_.command_timeout / 4, std::chrono::milliseconds(1));
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

  // Back to local: every breaker decides alone; reconnect after a backoff.
  void teardown(const std::string& why) {
    if (phase_ == phase::waiting || phase_ == phase::stopped) return;
    const bool was_ready = phase_ == phase::ready;
    ++epoch_;
    phase_ = phase::waiting;
    have_offset_ = false;
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
      m->in_flight = false;
      m->fleet_open = false;
      m->probing = false;
      if (auto b = m->breaker.lock()) b->fleet_gate(false);
    }
    update([&](fleet_metrics& m) {
      m.connected = false;
      ++m.errors;
      if (was_ready) ++m.disconnects;
    });
    if (was_ready) emit(fleet_event_kind::disconnected, why);
    if (stopped()) return;
    // Full jitter over the upper half: [d/2, d].
    std::uniform_int_distribution<std::int64_t> pick(backoff_.count() / 2, backoff_.count());
    const nanos delay(pick(rng_));
    backoff_ = std::min(saturating_add(backoff_, backoff_), options_.reconnect_max);
    retry_timer_.expires_at(saturating_add(steady::now(), delay));
    retry_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      auto self = weak.lock();
      if (ec || !self || self->phase_ != phase::waiting) return;
      self->update([](fleet_metrics& m) { ++m.reconnects; });
      self->connect();
    });
  }

  void shutdown() {
    ++epoch_;
    phase_ = phase::stopped;
    retry_timer_.cancel();
    connect_timer_.cancel();
    watchdog_.cancel();
    scan_timer_.cancel();
    resolver_.cancel();
    if (cmd_) cmd_->close();
    if (sub_) sub_->close();
    for (auto& m : all_members()) m->timer.cancel();
    std::lock_guard g(mutex_);
    members_.clear();
    metrics_.breakers = 0;
  }

  // ---- breakers -----------------------------------------------------------

  void start_member(const std::shared_ptr<member>& m) {
    if (phase_ == phase::ready) gate(*m);
    tick(m);
  }

  // The link decides OPEN -> HALF_OPEN from now on. Under the lock, against
  // `stop`: a breaker is never left gated by a link that is gone.
  void gate(member& m) {
    std::lock_guard g(mutex_);
    if (stopped_) return;
    if (auto b = m.breaker.lock()) b->fleet_gate(true);
  }

  void tick(const std::shared_ptr<member>& m) {
    auto b = m->breaker.lock();
    if (!b || find(m->name) != m) {
      std::lock_guard g(mutex_);
      if (auto it = members_.find(m->name); it != members_.end() && it->second == m) {
        members_.erase(it);
        metrics_.breakers = members_.size();
      }
      return;
    }
    m->timer.expires_at(saturating_add(steady::now(), m->width));
    m->timer.async_wait([weak = weak_from_this(), m](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!ec && self) self->tick(m);
    });
    const breaker_counters c = b->core().counters();
    if (phase_ != phase::ready) {
      m->last = c;  // no evidence is shared while down
      return;
    }
    if (m->in_flight) return;  // the counts wait for the next round
    const std::uint64_t calls = (c.successes + c.failures) - (m->last.successes + m->last.failures);
    const std::uint64_t failures = c.failures - m->last.failures;
    const std::uint64_t slow = c.slow - m->last.slow;
    m->last = c;
    const bool want = b->fleet_open_expired();
    m->want_generation = want ? b->core().generation() : 0;
    // A probe still running keeps its lease: no second prober meanwhile. A
    // winner that has not probed yet lets it expire.
    const bool renew = m->probing && b->core().state() == circuit_state::half_open &&
                       b->core().probes_in_flight() > 0;
    std::vector<std::string> argv = {
        "EVALSHA",
        round_sha_,
        "1",
        m->base,
        options_.instance_id,
        std::to_string(calls),
        std::to_string(failures),
        std::to_string(slow),
        std::to_string(m->width_us),
        std::to_string(m->buckets),
        want ? "1" : "0",
        std::to_string(std::chrono::ceil<std::chrono::milliseconds>(options_.probe_lease).count()),
        renew ? std::to_string(m->probing_gen) : "0",
        deadline()};
    m->in_flight = true;
    round(m, std::move(argv));
  }

  void round(const std::shared_ptr<member>& m, std::vector<std::string> argv) {
    send(argv, [weak = weak_from_this(), m, argv](redisReply* r) mutable {
      auto self = weak.lock();
      if (!self) return;
      if (r->type == REDIS_REPLY_ERROR && argv[0] == "EVALSHA" &&
          std::string_view(r->str, r->len).starts_with("NOSCRIPT")) {
        argv[0] = "EVAL";  // Redis restarted without our script: send it
        argv[1] = round_script;
        return self->round(m, std::move(argv));
      }
      m->in_flight = false;
      self->on_round(*m, r);
    });
  }

  static std::int64_t integer(const redisReply* r) {
    return r->type == REDIS_REPLY_INTEGER ? static_cast<std::int64_t>(r->integer) : 0;
  }

  void on_round(member& m, redisReply* r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 7 ||
        r->element[5]->type != REDIS_REPLY_STRING)
      return teardown("unexpected reply");
    const std::int64_t now = integer(r->element[0]);
    set_offset(now);
    const auto calls = static_cast<std::uint64_t>(integer(r->element[1]));
    const auto failures = static_cast<std::uint64_t>(integer(r->element[2]));
    const auto slow = static_cast<std::uint64_t>(integer(r->element[3]));
    const auto failing = static_cast<std::uint64_t>(integer(r->element[4]));
    const fleet_record rec =
        fleet_record::parse(std::string_view(r->element[5]->str, r->element[5]->len));
    const std::int64_t probe = integer(r->element[6]);
    if (probe == -2) return;  // run after its deadline: it did nothing (the link gives up soon)
    update([](fleet_metrics& x) { ++x.rounds; });
    auto b = m.breaker.lock();
    if (!b) return;
    if (rec.kind == 0) {
      m.fleet_open = false;  // no record (expired, or Redis lost its data)
    } else {
      see(m, *b, rec, now);
    }
    // The fleet's window, with failures from at least `quorum` instances.
    if (b->core().state() == circuit_state::closed && calls >= m.minimum &&
        failing >= options_.quorum &&
        (m.failure.reached_by(failures, calls) || (m.slow_on && m.slow.reached_by(slow, calls)))) {
      const nanos open_for = b->fleet_open(nanos::zero());
      if (open_for > nanos::zero()) {
        update([](fleet_metrics& x) { ++x.opens_received; });
        publish(m, "fleet", open_for, 0);
      }
    }
    if (m.want_generation == 0) return;
    const std::uint64_t generation = std::exchange(m.want_generation, 0);
    switch (probe) {
      case 1:  // the lease: this instance probes for the fleet
        update([](fleet_metrics& x) { ++x.probe_leases_won; });
        b->fleet_half_open(generation);
        m.probing = b->core().state() == circuit_state::half_open;
        m.probing_gen = rec.generation;
        break;
      case 0:  // another instance probes
        update([](fleet_metrics& x) { ++x.probe_leases_lost; });
        break;
      case 2:  // the fleet's half-open time has not come yet
        break;
      default:  // no fleet opening: a local opening decides alone
        m.fleet_open = false;
        b->fleet_half_open(generation);
        break;
    }
  }

  // A record, from a round, a publication or a message.
  void see(member& m, fleet_breaker& b, const fleet_record& rec, std::int64_t now) {
    const circuit_state s = b.core().state();
    if (rec.generation < m.seen) return;
    if (rec.generation == m.seen) {  // known: a breaker that opened since joins it
      if (rec.kind == 'o' && s == circuit_state::open) m.fleet_open = true;
      return;
    }
    m.seen = rec.generation;
    if (rec.kind == 'o') {
      m.half_open_us = rec.half_open_us;
      if (s == circuit_state::closed && rec.half_open_us > now) {
        const nanos open_for = std::chrono::microseconds(rec.half_open_us - now);
        if (b.fleet_open(open_for) > nanos::zero()) {
          m.fleet_open = true;
          update([](fleet_metrics& x) { ++x.opens_received; });
        }
      } else if (s == circuit_state::open) {
        m.fleet_open = true;
      }
    } else {
      if (m.fleet_open && (s == circuit_state::open || s == circuit_state::half_open)) {
        b.fleet_close();
        update([](fleet_metrics& x) { ++x.closes_received; });
      }
      m.fleet_open = false;
      m.probing = false;
    }
  }

  void on_message(std::string_view text) {
    const fleet_record rec = fleet_record::parse(text);
    if (rec.kind == 0 || !have_offset_) return;  // no Redis time yet: the next round resyncs
    const auto space = rec.rest.find(' ');
    if (space == std::string::npos) return;
    auto m = find(rec.rest.substr(space + 1));
    if (!m) return;
    if (auto b = m->breaker.lock()) see(*m, *b, rec, redis_now_us());
  }

  // A local transition (posted by the breaker to the strand).
  void on_transition(member& m, const breaker_event& e) {
    if (phase_ != phase::ready || e.kind != event_kind::transition) return;
    if (e.to == circuit_state::open && e.from == circuit_state::closed &&
        e.reason != transition_reason::fleet && e.reason != transition_reason::manual) {
      publish(m, "open", e.open_for, 0);
    } else if (e.to == circuit_state::open && e.from == circuit_state::half_open && m.probing) {
      m.probing = false;
      publish(m, "reopen", e.open_for, m.probing_gen);
    } else if (e.to == circuit_state::closed && e.from == circuit_state::half_open &&
               e.reason == transition_reason::probes_succeeded && m.probing) {
      m.probing = false;
      publish(m, "close", nanos::zero(), m.probing_gen);
    }
  }

  void publish(member& m, const char* mode, nanos open_for, std::uint64_t generation) {
    if (phase_ != phase::ready) return;
    const auto us = std::chrono::duration_cast<std::chrono::microseconds>(open_for).count();
    std::vector<std::string> argv = {"EVALSHA",
                                     publish_sha_,
                                     "1",
                                     m.base,
                                     mode,
                                     options_.instance_id,
                                     std::to_string(std::max<std::int64_t>(us, 0)),
                                     std::to_string(options_.quorum),
                                     std::to_string(m.width_us),
                                     std::to_string(m.buckets),
                                     channel_,
                                     m.name,
                                     std::to_string(generation),
                                     std::to_string(keep_ms_),
                                     deadline()};
    auto mm = find(m.name);
    if (mm.get() != &m) return;
    publish_send(mm, std::move(argv), std::string(mode));
  }

  void publish_send(const std::shared_ptr<member>& m, std::vector<std::string> argv,
                    std::string mode) {
    send(argv, [weak = weak_from_this(), m, argv, mode](redisReply* r) mutable {
      auto self = weak.lock();
      if (!self) return;
      if (r->type == REDIS_REPLY_ERROR && argv[0] == "EVALSHA" &&
          std::string_view(r->str, r->len).starts_with("NOSCRIPT")) {
        argv[0] = "EVAL";
        argv[1] = publish_script;
        return self->publish_send(m, std::move(argv), std::move(mode));
      }
      if (r->type != REDIS_REPLY_ARRAY || r->elements != 3 ||
          r->element[0]->type != REDIS_REPLY_INTEGER || r->element[1]->type != REDIS_REPLY_STRING)
        return self->teardown("unexpected reply");
      const std::int64_t now = integer(r->element[2]);
      const bool published = r->element[0]->integer == 1;
      if (published) {
        self->update([&](fleet_metrics& x) {
          if (mode == "close") {
            ++x.closes_published;
          } else {
            ++x.opens_published;
          }
        });
      }
      const fleet_record rec =
          fleet_record::parse(std::string_view(r->element[1]->str, r->element[1]->len));
      if (rec.kind == 0) return;
      if (auto b = m->breaker.lock()) self->see(*m, *b, rec, now);
    });
  }

  void scan() {
    if (stopped()) return;
    for (breaker_registry* r : registries_) {
      for (const named_metrics& nm : r->metrics()) {
        auto m = find(nm.name);
        if (m && !m->breaker.expired()) continue;
        auto b = r->get(nm.name);
        try {
          attach(b->shared_state(), nm.name);
        } catch (...) {  // a count-window breaker stays local
        }
      }
    }
    scan_timer_.expires_at(saturating_add(steady::now(), options_.registry_scan));
    scan_timer_.async_wait([weak = weak_from_this()](boost::system::error_code ec) {
      auto self = weak.lock();
      if (!ec && self) self->scan();
    });
  }

  enum class phase { connecting, ready, waiting, stopped };

  fleet_options options_;
  redis_address address_;
  std::string channel_;
  std::int64_t keep_ms_;
  asio::strand<asio::any_io_executor> strand_;
  // Strand only.
  asio::steady_timer retry_timer_, connect_timer_, watchdog_, scan_timer_;
  asio::ip::tcp::resolver resolver_;
  std::shared_ptr<redis_connection> cmd_, sub_;
  std::uint64_t epoch_ = 0;
  phase phase_ = phase::connecting;
  int needed_ = 0;
  std::string round_sha_, publish_sha_;
  std::deque<steady::time_point> sent_;
  nanos backoff_;
  std::mt19937_64 rng_;
  std::int64_t offset_us_ = 0;  // Redis time - steady time, in us
  bool have_offset_ = false;    // a round told Redis time since the connection
  std::vector<breaker_registry*> registries_;
  // Shared with other threads, under mutex_.
  mutable std::mutex mutex_;
  bool stopped_ = false;
  std::map<std::string, std::shared_ptr<member>> members_;
  std::vector<std::function<void(const fleet_event&)>> listeners_;
  fleet_metrics metrics_;
};

}  // namespace detail

fleet_link::fleet_link(boost::asio::any_io_executor ex, fleet_options options)
    : state_(std::make_shared<detail::fleet_state>(std::move(ex), std::move(options))) {
  state_->start();
}

fleet_link::~fleet_link() {
  state_->stop();
}

void fleet_link::attach(circuit_breaker& breaker, std::string name) {
  state_->attach(breaker.shared_state(), std::move(name));
}

void fleet_link::attach(circuit_breaker& breaker) {
  state_->attach(breaker.shared_state(), std::string(breaker.name()));
}

void fleet_link::attach(breaker_registry& registry) {
  state_->attach_registry(registry);
}

void fleet_link::listen(std::function<void(const fleet_event&)> fn) {
  state_->listen(std::move(fn));
}

fleet_metrics fleet_link::metrics() const {
  return state_->metrics();
}
const fleet_options& fleet_link::options() const noexcept {
  return state_->options();
}
const std::string& fleet_link::instance_id() const noexcept {
  return state_->options().instance_id;
}

}  // namespace levee
