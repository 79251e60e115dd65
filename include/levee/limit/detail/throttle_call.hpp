// levee: how a throttled call ends: its outcome fed to the window, and a
// rejection in each completion shape.
#pragma once

#include <levee/breaker/detail/window_clock.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/error.hpp>
#include <levee/limit/detail/throttle_window.hpp>

#include <boost/system/system_error.hpp>

#include <exception>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>

namespace levee::detail {

/// The options' classifier on `r` (`default_classify` without one); one that
/// throws makes the call not accepted.
inline outcome throttle_classify(const throttle_options& o, const call_result& r) noexcept {
  if (!o.classifier) return default_classify(r);
  try {
    return o.classifier(r);
  } catch (...) {
    return outcome::failure;
  }
}

/// One admitted call, and the window it reports to when it ends. Abandoned
/// (destroyed without `finish`, e.g. with its io_context): not counted.
template <class Clock>
class throttle_ticket {
 public:
  explicit throttle_ticket(std::shared_ptr<throttle_window> w) noexcept : window_(std::move(w)) {}

  void finish(const call_result& r) noexcept {
    if (!window_) return;
    window_->finish(window_now<Clock>().count(), throttle_classify(window_->options(), r));
    window_.reset();
  }

 private:
  std::shared_ptr<throttle_window> window_;
};

/// The same for the awaitable form's frame, which holds the window by
/// address (throttle_window.hpp: `request_frame`): counted out however the
/// frame ends, and the last one out after the owners deletes the window.
template <class Clock>
class throttle_frame_ticket {
 public:
  explicit throttle_frame_ticket(throttle_window* w) noexcept : window_(w) {}
  throttle_frame_ticket(const throttle_frame_ticket&) = delete;
  throttle_frame_ticket& operator=(const throttle_frame_ticket&) = delete;
  ~throttle_frame_ticket() {
    if (window_) window_->finish_frame(0, outcome::ignored);  // abandoned: not counted
  }

  void finish(const call_result& r) noexcept {
    if (!window_) return;
    throttle_window* const w = std::exchange(window_, nullptr);
    w->finish_frame(window_now<Clock>().count(), throttle_classify(w->options(), r));
  }

 private:
  throttle_window* window_;
};

/// Completes `self` with `ec` in the shape of the signature's arguments:
/// `(ec, T{}...)`, `(exception_ptr(system_error(ec)), T{}...)` or
/// `(tuple{ec, T{}...})`.
template <class... Args>
struct throttle_rejection {
  static constexpr bool supported = false;
};
template <class... Rest>
struct throttle_rejection<boost::system::error_code, Rest...> {
  static constexpr bool supported = (std::is_default_constructible_v<std::decay_t<Rest>> && ...);
  template <class Self>
  static void complete(Self& self, boost::system::error_code ec) {
    self.complete(ec, std::decay_t<Rest>{}...);
  }
};
template <class... Rest>
struct throttle_rejection<std::exception_ptr, Rest...> {
  static constexpr bool supported = (std::is_default_constructible_v<std::decay_t<Rest>> && ...);
  template <class Self>
  static void complete(Self& self, boost::system::error_code ec) {
    self.complete(std::make_exception_ptr(boost::system::system_error(ec)),
                  std::decay_t<Rest>{}...);
  }
};
template <class... Ts>
struct throttle_rejection<std::tuple<boost::system::error_code, Ts...>> {
  static constexpr bool supported = (std::is_default_constructible_v<Ts> && ...);
  template <class Self>
  static void complete(Self& self, boost::system::error_code ec) {
    self.complete(error_tuple<std::tuple<boost::system::error_code, Ts...>>::make(ec));
  }
};

}  // namespace levee::detail
