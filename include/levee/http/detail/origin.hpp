// levee: an origin in its one spelling, for the HTTP client (defined in
// levee/http/impl/url.ipp beside validate_origin).
#pragma once

#include <levee/http/options.hpp>

#include <boost/system/error_code.hpp>

#include <string>

namespace levee::http::client_detail {

/// `validate_origin`, and an IPv6 host rewritten in its one spelling (RFC
/// 5952, as `parse_url` gives it): one pool, one limit of connections and
/// one Host value per address, however the caller wrote it.
boost::system::error_code canonical_origin(url_parts& origin);

/// `host_header(origin)`, appended to `out`: the pool's key is the scheme,
/// "://" and this, written once, with no string of its own.
void append_host_header(const url_parts& origin, std::string& out);

}  // namespace levee::http::client_detail
