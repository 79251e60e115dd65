// Checks a Prometheus exposition with promtool, when it is installed.
#pragma once

#include <catch2/catch.hpp>

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include <unistd.h>

namespace levee_test {

/// Whether `promtool check metrics` accepts `text` (true, with a warning,
/// when promtool is not installed).
inline bool promtool_clean(const std::string& text) {
  if (::access("/usr/bin/promtool", X_OK) != 0) {
    WARN("promtool not found: exposition not checked");
    return true;
  }
  char path[] = "/tmp/levee-prom-XXXXXX";
  const int fd = ::mkstemp(path);
  if (fd < 0) return false;
  ::close(fd);
  std::ofstream(path) << text;
  const std::string cmd = std::string("/usr/bin/promtool check metrics < ") + path + " 2>&1";
  const int rc = std::system(cmd.c_str());
  std::remove(path);
  return rc == 0;
}

}  // namespace levee_test
