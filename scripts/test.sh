#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what is missing, checks the formatting
# (scripts/check-format.sh), configures, builds
# (the CUDA path too when nvcc is present), runs every ctest test, then runs the unit tests
# again under ASan + UBSan, then runs each libFuzzer harness for a short while
# (scripts/fuzz.sh). Exits non-zero on any failure. BELAY_SKIP_ASAN=1 skips the sanitizer
# lane, BELAY_SKIP_FUZZ=1 the fuzzing lane; BELAY_FUZZ_SECONDS sets its time per harness (20).
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

if [ "${BELAY_SKIP_FUZZ:-0}" != 1 ]; then
  scripts/fuzz.sh "${BELAY_FUZZ_SECONDS:-20}"
fi
echo "test.sh: all tests passed"
