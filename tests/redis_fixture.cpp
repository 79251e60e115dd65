#include "redis_fixture.hpp"

#include "fixture_support.hpp"

#include <hiredis/hiredis.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>
#include <csignal>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace levee_test {

namespace {

namespace asio = boost::asio;
using tcp = asio::ip::tcp;

std::string find_redis() {
  return find_program({"/usr/bin/redis-server", "/usr/local/bin/redis-server"});
}

std::string text(const redisReply* r) {
  if (!r) return "(no reply)";
  switch (r->type) {
    case REDIS_REPLY_STRING:
    case REDIS_REPLY_STATUS:
      return std::string(r->str, r->len);
    case REDIS_REPLY_ERROR:
      return "(error) " + std::string(r->str, r->len);
    case REDIS_REPLY_INTEGER:
      return std::to_string(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::string out;
      for (std::size_t i = 0; i < r->elements; ++i) {
        if (i) out += '\n';
        out += text(r->element[i]);
      }
      return out;
    }
  }
  return "(unknown)";
}

}  // namespace

redis_fixture::redis_fixture(redis_options options) : options_(std::move(options)) {
  char templ[] = "/tmp/levee-redis-XXXXXX";
  if (!::mkdtemp(templ)) throw std::runtime_error("redis fixture: mkdtemp failed");
  dir_ = templ;
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = free_port();
    try {
      launch();
      return;
    } catch (const std::runtime_error&) {
      if (attempt == 4) {
        std::error_code ignored;
        const std::string log = read_file(dir_ / "redis.log");
        std::filesystem::remove_all(dir_, ignored);
        throw std::runtime_error("redis-server did not start: " + log);
      }
    }
  }
}

void redis_fixture::launch() {
  const std::string redis = find_redis();
  if (redis.empty())
    throw std::logic_error(
        "redis-server not found: install Debian's redis-server (scripts/levee.sh test does)");
  const std::string d = dir_.string();
  const bool tls = !options_.tls_cert.empty();
  std::vector<std::string> args = {redis,
                                   "--port",
                                   tls ? "0" : std::to_string(port_),
                                   "--bind",
                                   "127.0.0.1",
                                   "--unixsocket",
                                   socket_path(),
                                   "--unixsocketperm",
                                   "700",
                                   "--save",
                                   "",
                                   "--appendonly",
                                   "no",
                                   "--dir",
                                   d,
                                   "--logfile",
                                   d + "/redis.log",
                                   "--daemonize",
                                   "no"};
  if (tls) {
    write_file(dir_ / "cert.pem", options_.tls_cert);
    write_file(dir_ / "key.pem", options_.tls_key);
    write_file(dir_ / "ca.pem", options_.tls_ca);
    args.insert(args.end(), {"--tls-port", std::to_string(port_), "--tls-cert-file",
                             d + "/cert.pem", "--tls-key-file", d + "/key.pem",
                             "--tls-ca-cert-file", d + "/ca.pem", "--tls-auth-clients", "no"});
  }
  if (!options_.password.empty()) {
    args.push_back("--requirepass");
    args.push_back(options_.password);
  }
  pid_ = ::fork();
  if (pid_ < 0) throw std::runtime_error("redis fixture: fork failed");
  if (pid_ == 0) {
    // redis goes with the test process however it ends.
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() == 1) ::_exit(127);
    std::vector<char*> argv;
    for (auto& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    ::execv(redis.c_str(), argv.data());
    ::_exit(127);
  }
  // Up to 5 s for it to answer on the Unix socket (PING, through the password).
  for (int i = 0; i < 500; ++i) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      break;
    }
    if (std::filesystem::exists(socket_path())) {
      const std::string pong = command({"PING"});
      if (pong == "PONG") return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  if (pid_ > 0) kill();
  throw std::runtime_error("redis-server did not start");
}

redis_fixture::~redis_fixture() {
  if (pid_ > 0) {
    ::kill(pid_, SIGCONT);
    kill();
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string redis_fixture::address() const {
  return "127.0.0.1:" + std::to_string(port_);
}

void redis_fixture::pause() {
  if (pid_ > 0) ::kill(pid_, SIGSTOP);
}

void redis_fixture::resume() {
  if (pid_ > 0) ::kill(pid_, SIGCONT);
}

void redis_fixture::kill() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
  std::error_code ignored;
  std::filesystem::remove(socket_path(), ignored);
}

void redis_fixture::restart() {
  kill();
  // The port may linger for a moment: a few attempts.
  for (int attempt = 0;; ++attempt) {
    try {
      launch();
      return;
    } catch (const std::runtime_error&) {
      if (attempt == 20) throw;
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
}

std::string redis_fixture::command(const std::vector<std::string>& argv) const {
  const timeval timeout{1, 0};
  redisContext* c = redisConnectUnixWithTimeout(socket_path().c_str(), timeout);
  if (!c || c->err) {
    std::string e = c ? c->errstr : "no context";
    if (c) redisFree(c);
    return "(error) connect: " + e;
  }
  redisSetTimeout(c, timeout);
  auto run = [&](const std::vector<std::string>& a) {
    std::vector<const char*> p;
    std::vector<std::size_t> n;
    for (const auto& s : a) {
      p.push_back(s.data());
      n.push_back(s.size());
    }
    auto* r = static_cast<redisReply*>(
        redisCommandArgv(c, static_cast<int>(a.size()), p.data(), n.data()));
    std::string out = text(r);
    if (r) freeReplyObject(r);
    return out;
  };
  if (!options_.password.empty()) run({"AUTH", options_.password});
  std::string out = run(argv);
  redisFree(c);
  return out;
}

}  // namespace levee_test
