# Checks levee-demo's --summary: every mode has the promised figures, and the
# guarded modes amplify less and have a lower outage p99 than naive retries.
# Usage: cmake -DSUMMARY=file.json -P check-demo-summary.cmake
cmake_minimum_required(VERSION 3.20)
file(READ "${SUMMARY}" json)
foreach(mode naive_retry breaker breaker_retry_budget)
  foreach(key offered_requests downstream_requests amplification success_rate outage_p99_ms recovery_to_closed_ms)
    string(JSON value ERROR_VARIABLE missing GET "${json}" modes ${mode} ${key})
    if(missing)
      message(FATAL_ERROR "summary: modes.${mode}.${key} is missing")
    endif()
    set(${mode}_${key} "${value}")
  endforeach()
  message(STATUS "${mode}: amplification ${${mode}_amplification}, outage p99 ${${mode}_outage_p99_ms} ms, "
                 "success ${${mode}_success_rate}, closed ${${mode}_recovery_to_closed_ms} ms after healing")
endforeach()
foreach(mode breaker breaker_retry_budget)
  if(NOT ${mode}_amplification LESS naive_retry_amplification)
    message(FATAL_ERROR "${mode} amplifies as much as naive retries: "
                        "${${mode}_amplification} against ${naive_retry_amplification}")
  endif()
  if(NOT ${mode}_outage_p99_ms LESS naive_retry_outage_p99_ms)
    message(FATAL_ERROR "${mode}'s outage p99 is not lower than naive retries': "
                        "${${mode}_outage_p99_ms} ms against ${naive_retry_outage_p99_ms} ms")
  endif()
  # string(JSON GET) reads null as an empty string: ask for the type.
  string(JSON recovery_type TYPE "${json}" modes ${mode} recovery_to_closed_ms)
  if(recovery_type STREQUAL "NULL")
    message(FATAL_ERROR "${mode}: the breaker never closed after the API healed")
  endif()
endforeach()
message(STATUS "demo summary: the guarded modes amplify less and fail faster than naive retries")
