// levee: the pipeline's template bodies (included by levee/pipeline/pipeline.hpp).
#pragma once

#include <levee/core/detail/clock_traits.hpp>
#include <levee/core/detail/saturating.hpp>

#include <boost/asio/basic_waitable_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <exception>
#include <optional>
#include <type_traits>
#include <utility>

namespace levee {
namespace detail {

/// How a pipeline starts one attempt of `Op`: a factory of awaitables, a
/// factory of deferred operations, or a deferred operation (copied).
template <class Made, class DefaultExecutor, bool = awaitable_traits<Made>::is_awaitable>
struct pipeline_made {  // a deferred operation: started with use_awaitable
  using executor_type = DefaultExecutor;
  using awaitable_type =
      decltype(std::declval<Made>()(boost::asio::use_awaitable_t<DefaultExecutor>{}));
};
template <class Made, class DefaultExecutor>
struct pipeline_made<Made, DefaultExecutor, true> {  // an awaitable
  using executor_type = typename awaitable_traits<Made>::executor_type;
  using awaitable_type = Made;
};

template <class Op, bool = std::is_invocable_v<Op&>>
struct pipeline_made_type {  // a deferred operation
  static constexpr bool factory = false;
  using type = Op;
};
template <class Op>
struct pipeline_made_type<Op, true> {  // a factory
  static constexpr bool factory = true;
  using type = std::invoke_result_t<Op&>;
};

template <class Op, class DefaultExecutor>
struct pipeline_attempt {
  using made_type = typename pipeline_made_type<Op>::type;
  static constexpr bool made_awaitable = awaitable_traits<made_type>::is_awaitable;
  using executor_type = typename pipeline_made<made_type, DefaultExecutor>::executor_type;
  using awaitable_type = typename pipeline_made<made_type, DefaultExecutor>::awaitable_type;
  using value_type = typename awaitable_traits<awaitable_type>::value_type;

  static awaitable_type start(Op& op) {
    if constexpr (pipeline_made_type<Op>::factory) {
      if constexpr (made_awaitable)
        return op();
      else
        return op()(boost::asio::use_awaitable_t<executor_type>{});
    } else {
      Op copy(op);  // a deferred operation starts once: each attempt starts a copy
      return std::move(copy)(boost::asio::use_awaitable_t<executor_type>{});
    }
  }
};

/// How an attempt or a call ended, without holding a coroutine's exception.
template <class T>
struct pipeline_result {
  std::optional<T> value;
  std::exception_ptr failure;
  boost::system::error_code code;
  bool has_code = false;

  call_result view() const noexcept {
    return value ? make_value_result(*value) : call_result(failure, has_code ? &code : nullptr);
  }
  bool is(error e) const noexcept {
    const auto* ec = view().error();
    return ec && *ec == e;
  }
  void failed(std::exception_ptr e) noexcept {  // in a catch block: codes of system_errors
    failure = std::move(e);
    has_code = system_error_code(failure, code);
  }
  T take() {
    if (!value) std::rethrow_exception(failure);
    return std::move(*value);
  }
};

}  // namespace detail

template <class T, class Clock>
basic_pipeline<T, Clock>::basic_pipeline(executor_type ex, pipeline_options<T> o,
                                         registry_type* registry, std::string key)
    : executor_(std::move(ex)), registry_(registry), key_(std::move(key)) {
  const call_rules& rules = o.rules;
  if (rules.classify) {
    if (o.breaker) o.breaker->classifier = rules.classify;
    if (o.limit) o.limit->classifier = rules.classify;
    if (o.throttle) o.throttle->classifier = rules.classify;
    if (o.hedge) o.hedge->classifier = rules.classify;
    if (o.fallback) o.fallback->classifier = rules.classify;
  }
  if (o.throttle && o.throttle->classifier) {
    // The throttle is outside the breaker and the limit: their refusals are
    // neither requests nor accepts to it, whatever the classifier says.
    o.throttle->classifier = [c = o.throttle->classifier](const call_result& r) {
      if (const auto* ec = r.error(); ec && *ec && is_rejection(*ec)) return outcome::ignored;
      return c(r);
    };
  }
  if (o.retry) {
    if (rules.retryable) {
      o.retry->retryable = rules.retryable;
    } else if (rules.classify && !o.retry->retryable) {
      o.retry->retryable = [c = rules.classify](const call_result& r) {
        if (default_retryable(r)) return true;
        if (r.threw() || (r.error() && *r.error())) return false;
        try {
          return c(r) == outcome::failure;  // a failure in a value (a 503)
        } catch (...) {
          return false;
        }
      };
    }
    if (rules.retry_after) o.retry->retry_after = rules.retry_after;
    retry_.emplace(*o.retry);
  }
  if (o.breaker)
    own_.breaker = std::make_shared<basic_circuit_breaker<Clock>>(executor_, *o.breaker, o.name);
  if (o.limit)
    own_.limit = std::make_shared<basic_adaptive_limit<Clock>>(executor_, *o.limit, o.name);
  if (o.bulkhead) bulkhead_.emplace(executor_, *o.bulkhead);
  if (o.throttle) throttle_.emplace(executor_, *o.throttle);
  if (o.hedge) hedge_.emplace(executor_, *o.hedge);
  if (o.fallback) fallback_.emplace(*o.fallback);
  options_ = std::move(o);
}

template <class T, class Clock>
pipeline_options<T> basic_pipeline<T, Clock>::checked_for(pipeline_options<T> o,
                                                          registry_type& registry) {
  validate(o);
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("pipeline_options", member, rule);
  };
  if (o.breaker) reject("breaker", "must be empty with a registry: the registry's is used");
  if (o.limit && registry.options().limits)
    reject("limit", "must be empty with a registry that has limits");
  if (o.rules.classify && !registry.options().defaults.classifier)
    reject("rules.classify",
           "is set but the registry's breakers have no classifier (registry_options::defaults)");
  return o;
}

template <class T, class Clock>
template <class Executor, class Op>
boost::asio::awaitable<T, Executor> basic_pipeline<T, Clock>::attempts(detail::own_frame_t, Op op) {
  namespace asio = boost::asio;
  using attempt_type = detail::pipeline_attempt<Op, executor_type>;
  refuse_races<Executor>();
  calls_.fetch_add(1, std::memory_order_relaxed);
  std::optional<retry_schedule> schedule;
  if (retry_) schedule.emplace(retry_->schedule());
  std::optional<asio::basic_waitable_timer<Clock, detail::wait_traits_of_t<Clock>, Executor>> timer;
  for (std::size_t attempt = 1;; ++attempt) {
    if (retry_) detail::retry_access::attempt(*retry_, attempt);
    detail::pipeline_result<T> result;
    // Starting the attempt is part of it: a factory that throws is a failed
    // attempt, seen by the retry and, at the end, by the fallback.
    try {
      if (hedge_) {
        // Each attempt the hedge starts passes every layer inside it.
        result.value.emplace(co_await (*hedge_)(
            [this, &op] { return hedged_attempt<Executor>(detail::own_frame, op); }));
      } else {
        typename registry_type::guard_set held;  // held until the attempt is over
        result.value.emplace(co_await layered<Executor>(attempt_type::start(op), held));
      }
    } catch (const detail::unserialisable_executor&) {
      throw;  // a layer's refusal of the executor: not a failed attempt
    } catch (...) {
      result.failed(std::current_exception());
    }
    std::chrono::nanoseconds delay{};
    if (!retry_ || detail::decide(*retry_, *schedule, attempt, result.view(), delay) ==
                       detail::retry_step::done) {
      // Without a deadline the fallback answers here, in this frame (`outer`
      // would cost one more coroutine frame per call).
      if (fallback_ && options_.deadline == std::chrono::nanoseconds::zero()) {
        const call_result r = result.view();
        if (const auto why = fallback_->wants(r); why != levee::fallback<T>::reason::none)
          co_return fallback_->answer(r, why);
      }
      co_return result.take();
    }
    if (!timer) timer.emplace(co_await asio::this_coro::executor);
    timer->expires_after(std::chrono::ceil<typename Clock::duration>(delay));
    co_await timer->async_wait(asio::use_awaitable_t<Executor>{});
  }
}

template <class T, class Clock>
template <class Executor>
boost::asio::awaitable<T, Executor> basic_pipeline<T, Clock>::layered(
    boost::asio::awaitable<T, Executor> aw, typename registry_type::guard_set& held) {
  if (options_.timeout != std::chrono::nanoseconds::zero())
    aw = detail::race_timer<Clock>(options_.timeout, std::move(aw), error::timeout,
                                   count{&timeouts_});
  if (bulkhead_) aw = (*bulkhead_)(std::move(aw));
  const typename registry_type::guard_set* guards = &own_;
  if (registry_) {
    held = registry_->guards(key_);
    guards = &held;
  }
  if (guards->breaker) {
    aw = (*guards)(std::move(aw));
  } else if (guards->limit) {
    aw = (*guards->limit)(std::move(aw));
  }
  if (throttle_) aw = (*throttle_)(std::move(aw));
  return aw;
}

template <class T, class Clock>
template <class Executor, class Op>
boost::asio::awaitable<T, Executor> basic_pipeline<T, Clock>::hedged_attempt(detail::own_frame_t,
                                                                             Op& op) {
  // One of a hedge's attempts: started here, so that a factory that throws
  // is a failed attempt for the hedge too. Its executor carries the call's
  // deadline (the pipeline's, a caller's with_deadline): a hedge whose delay
  // ends with the deadline starts nothing.
  using attempt_type = detail::pipeline_attempt<Op, executor_type>;
  if constexpr (std::is_same_v<Executor, boost::asio::any_io_executor>) {
    const auto left = remaining_deadline(co_await boost::asio::this_coro::executor);
    if (left && *left <= std::chrono::nanoseconds::zero()) {
      if constexpr (detail::is_error_tuple_v<T>) {
        co_return detail::error_tuple<T>::make(make_error_code(error::deadline_exceeded));
      } else {
        detail::throw_error(error::deadline_exceeded);
      }
    }
  }
  typename registry_type::guard_set held;
  co_return co_await layered<Executor>(attempt_type::start(op), held);
}

template <class T, class Clock>
template <class Executor, class Op>
boost::asio::awaitable<T, Executor> basic_pipeline<T, Clock>::outer(detail::own_frame_t, Op op) {
  refuse_races<Executor>();
  detail::pipeline_result<T> result;
  auto aw = attempts<Executor>(detail::own_frame, std::move(op));
  if (options_.deadline != std::chrono::nanoseconds::zero())
    aw = detail::race_timer<Clock>(options_.deadline, std::move(aw), error::deadline_exceeded,
                                   count{&deadlines_});
  try {
    result.value.emplace(co_await std::move(aw));
  } catch (const detail::unserialisable_executor&) {
    throw;  // as in attempts: never the fallback's to answer
  } catch (...) {
    result.failed(std::current_exception());
  }
  if (fallback_) {
    const call_result r = result.view();
    if (const auto why = fallback_->wants(r); why != levee::fallback<T>::reason::none)
      co_return fallback_->answer(r, why);
  }
  co_return result.take();
}

template <class T, class Clock>
pipeline_metrics basic_pipeline<T, Clock>::metrics() const {
  constexpr auto relaxed = std::memory_order_relaxed;
  pipeline_metrics m;
  m.name = options_.name;
  m.calls = calls_.load(relaxed);
  m.timeouts = timeouts_.load(relaxed);
  m.deadlines_exceeded = deadlines_.load(relaxed);
  if (fallback_) m.fallback = fallback_->metrics();
  if (retry_) m.retry = retry_->metrics();
  if (hedge_) m.hedge = hedge_->metrics();
  if (throttle_) m.throttle = throttle_->metrics();
  const auto guards = registry_ ? registry_->guards(key_) : own_;
  if (guards.breaker) m.breaker = guards.breaker->metrics();
  if (guards.limit) m.limit = guards.limit->metrics();
  if (bulkhead_)
    m.bulkhead = pipeline_bulkhead_metrics{bulkhead_->in_flight(), bulkhead_->queued()};
  m.registry_guards = registry_ != nullptr;
  return m;
}

}  // namespace levee
