/// \file
/// A fallback: an answer of the caller's own when a call was refused or failed.
#pragma once

#include <levee/core/classify.hpp>
#include <levee/core/detail/result_shape.hpp>
#include <levee/core/detail/unserialisable.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/core/error.hpp>
#include <levee/timeout/detail/spawn.hpp>

#include <boost/asio/async_result.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/co_spawn.hpp>

#include <atomic>
#include <cstdint>
#include <exception>
#include <functional>
#include <optional>
#include <type_traits>
#include <utility>

namespace levee {

/// When a fallback answers.
enum class fallback_on : std::uint8_t {
  /// a levee layer refused the call: any code of condition `rejected`
  /// (`is_rejection`: `circuit_open`, `bulkhead_full`, `limit_exceeded`,
  /// `throttled`, `rate_limited`)
  rejection = 1,
  failure = 2,  ///< the call failed, as the classifier says (a timeout and a deadline are failures)
  both = 3,     ///< either
};

/// A fallback's settings. Exactly one of `value` and `function` is set.
/// \tparam T The result type of the calls it answers for: `std::tuple<error_code, U...>`
/// in the tuple form, else the value the call returns (its errors are thrown).
template <class T>
struct fallback_options {
  /// Which outcomes it answers for. Cancellations and successes never.
  fallback_on on = fallback_on::both;
  /// The answer, the same every time.
  std::optional<T> value = {};
  /// The answer, computed from how the call ended (its error_code, exception or value).
  std::function<T(const call_result&)> function = {};
  /// What a failure is. Empty: `default_classify`. (In a pipeline, leave it
  /// empty: `pipeline_options::rules` serves every layer.)
  levee::classifier classifier = {};
};

/// Checks `options`: exactly one of `value` and `function` is set, and `on`
/// is one of `fallback_on`'s values.
/// \param options The options to check.
/// \throws std::invalid_argument naming the member.
template <class T>
void validate(const fallback_options<T>& options) {
  if (options.value.has_value() == static_cast<bool>(options.function))
    detail::reject_option("fallback_options", "value",
                          "exactly one of value and function must be set");
  if (options.on != fallback_on::rejection && options.on != fallback_on::failure &&
      options.on != fallback_on::both)
    detail::reject_option("fallback_options", "on", "must be one of fallback_on's values");
}

/// What a fallback did since its construction.
struct fallback_metrics {
  std::uint64_t rejections = 0;  ///< answers given for a rejection
  std::uint64_t failures = 0;    ///< answers given for a failure
  /// All answers given.
  /// \return `rejections + failures`.
  std::uint64_t used() const noexcept { return rejections + failures; }
};

/// Answers for a call that was refused or failed: `co_await fb(breaker(call()))`.
/// Polly's Fallback strategy, Resilience4j's `withFallback`.
///
/// The shape of `T` decides the form, as everywhere in levee: for
/// `std::tuple<error_code, U...>` the tuple's error_code (and the classifier)
/// decide; otherwise a thrown exception (a `system_error`'s code) or the
/// returned value, through the classifier, decides. A call it does not
/// answer for returns unchanged (its exception rethrown).
///
/// Thread safety: one fallback may serve calls on any threads at once; its
/// counters are relaxed atomics.
/// \tparam T The calls' result type (not `void`).
template <class T>
class fallback {
  static_assert(!std::is_void_v<T>, "levee::fallback: a fallback answers with a value");

 public:
  /// Why the fallback answers, or not.
  enum class reason : std::uint8_t { none, rejection, failure };

  /// A fallback with these settings.
  /// \param options Its settings; validated.
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  explicit fallback(fallback_options<T> options) : options_(detail::checked(std::move(options))) {}

  /// The options it was constructed with.
  /// \return them.
  const fallback_options<T>& options() const noexcept { return options_; }

  /// Whether it answers for `r`, and why.
  /// \param r How a call ended.
  /// \return `reason::rejection` for a levee rejection, `reason::failure` for
  /// what the classifier calls a failure (a classifier that throws: a
  /// failure), when `on` covers it; else `reason::none`.
  reason wants(const call_result& r) const noexcept {
    const auto on = static_cast<std::uint8_t>(options_.on);
    if (const auto* ec = r.error(); ec && is_cancellation(*ec))
      return reason::none;  // never, whatever the classifier says
    if (const auto* ec = r.error(); ec && *ec && is_rejection(*ec))
      return on & static_cast<std::uint8_t>(fallback_on::rejection) ? reason::rejection
                                                                    : reason::none;
    if (!(on & static_cast<std::uint8_t>(fallback_on::failure))) return reason::none;
    outcome o = outcome::failure;
    try {
      o = options_.classifier ? options_.classifier(r) : default_classify(r);
    } catch (...) {
    }
    return o == outcome::failure ? reason::failure : reason::none;
  }

  /// The answer for `r`, counted under `why`.
  /// \param r How the call ended.
  /// \param why What `wants(r)` said (not `reason::none`).
  /// \return `value`, or what `function(r)` returns.
  /// \throws what `function` throws (counted all the same).
  T answer(const call_result& r, reason why) {
    (why == reason::rejection ? rejections_ : failures_).fetch_add(1, std::memory_order_relaxed);
    if (options_.function) return options_.function(r);
    return *options_.value;
  }

  /// Runs `aw` and answers for it when it was refused or failed.
  ///
  /// Cancellation: reaches `aw`; a cancelled call is returned (or rethrown)
  /// unchanged. Executor: the awaiting coroutine's. Lifetime: the fallback is
  /// borrowed and must outlive the await; `aw` is moved in.
  /// \param aw The call, an `asio::awaitable<T, Executor>`.
  /// \return an awaitable with `aw`'s result, or the fallback's answer.
  template <class Executor>
  boost::asio::awaitable<T, Executor> operator()(boost::asio::awaitable<T, Executor> aw) {
    std::optional<T> value;
    std::exception_ptr ep;
    boost::system::error_code ec;
    bool has_code = false;
    try {
      value.emplace(co_await std::move(aw));
    } catch (const detail::unserialisable_executor&) {
      throw;  // a layer's refusal of the executor: never answered
    } catch (const boost::system::system_error& e) {
      ec = e.code();
      has_code = true;
      ep = std::current_exception();
    } catch (...) {
      ep = std::current_exception();
    }
    const call_result r =
        value ? detail::make_value_result(*value) : call_result(ep, has_code ? &ec : nullptr);
    if (const reason why = wants(r); why != reason::none) co_return answer(r, why);
    if (!value) std::rethrow_exception(ep);
    co_return std::move(*value);
  }

  /// The completion-token form: runs `(*this)(std::move(aw))` as a new
  /// coroutine on `ex`, as `co_spawn` does.
  ///
  /// Completion signature: `void(std::exception_ptr, T)`, `co_spawn`'s.
  /// Cancellation: the handler's cancellation slot reaches `aw`.
  /// Executor: `aw` runs on `ex`; the handler on its associated executor.
  /// \param ex Where the call runs.
  /// \param aw The call.
  /// \param token The completion token.
  /// \return what `token` makes of the operation (as `asio::async_initiate`).
  template <class Executor, class AwaitableExecutor,
            BOOST_ASIO_COMPLETION_TOKEN_FOR(void(std::exception_ptr, T)) CompletionToken>
  auto async_run(const Executor& ex, boost::asio::awaitable<T, AwaitableExecutor> aw,
                 CompletionToken&& token) {
    return detail::spawn_carrying_deadline(ex, (*this)(std::move(aw)),
                                           std::forward<CompletionToken>(token));
  }

  /// What it did so far.
  /// \return the counters.
  fallback_metrics metrics() const noexcept {
    return {rejections_.load(std::memory_order_relaxed), failures_.load(std::memory_order_relaxed)};
  }

 private:
  fallback_options<T> options_;
  std::atomic<std::uint64_t> rejections_{0};
  std::atomic<std::uint64_t> failures_{0};
};

}  // namespace levee
