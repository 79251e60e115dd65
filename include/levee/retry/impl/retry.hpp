// levee: the retry loop and `retry`'s template bodies (included by levee/retry.hpp).
#pragma once

#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/unserialisable.hpp>
#include <levee/timeout/detail/spawn.hpp>

#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

namespace levee {
namespace detail {

namespace asio = boost::asio;

/// The policy's counters, for the retry loops (`retry`'s and the pipeline's).
struct retry_access {
  template <class Clock>
  static void count(std::atomic<std::uint64_t> basic_retry_policy<Clock>::*counter,
                    basic_retry_policy<Clock>& policy) noexcept {
    (policy.*counter).fetch_add(1, std::memory_order_relaxed);
  }
  /// An attempt starts: the operation's first one, or a retry (operations
  /// are counted by `schedule()`, once per operation).
  template <class Clock>
  static void attempt(basic_retry_policy<Clock>& policy, std::size_t attempt) noexcept {
    count(&basic_retry_policy<Clock>::attempts_, policy);
    if (attempt > 1) count(&basic_retry_policy<Clock>::retries_, policy);
  }
  template <class Clock>
  static void refused(basic_retry_policy<Clock>& policy) noexcept {
    count(&basic_retry_policy<Clock>::budget_refusals_, policy);
  }
  template <class Clock>
  static void exhausted(basic_retry_policy<Clock>& policy) noexcept {
    count(&basic_retry_policy<Clock>::exhausted_, policy);
  }
};

/// What the retry loop does after an attempt.
enum class retry_step { done, again };

template <class Clock>
retry_step decide(basic_retry_policy<Clock>& policy, retry_schedule& schedule, std::size_t attempt,
                  const call_result& r, std::chrono::nanoseconds& delay) {
  const retry_options& o = policy.options();
  const bool retryable = policy.retryable(r);
  if (attempt >= o.max_attempts || !retryable) {
    if (retryable) retry_access::exhausted(policy);
    // Only a real success earns retries: judged by the same predicate as the
    // retries (an operation that gave up on a 503 did not succeed), and never
    // an error_code or an exception.
    if (o.budget && !retryable && default_classify(r) == outcome::success) {
      o.budget->deposit(policy.now());
    }
    return retry_step::done;
  }
  if (o.budget && !o.budget->try_withdraw(policy.now())) {
    retry_access::refused(policy);
    return retry_step::done;
  }
  delay = schedule.next(r);
  return retry_step::again;
}

template <class Clock, class T, class Executor, class Factory>
asio::awaitable<T, Executor> retry_loop(basic_retry_policy<Clock>& policy, Factory factory) {
  retry_schedule schedule = policy.schedule();
  std::optional<asio::basic_waitable_timer<Clock, wait_traits_of_t<Clock>, Executor>> timer;
  for (std::size_t attempt = 1;; ++attempt) {
    std::chrono::nanoseconds delay{};
    retry_access::attempt(policy, attempt);
    try {
      if constexpr (std::is_void_v<T>) {
        co_await factory();
        if (decide(policy, schedule, attempt, call_result(), delay) == retry_step::done) co_return;
      } else {
        T value = co_await factory();
        if (decide(policy, schedule, attempt, make_value_result(value), delay) == retry_step::done)
          co_return value;
      }
    } catch (const unserialisable_executor&) {
      throw;  // a layer's refusal of the executor: never retried
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

template <class Clock, class Factory, class Awaitable, class Traits>
requires Traits::is_awaitable Awaitable retry(basic_retry_policy<Clock>& policy, Factory factory) {
  return detail::retry_loop<Clock, typename Traits::value_type, typename Traits::executor_type>(
      policy, std::move(factory));
}

template <class Executor, class Clock, class Factory,
          BOOST_ASIO_COMPLETION_TOKEN_FOR(detail::retry_signature_t<Factory>) CompletionToken>
auto async_retry(const Executor& ex, basic_retry_policy<Clock>& policy, Factory factory,
                 CompletionToken&& token) {
  return detail::spawn_carrying_deadline(ex, retry(policy, std::move(factory)),
                                         std::forward<CompletionToken>(token));
}

}  // namespace levee
