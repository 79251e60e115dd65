/// \file
/// Everything compiled once. Include it in exactly one translation unit
/// (lib/levee.cpp does); the CMake target levee::levee does it for you.
#pragma once

#include <levee/breaker/impl/breaker_core.ipp>
#include <levee/breaker/impl/breaker_shell.ipp>
#include <levee/breaker/impl/breaker_telemetry.ipp>
#include <levee/breaker/impl/breaker_window.ipp>
#include <levee/breaker/impl/observe.ipp>
#include <levee/breaker/impl/options.ipp>
#include <levee/core/impl/error.ipp>
#include <levee/core/impl/prometheus_text.ipp>
#include <levee/hedge/impl/hedge.ipp>
#include <levee/http/impl/classify.ipp>
#include <levee/http/impl/connection.ipp>
#include <levee/http/impl/error.ipp>
#include <levee/http/impl/exchange.ipp>
#include <levee/http/impl/options.ipp>
#include <levee/http/impl/pool.ipp>
#include <levee/http/impl/request.ipp>
#include <levee/http/impl/request_op.ipp>
#include <levee/http/impl/resolver.ipp>
#include <levee/http/impl/response_reader.ipp>
#include <levee/http/impl/url.ipp>
#include <levee/limit/impl/adaptive_limit.ipp>
#include <levee/limit/impl/bulkhead.ipp>
#include <levee/limit/impl/limit_algorithm.ipp>
#include <levee/limit/impl/prometheus.ipp>
#include <levee/limit/impl/rate_limiter.ipp>
#include <levee/limit/impl/throttle.ipp>
#include <levee/pipeline/impl/prometheus.ipp>
#include <levee/registry/impl/registry.ipp>
#include <levee/retry/impl/prometheus.ipp>
#include <levee/retry/impl/retry.ipp>
#include <levee/retry/impl/retry_budget.ipp>
#include <levee/upstream/impl/observe.ipp>
#include <levee/upstream/impl/options.ipp>
