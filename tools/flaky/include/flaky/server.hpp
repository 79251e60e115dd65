// The flaky upstream: a Beast HTTP server that follows a fault schedule.
#pragma once

#include <flaky/schedule.hpp>

#include <boost/asio/any_io_executor.hpp>

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace boost::asio::ssl {
class context;
}  // namespace boost::asio::ssl

namespace flaky {

struct server_options {
  std::string address = "127.0.0.1";  ///< where to listen
  std::uint16_t port = 0;             ///< 0: any free port (see `server::start`)
  double time_scale = 1.0;            ///< multiplies every duration of the schedule
  bool loop = false;                  ///< repeat the schedule; otherwise stay in its last phase
  std::uint64_t seed = 1;             ///< of the random draws (errors, resets, latency)
  /// Serve HTTPS with this context (its certificate and key); empty: plain
  /// HTTP. `flaky::make_test_tls` makes a CA and a certificate for tests.
  std::shared_ptr<boost::asio::ssl::context> tls{};
};

/// Counters, readable from any thread.
struct server_stats {
  std::uint64_t requests = 0;     ///< requests read
  std::uint64_t ok = 0;           ///< answered 200
  std::uint64_t errors = 0;       ///< answered with the phase's error status
  std::uint64_t resets = 0;       ///< answered with a TCP reset
  std::uint64_t connections = 0;  ///< connections accepted
  std::size_t in_flight = 0;      ///< requests being served now
  std::size_t peak_in_flight = 0;
  std::size_t phase = 0;  ///< index of the current phase
};

/// Serves `GET` (any target) on `address:port`, answering each request as the
/// current phase says: after the phase's latency (slower still when more than
/// `capacity` requests are in flight), with 200 and a small JSON body, or with
/// the phase's error status, or with a TCP reset; while a phase refuses, the
/// listener is closed. Runs on the executor it is given (one thread).
class server {
 public:
  server(boost::asio::any_io_executor ex, std::vector<phase> schedule, server_options options = {});
  ~server();
  server(const server&) = delete;
  server& operator=(const server&) = delete;

  /// Binds, listens and starts the schedule's clock. Returns the port.
  /// Throws `boost::system::system_error` when it cannot bind.
  std::uint16_t start();

  /// Closes the listener and every connection. Safe from any thread.
  void stop();

  /// Stays in phase `index` from now on, whatever the clock says (tests).
  void hold_phase(std::size_t index);

  /// The schedule, and where the server is in it.
  const std::vector<phase>& schedule() const noexcept;
  std::size_t phase_index() const noexcept;
  /// Real time since `start`, and the real time at which each phase starts.
  std::chrono::nanoseconds elapsed() const noexcept;
  std::chrono::nanoseconds phase_start(std::size_t index) const noexcept;
  /// The schedule's real length (scaled).
  std::chrono::nanoseconds length() const noexcept;

  server_stats stats() const noexcept;

  /// Requests read while phase `index` was current.
  std::uint64_t requests_in_phase(std::size_t index) const noexcept;

 private:
  struct impl;
  std::shared_ptr<impl> impl_;
};

}  // namespace flaky
