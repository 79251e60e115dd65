// A real redis-server (Debian's redis-server) on 127.0.0.1 and on a Unix
// socket, started and stopped by the test: a free port, a temporary
// directory, no persistence (`--save "" --appendonly no`), optionally a
// password, optionally TLS on its port; it dies with the test process (PR_SET_PDEATHSIG). The test
// may stop it (SIGSTOP), continue it, kill it and start it again on the same port, with its data
// lost. Waits are bounded.
#pragma once

#include <sys/types.h>
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace levee_test {

struct redis_options {
  std::string password{};  ///< requirepass, when not empty
  /// PEM texts: when `tls_cert` is not empty, the port is a TLS port
  /// (`--port 0 --tls-port P`, `--tls-auth-clients no`); the Unix socket
  /// stays plain, for `command`.
  std::string tls_cert{}, tls_key{}, tls_ca{};
};

class redis_fixture {
 public:
  /// Starts redis-server; throws `std::runtime_error` with its log when it
  /// cannot (the binary missing: install `redis-server`).
  explicit redis_fixture(redis_options options = {});
  ~redis_fixture();
  redis_fixture(const redis_fixture&) = delete;
  redis_fixture& operator=(const redis_fixture&) = delete;

  std::uint16_t port() const { return port_; }
  /// "127.0.0.1:<port>".
  std::string address() const;
  /// The Unix socket's path.
  std::string socket_path() const { return (dir_ / "redis.sock").string(); }

  void pause();   ///< SIGSTOP: it keeps its sockets and answers nothing
  void resume();  ///< SIGCONT
  void kill();    ///< SIGKILL, and waits for it
  /// Starts it again on the same port (after `kill`), with no data.
  void restart();

  /// Runs one command over a fresh blocking connection; returns the reply as
  /// text ("(nil)", "(error) ...", an array's elements joined by '\n').
  std::string command(const std::vector<std::string>& argv) const;

 private:
  void launch();
  std::filesystem::path dir_;
  redis_options options_;
  std::uint16_t port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace levee_test
