/// \file
/// Retry policies with backoff, jitter and a shared retry budget.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/detail/random.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/core/error.hpp>
#include <levee/retry/detail/retry.hpp>
#include <levee/retry/retry_budget.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <iosfwd>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <vector>

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

/// Checks every member of `options` against its documented range.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const retry_options& options);

/// The default retry predicate: retry failures (an exception, or a non-zero
/// error_code such as a transport error or `error::timeout`), but never a
/// levee rejection (`circuit_open`, `bulkhead_full`: the downstream was not
/// called, and hammering a breaker that said no defeats it), a cancellation,
/// or `deadline_exceeded`. The HTTP layer adds 5xx and 429, and excludes other
/// 4xx.
/// \param r How the attempt finished.
/// \return whether another attempt is worth it.
bool default_retryable(const call_result& r) noexcept;

/// The delays of one retried operation, in order. Made by
/// `basic_retry_policy::schedule()`; exposed so that tests and tools can see
/// exactly which delays a policy produces.
class retry_schedule {
 public:
  /// A schedule whose jitter is drawn from `seed`.
  /// \param options The delays' settings; borrowed: they must outlive the
  /// schedule (a policy's do).
  /// \param seed The jitter's seed: the same seed gives the same delays.
  retry_schedule(const retry_options& options, std::uint64_t seed) noexcept
      : options_(&options), rng_{seed}, previous_(options.initial_delay) {}

  /// The delay before the next retry, given how the last attempt ended (for a
  /// Retry-After hint).
  /// \param last How the last attempt ended, for `retry_options::retry_after`.
  /// \return the hint, capped by `max_retry_after`, when there is one; else
  /// the jittered backoff, at most `max_delay`.
  std::chrono::nanoseconds next(const call_result& last);
  /// The same without a result to read hints from.
  /// \return the jittered backoff, at most `max_delay`.
  std::chrono::nanoseconds next() { return next(call_result()); }
  /// How far the schedule went.
  /// \return the retries scheduled so far (calls of `next`).
  std::size_t retries() const noexcept { return retries_; }

 private:
  const retry_options* options_;
  detail::splitmix64 rng_;
  std::chrono::nanoseconds previous_;
  std::size_t retries_ = 0;
};

/// What a retry policy did, counted since its construction over every
/// operation that used it (`basic_retry_policy::metrics()`). Envoy's
/// `upstream_rq_retry` and `upstream_rq_retry_overflow` are `retries` and
/// `budget_refusals`.
struct retry_metrics {
  std::uint64_t operations = 0;  ///< operations started (schedules made by `schedule()`)
  std::uint64_t attempts = 0;    ///< attempts started, first attempts included
  std::uint64_t retries = 0;     ///< attempts after an operation's first one
  /// Retries the budget refused: the operation gave up on a retryable
  /// outcome with attempts left.
  std::uint64_t budget_refusals = 0;
  /// Operations that gave up on a retryable outcome because their last
  /// attempt was the `max_attempts`-th.
  std::uint64_t exhausted = 0;
};

/// One policy's metrics with its name, for the Prometheus exposition.
struct named_retry_metrics {
  std::string name;       ///< the value of its label `policy` (unique)
  retry_metrics metrics;  ///< its snapshot
};

/// Writes retry metrics in the Prometheus text exposition format 0.0.4, one
/// family per metric, one sample per policy (label `policy`, escaped as for
/// the breakers):
///
/// | Metric | Type |
/// |---|---|
/// | `levee_retry_operations_total` | counter |
/// | `levee_retry_attempts_total` | counter |
/// | `levee_retry_retries_total` | counter |
/// | `levee_retry_budget_refusals_total` | counter |
/// | `levee_retry_exhausted_total` | counter |
///
/// \param out Where the text goes.
/// \param policies The policies, in the order their samples are written
/// (names must be unique).
void write_retry_prometheus(std::ostream& out, const std::vector<named_retry_metrics>& policies);

namespace detail {
struct retry_access;
}  // namespace detail

/// A validated retry policy, shared by every operation that uses it. `Clock`
/// times the delays between attempts and the budget's window
/// (`basic_retry_policy<manual_clock>` in tests). Thread-safe.
template <class Clock = std::chrono::steady_clock>
class basic_retry_policy {
 public:
  /// The clock of the delays and of the budget's window.
  using clock_type = Clock;

  /// A policy with these settings.
  /// \param options The settings; validated (`validate`).
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  explicit basic_retry_policy(retry_options options = {})
      : options_(detail::checked(std::move(options))),
        seed_(options_.seed != 0 ? options_.seed : detail::random_seed()) {}

  /// The options it was constructed with.
  /// \return them, as validated.
  const retry_options& options() const noexcept { return options_; }

  /// The delays of the next operation. With a fixed seed, the n-th operation
  /// started on this policy always gets the same delays.
  /// \return a schedule that borrows this policy's options.
  retry_schedule schedule() noexcept {
    return retry_schedule(options_, seed_ + 0x632be59bd9b4e019ull * operations_.fetch_add(1));
  }

  /// The policy's predicate: `retry_options::retryable`, else
  /// `default_retryable`.
  /// \param r How the attempt finished.
  /// \return whether another attempt is worth it.
  bool retryable(const call_result& r) const {
    if (!options_.retryable) return default_retryable(r);
    return options_.retryable(r);
  }

  /// The budget's view of time: this policy's clock.
  /// \return `Clock::now()` as nanoseconds since the clock's epoch.
  static std::chrono::nanoseconds now() noexcept {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now().time_since_epoch());
  }

  /// What the policy did so far, over every operation that used it. Each
  /// counter is exact; read while operations run, the snapshot may be a few
  /// events apart between counters (relaxed atomics, no lock on the call path).
  /// \return the counters.
  retry_metrics metrics() const noexcept {
    constexpr auto relaxed = std::memory_order_relaxed;
    return {operations_.load(relaxed), attempts_.load(relaxed), retries_.load(relaxed),
            budget_refusals_.load(relaxed), exhausted_.load(relaxed)};
  }

 private:
  friend struct detail::retry_access;

  retry_options options_;
  std::uint64_t seed_;
  std::atomic<std::uint64_t> operations_{0};
  std::atomic<std::uint64_t> attempts_{0};
  std::atomic<std::uint64_t> retries_{0};
  std::atomic<std::uint64_t> budget_refusals_{0};
  std::atomic<std::uint64_t> exhausted_{0};
};

/// The steady_clock retry policy.
using retry_policy = basic_retry_policy<>;

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
/// Signature: `asio::awaitable<T, Executor> retry(basic_retry_policy<Clock>&,
/// Factory)`. The shape of `T` decides the form, as everywhere in levee: for
/// `std::tuple<error_code, U...>` the tuple's error_code decides and the last
/// tuple is returned; otherwise an exception is an attempt's failure and the
/// last one is rethrown.
///
/// Cancellation: the awaiting coroutine's cancellation reaches the running
/// attempt or the waiting timer; the operation then ends with
/// `operation_aborted` (in `T`'s shape, as the attempt or the timer reports it).
///
/// Executor: every attempt and the timer run on the awaiting coroutine's
/// executor.
///
/// Lifetime: `policy` is borrowed and must outlive the operation; `factory`
/// is moved in, and what it captures by reference must outlive it too.
///
/// Thread safety: one policy may serve operations on any threads at once.
///
/// \param policy The policy: its options, schedule and budget.
/// \param factory Makes each attempt: `factory()` returns an
/// `asio::awaitable<T, Executor>`.
/// \return an awaitable with the result of the last attempt.
template <class Clock, class Factory, class Awaitable = std::invoke_result_t<Factory&>,
          class Traits = detail::awaitable_traits<Awaitable>>
requires Traits::is_awaitable Awaitable retry(basic_retry_policy<Clock>& policy, Factory factory);

/// The completion-token form of `retry`: runs it as a new coroutine on `ex`,
/// as `co_spawn` does.
///
/// Completion signature: `void(std::exception_ptr, T)` (`void(std::exception_ptr)`
/// for `void`), `co_spawn`'s: the exception is what `retry` would throw. `T`
/// must be default-constructible.
///
/// Cancellation: the handler's cancellation slot reaches the running attempt
/// or the waiting timer (as `co_spawn` forwards it: terminal by default).
///
/// Executor: the attempts run on `ex`; the handler on its associated executor
/// (default: `ex`).
///
/// Lifetime and thread safety: as `retry`.
///
/// \param ex Where the attempts run.
/// \param policy The policy; borrowed.
/// \param factory Makes each attempt.
/// \param token The completion token.
/// \return what `token` makes of the operation (as `asio::async_initiate`).
template <class Executor, class Clock, class Factory,
          BOOST_ASIO_COMPLETION_TOKEN_FOR(detail::retry_signature_t<Factory>)
              CompletionToken = boost::asio::default_completion_token_t<Executor>>
auto async_retry(const Executor& ex, basic_retry_policy<Clock>& policy, Factory factory,
                 CompletionToken&& token = boost::asio::default_completion_token_t<Executor>());

}  // namespace levee

#include <levee/retry/impl/retry.hpp>
