// levee: the fleet link's I/O shell, `fleet_state` (behind levee::fleet_link).
//
// The shell does the I/O and nothing else: two hiredis connections (commands,
// and pub/sub) through `redis_connection`, the timers (a round per bucket
// width per breaker, the connect timeout, the watchdog, the reconnection
// delay, the registry scan), and the breakers' hooks
// (breaker/detail/fleet_hook.hpp: all the link may do with a breaker). What to send and what
// to do with a reply is decided by the sans-I/O parts:
//
//   fleet/detail/fleet_scripts.hpp    the Lua scripts and the keys they use
//   fleet/detail/fleet_decisions.hpp  one breaker's decisions, Redis time, backoff
//
// Its definitions are in two files:
//
//   fleet/impl/fleet_members.ipp      the entry points (listen, metrics,
//                               wait_connected, stop), the events, attach,
//                               the gate, the registry scan
//   fleet/impl/fleet_connection.ipp   connect, AUTH, TIME, SCRIPT LOAD, SUBSCRIBE,
//                               the watchdog, teardown, reconnect, shutdown
//   fleet/impl/fleet_rounds.ipp       the rounds, the poll, error replies,
//                               publications, messages, local transitions
//
// Threads. Everything but the public entry points (attach, attach_registry,
// listen, metrics, wait_connected, stop) runs on the strand. The one lock, `mutex_`, guards
// what those entry points share with the strand (the members, the
// listeners, the metrics, `stopped_`). It is a mutex, not a spinlock: under
// it the link inserts members and copies the listener list (allocation), and
// gates a breaker (`gate`: against `stop`, a breaker is never left gated by a
// link that is gone). Nothing under it calls hiredis, posts or waits.
#pragma once

#include <levee/breaker/detail/fleet_hook.hpp>
#include <levee/fleet/detail/fleet_decisions.hpp>
#include <levee/fleet/detail/redis_connection.hpp>
#include <levee/fleet/fleet.hpp>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <vector>

namespace levee::detail {

/// host:pid:random, whitespace replaced.
std::string default_instance_id();

class fleet_state : public std::enable_shared_from_this<fleet_state> {
 public:
  fleet_state(boost::asio::any_io_executor ex, fleet_options o);
  ~fleet_state();

  const fleet_options& options() const noexcept { return options_; }

  // Public entry points, from any thread.
  void start();  ///< connects (posted)
  void attach(const fleet_hook& b, std::string name);
  void attach_registry(breaker_registry& r);
  void listen(std::function<void(const fleet_event&)> fn);
  fleet_metrics metrics() const;
  /// `done` once: connected (now or within `within`), timed out, or aborted.
  void wait_connected(nanos within, std::function<void(boost::system::error_code)> done);
  /// close(), ~fleet_link: the breakers are local again at once; the rest on
  /// the strand. Idempotent.
  void stop();

 private:
  using steady = std::chrono::steady_clock;
  using strand_type = boost::asio::strand<boost::asio::any_io_executor>;

  /// One attached breaker.
  struct member {
    member(const strand_type& s, const fleet_decisions& d) : timer(s), decide(d), poll(s) {}
    std::string name, base;    // base: `<key_prefix>:{<name>}`
    fleet_hook::weak breaker;  // breaker/detail/fleet_hook.hpp: all the link may do
    std::uint64_t listen_id = 0;
    boost::asio::steady_timer timer;  // the rounds
    nanos width{};                    // the bucket width, at least 1 ms
    std::int64_t width_us = 1;
    std::uint32_t buckets = 1;
    fleet_decisions decide;  // strand only
    // Strand only. The poll: while OPEN with its timer expired (gated), the
    // first call refused sends the lease's race at once (not at the next round).
    boost::asio::steady_timer poll;
    bool polling = false;
    std::uint64_t raced = 0;        // the OPEN generation last raced for
    steady::time_point poll_after;  // not before the fleet's half-open time
    bool erroring = false;          // its commands get error replies: local meanwhile
  };
  struct waiter {
    explicit waiter(const strand_type& s) : timer(s) {}
    boost::asio::steady_timer timer;
    std::function<void(boost::system::error_code)> done;
  };

  // ---- fleet/impl/fleet_connection.ipp: the connections --------------------------
  void connect();
  void open(std::uint64_t epoch, std::vector<boost::asio::ip::tcp::endpoint> endpoints);
  /// Sends on the command connection; `h` gets the reply (never null: a
  /// connection that ends tears the link down instead).
  void send(std::vector<std::string> argv, std::function<void(redisReply*)> h);
  /// Not from inside a caller that goes on using the connections.
  void later_teardown(const char* why);
  void ready();
  /// A command unanswered for `command_timeout` ends the connection.
  void watch(std::uint64_t epoch);
  /// Back to local: every breaker decides alone; reconnect after a backoff.
  void teardown(const std::string& why);
  void shutdown();
  /// Redis time now, and the deadline of a command sent now ("0": none yet).
  std::int64_t redis_now_us() const;
  std::string deadline() const;
  /// Where a command sent now counts its `command_timeout` from: the oldest
  /// command still unanswered on either connection (its timeout ends both,
  /// and gives this one up with it), or now.
  steady::time_point timed_from() const;
  void learn_redis_time(std::int64_t redis_now_us);

  // ---- fleet/impl/fleet_rounds.ipp: the breakers ----------------------------------
  void start_member(const std::shared_ptr<member>& m);
  /// The link decides OPEN -> HALF_OPEN from now on.
  void gate(member& m);
  /// Unlistens and ungates (not under `mutex_`).
  static void forget(member& m);
  void tick(const std::shared_ptr<member>& m);
  /// The round now, for `tick` and the poll.
  void send_round(const std::shared_ptr<member>& m, const fleet_hook& b);
  void poll(const std::shared_ptr<member>& m);
  void on_poll(const std::shared_ptr<member>& m);
  /// An error reply to one breaker's command: counted, reported once per
  /// run, the breaker local until one of its rounds succeeds again.
  void command_error(member& m, std::string_view text);
  void round(const std::shared_ptr<member>& m, std::vector<std::string> argv);
  void on_round(member& m, redisReply* r);
  /// Applies a record (from a round, a publication or a message).
  void see(member& m, const fleet_hook& b, const fleet_record& rec, std::int64_t now_us);
  void on_message(std::string_view text);
  /// A local transition (posted by the breaker to the strand).
  void on_transition(member& m, const breaker_event& e);
  void publish(member& m, const publication& p);
  void publish_send(const std::shared_ptr<member>& m, std::vector<std::string> argv,
                    std::string mode, std::chrono::system_clock::time_point sent);
  void scan();

  // ---- shared with other threads, under mutex_ -----------------------------
  std::vector<std::shared_ptr<member>> all_members();
  std::shared_ptr<member> find(const std::string& name);
  bool stopped();
  template <class F>
  void update(F f) {
    std::lock_guard g(mutex_);
    f(metrics_);
  }
  /// Calls the listeners (a copy taken under the lock, called outside it).
  void emit(fleet_event e);
  void emit(fleet_event_kind kind, std::string reason = {}) {
    emit(event(kind, std::move(reason)));
  }
  static fleet_event event(fleet_event_kind kind, std::string reason = {}) {
    fleet_event e;
    e.kind = kind;
    e.reason = std::move(reason);
    return e;
  }
  void ended(std::vector<std::shared_ptr<waiter>> ws, boost::system::error_code ec);

  enum class phase { connecting, ready, waiting, stopped };

  fleet_options options_;
  redis_address address_;
  std::string channel_;   // `<key_prefix>:fleet`
  std::int64_t keep_ms_;  // an opening record outlives its half-open time by this
  strand_type strand_;
  // Strand only.
  boost::asio::steady_timer retry_timer_, connect_timer_, watchdog_, scan_timer_;
  boost::asio::ip::tcp::resolver resolver_;
  std::shared_ptr<redis_connection> cmd_, sub_;
  std::uint64_t epoch_ = 0;  // bumped at every teardown: older handlers do nothing
  phase phase_ = phase::connecting;
  int needed_ = 0;  // replies still needed before ready()
  std::string round_sha_, publish_sha_;
  std::deque<steady::time_point> sent_;  // each unanswered command's timed_from()
  reconnect_backoff backoff_;
  std::mt19937_64 rng_;
  redis_clock redis_time_;  // known once a TIME or a round told it, since the connection
  std::vector<breaker_registry*> registries_;
  // A registry's breakers that cannot be attached (count windows): not asked
  // for again (`get` would keep them from being evicted) while they live.
  std::map<std::string, fleet_hook::weak> unattachable_;
  steady::time_point ready_at_;
  std::vector<std::shared_ptr<waiter>> waiters_;
  // Shared with other threads, under mutex_.
  mutable std::mutex mutex_;
  bool stopped_ = false;
  std::map<std::string, std::shared_ptr<member>> members_;
  std::vector<std::function<void(const fleet_event&)>> listeners_;
  fleet_metrics metrics_;
};

}  // namespace levee::detail
