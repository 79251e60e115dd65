# Checks levee-demo's --summary: every mode has the promised figures, and the
# guarded modes amplify less and have a lower outage p99 than naive retries;
# breaker_adaptive contains the degrading phase (issue 13).
# Usage: cmake -DSUMMARY=file.json -P check-demo-summary.cmake
cmake_minimum_required(VERSION 3.20)
file(READ "${SUMMARY}" json)
foreach(mode naive_retry breaker breaker_retry_budget breaker_adaptive breaker_throttle)
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
foreach(mode breaker breaker_retry_budget breaker_adaptive breaker_throttle)
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
  # Issue 18 item 7: a probe into the dead API ends at its deadline, so the
  # breaker closes within open_duration + 1.5 s of the heal (scenario time).
  string(JSON open_ms ERROR_VARIABLE missing GET "${json}" open_duration_ms)
  if(missing)
    message(FATAL_ERROR "summary: open_duration_ms is missing")
  endif()
  string(REGEX REPLACE "\\..*" "" recovery_ms "${${mode}_recovery_to_closed_ms}")
  string(REGEX REPLACE "\\..*" "" open_ms "${open_ms}")
  math(EXPR recovery_bound "${open_ms} + 1500")
  if(recovery_ms GREATER recovery_bound)
    message(FATAL_ERROR "${mode}: the breaker closed ${${mode}_recovery_to_closed_ms} ms after the "
                        "API healed, more than open_duration + 1.5 s (${recovery_bound} ms)")
  endif()
endforeach()
message(STATUS "demo summary: the guarded modes amplify less and fail faster than naive retries")

# breaker_adaptive (issue 13): the adaptive limit inside the breaker contains
# the degradation, in the same run as the other modes.
string(JSON api_capacity ERROR_VARIABLE missing GET "${json}" api_capacity)
if(missing)
  message(FATAL_ERROR "summary: api_capacity is missing")
endif()
# The phase named `name` of `mode`, as <out>_<key> variables.
function(read_phase mode name out)
  string(JSON count LENGTH "${json}" modes ${mode} phases)
  math(EXPR last "${count} - 1")
  foreach(i RANGE ${last})
    string(JSON phase_name GET "${json}" modes ${mode} phases ${i} name)
    if(phase_name STREQUAL name)
      foreach(key offered downstream succeeded p99_ms peak_in_flight peak_pool_waiters
                  fast_fail_p99_ms limit_exceeded limit_exceeded_after_5s loop_lag_ms)
        string(JSON value ERROR_VARIABLE missing GET "${json}" modes ${mode} phases ${i} ${key})
        if(missing)
          message(FATAL_ERROR "summary: modes.${mode}.phases[${i}].${key} is missing")
        endif()
        set(${out}_${key} "${value}" PARENT_SCOPE)
      endforeach()
      return()
    endif()
  endforeach()
  message(FATAL_ERROR "summary: ${mode} has no phase '${name}'")
endfunction()
foreach(mode naive_retry breaker breaker_retry_budget breaker_adaptive breaker_throttle)
  foreach(phase healthy degrading outage healed)
    read_phase(${mode} ${phase} ${mode}_${phase})  # every phase has fast_fail_p99_ms
  endforeach()
endforeach()
set(a breaker_adaptive_degrading)
message(STATUS "breaker_adaptive, degrading: ${${a}_succeeded} succeeded (naive_retry "
               "${naive_retry_degrading_succeeded}), peak in flight ${${a}_peak_in_flight} "
               "(capacity ${api_capacity}), pool waiters ${${a}_peak_pool_waiters}, fast-fail p99 "
               "${${a}_fast_fail_p99_ms} ms")
if(NOT ${a}_peak_pool_waiters EQUAL 0)
  message(FATAL_ERROR "breaker_adaptive, degrading: ${${a}_peak_pool_waiters} requests waited "
                      "for a pooled connection")
endif()
math(EXPR in_flight_bound "${api_capacity} * 3 / 2")
if(${a}_peak_in_flight GREATER in_flight_bound)
  message(FATAL_ERROR "breaker_adaptive, degrading: ${${a}_peak_in_flight} requests in flight, "
                      "more than 1.5 x the API's capacity (${in_flight_bound})")
endif()
if(${a}_succeeded LESS naive_retry_degrading_succeeded)
  message(FATAL_ERROR "breaker_adaptive, degrading: ${${a}_succeeded} calls succeeded, fewer "
                      "than naive_retry's ${naive_retry_degrading_succeeded}")
endif()
if(NOT ${a}_fast_fail_p99_ms LESS 5)
  message(FATAL_ERROR "breaker_adaptive, degrading: fast failures take ${${a}_fast_fail_p99_ms} "
                      "ms at p99 (5 ms at most)")
endif()
# Healthy: never throttled (every call succeeded, none refused), and no
# latency of the limit's own: p99 within 20 % of the breaker mode's or the
# unguarded mode's (naive_retry, which retries nothing while healthy),
# whichever is higher. The modes run in turn, so either baseline may catch
# a stall of the machine that the other missed: at --quick's scale 20 % of
# a 220 ms p99 is 3 ms of real time, and in a run on a slow host
# (2026-12-05) naive_retry's p99 was 402 ms, breaker's 303 and
# breaker_adaptive's 402, with nothing refused. (Whole milliseconds:
# math(EXPR) has no floating point.)
#
# The event loops' lag in breaker_adaptive's own healthy phase is allowed
# for, by its length (loop_lag_ms: how late a timer due every 2 ms fired on
# the demo's two threads, scenario time). A thread stopped for 17 ms of real
# time is 500 ms of scenario at --quick's scale, and the calls it holds up
# pile up as in front of a sick API. In a CI run of 2026-12-05,
# breaker_adaptive's healthy phase reached 100 calls in flight (the limit),
# its latency 1.33 s at most, and the limit refused 53 of 3,896 calls.
# Refusing what goes beyond the limit is the limit's job, so in a phase
# whose loops lagged by 100 ms (scenario) or more, limit refusals up to 5 %
# of the calls pass, and the p99 bound grows by the lag and the pile-up it
# leaves (below). Without such a lag, or beyond 5 %, or with any failure that
# is not a limit refusal, the check fails: a limit that throttles a healthy
# API refuses calls all through the phase, far beyond 5 %.
set(h breaker_adaptive_healthy)
string(REGEX REPLACE "\\..*" "" lag "${${h}_loop_lag_ms}")
math(EXPR not_refused "${${h}_offered} - ${${h}_limit_exceeded}")
if(NOT ${h}_succeeded EQUAL not_refused)
  message(FATAL_ERROR "breaker_adaptive, healthy: ${${h}_succeeded} of ${${h}_offered} calls "
                      "succeeded, and the limit refused ${${h}_limit_exceeded}")
endif()
if(${h}_limit_exceeded GREATER 0)
  math(EXPR refusal_bound "${${h}_offered} / 20")
  if(lag LESS 100)
    message(FATAL_ERROR "breaker_adaptive, healthy: the limit refused ${${h}_limit_exceeded} of "
                        "${${h}_offered} calls, and the event loops never lagged by 100 ms "
                        "(${lag} ms at most)")
  elseif(${h}_limit_exceeded GREATER refusal_bound)
    message(FATAL_ERROR "breaker_adaptive, healthy: the limit refused ${${h}_limit_exceeded} of "
                        "${${h}_offered} calls, more than 5 %, though the event loops lagged by "
                        "${lag} ms")
  endif()
  message(STATUS "breaker_adaptive, healthy: the limit refused ${${h}_limit_exceeded} of "
                 "${${h}_offered} calls (5 % at most) while the event loops lagged by ${lag} ms "
                 "(scenario time), with ${${h}_peak_in_flight} calls in flight at most")
endif()
string(REGEX REPLACE "\\..*" "" p99 "${${h}_p99_ms}")
string(REGEX REPLACE "\\..*" "" breaker_p99 "${breaker_healthy_p99_ms}")
string(REGEX REPLACE "\\..*" "" naive_p99 "${naive_retry_healthy_p99_ms}")
set(baseline ${breaker_p99})
if(naive_p99 GREATER baseline)
  set(baseline ${naive_p99})
endif()
# With such a lag, the calls the stall held come back together and pile up
# to the limit: the demo's API serves more than its capacity of 100 in
# flight at latency x in_flight / 100 (samples/demo/scenario.cpp), and the
# limit lets 150 in at most (its max_limit), so a call the stall caught may
# take up to 1.5 x (the bound plus the lag). In a local run on 2026-12-05 a
# 484 ms lag gave a p99 of 874 ms against a baseline of 270 (bound plus lag:
# 808); the pile-up had reached the limit, 100 in flight.
set(lag_allowance 0)
set(pile_up 10)
if(NOT lag LESS 100)
  set(lag_allowance ${lag})
  set(pile_up 15)
endif()
math(EXPR p99_bound "((${baseline} * 12 + 9) / 10 + ${lag_allowance}) * ${pile_up} / 10")
message(STATUS "breaker_adaptive, healthy: p99 ${p99} ms (breaker ${breaker_p99} ms, "
               "naive_retry ${naive_p99} ms; the event loops lagged by ${lag} ms at most)")
if(p99 GREATER p99_bound)
  message(FATAL_ERROR "breaker_adaptive, healthy: p99 ${p99} ms, more than 20 % over the "
                      "breaker mode's ${breaker_p99} ms and naive_retry's ${naive_p99} ms "
                      "(plus the event loops' lag, ${lag_allowance} ms, and the pile-up it "
                      "leaves, if 100 ms or more: bound ${p99_bound} ms)")
endif()
# Outage: contained, a handful of requests reach the dead API. The breaker is
# open when the API dies (it opened on the degradation's slow calls), so what
# reaches the API is the breaker's probes: one per cycle of open_duration (5 s)
# plus the probe's deadline (probe_timeout 1 s; before it, the dead API's 503
# after 8 s and 3 or 4 probes), at most 7 in the outage's 40 s (6 or 7 by the
# cycle's phase). A failed probe's retry finds the breaker open again. At most
# 8: one to spare; more means the breaker was still closed when the API died
# (before the demo's slow-call threshold went from 8 s to 6 s: 28 to 48
# requests in --quick runs).
set(o breaker_adaptive_outage)
set(outage_bound 8)
message(STATUS "breaker_adaptive, outage: ${${o}_downstream} requests reached the dead API "
               "(naive_retry ${naive_retry_outage_downstream}, breaker "
               "${breaker_outage_downstream})")
if(${o}_downstream GREATER outage_bound)
  message(FATAL_ERROR "breaker_adaptive, outage: ${${o}_downstream} requests reached the dead "
                      "API, more than a handful (${outage_bound})")
endif()
message(STATUS "demo summary: breaker_adaptive contains the degradation and the outage")

# Healed (issue 18): failed calls are drops, not round trips, so the outage
# leaves the limit where it was and the healed API is not throttled: a handful
# of limit_exceeded at most once the phase's first 5 s (scenario time) are
# over. A stall of the machine in the phase piles calls up to the limit as in
# the healthy phase, so with the same lag (100 ms or more, scenario time) up
# to 5 % of the phase's calls may be refused; a limit left low by the outage
# refuses far more, all through the phase.
set(e breaker_adaptive_healed)
string(REGEX REPLACE "\\..*" "" healed_lag "${${e}_loop_lag_ms}")
message(STATUS "breaker_adaptive, healed: ${${e}_limit_exceeded} calls refused by the limit, "
               "${${e}_limit_exceeded_after_5s} of them 5 s or more after the heal (the event "
               "loops lagged by ${healed_lag} ms at most)")
if(${e}_limit_exceeded_after_5s GREATER 5)
  math(EXPR healed_refusal_bound "${${e}_offered} / 20")
  if(healed_lag LESS 100)
    message(FATAL_ERROR "breaker_adaptive, healed: ${${e}_limit_exceeded_after_5s} calls refused by "
                        "the limit 5 s or more after the API healed, more than a handful (5), and "
                        "the event loops never lagged by 100 ms (${healed_lag} ms at most)")
  elseif(${e}_limit_exceeded_after_5s GREATER healed_refusal_bound)
    message(FATAL_ERROR "breaker_adaptive, healed: ${${e}_limit_exceeded_after_5s} calls refused by "
                        "the limit 5 s or more after the API healed, more than 5 % of the "
                        "phase's ${${e}_offered}, though the event loops lagged by ${healed_lag} ms")
  endif()
endif()
