// levee: the Prometheus text format's label escaping and numbers, shared by
// the breakers', the limits' and the fleet link's expositions.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>
#include <string_view>

namespace levee::detail {

/// A label value: valid UTF-8 (each maximal ill-formed subpart becomes
/// U+FFFD, so that one bad name cannot make Prometheus reject the whole
/// scrape), with backslash, double quote and line feed escaped.
std::string escape(std::string_view v);
/// A sample value: `%.17g`, or `NaN`, `+Inf`, `-Inf`.
std::string number(double v);
std::string number(std::uint64_t v);
/// A duration in seconds.
double seconds(std::chrono::nanoseconds d);

}  // namespace levee::detail
