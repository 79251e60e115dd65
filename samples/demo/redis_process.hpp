// levee-demo --fleet: a redis-server of the demo's own.
#pragma once

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <string>
#include <system_error>
#include <thread>

namespace demo {

// A redis-server of the demo's own, on a Unix socket in a temporary directory,
// with no persistence; it dies with the demo (PR_SET_PDEATHSIG).
class redis_process {
 public:
  redis_process() {
    char templ[] = "/tmp/levee-demo-redis-XXXXXX";
    if (!::mkdtemp(templ)) return;
    dir_ = templ;
    const std::string redis = "/usr/bin/redis-server";
    if (::access(redis.c_str(), X_OK) != 0) return;
    const std::string sock = socket_path(), d = dir_.string();
    pid_ = ::fork();
    if (pid_ == 0) {
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() == 1) ::_exit(127);
      ::execl(redis.c_str(), redis.c_str(), "--port", "0", "--unixsocket", sock.c_str(),
              "--unixsocketperm", "700", "--save", "", "--appendonly", "no", "--dir", d.c_str(),
              "--logfile", (d + "/redis.log").c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    for (int i = 0; i < 500 && pid_ > 0 && !std::filesystem::exists(sock); ++i)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ~redis_process() {
    if (pid_ > 0) {
      ::kill(pid_, SIGCONT);
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    std::error_code ignored;
    if (!dir_.empty()) std::filesystem::remove_all(dir_, ignored);
  }
  bool running() const { return pid_ > 0 && std::filesystem::exists(socket_path()); }
  std::string socket_path() const { return (dir_ / "redis.sock").string(); }
  void pause() { ::kill(pid_, SIGSTOP); }
  void resume() { ::kill(pid_, SIGCONT); }

 private:
  std::filesystem::path dir_;
  pid_t pid_ = -1;
};

}  // namespace demo
