// levee: error category bodies, compiled once in lib/.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/core/error.hpp>

#include <exception>
#include <stdexcept>
#include <string>

namespace levee {
namespace detail {

class error_category_impl final : public boost::system::error_category {
 public:
  // A fixed id keeps categories equal across shared objects.
  constexpr error_category_impl() noexcept : boost::system::error_category(0x6c65766565000001ull) {}

  const char* name() const noexcept override { return "levee"; }

  std::string message(int ev) const override { return message(ev, nullptr, 0); }

  const char* message(int ev, char*, std::size_t) const noexcept override {
    switch (static_cast<error>(ev)) {
      case error::circuit_open:
        return "circuit breaker is open: the call was rejected without being started";
      case error::bulkhead_full:
        return "bulkhead is full: the call was rejected without being started";
      case error::timeout:
        return "the attempt timed out and was cancelled";
      case error::deadline_exceeded:
        return "the deadline passed and the operation was cancelled";
      case error::limit_exceeded:
        return "concurrency limit reached: the call was rejected without being started";
      case error::throttled:
        return "adaptive throttling shed the call: it was rejected without being started";
      case error::rate_limited:
        return "rate limit reached: the call was rejected without being started";
    }
    return "unknown levee error";
  }

  boost::system::error_condition default_error_condition(int ev) const noexcept override {
    switch (static_cast<error>(ev)) {
      case error::circuit_open:
      case error::bulkhead_full:
      case error::limit_exceeded:
      case error::throttled:
      case error::rate_limited:
        return make_error_condition(condition::rejected);
      case error::timeout:
      case error::deadline_exceeded:
        return make_error_condition(condition::timed_out);
    }
    return {ev, *this};
  }
};

class condition_category_impl final : public boost::system::error_category {
 public:
  constexpr condition_category_impl() noexcept
      : boost::system::error_category(0x6c65766565000002ull) {}

  const char* name() const noexcept override { return "levee.condition"; }

  std::string message(int ev) const override { return message(ev, nullptr, 0); }

  const char* message(int ev, char*, std::size_t) const noexcept override {
    switch (static_cast<condition>(ev)) {
      case condition::rejected:
        return "the call was rejected by levee without being started";
      case condition::timed_out:
        return "the call was cancelled by levee because it took too long";
    }
    return "unknown levee condition";
  }
};

[[noreturn]] void throw_error(error e) {
  throw boost::system::system_error(make_error_code(e));
}

[[noreturn]] void throw_circuit_open(std::chrono::nanoseconds retry_after,
                                     std::string_view breaker) {
  throw circuit_open_error(retry_after, breaker);
}

std::exception_ptr make_circuit_open(std::chrono::nanoseconds retry_after,
                                     std::string_view breaker) noexcept {
  try {
    return std::make_exception_ptr(circuit_open_error(retry_after, breaker));
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace detail

circuit_open_error::circuit_open_error(std::chrono::nanoseconds retry_after,
                                       std::string_view breaker)
    // Unnamed: what() exactly as before; named: prefixed with the name.
    : boost::system::system_error(
          breaker.empty()
              ? boost::system::system_error(make_error_code(error::circuit_open))
              : boost::system::system_error(make_error_code(error::circuit_open),
                                            "levee breaker '" + std::string(breaker) + "'")),
      retry_after_(retry_after),
      breaker_(breaker.empty() ? nullptr : std::make_shared<const std::string>(breaker)) {}

const boost::system::error_category& error_category() noexcept {
  static constexpr detail::error_category_impl instance;
  return instance;
}

const boost::system::error_category& condition_category() noexcept {
  static constexpr detail::condition_category_impl instance;
  return instance;
}

bool is_rejection(const boost::system::error_code& ec) noexcept {
  return ec == condition::rejected;
}

bool is_cancellation(const boost::system::error_code& ec) noexcept {
  return ec == boost::system::errc::operation_canceled;
}

outcome default_classify(const call_result& r) noexcept {
  if (const auto* ec = r.error(); ec && *ec) {
    return is_cancellation(*ec) || is_rejection(*ec) ? outcome::ignored : outcome::failure;
  }
  if (r.threw()) return outcome::failure;
  return outcome::success;
}

namespace detail {
void reject_option(const char* type, const char* member, const char* rule) {
  throw std::invalid_argument(std::string(type) + "::" + member + " " + rule);
}
}  // namespace detail

}  // namespace levee
