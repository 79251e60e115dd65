/// \file
/// A fleet of instances whose breakers share what they learn, through
/// Redis (the CMake target levee::fleet; it needs hiredis, levee::levee does not).
///
/// Evidence, not verdicts: each instance adds its calls, failures and slow calls
/// to shared buckets and reads back the fleet's window; a breaker opens on the
/// fleet's window only when failures come from at least `quorum` instances. An
/// opening is published (pub/sub plus a key with its half-open time and a
/// generation); at the half-open time the instances race for a probe lease and
/// one of them probes for the fleet. The call path never waits on Redis; with
/// Redis down, stopped or restarted, every breaker is a local breaker again.
/// docs/fleet.md has the details.
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
#include <levee/registry/registry.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/post.hpp>
#include <boost/system/error_code.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <string_view>

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace levee {

/// A fleet link's settings. Plain struct, a default on every member.
struct fleet_options {
  /// The Redis server: "host:port" ("[::1]:6379" for IPv6) or the path of a
  /// Unix socket (starting with '/'). A host name is resolved with Asio's
  /// asynchronous resolver.
  std::string address = "127.0.0.1:6379";
  /// Sent with AUTH on every connection when not empty: `AUTH password`,
  /// or `AUTH username password` (a Redis 6+ ACL user) when `username` is set.
  std::string password = {};
  /// The ACL user; empty: the default user (`AUTH password` only).
  std::string username = {};
  /// TLS to Redis (over TCP, not over a Unix socket). The certificate must
  /// name the address's host (a name or an IP literal); SNI is sent for names.
  bool tls = false;
  /// With `tls`: the context. Empty: one that verifies the server against
  /// the system's default trust store (TLS 1.2 or later). Give your own to
  /// trust a private CA or to present a client certificate. Set only with
  /// `tls`.
  std::shared_ptr<boost::asio::ssl::context> tls_context{};
  /// The largest reply accepted, in bytes, counting 64 more per element of
  /// an array: a reply announcing or streaming more ends the connection
  /// ("reply too large ...") before it is buffered, and the link reconnects.
  /// The link's own replies are under a kilobyte. >= 4096.
  std::size_t max_reply_size = 4 * 1024 * 1024;
  /// Every key starts with it: `<key_prefix>:{<breaker name>}:...` (one hash
  /// tag per breaker). Not empty, no whitespace.
  std::string key_prefix = "levee";
  /// This instance in the shared records. Empty (the default): host:pid:random.
  /// No whitespace, at most 200 characters.
  std::string instance_id = {};
  /// The fleet's window opens a breaker only when failures (or slow calls)
  /// come from at least this many instances: one sick instance cannot open
  /// the others. >= 1. With 1, one instance whose own path is broken opens
  /// the healthy ones, and their successful probes close it again and again
  /// (measured in docs/fleet.md: 63 calls to its broken path in 4 s against
  /// 21 with 2, and 667 healthy calls refused against none).
  std::size_t quorum = 2;
  /// The fleet's window needs at least this many calls; 0 (the default): the
  /// breaker's own `minimum_calls`.
  std::size_t fleet_minimum_calls = 0;
  /// Connecting (with TLS, AUTH, SUBSCRIBE and SCRIPT LOAD) must finish within
  /// this. > 0.
  std::chrono::nanoseconds connect_timeout = std::chrono::seconds(2);
  /// A command not answered within this ends the connection (a stopped Redis
  /// never answers). An idle connection (the pub/sub one always, the command
  /// one between rounds) sends PING every `command_timeout / 4`, so that a
  /// silent Redis is seen within about `command_timeout` even with no round
  /// pending. > 0.
  std::chrono::nanoseconds command_timeout = std::chrono::seconds(1);
  /// Reconnection delays: from `reconnect_min`, doubled after every failed
  /// attempt up to `reconnect_max` (each drawn in [d/2, d]). 0 < min <= max.
  std::chrono::nanoseconds reconnect_min = std::chrono::milliseconds(100);
  /// The longest reconnection delay (see #reconnect_min). >= reconnect_min.
  std::chrono::nanoseconds reconnect_max = std::chrono::seconds(10);
  /// How long a won probe lease keeps the other instances from probing. The
  /// winner renews it every round while its probe runs; a winner that dies,
  /// or has no call to probe with, lets it expire and another instance
  /// probes. >= 1 ms.
  std::chrono::nanoseconds probe_lease = std::chrono::seconds(5);
  /// How often a link attached to a registry looks for new breakers. > 0.
  std::chrono::nanoseconds registry_scan = std::chrono::seconds(1);
};

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const fleet_options& options);

/// A snapshot of a link's health and work.
struct fleet_metrics {
  bool connected = false;               ///< both connections up, scripts loaded
  std::uint64_t connects = 0;           ///< connections established
  std::uint64_t reconnects = 0;         ///< connection attempts after the first
  std::uint64_t disconnects = 0;        ///< established connections lost
  std::uint64_t connect_failures = 0;   ///< connection attempts that failed
  std::uint64_t rounds = 0;             ///< evidence round trips answered
  std::uint64_t errors = 0;             ///< failed connects, timeouts, error replies
  std::uint64_t command_errors = 0;     ///< error replies to one breaker's command
  std::uint64_t opens_published = 0;    ///< openings this instance published
  std::uint64_t opens_received = 0;     ///< breakers opened by the fleet (reason `fleet`)
  std::uint64_t closes_published = 0;   ///< closings this instance published (its probe won)
  std::uint64_t closes_received = 0;    ///< breakers closed by the fleet's prober
  std::uint64_t probe_leases_won = 0;   ///< probe leases this instance won
  std::uint64_t probe_leases_lost = 0;  ///< races for a lease another instance held
  std::uint64_t breakers = 0;           ///< breakers attached now
  /// The last error, as Redis wrote it ("WRONGPASS invalid username-password
  /// pair ...", "OOM command not allowed ...") or as the link saw it
  /// ("connect failed: Connection refused", "timeout"); empty before the first.
  /// It stays after the link recovers: `connected` says whether it did.
  std::string last_error;
};

/// What a listener hears (docs/fleet.md, "What an operator sees").
enum class fleet_event_kind : std::uint8_t {
  connected,       ///< both connections up, scripts loaded
  disconnected,    ///< an established connection lost (`reason`)
  connect_failed,  ///< a connection attempt failed (`reason`: Redis's text or the link's)
  command_error,   ///< a breaker's command got an error reply (`breaker`, `reason`:
                   ///< Redis's text); once per run of errors, every one is counted
  published,       ///< this instance published an opening or a closing (`breaker`,
                   ///< `reason` "open" or "close", `generation`)
  fleet_opened,    ///< a breaker opened by the fleet (`breaker`; `instance` and
                   ///< `generation` of the record that opened it, empty and 0
                   ///< when the fleet's window opened it)
  fleet_closed,    ///< a breaker closed by the fleet's prober (`breaker`,
                   ///< `instance`, `generation`)
};

/// One event, as a listener receives it.
struct fleet_event {
  /// What happened.
  fleet_event_kind kind = fleet_event_kind::connected;
  /// disconnected, connect_failed: why ("timeout", "connection closed",
  /// "WRONGPASS ...", "NOAUTH ...", "connect failed: Connection refused", "TLS
  /// handshake failed: certificate verify failed (...)", "reply too large:
  /// ..."); command_error: Redis's error text;
  /// published: "open" or "close".
  std::string reason;
  std::string breaker;           ///< the breaker's name, for the breaker events
  std::string instance;          ///< the instance that published the record
  std::uint64_t generation = 0;  ///< the record's generation (`published`: this one's)
  /// When the link saw it (wall clock); `published`: when it sent the
  /// publication, so that a follower's `fleet_opened` minus it is the
  /// propagation delay (clocks of different hosts permitting).
  std::chrono::system_clock::time_point when;
};

/// The name of a fleet event kind.
/// \param k A kind.
/// \return "connected", "disconnected", "connect_failed", "command_error",
/// "published", "fleet_opened" or "fleet_closed"; "unknown" for any other
/// value. A static string.
const char* to_string(fleet_event_kind k) noexcept;

namespace detail {
class fleet_state;
}

/// Links breakers to a fleet through one Redis server. Construct it on an
/// executor (its work runs on a strand of it), attach breakers, keep it for
/// as long as they should share.
///
/// Thread safety: every member function is thread-safe except construction
/// and destruction. Lifetime: destroying the link with commands pending is
/// safe (they end with it); attached breakers become local breakers at once.
/// A breaker may go before the link (it is held weakly).
class fleet_link {
 public:
  /// Starts connecting at once.
  /// \param ex Its work runs on a strand of this executor.
  /// \param options Its settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  fleet_link(boost::asio::any_io_executor ex, fleet_options options = {});
  /// Closes the link (`close`).
  ~fleet_link();
  fleet_link(const fleet_link&) = delete;
  fleet_link& operator=(const fleet_link&) = delete;

  /// Shares `breaker`'s evidence under `name` (instances share a breaker by
  /// name). Time-window breakers only, a name without NUL, braces or
  /// newlines, not attached to another breaker that is still alive
  /// (`std::invalid_argument` otherwise; the breaker attached first stays
  /// linked). Attaching the same breaker again does nothing. Instances must
  /// give the same breaker the same options.
  /// \param breaker The breaker; held weakly (it may go first).
  /// \param name Its name in the fleet.
  /// \throws std::invalid_argument as said above.
  void attach(circuit_breaker& breaker, std::string name);
  /// The same with the breaker's own name.
  /// \param breaker The breaker; held weakly.
  /// \throws std::invalid_argument if it has no name, or as above.
  void attach(circuit_breaker& breaker);

  /// Every breaker of `registry`, and those it creates later (found every
  /// `registry_scan`). The registry must outlive the link.
  /// \param registry The registry; borrowed.
  void attach(breaker_registry& registry);

  /// Adds a listener, invoked on the link's strand for every event.
  /// \param fn The listener; it stays until the link is destroyed.
  void listen(std::function<void(const fleet_event&)> fn);

  /// Calls `handler(error_code)` once, on the handler's associated executor
  /// (by default the link's executor): at once (success) when
  /// connected, or on the first connection within `within`; else
  /// `asio::error::timed_out` (then `metrics().last_error` says why), or
  /// `asio::error::operation_aborted` once the link is closed. For example at
  /// startup: `link.async_wait_connected(2s, asio::use_future).get()` from a
  /// thread that does not run the executor, or `co_await` it.
  ///
  /// \param within How long to wait for a connection.
  /// \param token The completion token; completion signature
  /// `void(error_code)`.
  /// \return what `token` makes of the operation (as `asio::async_initiate`).
  template <class CompletionToken>
  auto async_wait_connected(std::chrono::nanoseconds within, CompletionToken&& token) {
    return boost::asio::async_initiate<CompletionToken, void(boost::system::error_code)>(
        [this](auto handler, std::chrono::nanoseconds w) {
          using handler_type = decltype(handler);
          auto ex = boost::asio::get_associated_executor(handler, executor_);
          auto h = std::make_shared<handler_type>(std::move(handler));
          wait_connected(w, [h, work = boost::asio::make_work_guard(ex)](
                                boost::system::error_code ec) mutable {
            auto e = work.get_executor();
            boost::asio::post(e, [h, ec, w = std::move(work)]() mutable { std::move (*h)(ec); });
          });
        },
        token, within);
  }

  /// Ends the link: every attached breaker is a local breaker again at once,
  /// its timers and connections end, waiters get `operation_aborted`; after
  /// it the link leaves no pending work on the executor (`io_context::run()`
  /// returns once nothing else has work). Idempotent; the link then stays a
  /// closed link (`attach` does nothing, `metrics()` keeps its counters).
  /// The destructor closes too.
  void close();

  /// A snapshot of the link's health and work.
  /// \return the snapshot, taken now.
  fleet_metrics metrics() const;
  /// The options it was constructed with.
  /// \return them, as validated.
  const fleet_options& options() const noexcept;
  /// This instance's id in the shared records.
  /// \return `fleet_options::instance_id`, or the one the link made.
  const std::string& instance_id() const noexcept;

 private:
  void wait_connected(std::chrono::nanoseconds within,
                      std::function<void(boost::system::error_code)> done);
  boost::asio::any_io_executor executor_;
  std::shared_ptr<detail::fleet_state> state_;
};

/// The Prometheus text exposition (format 0.0.4) of a link's metrics:
/// `levee_fleet_connected` and `levee_fleet_breakers` (gauges), the
/// `levee_fleet_*_total` counters, and `levee_fleet_last_error_info` (its
/// label `error`) once there was an error.
/// \param out Where the text goes.
/// \param m The link's metrics.
void write_prometheus(std::ostream& out, const fleet_metrics& m);

}  // namespace levee
