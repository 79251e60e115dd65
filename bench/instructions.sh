#!/usr/bin/env bash
# Instructions per call of the CLOSED path (bare, frame floor, guarded, guarded
# with a transition listener, guarded with a count window, guarded inside a
# throttle, guarded with an adaptive limit nested and as one guard set, guarded
# inside a rate limiter, a hedge and with_timeout), counted
# by callgrind: deterministic, unlike nanoseconds on a shared machine.
#   bench/instructions.sh [path/to/levee-bench-instructions]
set -euo pipefail
bin=${1:-build/bench/bench/levee-bench-instructions}
count() {
  valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
    awk '/Collected/ {print $4}'
}
declare -A per_call
for mode in bare floor guarded listened count throttle adaptive pair calls yielding hedge rate timeout; do
  a=$(count "$mode" 100000)
  b=$(count "$mode" 200000)
  per_call[$mode]=$(((b - a) / 100000))
  echo "$mode: ${per_call[$mode]} instructions per call"
done
echo "the frame adds $((per_call[floor] - per_call[bare])), levee's own work $((per_call[guarded] - per_call[floor])) (target <= 100)"
echo "a transition listener adds $((per_call[listened] - per_call[guarded])) per call"
echo "a count window instead of the time window: levee's own work $((per_call[count] - per_call[floor])) (target: no more than the time window's $((per_call[guarded] - per_call[floor])))"
echo "a throttle around the guarded call adds $((per_call[throttle] - per_call[guarded]))"
echo "an adaptive limit inside the breaker adds $((per_call[adaptive] - per_call[guarded])) (nested), $((per_call[pair] - per_call[guarded])) (one guard set)"
echo "a listener for every call adds $((per_call[calls] - per_call[yielding])) (both loops yielding every 64 calls)"
echo "a rate limiter around the guarded call adds $((per_call[rate] - per_call[guarded]))"
echo "a hedge around the guarded call (answered before the delay) adds $((per_call[hedge] - per_call[guarded]))"
echo "with_timeout around the guarded call (answered at once) adds $((per_call[timeout] - per_call[guarded]))"
