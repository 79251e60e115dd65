/// \file
/// Hedged HTTP requests through levee's client (docs/hedging.md, "HTTP").
#pragma once

#include <levee/hedge/hedge.hpp>
#include <levee/http/classify.hpp>
#include <levee/http/client.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/verb.hpp>

#include <string>
#include <utility>

namespace levee::http {

/// Whether a request with method `v` may be sent twice (RFC 9110, 9.2.2):
/// GET, HEAD, OPTIONS, TRACE, PUT and DELETE; never POST, PATCH or CONNECT.
/// \param v The method.
/// \return whether it is idempotent.
constexpr bool idempotent_method(boost::beast::http::verb v) noexcept {
  using boost::beast::http::verb;
  return v == verb::get || v == verb::head || v == verb::options || v == verb::trace ||
         v == verb::put || v == verb::delete_;
}

namespace detail {

/// A call of the HTTP helpers: `idempotent`, classified by the hedge's
/// classifier, or `levee::http::classify` when it has none.
inline hedge_call http_call(const hedge_options& o, bool idempotent) {
  hedge_call call{.idempotent = idempotent};
  if (!o.classifier) call.classifier = &levee::http::classify;
  return call;
}

}  // namespace detail

/// Sends `req` to `origin` through `h`: each attempt is
/// `async_send(c, origin, req)` on a connection of its own (the pool never
/// lends a busy connection), so a hedge goes to another connection. A
/// losing attempt is cancelled: its connection is closed, never returned to
/// the pool in the middle of a response.
///
/// A request whose method is not idempotent (POST, PATCH), or any request
/// through a hedge whose options say `idempotent = false`, is sent once,
/// never hedged, unless `safe` says the caller knows it may be sent twice
/// (an idempotency key, say).
///
/// Result: the error_code form, `{ec, response}`. A response wins when
/// `levee::http::classify` (or the hedge's own classifier, when it has one)
/// says `success`: a 503, a 429 or a transport error does not win while
/// another attempt runs, which may still succeed; it is the result only
/// when every attempt failed (then the last one to end).
///
/// \param h The hedge; borrowed.
/// \param c The client; borrowed.
/// \param origin The origin (`"http://127.0.0.1:8080"`).
/// \param req The request, copied for each attempt.
/// \param safe Hedge a non-idempotent method anyway.
/// \return the awaitable.
template <class Clock>
boost::asio::awaitable<result> hedged_send(basic_hedge<Clock>& h, client& c, std::string origin,
                                           request req, bool safe = false) {
  const bool idempotent = safe || (h.options().idempotent && idempotent_method(req.method()));
  // No temporary inside the co_await expression: GCC 12 has destroyed such
  // temporaries twice (the call's classifier is a std::function).
  auto call = h(
      [&c, &origin, &req] {
        return async_send(c, origin, req, boost::asio::as_tuple(boost::asio::use_awaitable));
      },
      detail::http_call(h.options(), idempotent));
  co_return co_await std::move(call);
}

/// GET `url` through `h`, as `hedged_send` (hedged when the hedge's
/// options say `idempotent`).
/// \param h The hedge; borrowed.
/// \param c The client; borrowed.
/// \param url The URL.
/// \return the awaitable, `{ec, response}`.
template <class Clock>
boost::asio::awaitable<result> hedged_get(basic_hedge<Clock>& h, client& c, std::string url) {
  co_return co_await h(
      [&c, &url] { return async_get(c, url, boost::asio::as_tuple(boost::asio::use_awaitable)); },
      detail::http_call(h.options(), h.options().idempotent));
}

}  // namespace levee::http
