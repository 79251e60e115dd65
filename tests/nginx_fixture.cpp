#include "nginx_fixture.hpp"

#include "fixture_support.hpp"

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

bool accepts(std::uint16_t port) {
  asio::io_context ioc;
  tcp::socket s(ioc);
  boost::system::error_code ec;
  s.connect(tcp::endpoint(asio::ip::make_address("127.0.0.1"), port), ec);
  return !ec;
}

std::string find_nginx() {
  return find_program({"/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/bin/nginx"});
}

}  // namespace

nginx_fixture::nginx_fixture(nginx_options options)
    : certs_(flaky::make_test_certificates({"DNS:localhost"})) {
  const std::string nginx = find_nginx();
  if (nginx.empty())
    throw std::runtime_error(
        "nginx not found: install Debian's nginx-light (scripts/levee.sh test does)");
  char templ[] = "/tmp/levee-nginx-XXXXXX";
  if (!::mkdtemp(templ)) throw std::runtime_error("nginx fixture: mkdtemp failed");
  dir_ = templ;
  write_file(dir_ / "cert.pem", certs_.cert_pem);
  write_file(dir_ / "key.pem", certs_.key_pem);
  std::filesystem::create_directories(dir_ / "tmp");
  // Two free ports; nginx binds them a moment later (a collision then is a
  // start failure, retried below).
  for (int attempt = 0; attempt < 5; ++attempt) {
    http_port_ = free_port();
    https_port_ = free_port();
    if (http_port_ == https_port_) continue;
    const std::string d = dir_.string();
    std::ostringstream conf;
    conf << "daemon off;\nmaster_process off;\nworker_processes 1;\n"
         << "error_log " << d << "/error.log warn;\npid " << d << "/nginx.pid;\n"
         << "events { worker_connections 512; }\n"
         << "http {\n  access_log off;\n"
         << "  client_body_temp_path " << d << "/tmp;\n  proxy_temp_path " << d << "/tmp;\n"
         << "  fastcgi_temp_path " << d << "/tmp;\n  uwsgi_temp_path " << d << "/tmp;\n"
         << "  scgi_temp_path " << d << "/tmp;\n"
         << "  keepalive_timeout " << options.keepalive_timeout.count() << "ms;\n"
         << "  keepalive_requests " << options.keepalive_requests << ";\n"
         << "  server {\n    listen 127.0.0.1:" << http_port_ << ";\n"
         << "    listen 127.0.0.1:" << https_port_ << " ssl;\n"
         << "    ssl_certificate " << d << "/cert.pem;\n    ssl_certificate_key " << d
         << "/key.pem;\n"
         << "    location = /503 { return 503 \"sick\\n\"; }\n"
         << "    location = /small { client_max_body_size 1k; return 200 \"ok\\n\"; }\n"
         << "    location / { default_type text/plain; return 200 \"ok\\n\"; }\n  }\n}\n";
    write_file(dir_ / "nginx.conf", conf.str());
    pid_ = ::fork();
    if (pid_ < 0) throw std::runtime_error("nginx fixture: fork failed");
    if (pid_ == 0) {
      // nginx goes with the test process however it ends (a crash, a kill
      // by ctest's timeout), not only through the destructor.
      ::prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (::getppid() == 1) ::_exit(127);  // the parent is already gone
      ::execl(nginx.c_str(), nginx.c_str(), "-p", d.c_str(), "-c", (d + "/nginx.conf").c_str(),
              static_cast<char*>(nullptr));
      ::_exit(127);
    }
    // Up to 5 s for nginx to listen.
    for (int i = 0; i < 500; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        break;  // it exited: a port taken meanwhile, or a bad configuration
      }
      if (accepts(http_port_) && accepts(https_port_)) return;
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
      pid_ = -1;
    }
  }
  const std::string log = read_file(dir_ / "error.log");
  std::filesystem::remove_all(dir_);
  throw std::runtime_error("nginx did not start: " + log);
}

nginx_fixture::~nginx_fixture() {
  if (pid_ > 0) {
    ::kill(pid_, SIGTERM);
    for (int i = 0; i < 200; ++i) {  // up to 2 s, then SIGKILL
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::error_code ignored;
  std::filesystem::remove_all(dir_, ignored);
}

std::string nginx_fixture::http_url(const std::string& target) const {
  return "http://127.0.0.1:" + std::to_string(http_port_) + target;
}

std::string nginx_fixture::https_url(const std::string& host, const std::string& target) const {
  return "https://" + host + ":" + std::to_string(https_port_) + target;
}

}  // namespace levee_test
