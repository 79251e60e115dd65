// levee: everything compiled once. Include it in exactly one translation unit
// (lib/levee.cpp does); the CMake target levee::levee does it for you.
#pragma once

#include <levee/impl/adaptive_limit.ipp>
#include <levee/impl/breaker_core.ipp>
#include <levee/impl/breaker_shell.ipp>
#include <levee/impl/breaker_telemetry.ipp>
#include <levee/impl/bulkhead.ipp>
#include <levee/impl/error.ipp>
#include <levee/impl/http_classify.ipp>
#include <levee/impl/http_connection.ipp>
#include <levee/impl/http_error.ipp>
#include <levee/impl/http_pool.ipp>
#include <levee/impl/http_request.ipp>
#include <levee/impl/http_resolver.ipp>
#include <levee/impl/http_response_reader.ipp>
#include <levee/impl/http_url.ipp>
#include <levee/impl/observe.ipp>
#include <levee/impl/options.ipp>
#include <levee/impl/retry.ipp>
#include <levee/impl/retry_budget.ipp>
