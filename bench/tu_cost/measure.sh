#!/usr/bin/env bash
# What one guarded call costs a user's translation unit: the .text size and
# the compile time of bench/tu_cost/guarded.cpp against bare.cpp (the same
# coroutine without levee), GCC 12 at -O2, Asio and Beast compiled separately
# in both (as levee::levee's users get them with
# LEVEE_ASIO_SEPARATE_COMPILATION=ON), so that the figure is levee's own cost.
# Compile times are the median of 5 runs of each, interleaved.
#   bench/tu_cost/measure.sh [compiler]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
cxx=${1:-g++-12}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
flags=(-std=c++20 -O2 -DBOOST_ASIO_SEPARATE_COMPILATION -DBOOST_BEAST_SEPARATE_COMPILATION -DBOOST_ASIO_NO_DEPRECATED -I"$root/include" -c)
text() { size -A "$1" | awk '$1 ~ /^\.text/ { s += $2 } END { print s }'; }
declare -a tb tg
for i in 1 2 3 4 5; do
  s=$(date +%s.%N); "$cxx" "${flags[@]}" "$here/bare.cpp" -o "$out/bare.o"; e=$(date +%s.%N)
  tb+=("$(echo "$e - $s" | bc)")
  s=$(date +%s.%N); "$cxx" "${flags[@]}" "$here/guarded.cpp" -o "$out/guarded.o"; e=$(date +%s.%N)
  tg+=("$(echo "$e - $s" | bc)")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
mb=$(median "${tb[@]}"); mg=$(median "${tg[@]}")
sb=$(text "$out/bare.o"); sg=$(text "$out/guarded.o")
printf 'text: bare %d B, guarded %d B, levee adds %d B (%.1f KB)\n' "$sb" "$sg" $((sg - sb)) "$(echo "($sg - $sb) / 1024" | bc -l)"
printf 'compile: bare %.2f s, guarded %.2f s, ratio %.2f\n' "$mb" "$mg" "$(echo "$mg / $mb" | bc -l)"
