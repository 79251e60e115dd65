/// \file
/// A registry's options from a JSON document (README, "Changing a running
/// breaker / configuration from a file"). In the library levee::config
/// (CMake target `levee::config`, which links Boost.JSON; levee::levee does
/// not need it).
///
/// The document:
///
///     {
///       "idle_timeout": "10m",                       // registry_options members
///       "max_breakers": 1000,
///       "defaults": {                                // breaker_options members
///         "failure_rate_threshold": 0.5,
///         "open_duration": "30s",
///         "window_type": "time",                     // or "count"
///         "limit": { "max_limit": 200 }              // adaptive_limit_options members
///       },
///       "endpoints": {                               // registry_options::overrides
///         "api.example.com:443": { "failure_rate_threshold": 0.2 },
///         "*.payments.internal:*": { "open_duration": "1m", "limit": {} }
///       }
///     }
///
/// Every member is optional. Names are the C++ members' names; an unknown
/// name is an error. Durations are strings: an integer and a unit, `ns`,
/// `us`, `ms`, `s`, `m` or `h` (`"30s"`, `"250ms"`, `"500us"`), or `"max"`
/// for `nanoseconds::max()`. Enumerations are strings: `window_type` is
/// `"time"` or `"count"`, `algorithm` `"gradient2"` or `"aimd"`. Counts are
/// non-negative integers, ratios numbers.
#pragma once

#include <levee/registry/options.hpp>

#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace levee {

/// A configuration document that cannot be used: every error it has, each as
/// `path: rule`, for example
/// `endpoints["api.example.com"].failure_rate_threshold: must be in (0, 1]`.
/// `what()` is all of them, one a line.
class config_error : public std::invalid_argument {
 public:
  /// \param errors Every error, each `path: rule`, at least one.
  explicit config_error(std::vector<std::string> errors);
  /// \return every error, in the document's order.
  const std::vector<std::string>& errors() const noexcept { return errors_; }

 private:
  std::vector<std::string> errors_;
};

/// Reads a registry's options from a JSON document (the shape above).
///
/// What the document does not say comes from `base`: the top-level members,
/// and each member of `defaults` and of `defaults.limit`. An endpoint starts
/// from the document's `defaults` (the breaker's and, when it has a `limit`
/// section, the limit's: `"limit": {}` gives the key the defaults' limit even
/// when the registry has none), then takes its own members. The classifiers
/// (functions) come from `base.defaults` and `base.limits` (no document can
/// name one). `base.overrides` is not used: the document's `endpoints` are
/// all the overrides. `"limit": null` in `defaults`: no limits.
///
/// Reloading: pass the same `base` again (not the registry's current options,
/// or a member removed from the file would keep its old value), then
/// `registry.reconfigure(options)`.
///
/// \param json The document.
/// \param base The options the document changes.
/// \return the options, validated (`validate`).
/// \throws config_error with every error of the document, each by its path:
/// JSON syntax (with its line and column), a wrong type, an unknown name, a
/// duration past `nanoseconds::max()`, a value out of its range (the
/// message of `validate`).
registry_options parse_registry_config(std::string_view json, const registry_options& base = {});

/// `parse_registry_config` on the content of a file.
/// \param path The file.
/// \param base The options the document changes.
/// \return the options, validated.
/// \throws config_error as `parse_registry_config`, or naming the file when it
/// cannot be read.
registry_options read_registry_config(const std::string& path, const registry_options& base = {});

}  // namespace levee
