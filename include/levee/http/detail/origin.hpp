// levee: an origin in its one spelling, for the HTTP client (defined in
// levee/http/impl/url.ipp beside validate_origin).
#pragma once

#include <levee/http/options.hpp>

#include <boost/system/error_code.hpp>

namespace levee::http::client_detail {

/// `validate_origin`, and an IPv6 host rewritten in its one spelling (RFC
/// 5952, as `parse_url` gives it): one pool, one limit of connections and
/// one Host value per address, however the caller wrote it.
boost::system::error_code canonical_origin(url_parts& origin);

}  // namespace levee::http::client_detail
