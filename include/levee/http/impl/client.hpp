// levee: the HTTP client's operations, as templates on the completion token
// (included by levee/http/client.hpp). Each initiation erases the handler's
// type and hands it to a non-template entry point compiled once in lib/
// (http/impl/request.ipp), as Boost.Redis does.
#pragma once

#include <boost/asio/any_completion_handler.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/beast/http/verb.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <utility>

namespace levee::http {
namespace detail {

using any_request_handler = boost::asio::any_completion_handler<request_signature>;

/// A request's handler, its type erased, with its associated executor
/// (default: the client's), read before the erasure.
struct request_handler {
  template <class Handler>
  request_handler(Handler&& h, const boost::asio::any_io_executor& fallback)
      : executor(boost::asio::get_associated_executor(h, fallback)),
        handler(std::forward<Handler>(h)) {}
  boost::asio::any_io_executor executor;
  any_request_handler handler;
};

class dns_resolver;

/// The non-template entry points of the client's operations.
struct client_access {
  /// The client's resolver (its `dns_servers`), sharing the client's state
  /// (`levee::http::basic_name_watch` keeps it as a weak pointer).
  static std::shared_ptr<dns_resolver> resolver(client& c);
  /// Runs `aw` as the operation that completes `h` (on a strand of the client's).
  static void run(client& c, boost::asio::awaitable<result> aw, request_handler h);
  /// `client::async_request`; no `timeout`: the client's.
  static void start(client& c, url_parts origin, http::request req,
                    std::optional<std::chrono::nanoseconds> timeout, request_handler h);
  /// `async_get`, `async_head`.
  static void start(client& c, std::string url, boost::beast::http::verb method, request_handler h);
  /// `async_send`.
  static void start_send(client& c, std::string origin, http::request req, request_handler h);
};

/// The initiation of `async_request`, `async_get` and `async_head`: erases
/// the handler's type and calls `client_access::start`.
struct initiate_request {
  template <class Handler, class... Args>
  void operator()(Handler&& handler, client* c, Args&&... args) const {
    client_access::start(*c, std::forward<Args>(args)...,
                         request_handler(std::forward<Handler>(handler), c->get_executor()));
  }
};

}  // namespace detail

template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken>
auto client::async_request(url_parts origin, request req, std::chrono::nanoseconds timeout,
                           CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, request_signature>(
      detail::initiate_request{}, token, this, std::move(origin), std::move(req),
      std::optional<std::chrono::nanoseconds>(timeout));
}

template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken>
auto client::async_request(url_parts origin, request req, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, request_signature>(
      detail::initiate_request{}, token, this, std::move(origin), std::move(req),
      std::optional<std::chrono::nanoseconds>());
}

template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken>
auto client::async_request(std::string host, std::uint16_t port, request req,
                           std::chrono::nanoseconds timeout, CompletionToken&& token) {
  url_parts origin;
  origin.host = std::move(host);
  origin.port = port;
  return async_request(std::move(origin), std::move(req), timeout,
                       std::forward<CompletionToken>(token));
}

template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken>
auto client::async_request(std::string host, std::uint16_t port, request req,
                           CompletionToken&& token) {
  url_parts origin;
  origin.host = std::move(host);
  origin.port = port;
  return async_request(std::move(origin), std::move(req), std::forward<CompletionToken>(token));
}

template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken>
auto async_get(client& c, std::string url, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, request_signature>(
      detail::initiate_request{}, token, &c, std::move(url), boost::beast::http::verb::get);
}

template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken>
auto async_head(client& c, std::string url, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, request_signature>(
      detail::initiate_request{}, token, &c, std::move(url), boost::beast::http::verb::head);
}

template <BOOST_ASIO_COMPLETION_TOKEN_FOR(request_signature) CompletionToken>
auto async_send(client& c, std::string origin, request req, CompletionToken&& token) {
  return boost::asio::async_initiate<CompletionToken, request_signature>(
      [](auto handler, client* cl, std::string o, request r) {
        detail::client_access::start_send(
            *cl, std::move(o), std::move(r),
            detail::request_handler(std::move(handler), cl->get_executor()));
      },
      token, &c, std::move(origin), std::move(req));
}

}  // namespace levee::http
