// levee: the Prometheus text format's label escaping and numbers, compiled
// once in lib/ (used by every layer's exposition).
#pragma once

#include <levee/core/detail/prometheus_text.hpp>

#include <cmath>
#include <cstdio>

namespace levee::detail {

// The length of the well-formed UTF-8 sequence at the start of `s`, or 0 if
// it is ill-formed; `bad` is then the length of its maximal ill-formed
// subpart (Unicode 15, section 3.9, "U+FFFD Substitution of Maximal
// Subparts"): the bytes that begin a valid sequence, at least one.
static std::size_t utf8_sequence(std::string_view s, std::size_t& bad) noexcept {
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(s[i]); };
  const unsigned char c = byte(0);
  bad = 1;
  if (c < 0x80) return 1;
  std::size_t n = 0;
  unsigned char low = 0x80, high = 0xBF;  // the range of the second byte
  if (c >= 0xC2 && c <= 0xDF) {
    n = 2;
  } else if (c >= 0xE0 && c <= 0xEF) {
    n = 3;
    if (c == 0xE0) low = 0xA0;   // no overlong forms
    if (c == 0xED) high = 0x9F;  // no surrogates
  } else if (c >= 0xF0 && c <= 0xF4) {
    n = 4;
    if (c == 0xF0) low = 0x90;   // no overlong forms
    if (c == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;  // a continuation byte, C0, C1 or F5..FF
  }
  for (std::size_t i = 1; i < n; ++i) {
    if (i >= s.size()) return 0;
    const unsigned char d = byte(i);
    if (i == 1 ? (d < low || d > high) : (d < 0x80 || d > 0xBF)) return 0;
    bad = i + 1;
  }
  return n;
}

// Label values: valid UTF-8 (each maximal ill-formed subpart becomes U+FFFD,
// so that one bad name cannot make Prometheus reject the whole scrape), with
// backslash, double quote and line feed escaped.
std::string escape(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  while (!v.empty()) {
    std::size_t bad = 0;
    const std::size_t n = utf8_sequence(v, bad);
    if (n == 0) {
      out += "\xEF\xBF\xBD";
      v.remove_prefix(bad);
      continue;
    }
    if (n > 1) {
      out.append(v.substr(0, n));
      v.remove_prefix(n);
      continue;
    }
    const char c = v.front();
    v.remove_prefix(1);
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '"':
        out += "\\\"";
        break;
      case '\n':
        out += "\\n";
        break;
      default:
        out += c;
    }
  }
  return out;
}

std::string number(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buffer[64];
  std::snprintf(buffer, sizeof buffer, "%.17g", v);
  return buffer;
}

std::string number(std::uint64_t v) {
  return std::to_string(v);
}

double seconds(std::chrono::nanoseconds d) {
  return std::chrono::duration<double>(d).count();
}

}  // namespace levee::detail
