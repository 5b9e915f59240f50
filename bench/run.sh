#!/usr/bin/env bash
# Builds and runs every benchmark; each prints its numbers and a ratio against the baseline
# it measured in the same run. Results worth keeping go to bench/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)" --target checksum_bench train_step_bench link_bench belayd belay >/dev/null
build/bench/checksum_bench "${BELAY_BENCH_MIB:-512}"
# belay's training step against PyTorch (/usr/bin/python3, Debian's python3-torch). To stay
# within about three minutes on 2 cores this times 5 steps (the binary's default is 10) and
# runs the OPENBLAS_NUM_THREADS=1 setting on the demo shape only (on the large one it costs
# a minute and a half); BELAY_BENCH_STEPS=10 gives steadier medians.
build/bench/train_step_bench --steps "${BELAY_BENCH_STEPS:-5}" --openblas1 demo
# Data parallelism: ZeRO stages 0, 1, 2 on 1, 2 and 4 ranks (mpirun), step time against one
# rank and bytes sent against each stage's theoretical volume (about a minute on 2 cores).
/usr/bin/python3 bench/zero_bench.py build/bin
# Asynchronous checkpoint saves against synchronous ones in the same run (a 130 MB shard every
# 2 steps; about two minutes on 2 cores).
/usr/bin/python3 bench/async_save_bench.py build/bin
# belayd carrying one attempt of 100,000 ranks over the TLS worker link (every rank's
# heartbeats, rank 0's step reports with both per-rank arrays at 5/s), against an empty gRPC
# server in the same run: 2 × (registration + BELAY_BENCH_LINK_SECONDS, default 180 s).
build/bench/link_bench run --seconds "${BELAY_BENCH_LINK_SECONDS:-180}"
