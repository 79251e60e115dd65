// levee: URLs (RFC 3986) and request validation for the HTTP client,
// compiled once in lib/.
#pragma once

#include <levee/http/client.hpp>
#include <levee/http/detail/origin.hpp>
#include <levee/http/error.hpp>

#include <boost/asio/ip/address.hpp>

#include <array>
#include <charconv>
#include <cstring>

namespace levee::http {

namespace {

constexpr bool is_alpha(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
constexpr bool is_digit(char c) noexcept {
  return c >= '0' && c <= '9';
}
constexpr bool is_hex(char c) noexcept {
  return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}
constexpr char lower(char c) noexcept {
  return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}
// The character classes below, one table lookup each (a URL is parsed, and
// a request checked, on every request: bench/README.md, "The response moved
// once").
enum : unsigned char {
  unreserved_class = 1,  // RFC 3986 unreserved
  sub_delim_class = 2,   // RFC 3986 sub-delims
  tchar_class = 4,       // RFC 9110 tchar: what a method or a header name is made of
  visible_class = 8,     // visible ASCII, no space: what a request target may hold on the wire
  path_class = 16,       // what a path and query may hold besides escapes (RFC 3986, 3.3, 3.4)
};
constexpr std::array<unsigned char, 256> char_classes = [] {
  std::array<unsigned char, 256> t{};
  for (int c = 0x21; c < 0x7f; ++c) t[c] |= visible_class;
  for (int c = 0; c < 256; ++c) {
    const char ch = static_cast<char>(c);
    if (is_alpha(ch) || is_digit(ch)) t[c] |= unreserved_class | tchar_class;
  }
  for (char c : std::string_view("-._~")) t[static_cast<unsigned char>(c)] |= unreserved_class;
  for (char c : std::string_view("!$&'()*+,;="))
    t[static_cast<unsigned char>(c)] |= sub_delim_class;
  for (char c : std::string_view("!#$%&'*+-.^_`|~"))
    t[static_cast<unsigned char>(c)] |= tchar_class;
  for (int c = 0; c < 256; ++c)
    if (t[c] & (unreserved_class | sub_delim_class)) t[c] |= path_class;
  for (char c : std::string_view(":@/?%")) t[static_cast<unsigned char>(c)] |= path_class;
  return t;
}();
constexpr bool in_class(char c, unsigned char cls) noexcept {
  return (char_classes[static_cast<unsigned char>(c)] & cls) != 0;
}
constexpr bool is_unreserved(char c) noexcept {
  return in_class(c, unreserved_class);
}
constexpr bool is_tchar(char c) noexcept {
  return in_class(c, tchar_class);
}
constexpr bool is_visible(char c) noexcept {
  return in_class(c, visible_class);
}
constexpr bool is_path_char(char c) noexcept {
  return in_class(c, path_class);
}
// The table against the grammar, written out, for every byte.
constexpr bool classes_match_grammar() {
  for (int i = 0; i < 256; ++i) {
    const char c = static_cast<char>(i);
    const bool alnum = is_alpha(c) || is_digit(c);
    const bool unreserved = alnum || c == '-' || c == '.' || c == '_' || c == '~';
    const bool sub_delim = c == '!' || c == '$' || c == '&' || c == '\'' || c == '(' || c == ')' ||
                           c == '*' || c == '+' || c == ',' || c == ';' || c == '=';
    const bool tchar = alnum || c == '!' || c == '#' || c == '$' || c == '%' || c == '&' ||
                       c == '\'' || c == '*' || c == '+' || c == '-' || c == '.' || c == '^' ||
                       c == '_' || c == '`' || c == '|' || c == '~';
    const bool visible = i > 0x20 && i < 0x7f;
    const bool path =
        unreserved || sub_delim || c == ':' || c == '@' || c == '/' || c == '?' || c == '%';
    if (is_unreserved(c) != unreserved || in_class(c, sub_delim_class) != sub_delim ||
        is_tchar(c) != tchar || is_visible(c) != visible || is_path_char(c) != path)
      return false;
  }
  return true;
}
static_assert(classes_match_grammar());

constexpr bool is_authority_end(char c) noexcept {
  return c == '/' || c == '?' || c == '#';
}

}  // namespace

// One pass over the URL (a URL is parsed on every request made by URL:
// bench/README.md, "The URL split in one pass"): the scheme compared with its
// letters, then every byte checked against a class of visible ASCII as it is
// scanned (the name, the port's digits, the path and query, the fragment,
// which is never sent); an IPv6 literal's bytes are parsed again by Asio.
// tests/http_url_oracle.cpp holds this to the several-scan implementation it
// replaced.
boost::system::error_code parse_url(std::string_view url, url_parts& out) {
  const auto invalid = make_error_code(error::invalid_url);
  const char* p = url.data();
  const char* const e = p + url.size();
  // scheme "://": "http" or "https", in any case.
  const auto letter = [](char c, char l) noexcept { return (c | 0x20) == l; };
  if (url.size() < 7 || !letter(p[0], 'h') || !letter(p[1], 't') || !letter(p[2], 't') ||
      !letter(p[3], 'p'))
    return invalid;
  const bool https = letter(p[4], 's');
  p += https ? 5 : 4;
  if (e - p < 3 || p[0] != ':' || p[1] != '/' || p[2] != '/') return invalid;
  p += 3;

  // authority = host [ ":" port ], up to "/", "?", "#" or the end; no
  // userinfo: "@" is refused in the IP-literal below, and is in no other
  // class of the authority's.
  constexpr std::size_t max_host = 253;  // RFC 1035
  std::array<char, max_host> name;       // a reg-name or IPv4address, lowered
  std::size_t name_size = 0;
  std::string v6_host;
  if (p != e && *p == '[') {  // IP-literal: IPv6 only, no zone
    const char* const literal = ++p;
    while (p != e && *p != ']' && !is_authority_end(*p)) {
      // inet_pton would stop at a NUL. No zone: Asio's make_address_v6
      // reads one after '%' with atoi, so "[::1%zz]" or "[::1%@x]" would
      // parse as "::1" with zone 0 (tests/http_hostile.cpp).
      if (!is_visible(*p) || *p == '@' || *p == '%') return invalid;
      ++p;
    }
    if (p == e || *p != ']') return invalid;
    boost::system::error_code ec;
    const auto v6 = boost::asio::ip::make_address_v6(std::string(literal, p), ec);
    if (ec || v6.scope_id() != 0) return invalid;
    v6_host = v6.to_string();
    ++p;
    if (p != e && *p != ':' && !is_authority_end(*p)) return invalid;
  } else {
    // letters, digits, '-', '.', '_', '~'
    for (; p != e && is_unreserved(*p); ++p) {
      if (name_size == max_host) return invalid;
      name[name_size++] = lower(*p);
    }
    if (name_size == 0 || (p != e && *p != ':' && !is_authority_end(*p))) return invalid;
  }
  std::uint16_t port = https ? 443 : 80;
  if (p != e && *p == ':') {
    // "host:" with an empty port means the default port (RFC 3986, 3.2.3).
    const char* const digits = ++p;
    unsigned value = 0;
    for (; p != e && is_digit(*p); ++p) {
      if (p - digits == 5) return invalid;  // five digits at most (the value: below)
      value = value * 10 + static_cast<unsigned>(*p - '0');
    }
    if (p != e && !is_authority_end(*p)) return invalid;
    if (p != digits) {
      if (value == 0 || value > 65535) return invalid;
      port = static_cast<std::uint16_t>(value);
    }
  }

  // path-abempty [ "?" query ], with complete percent-escapes ("%4", "%zz"
  // are refused); then [ "#" fragment ], never sent.
  const char* const target = p;
  while (p != e && *p != '#') {
    if (!is_path_char(*p)) return invalid;
    if (*p == '%') {
      if (e - p < 3 || !is_hex(p[1]) || !is_hex(p[2])) return invalid;
      p += 2;
    }
    ++p;
  }
  const char* const target_end = p;
  for (; p != e; ++p)
    if (!is_visible(*p)) return invalid;

  // Written in place, with the lengths known (no strlen, no temporary).
  const std::string_view scheme = https ? "https" : "http";
  if (std::string_view(out.scheme) != scheme) out.scheme.assign(scheme);
  if (v6_host.empty()) {
    out.host.assign(name.data(), name_size);
  } else {
    out.host = std::move(v6_host);
  }
  out.port = port;
  if (target == target_end || *target == '?') {
    out.target.assign(1, '/');
    out.target.append(target, target_end);
  } else {
    out.target.assign(target, target_end);
  }
  return {};
}

namespace {
// validate_origin's checks; an IPv6 host's one spelling (RFC 5952) goes to
// `v6_form` when it is given.
boost::system::error_code check_origin(const url_parts& origin, std::string* v6_form) {
  const auto invalid = make_error_code(error::invalid_url);
  if (origin.scheme != "http" && origin.scheme != "https") return invalid;
  if (origin.host.empty() || origin.host.size() > 253 || origin.port == 0) return invalid;
  if (origin.host.find(':') != std::string::npos) {  // an IPv6 literal, no brackets
    boost::system::error_code ec;
    const auto v6 = boost::asio::ip::make_address_v6(origin.host, ec);
    if (ec || v6.scope_id() != 0) return invalid;
    if (v6_form) *v6_form = v6.to_string();
    return {};
  }
  for (char c : origin.host)
    if (!is_unreserved(c) || (c >= 'A' && c <= 'Z')) return invalid;
  return {};
}
}  // namespace

boost::system::error_code validate_origin(const url_parts& origin) {
  return check_origin(origin, nullptr);
}

boost::system::error_code client_detail::canonical_origin(url_parts& origin) {
  std::string v6_form;
  const auto ec = check_origin(origin, &v6_form);
  if (!ec && !v6_form.empty()) origin.host = std::move(v6_form);
  return ec;
}

void client_detail::append_host_header(const url_parts& origin, std::string& out) {
  const bool v6 = origin.host.find(':') != std::string::npos;
  const std::uint16_t default_port = origin.scheme == "https" ? 443 : 80;
  std::array<char, 6> port{':'};  // ":65535" at most
  std::size_t port_size = 0;
  if (origin.port != default_port)
    port_size =
        std::to_chars(port.data() + 1, port.data() + port.size(), origin.port).ptr - port.data();
  // Measured, then written through a pointer: one resize, no append per
  // piece (a request's pool key is written on every request).
  const std::size_t at = out.size();
  out.resize(at + origin.host.size() + (v6 ? 2 : 0) + port_size);
  char* p = out.data() + at;
  if (v6) *p++ = '[';
  std::memcpy(p, origin.host.data(), origin.host.size());
  p += origin.host.size();
  if (v6) *p++ = ']';
  if (port_size) std::memcpy(p, port.data(), port_size);
}

std::string host_header(const url_parts& origin) {
  std::string value;
  client_detail::append_host_header(origin, value);
  return value;
}

boost::system::error_code validate_request(const request& req) {
  const auto invalid = make_error_code(error::invalid_request);
  const auto target = req.target();
  if (target.empty()) return invalid;
  for (char c : target)
    if (!is_visible(c)) return invalid;
  const auto method = req.method_string();
  if (method.empty()) return invalid;
  // No content in a TRACE (RFC 9110, 9.3.8); Beast's prepare_payload throws.
  if (req.method() == boost::beast::http::verb::trace && !req.body().empty()) return invalid;
  for (char c : method)
    if (!is_tchar(c)) return invalid;
  for (const auto& field : req) {
    const auto name = field.name_string();
    if (name.empty()) return invalid;
    for (char c : name)
      if (!is_tchar(c)) return invalid;
    // field-value: visible characters, spaces and tabs, obs-text; never CR,
    // LF, NUL or another control character.
    for (char c : field.value()) {
      const auto u = static_cast<unsigned char>(c);
      if ((u < 0x20 && c != '\t') || u == 0x7f) return invalid;
    }
  }
  return {};
}

}  // namespace levee::http
