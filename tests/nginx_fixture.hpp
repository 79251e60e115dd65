// A real nginx (Debian's nginx-light) on 127.0.0.1, plain and TLS, started
// and stopped by the test: free ports, a generated configuration and a CA and
// certificate made at test time, bounded waits, stopped even when a test
// fails (the destructor).
#pragma once

#include <flaky/tls.hpp>

#include <sys/types.h>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <string>

namespace levee_test {

struct nginx_options {
  /// nginx's `keepalive_timeout` and `keepalive_requests`.
  std::chrono::milliseconds keepalive_timeout{1000};
  int keepalive_requests = 1000;
};

class nginx_fixture {
 public:
  /// Starts nginx; throws `std::runtime_error` with nginx's error log when it
  /// cannot (the binary missing: install `nginx-light`).
  explicit nginx_fixture(nginx_options options = {});
  ~nginx_fixture();
  nginx_fixture(const nginx_fixture&) = delete;
  nginx_fixture& operator=(const nginx_fixture&) = delete;

  std::uint16_t http_port() const { return http_port_; }
  std::uint16_t https_port() const { return https_port_; }
  /// The certificate names "localhost" only (not 127.0.0.1).
  const flaky::test_certificates& certificates() const { return certs_; }
  std::string http_url(const std::string& target = "/") const;
  std::string https_url(const std::string& host, const std::string& target = "/") const;

 private:
  std::filesystem::path dir_;
  flaky::test_certificates certs_;
  std::uint16_t http_port_ = 0, https_port_ = 0;
  pid_t pid_ = -1;
};

}  // namespace levee_test
