// libFuzzer target: URLs and requests built from user input. `parse_url` and
// `validate_request` must never crash, and whatever they accept must be
// safe to send: no byte that could end the request line or a header.
//
//   levee-fuzz-url -max_total_time=30 corpus-url/
#include <levee/http/client.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  namespace http = levee::http;
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  http::url_parts url;
  if (!http::parse_url(text, url)) {
    for (char c : url.target)
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) std::abort();  // would split
    if (url.host.empty() || url.port == 0) std::abort();
    const auto host = http::host_header(url);
    for (char c : host)
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) std::abort();
    http::request req(boost::beast::http::verb::get, url.target, 11);
    req.set(boost::beast::http::field::host, host);
    if (http::validate_request(req)) std::abort();  // a parsed URL is always sendable
  }
  // The same bytes as a header value and as a target: accepted only when safe.
  http::request req(boost::beast::http::verb::get, "/", 11);
  req.set("X-Fuzz", text);
  if (!http::validate_request(req)) {
    for (char c : text)
      if (c == '\r' || c == '\n' || c == '\0') std::abort();
  }
  http::request target(boost::beast::http::verb::get, text, 11);
  if (!http::validate_request(target)) {
    for (char c : text)
      if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) std::abort();
  }
  return 0;
}
