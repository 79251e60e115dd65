// levee: how one call runs under a breaker: admission, the call scope that
// records its outcome (or gives its permit back), the coroutine form and the
// completion-token form. Used by `basic_circuit_breaker` (any `Impl` with the
// shell's interface: detail/breaker_shell.hpp).
#pragma once

#include <levee/classify.hpp>
#include <levee/detail/breaker_core.hpp>
#include <levee/detail/result_shape.hpp>
#include <levee/error.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace levee::detail {

namespace asio = boost::asio;

// ---- result shapes ----------------------------------------------------------

/// How a completion signature carries errors, for `async_execute`.
template <class... Args>
struct error_arguments {
  static constexpr bool supported = false;
};
// `throws`: the rejection is an exception (a `circuit_open_error`, made when
// the call is rejected and passed to `reject`); otherwise an error_code.
template <class... Rest>
struct error_arguments<boost::system::error_code, Rest...> {
  static constexpr bool supported = (std::is_default_constructible_v<std::decay_t<Rest>> && ...);
  static constexpr bool throws = false;
  template <class Self>
  static void reject(Self& self, std::exception_ptr) {
    self.complete(make_error_code(error::circuit_open), std::decay_t<Rest>{}...);
  }
};
template <class... Rest>
struct error_arguments<std::exception_ptr, Rest...> {
  static constexpr bool supported = (std::is_default_constructible_v<std::decay_t<Rest>> && ...);
  static constexpr bool throws = true;
  template <class Self>
  static void reject(Self& self, std::exception_ptr rejection) {
    self.complete(std::move(rejection), std::decay_t<Rest>{}...);
  }
};
template <class... Ts>
struct error_arguments<std::tuple<boost::system::error_code, Ts...>> {  // as_tuple
  static constexpr bool supported = (std::is_default_constructible_v<Ts> && ...);
  static constexpr bool throws = false;
  template <class Self>
  static void reject(Self& self, std::exception_ptr) {
    self.complete(error_tuple<std::tuple<boost::system::error_code, Ts...>>::make(
        make_error_code(error::circuit_open)));
  }
};

/// The view of a completion handler's arguments.
inline call_result make_arguments_result(const boost::system::error_code& ec) noexcept {
  return call_result(&ec, &value_lookup<boost::system::error_code>::find, &ec);
}
template <class First, class... Rest>
call_result make_arguments_result(const std::tuple<const First&, const Rest&...>& args) noexcept {
  using view = std::tuple<const First&, const Rest&...>;
  if constexpr (std::is_same_v<First, boost::system::error_code>) {
    return call_result(&args, &value_lookup<view>::find, &std::get<0>(args));
  } else if constexpr (std::is_same_v<First, std::exception_ptr>) {
    if (std::get<0>(args)) return call_result(std::get<0>(args), nullptr);
    return call_result(&args, &value_lookup<view>::find, nullptr);
  } else if constexpr (sizeof...(Rest) == 0) {
    return make_value_result(std::get<0>(args));  // a single value, e.g. an as_tuple tuple
  } else {
    return call_result(&args, &value_lookup<view>::find, nullptr);
  }
}

/// Holds a permit for the length of one call; gives it back if the call is
/// abandoned (its coroutine or handler destroyed before it finished). It also
/// holds the breaker's shared state: the breaker object may be destroyed while
/// the call is in flight (`breaker_core::enter`/`leave`); the state goes with
/// the last call. Nothing touches the state after `leave`.
template <class Impl>
class call_scope {
 public:
  call_scope(Impl& b, permit p) noexcept : b_(&b), p_(p), start_(b.start_time()) {
    b.core().enter();
    if (p.is_probe()) b.probe_admitted(p.generation());
  }
  /// For a caller that measures the call itself (`finish_measured`).
  struct no_clock_t {};
  static constexpr no_clock_t no_clock{};
  call_scope(Impl& b, permit p, no_clock_t) noexcept : b_(&b), p_(p), start_() {
    b.core().enter();
    if (p.is_probe()) b.probe_admitted(p.generation());
  }
  call_scope(call_scope&& other) noexcept
      : b_(other.b_), p_(std::exchange(other.p_, permit())), start_(other.start_) {}
  call_scope& operator=(call_scope&&) = delete;
  ~call_scope() {
    if (p_) {
      b_->abandon(p_);
      b_->leave();
    }
  }

  void finish(outcome o, const call_result* r = nullptr) noexcept {
    if (p_) {
      b_->finish(std::exchange(p_, permit()), o, start_, r);
      b_->leave();
    }
  }
  void finish(const call_result& r) noexcept { finish(b_->classify(r), &r); }
  /// A call that took `elapsed` and ended at `now` (on the breaker's clock).
  void finish_measured(outcome o, nanos elapsed, nanos now, const call_result* r) noexcept {
    if (p_) {
      b_->finish_measured(std::exchange(p_, permit()), o, elapsed, now, r);
      b_->leave();
    }
  }
  /// A call that returned `value`.
  template <class T>
  void finish_value(const T& value) noexcept {
    const outcome o = b_->classify_value(value);
    if (o != outcome::failure) return finish(o);
    const call_result r = make_value_result(value);  // a view, for the last failure
    finish(o, &r);
  }

 private:
  Impl* b_;
  permit p_;
  typename std::remove_cvref_t<decltype(std::declval<Impl&>().start_time())> start_;
};

// ---- the coroutine form -----------------------------------------------------

/// What a call the breaker rejected returns: `{error::circuit_open, U{}...}`
/// for a `std::tuple<error_code, U...>` result; otherwise it throws
/// `circuit_open_error`.
template <class T, class Impl>
T rejected_result(Impl& b) {
  b.rejected();
  if constexpr (is_error_tuple_v<T>) {
    return error_tuple<T>::make(make_error_code(error::circuit_open));
  } else {
    b.throw_rejection();
  }
}

template <class Impl, class T, class Executor>
asio::awaitable<T, Executor> guarded_call(Impl& b, asio::awaitable<T, Executor> aw) {
  const permit p = b.core().try_acquire();
  if (!p) co_return rejected_result<T>(b);
  call_scope<Impl> scope(b, p);
  try {
    if constexpr (std::is_void_v<T>) {
      co_await std::move(aw);
      scope.finish(b.options().classifier ? b.classify(call_result()) : outcome::success);
    } else {
      T value = co_await std::move(aw);
      scope.finish_value(value);
      co_return std::move(value);
    }
  } catch (const boost::system::system_error& e) {
    const boost::system::error_code ec = e.code();
    scope.finish(call_result(std::current_exception(), &ec));
    throw;
  } catch (...) {
    scope.finish(call_result(std::current_exception(), nullptr));
    throw;
  }
}

// ---- the completion-token form ----------------------------------------------

template <class Impl, class Op, class Signature>
class execute_op;

template <class Impl, class Op, class R, class... Args>
class execute_op<Impl, Op, R(Args...)> {
 public:
  execute_op(Impl& b, Op&& op) : b_(&b), op_(std::move(op)) {}

  template <class Self>
  void operator()(Self& self) {
    using arguments = error_arguments<std::decay_t<Args>...>;
    if (rejected_) return arguments::reject(self, std::move(rejection_));
    self.reset_cancellation_state(asio::enable_total_cancellation());
    const permit p = b_->core().try_acquire();
    if (!p) {
      b_->rejected();
      // Made now: the breaker may be gone when the posted completion runs.
      if constexpr (arguments::throws) rejection_ = b_->make_rejection();
      // Never complete inside the initiating function: go through the
      // handler's executor, as Asio's own operations do.
      rejected_ = true;
      return asio::post(std::move(self));
    }
    scope_.emplace(*b_, p);
    Op op = std::move(op_);
    std::move(op)(std::move(self));
  }

  template <class Self, class... As>
  void operator()(Self& self, As&&... args) {
    if (scope_) {
      const std::tuple<const std::decay_t<As>&...> view(args...);
      scope_->finish(make_arguments_result(view));
    }
    self.complete(std::forward<As>(args)...);
  }

 private:
  Impl* b_;
  Op op_;
  std::optional<call_scope<Impl>> scope_;
  std::exception_ptr rejection_;
  bool rejected_ = false;
};

template <class Awaitable>
struct guarded_type {
  // An async operation (e.g. `timer.async_wait(asio::deferred)`): guarded as
  // with `async_execute(op, asio::use_awaitable)`.
  using type = typename asio::async_result<asio::use_awaitable_t<>,
                                           asio::completion_signature_of_t<Awaitable>>::return_type;
};
template <class T, class Executor>
struct guarded_type<asio::awaitable<T, Executor>> {
  using type = asio::awaitable<T, Executor>;
};

}  // namespace levee::detail
