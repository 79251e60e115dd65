// levee: the options of an upstream (a set of replicas behind one name).
#pragma once

#include <levee/breaker/options.hpp>
#include <levee/core/classify.hpp>
#include <levee/retry/retry_budget.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

namespace levee {

/// Outlier ejection: how an endpoint is taken out of the picking, and how it
/// comes back (docs/upstream.md). A plain struct; `validate` names the
/// offending member.
struct outlier_options {
  /// Eject an endpoint after this many failures in a row (as the upstream's
  /// classifier sees them). 0 turns consecutive-failure ejection off.
  std::size_t consecutive_failures = 5;
  /// The first ejection lasts this long; the n-th ejection in a row lasts
  /// `n * base_ejection_time`, up to `max_ejection_time`. The level `n` drops
  /// by one for every `base_ejection_time` the endpoint then stays in
  /// service. > 0.
  std::chrono::nanoseconds base_ejection_time = std::chrono::seconds(30);
  /// Cap of an ejection. >= base_ejection_time.
  std::chrono::nanoseconds max_ejection_time = std::chrono::seconds(300);
  /// At most this share of the endpoints is ejected at once (rounded down),
  /// but one endpoint may always be ejected when there are two or more, and
  /// the last endpoint in service never is. 0 turns ejection off. In [0, 1].
  double max_ejected_share = 0.5;
  /// When fewer than this share of the endpoints is in service, picking
  /// ignores ejection (every endpoint is picked, as Envoy's panic mode).
  /// 0: never. In [0, 1].
  double panic_threshold = 0.5;

  /// Success-rate ejection (Envoy's `success_rate`): at the end of every
  /// interval of at least this length, each endpoint in service that
  /// finished `success_rate_request_volume` calls or more in it has its
  /// success rate computed; when `success_rate_minimum_hosts` endpoints or
  /// more have one, those below `mean - success_rate_stdev_factor * stdev`
  /// are ejected (the worst first, within `max_ejected_share`). The interval
  /// ends at the first call that completes after it (no timer). 0 turns
  /// success-rate ejection off. >= 0.
  std::chrono::nanoseconds success_rate_interval = std::chrono::seconds(10);
  /// The fewest endpoints with enough calls for a verdict. With `n` such
  /// endpoints, one outlier among equals is at most `sqrt(n - 1)` standard
  /// deviations below the mean: with 3 endpoints, a factor under 1.41 is
  /// needed (docs/upstream.md). >= 2.
  std::size_t success_rate_minimum_hosts = 5;
  /// The fewest calls an endpoint finishes in the interval for its success
  /// rate to count. >= 1.
  std::size_t success_rate_request_volume = 100;
  /// How many standard deviations below the mean an endpoint's success rate
  /// must be to be ejected. >= 0 and finite.
  double success_rate_stdev_factor = 1.9;
};

/// Checks outlier options.
/// \param options The options.
/// \throws std::invalid_argument naming the member that is out of range.
void validate(const outlier_options& options);

/// An upstream's options. A plain struct with a default on every member;
/// the upstream's constructor validates it (`std::invalid_argument` naming
/// the member).
struct upstream_options {
  /// Ejection and its way back.
  outlier_options outlier = {};
  /// Attempts per call, the first one included, each on an endpoint that has
  /// not failed this call while one is left. >= 1. A rejection (an open
  /// breaker, a full limit) is never retried.
  std::size_t max_attempts = 2;
  /// The budget retries are drawn from (shared with other layers as the
  /// user likes); null: only `max_attempts` bounds them.
  std::shared_ptr<retry_budget> budget = {};
  /// How an attempt's outcome counts for its endpoint (consecutive failures),
  /// its endpoint's breaker and the upstream's breaker. Empty:
  /// `default_classify`; HTTP: `levee::http::classify`.
  classifier classify = {};
  /// Which failed attempts are worth another endpoint. Empty:
  /// `default_retryable` (never a rejection nor a cancellation).
  std::function<bool(const call_result&)> retryable = {};
  /// Each endpoint's own breaker (its classifier is replaced by `classify`).
  breaker_options endpoint_breaker = {};
  /// The breaker of the upstream as a whole: when every endpoint fails,
  /// calls fail fast (its classifier is replaced by `classify`).
  breaker_options upstream_breaker = {};
  /// The time constant of each endpoint's latency estimate (a peak EWMA, as
  /// Finagle's): picking weighs an endpoint's outstanding calls by its
  /// estimate, so a slow endpoint gets few calls. A sample above the
  /// estimate replaces it at once; one below moves it by `1 - exp(-dt /
  /// latency_decay)`, `dt` the time since the last sample. An estimate not
  /// refreshed for a while fades, over the same time constant, toward the
  /// rival's it is compared with, so a slow endpoint that healed is tried
  /// again (docs/upstream.md). 0: least outstanding calls only. >= 0.
  std::chrono::nanoseconds latency_decay = std::chrono::seconds(1);
  /// Seed of the picking's random draws; 0 picks one at random.
  std::uint64_t seed = 0;
};

/// An active health check of an upstream's endpoints
/// (`levee::http::basic_health_check`, docs/upstream.md): each endpoint is
/// sent `GET target` every `interval`, with its own deadline. A plain
/// struct; `validate` names the offending member.
struct health_check_options {
  /// The request target of the check ("/path?query"). Not empty.
  std::string target = "/health";
  /// Time between two checks of one endpoint (from the end of one to the
  /// start of the next). > 0.
  std::chrono::nanoseconds interval = std::chrono::seconds(5);
  /// The deadline of one check. > 0 and <= interval.
  std::chrono::nanoseconds timeout = std::chrono::seconds(1);
  /// An endpoint in service is ejected after this many failed checks in a
  /// row (a status outside 2xx, an error or the deadline); one passing check
  /// returns an ejected endpoint. >= 1.
  std::size_t unhealthy_threshold = 2;
};

/// Checks health-check options.
/// \param options The options.
/// \throws std::invalid_argument naming the member that is out of range.
void validate(const health_check_options& options);

/// Where an upstream's endpoints come from when they are the addresses a name
/// resolves to (`levee::http::basic_name_watch`, docs/upstream.md). A plain
/// struct; `validate` names the offending member.
///
/// Re-resolution: an answer is good for its TTL (the smallest of its
/// records'), clamped to [`min_ttl`, `max_ttl`], or for `interval` when that
/// is set. After that, the first call through the upstream starts a lookup
/// and goes on at once with the endpoints it has (no call waits for DNS).
/// A failed lookup keeps the endpoints (the set is never emptied) and is
/// tried again at the first call after `retry_interval`. An idle upstream
/// has no pending work for it, unless `refresh_when_idle` is set.
struct resolve_options {
  /// The name to resolve (every A and AAAA record is an endpoint). Not empty.
  std::string host;
  /// The endpoints' port; 0: 80 for "http", 443 for "https".
  std::uint16_t port = 0;
  /// An endpoint's address is "scheme://ip:port" ("[ip6]" for IPv6), or
  /// "ip:port" when empty. With "https" the client checks the certificate
  /// against the IP address it connects to (docs/upstream.md).
  std::string scheme = "http";
  /// The shortest time an answer is kept, whatever its TTL. > 0.
  std::chrono::nanoseconds min_ttl = std::chrono::seconds(1);
  /// The longest time an answer is kept, whatever its TTL. >= min_ttl.
  std::chrono::nanoseconds max_ttl = std::chrono::seconds(300);
  /// 0: keep an answer for its TTL (clamped); > 0: for this long, whatever
  /// its TTL. >= 0.
  std::chrono::nanoseconds interval = std::chrono::nanoseconds::zero();
  /// After a failed lookup, the next one is due after this long. > 0.
  std::chrono::nanoseconds retry_interval = std::chrono::seconds(1);
  /// The deadline of one lookup. > 0.
  std::chrono::nanoseconds timeout = std::chrono::seconds(5);
  /// When true, a timer re-resolves when an answer is due even while no call
  /// is made (one timer pending for as long as the watch lives); when false,
  /// the first call after that does.
  bool refresh_when_idle = false;
};

/// Checks resolve options.
/// \param options The options.
/// 	hrows std::invalid_argument naming the member that is out of range.
void validate(const resolve_options& options);

/// Checks an upstream's options, its breakers' options included.
/// \param options The options.
/// \throws std::invalid_argument naming the member that is out of range.
void validate(const upstream_options& options);

}  // namespace levee
