/// \file
/// Rate limiters by key, for per-endpoint quotas (docs/rate_limit.md).
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/limit/rate_limiter.hpp>

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <algorithm>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

namespace levee {

/// A rate limiter registry's settings. Plain struct, a default on every member.
struct rate_limiter_registry_options {
  /// The options of every limiter whose key has no entry in `overrides`.
  rate_limiter_options defaults = {};
  /// Options by key (matched exactly): one quota per endpoint, tenant or API.
  std::map<std::string, rate_limiter_options, std::less<>> overrides{};
  /// The most limiters kept. A limiter is never evicted (that would refill
  /// its bucket); a new key beyond the bound shares one overflow limiter with
  /// `defaults` (named `(overflow)`), counted by `overflows()`. >= 1.
  std::size_t max_limiters = 1000;
};

/// Checks every member of `options`, `defaults` and each override included.
/// \param options The options to check.
/// \throws std::invalid_argument naming the first invalid member.
void validate(const rate_limiter_registry_options& options);

/// One rate limiter per key, created on first use: `co_await
/// limiters("api.example.com", call())` spends a token of that key's bucket.
///
/// Why not `basic_breaker_registry`: its keys follow the breakers (evicted
/// when idle, patterns of hosts), a quota follows the provider's contract
/// (a key is kept for good, an evicted bucket would refill). A rate
/// limiter per key sits beside a breaker registry: `limiters(host,
/// registry.guards(host)(call()))`.
///
/// Thread safety: any thread. Looking a key up takes a short mutex (a map
/// search), never held across the call; hold the `shared_ptr` from `get` to
/// skip it.
///
/// Lifetime: a limiter lives as long as the registry (or a `shared_ptr` from
/// `get`); a call through it must be started (first awaited) before then, as
/// with `basic_rate_limiter`.
///
/// `Clock` is the limiters' (`manual_clock` in tests).
template <class Clock = std::chrono::steady_clock>
class basic_rate_limiter_registry {
 public:
  /// The limiters it makes.
  using limiter_type = basic_rate_limiter<Clock>;
  /// The type of its executor, which its limiters get.
  using executor_type = boost::asio::any_io_executor;

  /// An empty registry whose limiters run on `ex`.
  /// \param ex The limiters' executor.
  /// \param options Its settings; validated.
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class Executor>
  requires std::is_convertible_v<const Executor&, boost::asio::any_io_executor>
  explicit basic_rate_limiter_registry(const Executor& ex,
                                       rate_limiter_registry_options options = {})
      : executor_(ex), options_(detail::checked(std::move(options))) {}

  /// An empty registry on `ctx.get_executor()`.
  /// \param ctx An execution context, such as an `io_context`.
  /// \param options Its settings; validated.
  /// \throws std::invalid_argument naming the member when `options` is invalid.
  template <class ExecutionContext>
  requires std::is_convertible_v<ExecutionContext&, boost::asio::execution_context&>
  explicit basic_rate_limiter_registry(ExecutionContext& ctx,
                                       rate_limiter_registry_options options = {})
      : basic_rate_limiter_registry(ctx.get_executor(), std::move(options)) {}

  /// The limiter of `key`, created with its options if needed. Beyond
  /// `max_limiters`, a new key without an override shares the overflow
  /// limiter; a key with an override always gets its own (its quota is kept
  /// however many other keys came first).
  /// \param key Any string.
  /// \return the limiter, never null.
  std::shared_ptr<limiter_type> get(std::string_view key) {
    std::lock_guard g(mutex_);
    if (auto it = limiters_.find(key); it != limiters_.end()) return it->second;
    if (limiters_.size() >= options_.max_limiters &&
        options_.overrides.find(key) == options_.overrides.end()) {
      ++overflows_;
      if (!overflow_) overflow_ = std::make_shared<limiter_type>(executor_, options_.defaults);
      return overflow_;
    }
    auto l = std::make_shared<limiter_type>(executor_, options_of(key));
    limiters_.emplace(std::string(key), l);
    return l;
  }

  /// Guards `aw` with the limiter of `key`: as `(*get(key))(aw)`.
  /// \param key The key.
  /// \param aw The call to guard.
  /// \return an awaitable with `aw`'s result, or `rate_limited` in its shape.
  template <class T, class Executor>
  boost::asio::awaitable<T, Executor> operator()(std::string_view key,
                                                 boost::asio::awaitable<T, Executor> aw) {
    return (*get(key))(std::move(aw));
  }

  /// New options for `key` from now on; its limiter, if it exists, is
  /// reconfigured in place (`basic_rate_limiter::reconfigure`).
  /// \param key The key.
  /// \param options Its options; validated.
  /// \throws std::invalid_argument naming the member when `options` is
  /// invalid; nothing changes then.
  void set_options(std::string_view key, const rate_limiter_options& options) {
    validate(options);
    // Under the lock: two set_options for one key reconfigure its limiter in
    // the order they stored their options, so the two never disagree.
    std::lock_guard g(mutex_);
    options_.overrides.insert_or_assign(std::string(key), options);
    if (auto it = limiters_.find(key); it != limiters_.end()) it->second->reconfigure(options);
  }

  /// The limiters kept (the overflow limiter not counted).
  /// \return their number.
  std::size_t size() const {
    std::lock_guard g(mutex_);
    return limiters_.size();
  }
  /// Lookups of a new key beyond `max_limiters`.
  /// \return their number, since construction.
  std::uint64_t overflows() const {
    std::lock_guard g(mutex_);
    return overflows_;
  }

  /// Every limiter's metrics, for `write_rate_limiters_prometheus`.
  /// \return a snapshot of each, sorted by key, then `(overflow)` if used.
  std::vector<named_rate_limiter_metrics> metrics() const {
    std::vector<std::pair<std::string, std::shared_ptr<limiter_type>>> all;
    {
      std::lock_guard g(mutex_);
      all.assign(limiters_.begin(), limiters_.end());
      if (overflow_) all.emplace_back("(overflow)", overflow_);
    }
    std::vector<named_rate_limiter_metrics> out;
    out.reserve(all.size());
    for (auto& [key, l] : all) out.push_back({key, l->metrics()});
    return out;
  }

 private:
  rate_limiter_options options_of(std::string_view key) const {  // under mutex_
    auto it = options_.overrides.find(key);
    return it != options_.overrides.end() ? it->second : options_.defaults;
  }

  executor_type executor_;
  mutable std::mutex mutex_;  // everything below
  rate_limiter_registry_options options_;
  std::map<std::string, std::shared_ptr<limiter_type>, std::less<>> limiters_;
  std::shared_ptr<limiter_type> overflow_;
  std::uint64_t overflows_ = 0;
};

/// The steady_clock rate limiter registry.
using rate_limiter_registry = basic_rate_limiter_registry<>;

}  // namespace levee
