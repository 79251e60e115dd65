// levee: the "levee.http" error category, compiled once in lib/.
#pragma once

#include <levee/http/error.hpp>

#include <boost/system/errc.hpp>

#include <string>

namespace levee::http {
namespace detail {

class http_error_category final : public boost::system::error_category {
 public:
  constexpr http_error_category() noexcept : boost::system::error_category(0x6c65766565000003ull) {}

  const char* name() const noexcept override { return "levee.http"; }

  std::string message(int ev) const override { return message(ev, nullptr, 0); }

  const char* message(int ev, char*, std::size_t) const noexcept override {
    switch (static_cast<error>(ev)) {
      case error::invalid_url:
        return "invalid URL: expected http[s]://host[:port][/path][?query] without spaces or "
               "control characters";
      case error::invalid_request:
        return "invalid request: a control character or space would split or change it; "
               "nothing was sent";
      case error::unexpected_upgrade:
        return "the server switched protocols (101) although the client did not ask for it";
      case error::too_many_interim_responses:
        return "the server sent too many interim (1xx) responses";
      case error::deadline_expired:
        return "the caller's deadline (the request's deadline header) has passed";
      case error::malformed_deadline:
        return "the request's deadline header is not one decimal integer of milliseconds";
    }
    return "unknown levee.http error";
  }

  boost::system::error_condition default_error_condition(int ev) const noexcept override {
    switch (static_cast<error>(ev)) {
      case error::invalid_url:
      case error::invalid_request:
        return boost::system::errc::make_error_condition(boost::system::errc::invalid_argument);
      default:
        break;
    }
    return {ev, *this};
  }
};

}  // namespace detail

const boost::system::error_category& error_category() noexcept {
  static constexpr detail::http_error_category instance;
  return instance;
}

}  // namespace levee::http
