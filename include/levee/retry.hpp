// levee: retry policies with backoff, jitter and a shared retry budget.
#pragma once

#include <levee/classify.hpp>
#include <levee/detail/clock_traits.hpp>
#include <levee/detail/random.hpp>
#include <levee/detail/result_shape.hpp>
#include <levee/detail/validate.hpp>
#include <levee/error.hpp>
#include <levee/retry_budget.hpp>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <type_traits>

namespace levee {

/// How a retry delay is randomised (AWS's "Exponential Backoff and Jitter").
/// `base` is `min(max_delay, initial_delay * multiplier^(n-1))` for retry n.
enum class jitter_kind : std::uint8_t {
  none,          ///< exactly `base`
  full,          ///< uniform in [0, base]
  equal,         ///< base / 2 + uniform in [0, base / 2]
  decorrelated,  ///< min(max_delay, uniform in [initial_delay, 3 * previous delay])
};

/// A retry policy's settings. Plain struct, a default on every member;
/// `basic_retry_policy` validates it.
struct retry_options {
  /// Attempts in all, the first one included. >= 1. Three: the first call and
  /// two retries.
  std::size_t max_attempts = 3;
  /// Base delay before the first retry. >= 0. Every delay option works up to
  /// `nanoseconds::max()`: delays saturate there (a wait "for ever"), never
  /// overflow.
  std::chrono::nanoseconds initial_delay = std::chrono::milliseconds(100);
  /// Growth of the base delay per retry. In [1, 100].
  double multiplier = 2.0;
  /// Cap of every delay. >= initial_delay.
  std::chrono::nanoseconds max_delay = std::chrono::seconds(10);
  /// Randomisation of each delay.
  jitter_kind jitter = jitter_kind::full;
  /// Seed of the jitter. 0 (the default) picks one at random; tests set it to
  /// get the same delays on every run.
  std::uint64_t seed = 0;
  /// Cap of a server's Retry-After hint. >= 0.
  std::chrono::nanoseconds max_retry_after = std::chrono::seconds(60);
  /// Which outcomes are worth another attempt. Empty: `default_retryable`.
  std::function<bool(const call_result&)> retryable = {};
  /// A delay the downstream asked for (HTTP Retry-After), which replaces the
  /// computed one (capped by `max_retry_after`). Empty: no hints.
  std::function<std::optional<std::chrono::nanoseconds>(const call_result&)> retry_after = {};
  /// A budget shared by many callers; null: unlimited (up to max_attempts).
  /// An operation deposits a success in it only when its last outcome is one
  /// that `retryable` would not retry and that is neither an exception nor a
  /// non-zero error_code: giving up on a retryable outcome (a 503 with
  /// `levee::http::retryable`, however many attempts it took) earns nothing.
  std::shared_ptr<retry_budget> budget = {};
};

/// Throws `std::invalid_argument` naming the first invalid member.
void validate(const retry_options& options);

/// The default retry predicate: retry failures (an exception, or a non-zero
/// error_code such as a transport error or `error::timeout`), but never a
/// levee rejection (`circuit_open`, `bulkhead_full`: the downstream was not
/// called, and hammering a breaker that said no defeats it), a cancellation,
/// or `deadline_exceeded`. The HTTP layer adds 5xx and 429, and excludes other
/// 4xx.
bool default_retryable(const call_result& r) noexcept;

/// The delays of one retried operation, in order. Made by
/// `basic_retry_policy::schedule()`; exposed so that tests and tools can see
/// exactly which delays a policy produces.
class retry_schedule {
 public:
  retry_schedule(const retry_options& options, std::uint64_t seed) noexcept
      : options_(&options), rng_{seed}, previous_(options.initial_delay) {}

  /// The delay before the next retry, given how the last attempt ended (for a
  /// Retry-After hint).
  std::chrono::nanoseconds next(const call_result& last);
  /// The same without a result to read hints from.
  std::chrono::nanoseconds next() { return next(call_result()); }
  /// Retries scheduled so far.
  std::size_t retries() const noexcept { return retries_; }

 private:
  const retry_options* options_;
  detail::splitmix64 rng_;
  std::chrono::nanoseconds previous_;
  std::size_t retries_ = 0;
};

/// A validated retry policy, shared by every operation that uses it. `Clock`
/// times the delays between attempts and the budget's window
/// (`basic_retry_policy<manual_clock>` in tests). Thread-safe.
template <class Clock = std::chrono::steady_clock>
class basic_retry_policy {
 public:
  using clock_type = Clock;

  /// Throws `std::invalid_argument` naming the member when `options` is invalid.
  explicit basic_retry_policy(retry_options options = {})
      : options_(detail::checked(std::move(options))),
        seed_(options_.seed != 0 ? options_.seed : detail::random_seed()) {}

  const retry_options& options() const noexcept { return options_; }

  /// The delays of the next operation. With a fixed seed, the n-th operation
  /// started on this policy always gets the same delays.
  retry_schedule schedule() noexcept {
    return retry_schedule(options_, seed_ + 0x632be59bd9b4e019ull * operations_.fetch_add(1));
  }

  bool retryable(const call_result& r) const {
    if (!options_.retryable) return default_retryable(r);
    return options_.retryable(r);
  }

  /// The budget's view of time: this policy's clock.
  static std::chrono::nanoseconds now() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
  }

 private:
  retry_options options_;
  std::uint64_t seed_;
  std::atomic<std::uint64_t> operations_{0};
};

using retry_policy = basic_retry_policy<>;

namespace detail {

namespace asio = boost::asio;

/// What the retry loop does after an attempt.
enum class retry_step { done, again };

template <class Clock>
retry_step decide(basic_retry_policy<Clock>& policy, retry_schedule& schedule, std::size_t attempt,
                  const call_result& r, std::chrono::nanoseconds& delay) {
  const retry_options& o = policy.options();
  const bool retryable = policy.retryable(r);
  if (attempt >= o.max_attempts || !retryable) {
    // Only a real success earns retries: judged by the same predicate as the
    // retries (an operation that gave up on a 503 did not succeed), and never
    // an error_code or an exception.
    if (o.budget && !retryable && default_classify(r) == outcome::success) {
      o.budget->deposit(policy.now());
    }
    return retry_step::done;
  }
  if (o.budget && !o.budget->try_withdraw(policy.now())) return retry_step::done;
  delay = schedule.next(r);
  return retry_step::again;
}

template <class Clock, class T, class Executor, class Factory>
asio::awaitable<T, Executor> retry_loop(basic_retry_policy<Clock>& policy, Factory factory) {
  retry_schedule schedule = policy.schedule();
  std::optional<asio::basic_waitable_timer<Clock, wait_traits_of_t<Clock>, Executor>> timer;
  for (std::size_t attempt = 1;; ++attempt) {
    std::chrono::nanoseconds delay{};
    try {
      if constexpr (std::is_void_v<T>) {
        co_await factory();
        if (decide(policy, schedule, attempt, call_result(), delay) == retry_step::done) co_return;
      } else {
        T value = co_await factory();
        if (decide(policy, schedule, attempt, make_value_result(value), delay) == retry_step::done)
          co_return value;
      }
    } catch (const boost::system::system_error& e) {
      const boost::system::error_code ec = e.code();
      if (decide(policy, schedule, attempt, call_result(std::current_exception(), &ec), delay) ==
          retry_step::done)
        throw;
    } catch (...) {
      if (decide(policy, schedule, attempt, call_result(std::current_exception(), nullptr),
                 delay) == retry_step::done)
        throw;
    }
    // Wait, then try again. The caller's cancellation ends the wait (and the
    // operation) with operation_aborted.
    if (!timer) timer.emplace(co_await asio::this_coro::executor);
    timer->expires_after(std::chrono::ceil<typename Clock::duration>(delay));
    co_await timer->async_wait(asio::use_awaitable_t<Executor>{});
  }
}

}  // namespace detail

/// Retries an operation: `co_await retry(policy, [&] { return breaker(http_get(...)); })`.
///
/// An awaitable runs once, so `retry` takes a factory: a callable that returns
/// a fresh `asio::awaitable<T, Executor>` for each attempt. After an attempt:
/// - it is returned (or its exception rethrown) unchanged when it succeeded,
///   when the policy's predicate says it is not worth retrying, when it was the
///   last of `max_attempts`, or when the budget has no retry left;
/// - otherwise `retry` waits for the schedule's next delay (or a Retry-After
///   hint) on a timer of the policy's clock and calls the factory again.
///
/// Works alike for the exception form and the `std::tuple<error_code, U...>`
/// form: the tuple's error_code decides, and the last tuple is returned.
///
/// Cancellation: the caller's cancellation reaches the running attempt or the
/// waiting timer; the operation then ends with `operation_aborted`.
template <class Clock, class Factory, class Awaitable = std::invoke_result_t<Factory&>,
          class Traits = detail::awaitable_traits<Awaitable>>
requires Traits::is_awaitable Awaitable retry(basic_retry_policy<Clock>& policy, Factory factory) {
  return detail::retry_loop<Clock, typename Traits::value_type, typename Traits::executor_type>(
      policy, std::move(factory));
}

/// The completion-token form of `retry`: runs it on `ex` and completes with
/// `void(std::exception_ptr, T)` (`void(std::exception_ptr)` for void) through
/// any completion token, as `co_spawn` does. `T` must be default-constructible.
template <class Executor, class Clock, class Factory, class CompletionToken>
auto async_retry(const Executor& ex, basic_retry_policy<Clock>& policy, Factory factory,
                 CompletionToken&& token) {
  return boost::asio::co_spawn(ex, retry(policy, std::move(factory)),
                               std::forward<CompletionToken>(token));
}

}  // namespace levee
