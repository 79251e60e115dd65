// levee: an HTTP upstream: a levee::basic_upstream whose endpoints are
// origins, called with levee's HTTP client (docs/upstream.md).
#pragma once

#include <levee/http/classify.hpp>
#include <levee/http/client.hpp>
#include <levee/upstream/upstream.hpp>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/http/verb.hpp>

#include <string>
#include <utility>

namespace levee::http {

/// `o` with levee's HTTP rules where it has none: `classify` (5xx, 429,
/// transport errors and timeouts are failures: they count towards ejection
/// and the breakers) and `retryable` (the same are worth another endpoint).
/// \param o The options to complete.
/// \return `o`, with those two filled in where they were empty.
inline upstream_options upstream_defaults(upstream_options o = {}) {
  if (!o.classify) o.classify = classify;
  if (!o.retryable) o.retryable = retryable;
  return o;
}

namespace detail {

/// One request through the upstream, in the error_code form.
template <class Clock, class WaitTraits>
boost::asio::awaitable<result> upstream_send(basic_upstream<Clock, WaitTraits>& up, client& c,
                                             request req) {
  // `req` moves into the attempts' function (each attempt sends a copy): an
  // attempt can outlive this frame (a probe raced against its deadline whose
  // caller's wait failed to start, timeout/detail/race_launch.hpp).
  auto fn = [&c, req = std::move(req)](const upstream_endpoint& e) {
    return async_send(c, e.address, req, boost::asio::as_tuple(boost::asio::use_awaitable));
  };
  auto call = up(std::move(fn));
  co_return co_await std::move(call);
}

}  // namespace detail

/// Sends `req` (its own target) to the upstream `up`, whose endpoints are
/// origins (`"http://10.0.0.1:8080"`: each has its own connection pool in
/// `c`). Give `up` `upstream_defaults()` so that HTTP outcomes are classified.
///
/// Completion signature: `void(error_code, response)` (`request_signature`):
/// the response of the last attempt, an HTTP error, or a rejection
/// (`error::circuit_open`: the upstream's breaker, or every endpoint's).
/// Never completes inside the call; the token makes the form, as everywhere.
///
/// Cancellation: terminal cancellation of the handler's slot reaches the
/// running attempt. Executor: the call runs on the client's executor (on a
/// strand of its own when the handler has a connected cancellation slot);
/// the handler on its associated executor (default: the client's).
/// Lifetime: `up` and `c` are borrowed and must outlive the operation; `req`
/// is moved in (and copied for each attempt). Thread safety: any thread,
/// concurrently with other calls.
///
/// \param up The upstream.
/// \param c The client whose pools the attempts use.
/// \param req The request.
/// \param token The completion token.
/// \return what the token's `async_result` makes of the operation.
template <class Clock, class WaitTraits,
          BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
              CompletionToken = boost::asio::default_completion_token_t<client::executor_type>>
auto async_upstream_send(
    basic_upstream<Clock, WaitTraits>& up, client& c, request req,
    CompletionToken&& token = boost::asio::default_completion_token_t<client::executor_type>()) {
  return boost::asio::async_initiate<CompletionToken, request_signature>(
      [](auto handler, basic_upstream<Clock, WaitTraits>* u, client* cl, request r) {
        levee::http::detail::client_access::run(
            *cl, detail::upstream_send(*u, *cl, std::move(r)),
            levee::http::detail::request_handler(std::move(handler), cl->get_executor()));
      },
      token, &up, &c, std::move(req));
}

/// GET `target` (`"/path?query"`) on the upstream: as `async_upstream_send`.
/// \param up The upstream.
/// \param c The client.
/// \param target The request target.
/// \param token The completion token.
/// \return what the token's `async_result` makes of the operation.
template <class Clock, class WaitTraits,
          BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature)
              CompletionToken = boost::asio::default_completion_token_t<client::executor_type>>
auto async_upstream_get(
    basic_upstream<Clock, WaitTraits>& up, client& c, std::string target,
    CompletionToken&& token = boost::asio::default_completion_token_t<client::executor_type>()) {
  return async_upstream_send(up, c, request(boost::beast::http::verb::get, target, 11),
                             std::forward<CompletionToken>(token));
}

/// `async_upstream_get(up, c, target, asio::use_awaitable)`: the response,
/// or a thrown `system_error`.
/// \param up The upstream.
/// \param c The client.
/// \param target The request target.
/// \return the response.
template <class Clock, class WaitTraits>
boost::asio::awaitable<response> upstream_get(basic_upstream<Clock, WaitTraits>& up, client& c,
                                              std::string target) {
  co_return co_await async_upstream_get(up, c, std::move(target), boost::asio::use_awaitable);
}

}  // namespace levee::http
