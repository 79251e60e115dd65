// levee: HTTP calls guarded per host by a registry of breakers.
#pragma once

#include <levee/http/client.hpp>

#include <boost/asio/awaitable.hpp>

#include <string>

namespace levee::http {

/// GET `url` through the breaker of its host ("host:port") in `registry`
/// (a `basic_breaker_registry`), error_code form: one sick host opens its
/// own breaker and leaves the others alone. When the registry has adaptive
/// limits (`registry_options::limits`), the call also runs under the host's
/// limit, inside its breaker (DESIGN.md's order). Give the registry's
/// defaults, and its limits, `classifier = levee::http::classify`.
template <class Registry>
boost::asio::awaitable<result> guarded_get(Registry& registry, client& c, std::string url,
                                           nothrow_t) {
  url_parts parts;
  if (auto ec = parse_url(url, parts)) co_return result(ec, response());
  const auto guards = registry.guards(parts.host + ":" + std::to_string(parts.port));
  co_return co_await guards(http_get(c, std::move(url), nothrow));
}

/// The same, exception form.
template <class Registry>
boost::asio::awaitable<response> guarded_get(Registry& registry, client& c, std::string url) {
  auto [ec, res] = co_await guarded_get(registry, c, std::move(url), nothrow);
  if (ec) throw boost::system::system_error(ec);
  co_return std::move(res);
}

}  // namespace levee::http
