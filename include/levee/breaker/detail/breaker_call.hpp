// levee: how one call runs under a breaker: admission, the call scope that
// records its outcome (or gives its permit back), the coroutine form and the
// completion-token form. Used by `basic_circuit_breaker` (any `Impl` with the
// shell's interface: breaker/detail/breaker_shell.hpp).
#pragma once

#include <levee/breaker/detail/breaker_core.hpp>
#include <levee/breaker/detail/call_arguments.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/own_frame.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/error.hpp>
#include <levee/timeout/timeout.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/as_tuple.hpp>
#include <boost/asio/associated_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/bind_cancellation_slot.hpp>
#include <boost/asio/cancellation_type.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <memory>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>

namespace levee::detail {

namespace asio = boost::asio;

/// Holds a permit for the length of one call; gives it back if the call is
/// abandoned (its coroutine or handler destroyed before it finished). It also
/// holds the breaker's shared state: the breaker object may be destroyed while
/// the call is in flight (`breaker_core::enter`/`leave`); the state goes with
/// the last call. Nothing touches the state after `leave`.
template <class Impl>
class call_scope {
 public:
  [[gnu::always_inline]] call_scope(Impl& b, permit p) noexcept
      : b_(&b), p_(p), start_(b.start_time()) {
    b.core().enter();
    if (p.first_probe()) [[unlikely]]
      b.round_started(p.generation());
  }
  /// For a caller that measures the call itself (`finish_measured`).
  struct no_clock_t {};
  static constexpr no_clock_t no_clock{};
  call_scope(Impl& b, permit p, no_clock_t) noexcept : b_(&b), p_(p), start_() {
    b.core().enter();
    if (p.first_probe()) [[unlikely]]
      b.round_started(p.generation());
  }
  call_scope(call_scope&& other) noexcept
      : b_(other.b_),
        p_(std::exchange(other.p_, permit())),
        start_(other.start_),
        expired_(std::exchange(other.expired_, false)) {}
  call_scope& operator=(call_scope&&) = delete;
  // Inline: after `finish` (the common case) it only tests two members.
  [[gnu::always_inline]] ~call_scope() {
    if (p_ || expired_) [[unlikely]]
      abandon();
  }

  [[gnu::always_inline]] void finish(outcome o, const call_result* r = nullptr) noexcept {
    if (p_) {
      b_->finish_and_leave(std::exchange(p_, permit()), o, start_, r);
    } else if (std::exchange(expired_, false)) {
      b_->leave();
    }
  }
  /// The probe's deadline passed (`probe_timeout`): records it as a failed
  /// probe now, with `error::timeout`; the call still holds the shared state
  /// until it returns, and its outcome then changes nothing.
  void expire() noexcept {
    if (!p_) return;
    const boost::system::error_code ec = make_error_code(error::timeout);
    const call_result r = make_arguments_result(ec);
    // No clock read: a probe's failure needs neither its duration nor the time.
    b_->finish_measured(std::exchange(p_, permit()), outcome::failure, nanos::zero(), nanos::zero(),
                        &r);
    expired_ = true;
  }
  void finish(const call_result& r) noexcept { finish(b_->classify(r), &r); }
  /// A call that took `elapsed` and ended at `now` (on the breaker's clock).
  void finish_measured(outcome o, nanos elapsed, nanos now, const call_result* r) noexcept {
    if (p_) {
      b_->sample_measured(o, elapsed);
      b_->finish_measured(std::exchange(p_, permit()), o, elapsed, now, r);
      b_->leave();
    } else if (std::exchange(expired_, false)) {
      b_->leave();
    }
  }
  /// A call that returned `value`.
  template <class T>
  [[gnu::always_inline]] void finish_value(const T& value) noexcept {
    const outcome o = b_->classify_value(value);
    if (o != outcome::failure) return finish(o);
    const call_result r = make_value_result(value);  // a view, for the last failure
    finish(o, &r);
  }

 private:
  [[gnu::noinline]] void abandon() noexcept {
    if (p_) {
      b_->abandon(p_);
      b_->leave();
    } else if (expired_) {
      b_->leave();
    }
  }

  Impl* b_;
  permit p_;
  typename std::remove_cvref_t<decltype(std::declval<Impl&>().start_time())> start_;
  bool expired_ = false;  // `expire` recorded the outcome; the state is still held
};

// ---- a probe's deadline -----------------------------------------------------

/// The race's timeout hook for a probe: records the failed probe at the
/// deadline, before the call is cancelled (on the race's strand, while the
/// guarded call's frame waits for the race; a race whose caller was not yet
/// waiting as its timer fired runs it as the wait arrives, before the
/// caller resumes: timeout/detail/race_launch.hpp).
template <class Impl>
struct probe_expired {
  call_scope<Impl>* scope;
  void operator()() const noexcept { scope->expire(); }
};

/// `aw` itself, or for a probe with a deadline (`Impl::probe_timeout`), `aw`
/// raced against it (levee's with_timeout mechanism, timeout/detail/race.hpp):
/// at the deadline the probe fails (the breaker reopens at once, or as the
/// caller's wait reaches the race when it had not yet: race_launch.hpp), the call is
/// cancelled and, once it has returned, reports `error::timeout`. Only probes
/// pay for it (a frame, a strand, a timer); a CLOSED call's `aw` is moved.
template <class Impl, class T, class Executor>
[[gnu::noinline]] asio::awaitable<T, Executor> race_probe_deadline(
    Impl& b, call_scope<Impl>& scope, asio::awaitable<T, Executor> aw) {
  // A call on an executor that cannot be serialised is never raced: an
  // explicit deadline refused it before its permit (`refuse_probe_race`), the
  // automatic one is not applied to it.
  if constexpr (!can_serialize<Executor>) {
    return aw;
  } else {
    const nanos limit = b.probe_timeout();
    if (limit == nanos::max()) return aw;
    return race_timer<typename Impl::clock_type>(limit, std::move(aw), error::timeout,
                                                 probe_expired<Impl>{&scope});
  }
}

/// Refuses, before it takes a permit, a call on an executor that cannot be
/// serialised (`can_serialize`: `asio::io_context::executor_type`, ...) when
/// the breaker's probes have an explicit deadline (`probe_timeout` neither
/// zero nor `nanoseconds::max()`): its probes could not be raced against it
/// safely on a multi-threaded context (timeout/detail/race.hpp). Every such
/// call is refused, CLOSED ones too, so that the refusal comes with the first
/// call, not with the first probe after an outage. With the automatic
/// deadline (zero) such calls run, their probes without a deadline.
template <class Executor, class Impl>
void refuse_probe_race(const Impl& b) {
  if constexpr (!can_serialize<Executor>) {
    const nanos limit = b.options().probe_timeout;
    if (limit != nanos::zero() && limit != nanos::max())
      refuse_unserialisable("levee::circuit_breaker with breaker_options::probe_timeout");
  }
}

template <class Impl, class T, class Executor>
[[gnu::always_inline]] inline asio::awaitable<T, Executor> probe_bounded(
    Impl& b, call_scope<Impl>& scope, permit p, asio::awaitable<T, Executor> aw) {
  if (!p.is_probe()) [[likely]]
    return aw;
  return race_probe_deadline(b, scope, std::move(aw));  // out of line: the CLOSED path stays small
}

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
asio::awaitable<T, Executor> guarded_call(own_frame_t, Impl& b, asio::awaitable<T, Executor> aw) {
  refuse_probe_race<Executor>(b);
  const permit p = b.core().try_acquire();
  if (!p) co_return rejected_result<T>(b);
  call_scope<Impl> scope(b, p);
  try {
    if constexpr (std::is_void_v<T>) {
      co_await probe_bounded(b, scope, p, std::move(aw));
      scope.finish(b.options().classifier ? b.classify(call_result()) : outcome::success);
    } else {
      T value = co_await probe_bounded(b, scope, p, std::move(aw));
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
    if (p.is_probe()) [[unlikely]] {
      if (const nanos limit = b_->probe_timeout(); limit != nanos::max())
        return start_probe(self, limit);
    }
    Op op = std::move(op_);
    std::move(op)(std::move(self));
  }

  // A probe with a deadline: the operation runs as a child coroutine raced
  // against the deadline (timeout/detail/race.hpp, as `probe_bounded`), and its
  // completion comes back here as a `probe_result`. The call scope moves to
  // the heap, where the race's timeout hook can reach it.
  using values = std::tuple<std::decay_t<Args>...>;
  struct probe_result {
    std::unique_ptr<call_scope<Impl>> scope;
    std::exception_ptr error;
    std::optional<values> result;
    bool timed_out = false;
  };

  template <class Self>
  void start_probe(Self& self, nanos limit) {
    using executor = asio::any_io_executor;
    const executor ex = asio::get_associated_executor(self, b_->get_executor());
    auto call = [](Op op) -> asio::awaitable<values, executor> {
      co_return co_await std::move(op)(asio::as_tuple(asio::use_awaitable_t<executor>{}));
    }(std::move(op_));
    auto scope = std::make_unique<call_scope<Impl>>(std::move(*scope_));
    scope_.reset();
    const probe_expired<Impl> hook{scope.get()};
    auto slot = self.get_cancellation_state().slot();
    auto handler = asio::bind_cancellation_slot(
        slot, [self = std::move(self), scope = std::move(scope)](
                  std::exception_ptr e, std::optional<values> v, bool timed_out) mutable {
          self(probe_result{std::move(scope), std::move(e), std::move(v), timed_out});
        });
    using race = race_op<typename Impl::clock_type, executor, std::optional<values>,
                         decltype(handler), probe_expired<Impl>>;
    std::make_shared<race>(std::move(handler), ex, serial_executor(ex), hook)
        ->start(std::move(call), limit);
  }

  template <class Self>
  void operator()(Self& self, probe_result r) {
    using arguments = error_arguments<std::decay_t<Args>...>;
    if (r.timed_out) {
      r.scope->finish(outcome::failure);  // recorded at the deadline: only leaves
      return arguments::timed_out(self);
    }
    if (r.error) {  // the operation's initiation threw
      boost::system::error_code thrown;
      r.scope->finish(exception_result(r.error, thrown));
      std::rethrow_exception(r.error);
    }
    std::apply(
        [&](auto&... a) {
          const std::tuple<const std::decay_t<Args>&...> view(a...);
          boost::system::error_code thrown;
          r.scope->finish(make_arguments_result(view, thrown));
        },
        *r.result);
    std::apply([&](auto&... a) { self.complete(std::move(a)...); }, *r.result);
  }

  template <class Self, class... As>
  void operator()(Self& self, As&&... args) {
    if (scope_) {
      const std::tuple<const std::decay_t<As>&...> view(args...);
      boost::system::error_code thrown;
      scope_->finish(make_arguments_result(view, thrown));
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
