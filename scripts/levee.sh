#!/usr/bin/env bash
# levee's two commands, for a fresh Debian 12 machine (run as root, or with sudo
# available). Each installs whatever is missing, builds and runs.
#
#   scripts/levee.sh demo   build and run the demo
#   scripts/levee.sh bench  build the benchmarks (release) and run them: medians
#                           of 5 repetitions and a summary against the targets;
#                           the HTTP client against wrk (levee-bench-http)
#   scripts/levee.sh docs   build the API reference (Doxygen) into
#                           build/docs/html; any warning fails it
#   scripts/levee.sh test   build and run the whole test suite, as CI does:
#                           clang-format; the API reference (Doxygen, warnings
#                           as errors); GCC 12 + AddressSanitizer/UBSan (every
#                           test); Clang 14 + ThreadSanitizer (the concurrency
#                           tests; every translation unit compiled
#                           -fsyntax-only); Clang 14 + libFuzzer (two targets,
#                           60 s); a release build of the library, the samples,
#                           the benchmarks and the concurrency tests, running the
#                           benchmarks once (smoke), the concurrency tests again
#                           without sanitizers and the demo, checking its summary;
#                           promtool on the metrics exposition; installed
#                           (the library alone, header-only Asio) and vendored
#                           (LEVEE_ASIO_SEPARATE_COMPILATION=ON) consumers.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
jobs=$(nproc)

# Debian packages the build, the tests, the demo and CI use.
packages=(cmake ninja-build pkg-config g++ clang-14 libclang-rt-14-dev clang-format-14 ccache
  libboost1.81-dev libboost-json1.81-dev libboost-program-options1.81-dev catch2 libbenchmark-dev
  gnuplot-nox valgrind prometheus doxygen
  libssl-dev libc-ares-dev nginx-light redis-server libhiredis-dev python3 wrk)

# install_missing [PACKAGE...]: those given, else every package above.
install_missing() {
  local missing=() wanted=("$@")
  [ ${#wanted[@]} -gt 0 ] || wanted=("${packages[@]}")
  for p in "${wanted[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "== installing: ${missing[*]}"
  local sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  # Servers the tests start themselves (nginx, redis) must not start as system
  # services on install: policy-rc.d refuses it for the length of the install.
  local policy=/usr/sbin/policy-rc.d added_policy=""
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo tee "$policy" >/dev/null
    $sudo chmod +x "$policy"
    added_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" ||
    { [ -z "$added_policy" ] || $sudo rm -f "$policy"; return 1; }
  [ -z "$added_policy" ] || $sudo rm -f "$policy"
}

# configure DIR CMAKE-ARGS...
configure() {
  local dir=$1
  shift
  cmake -S "$root" -B "$dir" -G Ninja "$@" >/dev/null
}

# Each step says when it starts (seconds since the command began), so that a
# CI log shows where the time goes.
step() { echo; echo "== [$(date -u +%H:%M:%S), ${SECONDS} s] $*"; }

run_demo() {
  install_missing
  step "building the demo (release)"
  configure build/release -DCMAKE_BUILD_TYPE=Release -DLEVEE_BUILD_TESTS=OFF
  cmake --build build/release --target levee-demo -j "$jobs"
  step "running the demo: the seed scenario, once per mode (about a minute)"
  ./build/release/samples/levee-demo --out demo-out "$@"
}

run_bench() {
  install_missing
  step "building the benchmarks (release)"
  configure build/bench -DCMAKE_BUILD_TYPE=Release -DLEVEE_BUILD_BENCH=ON -DLEVEE_BUILD_TESTS=OFF \
    -DLEVEE_BUILD_SAMPLES=OFF
  cmake --build build/bench --target levee-bench levee-bench-instructions levee-bench-http levee-bench-scale \
    -j "$jobs"
  step "running the benchmarks"
  ./build/bench/bench/levee-bench --benchmark_repetitions=5 --benchmark_enable_random_interleaving=true \
    --benchmark_report_aggregates_only=true "$@"
  step "instructions per call (callgrind)"
  bench/instructions.sh build/bench/bench/levee-bench-instructions
  step "the HTTP client against wrk: nginx on 127.0.0.1, HTTP and HTTPS, 1/16/64 connections, 5 s each"
  ./build/bench/bench/levee-bench-http --duration 5
  step "how the cost grows: the registry at 1k/100k/1M keys, the fleet link at 1/100/1,000 breakers against redis-server (about 4 min, 3 GB)"
  ./build/bench/bench/levee-bench-scale
}

# The API reference, from the public headers' comments (docs/Doxyfile): every
# public name documented, every reference resolved. Doxygen's warnings go to
# build/docs/warnings.log; one of them fails the build.
build_docs() {
  step "API reference: doxygen $(doxygen --version), warnings are errors"
  rm -rf build/docs
  mkdir -p build/docs
  local rc=0
  doxygen docs/Doxyfile >/dev/null 2>build/docs/warnings.log || rc=$?
  if [ "$rc" -ne 0 ] || [ -s build/docs/warnings.log ]; then
    head -40 build/docs/warnings.log
    echo "doxygen: $(wc -l <build/docs/warnings.log) warnings (build/docs/warnings.log), exit status $rc"
    exit 1
  fi
  echo "reference: build/docs/html/index.html"
}

run_docs() {
  install_missing doxygen
  build_docs
}

# The build's eight slowest steps (ninja's log, in seconds): where the next
# minutes of CI are (docs/ci.md, "Where the time goes").
slowest() {
  echo "slowest steps of $1:"
  # One line per command (a step with several outputs has one hash), and no
  # head: under pipefail its early exit could fail the run.
  awk 'NR > 1 && !seen[$5]++ { printf "%8.1f s  %s\n", ($2 - $1) / 1000, $4 }' "$1/.ninja_log" |
    sort -rn | sed -n 1,8p
}

run_tests() {
  install_missing
  local start=$SECONDS

  step "clang-format"
  local unformatted
  unformatted=$(git ls-files '*.hpp' '*.ipp' '*.cpp' | xargs clang-format-14 --dry-run 2>&1 | grep -c warning || true)
  if [ "$unformatted" != "0" ]; then
    git ls-files '*.hpp' '*.ipp' '*.cpp' | xargs clang-format-14 --dry-run 2>&1 | head -20
    echo "clang-format: $unformatted places differ (run clang-format-14 -i)"
    exit 1
  fi

  build_docs

  # The sanitizer builds carry line tables only (-g1: a report still names
  # file and line), and each build directory goes once its stage has passed:
  # with full debug information the ASan build alone took 9.8 GB, and the TSan
  # build beside it ran a runner out of disk. A failing stage keeps its
  # directory (set -e stops first).
  # -Og, not -O1: GCC compiles this code (coroutines, Asio's templates) in
  # about 55 % of the time at -Og (bulkhead.cpp 16 s against 30 s,
  # pipeline.cpp 148 s against 245 s), and the tests still run optimized
  # enough (docs/ci.md, "Where the time goes").
  # UBSan without its vptr, alignment and null checks: they instrument every
  # member access and were 40 % of this build's compile time
  # (tests/bulkhead.cpp 17.6 s against 10.6 s of CPU), and AddressSanitizer already
  # reports what they would here (a use after free, a null dereference).
  # It builds the programs the tests run (levee-test-programs), not the
  # demo, the samples no test runs and the benchmarks: the release stage
  # builds those (335 s of its CPU, docs/ci.md) and runs the demo and the
  # benchmarks' smoke runs.
  step "GCC 12, AddressSanitizer + UndefinedBehaviorSanitizer: build every program a test runs, run every test"
  configure build/ci-gcc-asan -DCMAKE_CXX_COMPILER=g++-12 -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS_DEBUG="-g1 -Og" -DLEVEE_SANITIZE=address,undefined \
    -DLEVEE_NO_SANITIZE=vptr,alignment,null
  cmake --build build/ci-gcc-asan --target levee-test-programs -j "$jobs"
  slowest build/ci-gcc-asan
  export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1
  ctest --test-dir build/ci-gcc-asan --output-on-failure -j "$jobs"
  echo "disk: build/ci-gcc-asan took $(du -sh build/ci-gcc-asan | cut -f1); removed"
  rm -rf build/ci-gcc-asan

  # Clang 14 builds only the programs the concurrency tests are in
  # (levee-concurrency-tests, the top-level CMakeLists.txt), and compiles every other
  # translation unit with -fsyntax-only (scripts/clang_check.py): each
  # target's errors and warnings for a fifth of a build's time. Building
  # every target here took 19 minutes of a 68-minute run (docs/ci.md).
  step "Clang 14, ThreadSanitizer: build and run the concurrency tests; every translation unit checked"
  configure build/ci-clang-tsan -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS_DEBUG="-g1 -O1" -DLEVEE_SANITIZE=thread -DLEVEE_BUILD_BENCH=ON \
    -DCMAKE_EXPORT_COMPILE_COMMANDS=ON
  python3 scripts/clang_check.py build/ci-clang-tsan "$jobs"
  cmake --build build/ci-clang-tsan --target levee-concurrency-tests -j "$jobs"
  slowest build/ci-clang-tsan
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    ctest --test-dir build/ci-clang-tsan --output-on-failure -L concurrency
  echo "disk: build/ci-clang-tsan took $(du -sh build/ci-clang-tsan | cut -f1); removed"
  rm -rf build/ci-clang-tsan

  step "Clang 14 + libFuzzer: the HTTP response framing (45 s) and URLs/request validation (15 s)"
  configure build/ci-fuzz -DCMAKE_CXX_COMPILER=clang++-14 -DCMAKE_BUILD_TYPE=Debug \
    -DCMAKE_CXX_FLAGS_DEBUG="-g -O1" -DLEVEE_BUILD_FUZZ=ON -DLEVEE_BUILD_TESTS=OFF -DLEVEE_BUILD_SAMPLES=OFF
  cmake --build build/ci-fuzz --target levee-fuzz-http-response levee-fuzz-url -j "$jobs"
  rm -rf build/ci-fuzz/corpus build/ci-fuzz/corpus-url
  cp -r fuzz/corpus build/ci-fuzz/corpus
  cp -r fuzz/corpus-url build/ci-fuzz/corpus-url
  ./build/ci-fuzz/fuzz/levee-fuzz-http-response -max_total_time=45 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 build/ci-fuzz/corpus 2>&1 | tail -n 4
  ./build/ci-fuzz/fuzz/levee-fuzz-url -max_total_time=15 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 build/ci-fuzz/corpus-url 2>&1 | tail -n 4

  # The library, every sample, the benchmarks and the programs of the
  # concurrency tests, at -O3 with warnings as errors. Not the other test
  # programs: they took 1,230 of this build's 1,690 s of CPU, and the
  # sanitizer stage builds and runs them (docs/ci.md, "Where the time goes").
  # And the programs of the HTTP tests: they run against real sockets and real
  # servers, whose timing an optimized build changes (a test of the upstream
  # once passed under the sanitizers and failed in every optimized build).
  step "release build (GCC 12, -O3, warnings as errors): the library, the samples, the benchmarks, the concurrency and HTTP tests"
  rm -rf build/ci-install build/ci-consumer build/ci-subdir build/ci-demo build/ci-demo-fleet \
    build/ci-demo-replicas
  configure build/ci-release -DCMAKE_BUILD_TYPE=Release -DLEVEE_BUILD_TESTS=ON -DLEVEE_BUILD_SAMPLES=ON \
    -DLEVEE_BUILD_BENCH=ON
  cmake --build build/ci-release -j "$jobs" \
    --target levee tools/flaky/all samples/all bench/all levee-concurrency-tests levee-http-tests
  slowest build/ci-release

  step "benchmarks: each once, briefly, as a smoke test (no timing is checked)"
  ./build/ci-release/bench/levee-bench --smoke --benchmark_min_time=0.001 >/dev/null
  # The HTTP client against wrk on its own nginx: about 10 s, no timing checked.
  ./build/ci-release/bench/levee-bench-http --smoke >/dev/null
  # The registry and the fleet link at small sizes, against a private
  # redis-server: about 2 s, no timing checked.
  ./build/ci-release/bench/levee-bench-scale --smoke >/dev/null

  # Sanitizers change the timing, and that hides races: the concurrency tests
  # run again in the optimized build, each up to 8 times, two at a time.
  step "the concurrency tests in the release build, without sanitizers: 8 times over, two processes at a time"
  ctest --test-dir build/ci-release --output-on-failure -L concurrency -j 2 --repeat until-fail:8

  step "the HTTP tests in the release build, without sanitizers, once"
  ctest --test-dir build/ci-release --output-on-failure -L http -j 2

  step "the demo, --quick: the guarded modes must amplify less and fail faster than naive retries"
  ./build/ci-release/samples/levee-demo --quick --out build/ci-demo --summary build/ci-demo/summary.json \
    --metrics-out build/ci-demo/metrics.prom
  cmake -DSUMMARY=build/ci-demo/summary.json -P cmake/check-demo-summary.cmake

  # --scale 0.1, not --quick (0.07): a p99 bound of 20 % is a few ms of real
  # time at 0.07, less than a loaded runner's stalls (docs/demo.md).
  step "the replicas demo, --scale 0.1 --replicas 3: upstream keeps 99 % and its p99 in every phase, the sick replica gets its probes only"
  ./build/ci-release/samples/levee-demo --scale 0.1 --replicas 3 --no-chart --out build/ci-demo-replicas \
    --summary build/ci-demo-replicas/summary.json
  cmake -DSUMMARY=build/ci-demo-replicas/summary.json -P cmake/check-replicas-summary.cmake

  step "the fleet demo, --quick --fleet 4: one prober per open period, opened together, Redis down costs nothing"
  ./build/ci-release/samples/levee-demo --quick --fleet 4 --no-chart --out build/ci-demo-fleet \
    --summary build/ci-demo-fleet/summary.json
  cmake -DSUMMARY=build/ci-demo-fleet/summary.json -P cmake/check-fleet-summary.cmake

  step "the Prometheus exposition passes promtool check metrics"
  promtool check metrics < build/ci-demo/metrics.prom
  ./build/ci-release/samples/levee-events | sed -n '/^# HELP/,$p' > build/ci-demo/events.prom
  promtool check metrics < build/ci-demo/events.prom

  # The README's install recipe: the library alone (no tests, no samples),
  # Asio and Beast header-only (the default).
  step "install the library alone, then build consumers with find_package(levee): plain, Asio's deprecated names, Asio compiled by the consumer"
  configure build/ci-lib -DCMAKE_BUILD_TYPE=Release -DLEVEE_BUILD_TESTS=OFF -DLEVEE_BUILD_SAMPLES=OFF \
    -DCMAKE_INSTALL_PREFIX="$root/build/ci-install"
  cmake --build build/ci-lib -j "$jobs"
  cmake --install build/ci-lib >/dev/null
  cmake -S tests/cmake_consumer -B build/ci-consumer -G Ninja -DCMAKE_PREFIX_PATH="$root/build/ci-install" >/dev/null
  cmake --build build/ci-consumer -j "$jobs"
  for consumer in levee-consumer levee-consumer-deprecated levee-consumer-own-asio; do
    ./build/ci-consumer/$consumer
  done

  step "build a consumer that vendors levee with add_subdirectory, Asio and Beast compiled into liblevee"
  cmake -S tests/cmake_subdir -B build/ci-subdir -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DLEVEE_ASIO_SEPARATE_COMPILATION=ON >/dev/null
  cmake --build build/ci-subdir -j "$jobs"
  ./build/ci-subdir/levee-consumer

  step "all green in $((SECONDS - start)) s"
}

case "${1:-}" in
  demo) shift; run_demo "$@" ;;
  test) shift; run_tests "$@" ;;
  bench) shift; run_bench "$@" ;;
  docs) shift; run_docs "$@" ;;
  *) echo "usage: $0 demo|test|bench|docs" >&2; exit 2 ;;
esac
