# Checks levee-demo --fleet N's --summary (issue 14): with the link, the fleet
# sends fewer probes to the dead API than N lone breakers (one prober per open
# period), opens closer together, and no call failed or waited because of the
# link (Redis up or down) beyond what the same run measured without one.
# Usage: cmake -DSUMMARY=file.json -P check-fleet-summary.cmake
cmake_minimum_required(VERSION 3.20)
file(READ "${SUMMARY}" json)
string(JSON instances ERROR_VARIABLE missing GET "${json}" fleet instances)
if(missing)
  message(FATAL_ERROR "summary: fleet.instances is missing")
endif()
foreach(mode local shared shared_redis_down)
  foreach(key probes_in_outage open_spread_ms success_rate failed_by_fleet)
    string(JSON value ERROR_VARIABLE missing GET "${json}" fleet modes ${mode} ${key})
    if(missing)
      message(FATAL_ERROR "summary: fleet.modes.${mode}.${key} is missing")
    endif()
    set(${mode}_${key} "${value}")
  endforeach()
  message(STATUS "fleet of ${instances}, ${mode}: ${${mode}_probes_in_outage} probes in the outage, "
                 "open spread ${${mode}_open_spread_ms} ms, success ${${mode}_success_rate}, "
                 "failed by the link ${${mode}_failed_by_fleet}")
endforeach()
# One prober for the fleet: at most half the probes of lone breakers (about
# one in N with N instances).
math(EXPR doubled "${shared_probes_in_outage} * 2")
if(doubled GREATER local_probes_in_outage)
  message(FATAL_ERROR "shared: ${shared_probes_in_outage} probes in the outage, not under half of "
                      "local's ${local_probes_in_outage}")
endif()
if(NOT shared_open_spread_ms LESS local_open_spread_ms)
  message(FATAL_ERROR "shared: the instances opened ${shared_open_spread_ms} ms apart, "
                      "not closer than alone (${local_open_spread_ms} ms)")
endif()
foreach(mode shared shared_redis_down)
  if(${mode}_failed_by_fleet GREATER local_failed_by_fleet)
    message(FATAL_ERROR "${mode}: ${${mode}_failed_by_fleet} calls failed or waited in the guard, "
                        "more than without a link (${local_failed_by_fleet})")
  endif()
endforeach()
message(STATUS "fleet summary: one prober, opened together, nothing failed by the link")
