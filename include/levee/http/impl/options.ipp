// levee: the validation of the HTTP client's options (`validate(const
// client_options&)`, http/options.hpp). Compiled once in lib/.
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/http/deadline.hpp>
#include <levee/http/options.hpp>

#include <boost/beast/core/string.hpp>
#include <boost/beast/http/field.hpp>

#include <chrono>
#include <stdexcept>

namespace levee::http {

namespace beast = boost::beast;

void validate(const client_options& o) {
  auto reject = [](const char* member, const char* rule) {
    levee::detail::reject_option("client_options", member, rule);
  };
  if (o.max_connections_per_host < 1 || o.max_connections_per_host > 100000)
    reject("max_connections_per_host", "must be in [1, 100000]");
  if (o.timeout <= std::chrono::nanoseconds::zero()) reject("timeout", "must be greater than zero");
  if (o.body_limit < 1) reject("body_limit", "must be at least 1");
  if (o.header_limit < 64 || o.header_limit > (1u << 20))
    reject("header_limit", "must be in [64, 1 MiB]");
  if (o.idle_timeout <= std::chrono::nanoseconds::zero())
    reject("idle_timeout", "must be greater than zero");
  if (o.max_idle_connections > 1000000) reject("max_idle_connections", "must be in [0, 1000000]");
  if (o.send_deadline) {
    deadline_options header_check;
    header_check.header = o.deadline_header;
    try {
      validate(header_check);
    } catch (const std::invalid_argument&) {
      reject("deadline_header", "must be a token (RFC 9110)");
    }
    for (beast::http::field own :
         {beast::http::field::host, beast::http::field::user_agent,
          beast::http::field::content_length, beast::http::field::transfer_encoding,
          beast::http::field::connection}) {
      if (beast::iequals(o.deadline_header, beast::http::to_string(own)))
        reject("deadline_header", "must not be a header the client sets itself");
    }
  }
  for (char c : o.user_agent) {
    const auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f)
      reject("user_agent", "must not hold control characters");
  }
}

}  // namespace levee::http
