/// \file
/// The registry's options: shared defaults, per-key and per-pattern overrides.
#pragma once

#include <levee/breaker/options.hpp>
#include <levee/limit/adaptive_limit_options.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <optional>
#include <string>

namespace levee {

/// The options of the keys that one override of a registry covers: a key, or
/// a pattern of keys (see \ref registry_options::overrides).
struct key_options {
  /// Their breakers' options.
  breaker_options breaker = {};
  /// Their adaptive limits' options. Unset: the registry's
  /// `registry_options::limits` (and no limit when that is unset too). Set:
  /// these keys get a limit with these options, whatever `limits` says.
  std::optional<adaptive_limit_options> limit{};
};

/// A registry's settings. Plain struct, a default on every member.
struct registry_options {
  /// Options of every breaker the registry creates, unless an entry of
  /// `overrides` covers its key.
  breaker_options defaults = {};
  /// A breaker that nobody but the registry holds and that `get` was not asked
  /// for during this long is evicted, whatever its state (CLOSED, OPEN or
  /// HALF_OPEN: a dead host's breaker does not stay for ever), except the
  /// states an operator chose (FORCED_OPEN, DISABLED, METRICS_ONLY). Never
  /// sooner; up to a 64th of it later, see \ref basic_breaker_registry. Zero or
  /// `nanoseconds::max()`: never. >= 0.
  std::chrono::nanoseconds idle_timeout = std::chrono::minutes(10);
  /// The most breakers the registry keeps (keys may come from URL hosts: an
  /// unbounded registry is a memory and a scrape-size risk). When a new key
  /// arrives at the bound, a breaker that nobody holds (and no operator set)
  /// is evicted: the least recently used of a sample of 16, in constant time
  /// (exactly the least recently used up to 16 breakers; see
  /// \ref basic_breaker_registry); if every breaker is held, the new key
  /// gets a breaker of its own that the registry does not keep (it guards the
  /// caller's call with no shared history: counted by `overflows()`). >= 1.
  std::size_t max_breakers = 1000;
  /// When set, every key also gets an adaptive concurrency limit with these
  /// options (named after the key), created, held and evicted with its
  /// breaker: `guards(key)`; `levee::http::guarded_get` then runs each call
  /// through the host's breaker and, inside it, the host's limit.
  std::optional<adaptive_limit_options> limits{};
  /// Options by key or by pattern of keys, instead of `defaults` and
  /// `limits`. A name with no `*` is a key, matched exactly. A name with `*`
  /// is a pattern, in which each `*` stands for any run of characters, dots
  /// and colons included, possibly empty: `*.payments.internal` covers
  /// `eu.payments.internal` and `a.b.payments.internal`, not
  /// `payments.internal:443` (write `*.payments.internal:*` for ports).
  /// A key takes the first of: its exact entry; the most specific pattern
  /// that matches it, the one with the most characters other than `*` (a
  /// tie: the fewest `*`, then the smallest name in byte order, so that the
  /// choice never depends on the order of insertion); `defaults`.
  std::map<std::string, key_options, std::less<>> overrides{};
};

/// Checks every member of `options` against its documented range: `defaults`,
/// `limits` and every entry of `overrides` included.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const registry_options& options);

}  // namespace levee
