#!/usr/bin/env bash
# The whole test suite from a fresh clone: installs what is missing, configures, builds
# (the CUDA path too when nvcc is present), runs every ctest test, then runs the unit tests
# again under ASan + UBSan. Exits non-zero on any failure. BELAY_SKIP_ASAN=1 skips the
# sanitizer lane.
set -euo pipefail
cd "$(dirname "$0")/.."
jobs=$(nproc)

scripts/deps.sh

cmake --preset default
cmake --build --preset default -j "$jobs"
ctest --preset default -j "$jobs"

if [ "${BELAY_SKIP_ASAN:-0}" != 1 ]; then
  cmake --preset asan
  cmake --build --preset asan -j "$jobs"
  ctest --preset asan -j "$jobs" -L unit
fi
echo "test.sh: all tests passed"
