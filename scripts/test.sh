#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what is missing, checks the formatting
# (scripts/check-format.sh), configures, builds
# (the CUDA path too when nvcc is present), runs every ctest test, then runs the unit tests
# again under ASan + UBSan, builds the daemon, worker and CLI with clang's -Wthread-safety
# and runs the daemon's unit tests under ThreadSanitizer, then runs each libFuzzer harness for
# a short while (scripts/fuzz.sh). Exits non-zero on any failure. BELAY_SKIP_ASAN=1,
# BELAY_SKIP_TSAN=1 and BELAY_SKIP_FUZZ=1 skip those lanes; BELAY_FUZZ_SECONDS sets the
# fuzzing time per harness (20).
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/deps.sh
scripts/check-format.sh

cmake --preset default
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs"

if [ "${BELAY_SKIP_ASAN:-0}" != 1 ]; then
  cmake --preset asan
  cmake --build --preset asan -j "$jobs"
  ctest --preset asan -j "$jobs" -L unit
fi

if [ "${BELAY_SKIP_TSAN:-0}" != 1 ]; then
  # clang with -Wthread-safety -Werror over the daemon, the worker and the CLI; the daemon's
  # unit tests (the local scheduler's among them) under ThreadSanitizer, except the three
  # that run a gRPC client against a gRPC server in one process: Debian's gRPC and abseil
  # are not built with ThreadSanitizer, so their threads' handovers read as races.
  cmake --preset tsan
  cmake --build --preset tsan -j "$jobs"
  TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" \
    ctest --test-dir build-tsan/daemon -L unit -j "$jobs" --output-on-failure --no-tests=error \
    -E "ThroughARealServer|OverTlsOnlyWithItsCa|HeartbeatsAtTheIntervalBelaydHandsOut"
  build-tsan/common/mutex_test
fi

if [ "${BELAY_SKIP_FUZZ:-0}" != 1 ]; then
  scripts/fuzz.sh "${BELAY_FUZZ_SECONDS:-20}"
fi
echo "test.sh: all tests passed"
