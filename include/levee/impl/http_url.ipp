// levee: URL splitting for the HTTP client, compiled once in lib/.
#pragma once

#include <levee/http/client.hpp>

#include <cctype>
#include <charconv>

namespace levee::http {

boost::system::error_code parse_url(std::string_view url, url_parts& out) {
  const auto invalid = make_error_code(boost::system::errc::invalid_argument);
  constexpr std::string_view scheme = "http://";
  if (url.size() < scheme.size()) return invalid;
  for (std::size_t i = 0; i < scheme.size(); ++i) {
    if (std::tolower(static_cast<unsigned char>(url[i])) != scheme[i]) return invalid;
  }
  url.remove_prefix(scheme.size());
  const auto slash = url.find('/');
  std::string_view authority = url.substr(0, slash);
  out.target = slash == std::string_view::npos ? "/" : std::string(url.substr(slash));
  if (authority.empty() || authority.find('@') != std::string_view::npos) return invalid;
  std::string_view port_text;
  if (authority.front() == '[') {  // [IPv6]:port
    const auto close = authority.find(']');
    if (close == std::string_view::npos) return invalid;
    out.host = std::string(authority.substr(1, close - 1));
    const auto rest = authority.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return invalid;
      port_text = rest.substr(1);
    }
  } else {
    const auto colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port_text = authority.substr(colon + 1);
  }
  if (out.host.empty()) return invalid;
  out.port = 80;
  if (!port_text.empty()) {
    unsigned value = 0;
    const auto [end, ec] =
        std::from_chars(port_text.data(), port_text.data() + port_text.size(), value);
    if (ec != std::errc() || end != port_text.data() + port_text.size() || value == 0 ||
        value > 65535)
      return invalid;
    out.port = static_cast<std::uint16_t>(value);
  }
  return {};
}

}  // namespace levee::http
