/// \file
/// HTTP calls guarded per host by a registry of breakers.
#pragma once

#include <levee/http/client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <string>
#include <utility>

namespace levee::http {

/// GET `url` through the breaker of its host ("host:port") in `registry`
/// (a `basic_breaker_registry`): one sick host opens its own breaker and
/// leaves the others alone. When the registry has adaptive limits
/// (`registry_options::limits`), the call also runs under the host's limit,
/// inside its breaker (README, "Composing levee"). Give the registry's defaults, and
/// its limits, `classifier = levee::http::classify`.
///
/// Completion signature: `void(error_code, response)`: the response, an
/// HTTP error, or a rejection (`error::circuit_open`, `error::limit_exceeded`);
/// a URL that `parse_url` refuses is `error::invalid_url`. Never completes
/// inside the call. As everywhere, the token makes the form:
/// `asio::use_awaitable` throws, `asio::as_tuple(asio::use_awaitable)` does not.
///
/// Cancellation: terminal cancellation of the handler's slot reaches the
/// request (see \ref client::async_request) or the wait for the host's limit.
///
/// Executor: the guarded call runs on the client's executor (on a strand of
/// its own when the handler has a connected cancellation slot); the handler
/// on its associated executor (default: the client's).
///
/// Lifetime: `registry` and `c` are borrowed and must outlive the operation;
/// `url` is moved in.
///
/// Thread safety: any thread, concurrently with other calls.
///
/// \param registry The breakers by host (a `basic_breaker_registry`).
/// \param c The client.
/// \param url The URL.
/// \param token The completion token.
/// \return what `token` makes of the operation (as `asio::async_initiate`).
template <class Registry, BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken =
                              boost::asio::default_completion_token_t<client::executor_type>>
auto async_guarded_get(
    Registry& registry, client& c, std::string url,
    CompletionToken&& token = boost::asio::default_completion_token_t<client::executor_type>());

/// `async_guarded_get(registry, c, url, asio::use_awaitable)`: the response,
/// or a thrown `system_error`.
/// \param registry The breakers by host; borrowed.
/// \param c The client; borrowed.
/// \param url The URL.
/// \return the awaitable.
template <class Registry>
boost::asio::awaitable<response> guarded_get(Registry& registry, client& c, std::string url) {
  co_return co_await async_guarded_get(registry, c, std::move(url), boost::asio::use_awaitable);
}

namespace detail {

/// The guarded call, in the error_code form the breaker classifies.
template <class Registry>
boost::asio::awaitable<result> guarded_get(Registry& registry, client& c, std::string url) {
  url_parts parts;
  if (auto ec = parse_url(url, parts)) co_return result(ec, response());
  const auto guards = registry.guards(parts.host + ":" + std::to_string(parts.port));
  co_return co_await guards(
      async_get(c, std::move(url), boost::asio::as_tuple(boost::asio::use_awaitable)));
}

}  // namespace detail

template <class Registry, BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken>
auto async_guarded_get(Registry& registry, client& c, std::string url, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, request_signature>(
      [](auto handler, Registry* r, client* cl, std::string u) {
        detail::client_access::run(*cl, detail::guarded_get(*r, *cl, std::move(u)),
                                   detail::request_handler(std::move(handler), cl->get_executor()));
      },
      token, &registry, &c, std::move(url));
}

}  // namespace levee::http
