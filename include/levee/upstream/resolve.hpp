// levee: an upstream whose endpoints are every address a name resolves to,
// re-resolved on the answer's TTL (docs/upstream.md, "Endpoints from DNS").
#pragma once

#include <levee/http/client.hpp>
#include <levee/http/detail/resolver.hpp>
#include <levee/upstream/options.hpp>
#include <levee/upstream/upstream.hpp>

#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/bind_executor.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/strand.hpp>
#include <boost/system/error_code.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace levee::http {
namespace detail {

/// "scheme://ip:port" ("[ip6]" for IPv6), or "ip:port" with no scheme.
inline std::string endpoint_address(const std::string& scheme,
                                    const boost::asio::ip::tcp::endpoint& e) {
  const auto a = e.address();
  std::string s = scheme.empty() ? std::string() : scheme + "://";
  s += a.is_v6() ? "[" + a.to_string() + "]" : a.to_string();
  return s + ":" + std::to_string(e.port());
}

/// A name watch's state, shared with its lookup and its timer in flight.
/// Lookups, their completions and the timer run on `strand`, one at a time.
template <class Clock, class WaitTraits>
struct name_watch_state : std::enable_shared_from_this<name_watch_state<Clock, WaitTraits>> {
  using upstream_state = levee::detail::upstream_state<Clock, WaitTraits>;
  using timer_type = boost::asio::basic_waitable_timer<Clock, WaitTraits>;

  name_watch_state(std::shared_ptr<upstream_state> up, std::shared_ptr<dns_resolver> r,
                   resolve_options o, std::uint64_t i)
      : options(std::move(o)),
        id(i),
        upstream(std::move(up)),
        resolver(std::move(r)),
        strand(boost::asio::make_strand(upstream->executor)),
        timer(strand) {
    if (options.port == 0) options.port = options.scheme == "https" ? 443 : 80;
  }

  /// From any thread: a lookup now, unless one is in flight.
  void kick() {
    boost::asio::post(strand, [self = this->shared_from_this()] { self->start(); });
  }

  void start() {
    if (stopped.load(std::memory_order_acquire) || in_flight) return;
    const auto r = resolver.lock();
    if (!r) {  // the client is gone: a failed lookup
      done(boost::asio::error::operation_aborted, {}, std::chrono::seconds(0));
      return;
    }
    in_flight = true;
    // Bounded so that a huge timeout cannot overflow the deadline.
    const auto limit = std::min<std::chrono::nanoseconds>(options.timeout, std::chrono::hours(24));
    r->async_resolve(
        options.host, options.port,
        std::chrono::steady_clock::now() +
            std::chrono::duration_cast<std::chrono::steady_clock::duration>(limit),
        boost::asio::bind_executor(
            strand, [self = this->shared_from_this()](
                        boost::system::error_code ec, dns_resolver::endpoints found,
                        std::chrono::seconds ttl) { self->done(ec, std::move(found), ttl); }));
  }

  void done(boost::system::error_code ec, dns_resolver::endpoints found, std::chrono::seconds ttl) {
    in_flight = false;
    if (stopped.load(std::memory_order_acquire)) return;
    const auto now = Clock::now();  // the answer's time: its TTL counts from here
    std::chrono::nanoseconds keep = options.retry_interval;
    if (!ec) {
      std::vector<std::string> addresses;
      addresses.reserve(found.size());
      for (const auto& e : found) addresses.push_back(endpoint_address(options.scheme, e));
      std::sort(addresses.begin(), addresses.end());  // DNS may rotate the records
      addresses.erase(std::unique(addresses.begin(), addresses.end()), addresses.end());
      upstream->update(addresses);  // never empty: an empty answer is host_not_found
      keep = options.interval.count() != 0
                 ? options.interval
                 : std::clamp<std::chrono::nanoseconds>(ttl, options.min_ttl, options.max_ttl);
    }
    const auto since = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch());
    const auto due = since.count() > upstream_state::never - keep.count()
                         ? upstream_state::never
                         : since.count() + keep.count();
    {
      std::lock_guard g(upstream->refresh_lock);
      if (upstream->refresh_owner == id)
        upstream->refresh_due.store(due, std::memory_order_relaxed);
    }
    if (options.refresh_when_idle && due != upstream_state::never) {
      timer.expires_at(now + std::chrono::duration_cast<typename Clock::duration>(keep));
      timer.async_wait([self = this->shared_from_this()](boost::system::error_code wec) {
        if (!wec) self->start();
      });
    }
    {
      std::lock_guard g(error_lock);
      last_error = ec;
    }
    // Counted last: whoever sees the count sees the endpoints and the due time.
    (ec ? upstream->resolution_failures : upstream->resolutions)
        .fetch_add(1, std::memory_order_release);
  }

  resolve_options options;
  const std::uint64_t id;
  std::shared_ptr<upstream_state> upstream;
  // Weak: a lookup in flight holds this state, and must not hold the client's
  // (whose resolver holds the lookup) if the io_context is never run again.
  std::weak_ptr<dns_resolver> resolver;
  boost::asio::strand<boost::asio::any_io_executor> strand;
  timer_type timer;        // on the strand; armed only with refresh_when_idle
  bool in_flight = false;  // on the strand
  std::atomic<bool> stopped{false};
  mutable std::mutex error_lock;
  boost::system::error_code last_error;  // under error_lock
};

}  // namespace detail

/// Keeps an upstream's endpoints equal to every address a name resolves to,
/// through the resolver of an HTTP client (its `client_options::dns_servers`,
/// c-ares). Lookups replace the endpoints with `basic_upstream::update`: an
/// endpoint that stays keeps its health, breaker and connection pool; a new
/// one starts in service; a removed one is no longer picked, and the calls
/// in flight on it end normally.
///
/// When: one lookup at construction; then an answer is good for its TTL,
/// clamped to [`min_ttl`, `max_ttl`] (or for `interval`), and the first call
/// through the upstream after that starts a lookup without waiting for it
/// (the call goes on with the endpoints it has). A failed lookup keeps the
/// endpoints, counts in `upstream_metrics::resolution_failures` and is tried
/// again at the first call after `retry_interval`. Pending work: a lookup
/// while one runs (bounded by `timeout`); none while the upstream is idle,
/// unless `refresh_when_idle` is set (then one timer, until the watch is
/// destroyed).
///
/// Until the first lookup succeeds the upstream has the endpoints it was
/// made with: make it with the name itself (`{"http://api.internal:8080"}`),
/// which the client resolves per connection meanwhile.
///
/// Thread safety: the lookups run on a strand of the upstream's executor;
/// any thread may call through the upstream meanwhile. One watch per
/// upstream. Lifetime: the upstream and the client may be destroyed in any
/// order with the watch (the watch shares the upstream's state; a lookup
/// after the client is gone fails and keeps the endpoints).
template <class Clock = std::chrono::steady_clock,
          class WaitTraits = levee::detail::wait_traits_of_t<Clock>>
class basic_name_watch {
  using state_type = detail::name_watch_state<Clock, WaitTraits>;

 public:
  /// Watches `options.host` for `up`, with `c`'s resolver, and starts the
  /// first lookup.
  /// \param up The upstream whose endpoints follow the name.
  /// \param c The client whose resolver (its `dns_servers`) looks it up.
  /// \param options The name, its port and the re-resolution rule.
  /// \throws std::invalid_argument naming the member of `options` that is invalid.
  basic_name_watch(basic_upstream<Clock, WaitTraits>& up, client& c, resolve_options options) {
    validate(options);
    static std::atomic<std::uint64_t> ids{0};
    const auto id = ids.fetch_add(1, std::memory_order_relaxed) + 1;
    state_ = std::make_shared<state_type>(up.state_, detail::client_access::resolver(c),
                                          std::move(options), id);
    auto& u = *state_->upstream;
    {
      std::lock_guard g(u.refresh_lock);
      u.refresh_owner = id;
      u.refresh = [w = std::weak_ptr<state_type>(state_)] {
        if (auto s = w.lock()) s->kick();
      };
      u.refresh_due.store(u.never, std::memory_order_relaxed);
    }
    state_->kick();
  }

  /// Stops watching: no lookup starts after it, the timer is cancelled, a
  /// lookup whose answer comes later changes nothing (one whose answer is
  /// being applied at that moment, on another thread, may still set the
  /// endpoints once). The upstream keeps its endpoints.
  ~basic_name_watch() {
    if (!state_) return;
    state_->stopped.store(true, std::memory_order_release);
    auto& u = *state_->upstream;
    {
      std::lock_guard g(u.refresh_lock);
      if (u.refresh_owner == state_->id) {
        u.refresh = nullptr;
        u.refresh_owner = 0;
        u.refresh_due.store(u.never, std::memory_order_relaxed);
      }
    }
    boost::asio::post(state_->strand, [s = state_] { s->timer.cancel(); });
  }

  basic_name_watch(const basic_name_watch&) = delete;
  basic_name_watch& operator=(const basic_name_watch&) = delete;

  /// Starts a lookup now (unless one is in flight), whatever the TTL.
  void refresh() { state_->kick(); }

  /// The options, the port filled in.
  /// \return them.
  const resolve_options& options() const noexcept { return state_->options; }

  /// How the last lookup ended (none yet: no error).
  /// \return its error, or none when it succeeded.
  boost::system::error_code last_error() const {
    std::lock_guard g(state_->error_lock);
    return state_->last_error;
  }

 private:
  std::shared_ptr<state_type> state_;
};

/// The steady_clock name watch.
using name_watch = basic_name_watch<>;

}  // namespace levee::http
