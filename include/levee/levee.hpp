/// \file
/// The umbrella header.
#pragma once

#include <levee/breaker/circuit_breaker.hpp>
#include <levee/breaker/observe.hpp>
#include <levee/breaker/options.hpp>
#include <levee/core/classify.hpp>
#include <levee/core/error.hpp>
#include <levee/core/manual_clock.hpp>
#include <levee/hedge/hedge.hpp>
#include <levee/limit/adaptive_limit.hpp>
#include <levee/limit/bulkhead.hpp>
#include <levee/limit/rate_limiter.hpp>
#include <levee/limit/rate_limiter_registry.hpp>
#include <levee/limit/throttle.hpp>
#include <levee/registry/registry.hpp>
#include <levee/retry/retry.hpp>
#include <levee/retry/retry_budget.hpp>
#include <levee/timeout/timeout.hpp>
