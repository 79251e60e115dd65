/// \file
/// A pipeline's options and metrics.
#pragma once

#include <levee/breaker/observe.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/detail/validate.hpp>
#include <levee/hedge/options.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/limit/bulkhead.hpp>
#include <levee/limit/throttle_options.hpp>
#include <levee/pipeline/fallback.hpp>
#include <levee/retry/retry.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <optional>
#include <string>
#include <vector>

namespace levee {

/// A pipeline's settings: one member per layer, outermost first (README,
/// "Composing levee"). A layer whose member is empty (or zero) is left out.
/// Plain struct; `basic_pipeline` validates it.
/// \tparam T The result type of the pipeline's calls (as for `fallback_options`).
template <class T>
struct pipeline_options {
  /// The pipeline's name: its metrics' label, its breaker's and its limit's
  /// name. Not empty.
  std::string name = "pipeline";
  /// What the protocol says about results, for every layer at once:
  /// `rules.classify` is the breaker's, the hedge's, the throttle's, the
  /// limit's and the fallback's classifier; `rules.retryable` and `rules.retry_after` are the
  /// retry's. `levee::http::rules()` for HTTP. A layer's own classifier, `retryable` or
  /// `retry_after` must then be left empty (one rule for every layer).
  call_rules rules = {};
  /// The fallback, outermost: answers when everything below gave up.
  std::optional<fallback_options<T>> fallback = {};
  /// The total deadline of a call, retries included (`with_deadline`):
  /// `error::deadline_exceeded`, never retried. Zero: none. >= 0.
  std::chrono::nanoseconds deadline = std::chrono::nanoseconds::zero();
  /// The retries, with their budget (`retry_options::budget`).
  std::optional<retry_options> retry = {};
  /// Hedged attempts (`levee::hedge`, docs/hedging.md) inside the retry and
  /// outside the throttle and the breaker: each attempt the hedge starts
  /// passes the throttle, the breaker, the limit and the per-attempt timeout,
  /// and a rejection is never hedged (docs/pipeline.md, "Hedge"). A retry
  /// retries the hedged call as a whole. The pipeline's own.
  std::optional<hedge_options> hedge = {};
  /// Adaptive throttling (graded shedding, `levee::throttle`) outside the
  /// breaker: each attempt is a request; a rejection (`error::throttled`) is
  /// never retried. The pipeline's own, never a registry's.
  std::optional<throttle_options> throttle = {};
  /// The pipeline's own breaker. Leave it empty with a registry (the
  /// registry's breaker for the key is used).
  std::optional<breaker_options> breaker = {};
  /// A bulkhead inside the breaker. At most one of `bulkhead` and `limit`.
  std::optional<bulkhead_options> bulkhead = {};
  /// An adaptive concurrency limit inside the breaker. Leave it empty with a
  /// registry that has limits (`registry_options::limits`).
  std::optional<adaptive_limit_options> limit = {};
  /// The per-attempt timeout, innermost (`with_timeout`): `error::timeout`, a
  /// failure for the breaker. Zero: none. >= 0.
  std::chrono::nanoseconds timeout = std::chrono::nanoseconds::zero();
};

/// Checks `options`: each member against its documented range, each layer's
/// options with their own `validate`, and that the rules are not given twice.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
template <class T>
void validate(const pipeline_options<T>& options) {
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("pipeline_options", member, rule);
  };
  const char* once = "must be left empty: rules serves every layer";
  if (options.name.empty()) reject("name", "must not be empty");
  if (options.deadline < std::chrono::nanoseconds::zero())
    reject("deadline", "must not be negative");
  if (options.timeout < std::chrono::nanoseconds::zero()) reject("timeout", "must not be negative");
  if (options.bulkhead && options.limit) reject("limit", "must be empty when bulkhead is set");
  if (options.fallback) {
    validate(*options.fallback);
    if (options.fallback->classifier && options.rules.classify) reject("fallback.classifier", once);
  }
  if (options.retry) {
    validate(*options.retry);
    if (options.retry->retryable && options.rules.retryable) reject("retry.retryable", once);
    if (options.retry->retry_after && options.rules.retry_after) reject("retry.retry_after", once);
  }
  if (options.hedge) {
    validate(*options.hedge);
    if (options.hedge->classifier && options.rules.classify) reject("hedge.classifier", once);
  }
  if (options.throttle) {
    validate(*options.throttle);
    if (options.throttle->classifier && options.rules.classify) reject("throttle.classifier", once);
  }
  if (options.breaker) {
    validate(*options.breaker);
    if (options.breaker->classifier && options.rules.classify) reject("breaker.classifier", once);
  }
  if (options.bulkhead) validate(*options.bulkhead);
  if (options.limit) {
    validate(*options.limit);
    if (options.limit->classifier && options.rules.classify) reject("limit.classifier", once);
  }
}

/// A pipeline's bulkhead, now.
struct pipeline_bulkhead_metrics {
  std::size_t in_flight = 0;  ///< calls holding a slot
  std::size_t queued = 0;     ///< calls waiting for one
};

/// Every layer of one pipeline, in one place (`basic_pipeline::metrics()`).
/// A layer the pipeline does not have is empty.
struct pipeline_metrics {
  std::string name;                          ///< the pipeline's name (label `pipeline`)
  std::uint64_t calls = 0;                   ///< calls started (each may make several attempts)
  std::uint64_t timeouts = 0;                ///< attempts that ended with `error::timeout`
  std::uint64_t deadlines_exceeded = 0;      ///< calls that ended with `error::deadline_exceeded`
  std::optional<fallback_metrics> fallback;  ///< answers the fallback gave
  std::optional<retry_metrics> retry;        ///< attempts, retries, refusals
  std::optional<hedge_metrics> hedge;        ///< its hedge
  std::optional<throttle_metrics> throttle;  ///< its throttle
  std::optional<breaker_metrics> breaker;    ///< its breaker (a registry's: that key's)
  std::optional<pipeline_bulkhead_metrics> bulkhead;  ///< its bulkhead
  std::optional<adaptive_limit_metrics> limit;        ///< its limit (a registry's: that key's)
  /// The breaker and limit are a registry's: the registry's exposition has
  /// them, so `write_pipelines_prometheus` leaves them out.
  bool registry_guards = false;
};

/// Writes pipelines' metrics in the Prometheus text exposition format 0.0.4,
/// each family once (promtool-clean): the pipeline's own families, label
/// `pipeline`, then its retry policy's (`write_retry_prometheus`, label
/// `policy`), its hedge's (`write_hedges_prometheus`, label `hedge`), its
/// throttle's (label `throttle`), its own breaker's (`write_prometheus`, label `breaker`) and its
/// own limit's (`write_limits_prometheus`, label `limit`), each named after
/// the pipeline.
///
/// | Metric | Type | Labels |
/// |---|---|---|
/// | `levee_pipeline_calls_total` | counter | |
/// | `levee_pipeline_timeouts_total` | counter | |
/// | `levee_pipeline_deadlines_exceeded_total` | counter | |
/// | `levee_pipeline_fallbacks_total` | counter | `reason` = rejection, failure |
/// | `levee_pipeline_bulkhead_in_flight` | gauge | |
/// | `levee_pipeline_bulkhead_queued` | gauge | |
///
/// \param out Where the text goes.
/// \param pipelines The pipelines (names must be unique, and differ from the
/// keys of a registry exposed beside them).
void write_pipelines_prometheus(std::ostream& out, const std::vector<pipeline_metrics>& pipelines);

}  // namespace levee
