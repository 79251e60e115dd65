# Checks levee-demo --replicas N's --summary (issue 19): every mode has the
# promised figures in every phase, and in the same run the `upstream` mode
#   - succeeds for at least 99 % of the calls in every phase,
#   - keeps every phase's p99 within 20 % of its healthy phase's p99, plus
#     the phase's event-loop lag (loop_lag_ms: a stall of the machine delays
#     the calls it catches by up to its length, whatever routes them),
#   - sends the sick replica no more requests during the outage than its
#     probes (the upstream's probes of the ejected replica).
# Usage: cmake -DSUMMARY=file.json -P check-replicas-summary.cmake
cmake_minimum_required(VERSION 3.20)
file(READ "${SUMMARY}" json)
string(JSON count ERROR_VARIABLE missing GET "${json}" replicas count)
if(missing)
  message(FATAL_ERROR "summary: replicas.count is missing")
endif()
set(phases healthy degrading outage healed)
set(keys offered succeeded success_rate p50_ms p99_ms downstream requests_to_sick probes_to_sick
    attempts fast_failed peak_in_flight loop_lag_ms)
foreach(mode naive_retry breaker upstream)
  foreach(phase ${phases})
    foreach(key ${keys})
      string(JSON value ERROR_VARIABLE missing GET "${json}" replicas modes ${mode} phases ${phase}
             ${key})
      if(missing)
        message(FATAL_ERROR "summary: replicas.modes.${mode}.phases.${phase}.${key} is missing")
      endif()
      set(${mode}_${phase}_${key} "${value}")
    endforeach()
    message(STATUS "replicas (${count}), ${mode}, ${phase}: success ${${mode}_${phase}_success_rate}, "
                   "p99 ${${mode}_${phase}_p99_ms} ms, ${${mode}_${phase}_requests_to_sick} requests "
                   "to the sick replica (${${mode}_${phase}_probes_to_sick} probes)")
  endforeach()
endforeach()

# Success rate: at least 99 %, compared in whole per mille (math(EXPR) has no
# floating point): succeeded * 100 >= offered * 99.
foreach(phase ${phases})
  set(ok ${upstream_${phase}_succeeded})
  set(offered ${upstream_${phase}_offered})
  if(offered EQUAL 0)
    message(FATAL_ERROR "upstream, ${phase}: no call was made")
  endif()
  math(EXPR lhs "${ok} * 100")
  math(EXPR rhs "${offered} * 99")
  if(lhs LESS rhs)
    message(FATAL_ERROR "upstream, ${phase}: ${ok} of ${offered} calls succeeded, under 99 %")
  endif()
endforeach()

# p99: within 20 % of the healthy phase's, plus the phase's event-loop lag,
# in tenths of a millisecond.
function(tenths value out)
  if(value MATCHES "^([0-9]+)\\.([0-9])")
    set(${out} "${CMAKE_MATCH_1}${CMAKE_MATCH_2}" PARENT_SCOPE)
  elseif(value MATCHES "^([0-9]+)$")
    set(${out} "${CMAKE_MATCH_1}0" PARENT_SCOPE)
  else()
    message(FATAL_ERROR "summary: '${value}' is not a number of milliseconds")
  endif()
endfunction()
tenths("${upstream_healthy_p99_ms}" healthy)
foreach(phase ${phases})
  tenths("${upstream_${phase}_p99_ms}" p99)
  tenths("${upstream_${phase}_loop_lag_ms}" lag)
  math(EXPR bound "(${healthy} * 12 + 9) / 10 + ${lag}")
  if(p99 GREATER bound)
    message(FATAL_ERROR "upstream, ${phase}: p99 ${upstream_${phase}_p99_ms} ms, more than 20 % "
                        "over the healthy phase's ${upstream_healthy_p99_ms} ms plus the event "
                        "loops' lag in the phase, ${upstream_${phase}_loop_lag_ms} ms")
  endif()
endforeach()

# The outage: the sick replica gets its probes, nothing else.
set(sick ${upstream_outage_requests_to_sick})
set(probes ${upstream_outage_probes_to_sick})
if(sick GREATER probes)
  message(FATAL_ERROR "upstream, outage: ${sick} requests reached the sick replica, more than its "
                      "${probes} probes")
endif()
message(STATUS "replicas summary: upstream succeeds for 99 % of the calls or more and keeps its "
               "p99 within 20 % of the healthy phase's (plus the event loops' lag) in every "
               "phase; in the outage the sick "
               "replica got ${sick} requests, its probes (naive_retry sent it "
               "${naive_retry_outage_requests_to_sick}, breaker ${breaker_outage_requests_to_sick})")
