// levee: the umbrella header.
#pragma once

#include <levee/adaptive_limit.hpp>
#include <levee/bulkhead.hpp>
#include <levee/circuit_breaker.hpp>
#include <levee/classify.hpp>
#include <levee/error.hpp>
#include <levee/manual_clock.hpp>
#include <levee/observe.hpp>
#include <levee/options.hpp>
#include <levee/registry.hpp>
#include <levee/retry.hpp>
#include <levee/retry_budget.hpp>
#include <levee/timeout.hpp>
