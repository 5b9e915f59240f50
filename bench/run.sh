#!/usr/bin/env bash
# Builds and runs every benchmark; each prints its numbers and a ratio against the baseline
# it measured in the same run. Results worth keeping go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target checksum_bench >/dev/null
build/bench/checksum_bench "${BELAY_BENCH_MIB:-512}"
