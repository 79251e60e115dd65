// levee: the registry's compiled parts (included by levee/src.hpp).
#pragma once

#include <levee/core/detail/validate.hpp>
#include <levee/registry/options.hpp>

#include <chrono>

namespace levee {

void validate(const registry_options& o) {
  validate(o.defaults);
  if (o.idle_timeout < std::chrono::nanoseconds::zero())
    detail::reject_option("registry_options", "idle_timeout", "must not be negative");
  if (o.max_breakers < 1)
    detail::reject_option("registry_options", "max_breakers", "must be at least 1");
  if (o.limits) validate(*o.limits);
  for (const auto& [name, k] : o.overrides) {
    validate(k.breaker);
    if (k.limit) validate(*k.limit);
  }
}

}  // namespace levee
