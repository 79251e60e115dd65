// levee: bulkhead option validation, compiled once in lib/.
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/limit/bulkhead.hpp>

#include <stdexcept>
#include <string>

namespace levee {

void validate(const bulkhead_options& o) {
  auto reject = [](const char* member, const char* rule) {
    detail::reject_option("bulkhead_options", member, rule);
  };
  if (o.max_concurrent < 1) reject("max_concurrent", "must be at least 1");
  if (o.max_queue > (std::size_t{1} << 30)) reject("max_queue", "must not exceed 2^30");
  if (o.max_wait < std::chrono::nanoseconds::zero()) reject("max_wait", "must not be negative");
}

}  // namespace levee
