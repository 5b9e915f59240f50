#!/usr/bin/env bash
# The GPU check in one command: builds for sm_90 (or unpacks a bundle made by
# scripts/gpu-bundle.sh with --prebuilt), runs the gpu tests, benchmarks GPT-2 124M training
# steps against PyTorch and llm.c on the same device, and prints a short table last.
#   scripts/gpu-check.sh [--prebuilt BUNDLE.tar.xz] [--results DIR] [--compile]
#                        [--baseline-bundle EARLIER.tar.xz] [--llmc DIR]
# --results DIR writes the table there (default bench/results; elsewhere the logs too);
# --compile also times PyTorch under torch.compile; --baseline-bundle times the ZeRO stages of
# an earlier build's bundle beside this one's; --llmc DIR is llm.c's source (default
# $BELAY_LLMC_DIR, else peers/llmc, where scripts/llmc-prepare.sh puts it): without it the table
# says llm.c was not measured and the rest runs. Exits non-zero when a test fails or skips.
set -uo pipefail
cd "$(dirname "$0")/.."
prebuilt="" results=bench/results compile=0 baseline="" llmc=${BELAY_LLMC_DIR:-peers/llmc}
while [ $# -gt 0 ]; do
  case $1 in
    --prebuilt) prebuilt=$2; shift 2 ;;
    --results) results=$2; shift 2 ;;
    --compile) compile=1; shift ;;
    --baseline-bundle) baseline=$2; shift 2 ;;
    --llmc) llmc=$2; shift 2 ;;
    *) echo "usage: scripts/gpu-check.sh [--prebuilt BUNDLE.tar.xz] [--results DIR] [--compile]" \
         "[--baseline-bundle EARLIER.tar.xz] [--llmc DIR]" >&2; exit 2 ;;
  esac
done
python=${BELAY_GPU_PYTHON:-python3}
mkdir -p "$results"
# Outside the repo's results folder (a device run's output folder) the logs are written there as
# they grow, so a run cut short still leaves them behind.
if [ "$results" != bench/results ]; then logs=$results/logs; mkdir -p "$logs"; else logs=$(mktemp -d); fi
# No single step may take the whole run with it.
step_timeout=${BELAY_GPU_STEP_TIMEOUT:-240}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu-check: no GPU here (nvidia-smi -L failed)" >&2
  exit 1
fi
device=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
echo "gpu-check: $device, driver $(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)"

if [ -n "$prebuilt" ]; then
  root=$(mktemp -d)
  tar -C "$root" -xJf "$prebuilt" || exit 1
  # cuBLASLt is not in the bundle: take the machine's own.
  lt=$(find /usr/local /usr/lib /opt -name 'libcublasLt.so.13*' 2>/dev/null | head -1)
  [ -n "$lt" ] || { echo "gpu-check: no libcublasLt.so.13 on this machine" >&2; exit 1; }
  # NCCL neither: the machine's, or the one PyTorch's wheels bring.
  nccl=$(find /usr/local /usr/lib /opt -name 'libnccl.so.2*' 2>/dev/null | head -1)
  [ -n "$nccl" ] || nccl=$($python -c 'import glob, site
dirs = site.getsitepackages() + [site.getusersitepackages()]
hits = [p for d in dirs for p in glob.glob(d + "/nvidia/nccl/lib/libnccl.so.2*")]
print(hits[0] if hits else "")' 2>/dev/null)
  [ -n "$nccl" ] || echo "gpu-check: no libnccl.so.2 on this machine: the NCCL and training tests will fail" >&2
  export LD_LIBRARY_PATH="$root/lib:$(dirname "$lt")${nccl:+:$(dirname "$nccl")}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  bin() { echo "$root/bin/$1"; }
  bindir=$root/bin
else
  build=${BELAY_GPU_BUILD_DIR:-build-gpu}
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DBELAY_WITH_CUDA=ON \
    -DCMAKE_CUDA_ARCHITECTURES=90 >"$logs/configure.log" 2>&1 || { cat "$logs/configure.log"; exit 1; }
  cmake --build "$build" -j "$(nproc)" --target device_test cuda_kernels_test cuda_gpt2_test \
    comm_nccl_communicator_test gpu_train_bench belay belay-worker belayd >"$logs/build.log" 2>&1 ||
    { tail -50 "$logs/build.log"; exit 1; }
  bin() { find "$build" -type f -name "$1" -perm -u+x | head -1; }
  bindir=$build/bin
fi

# llm.c's train_gpt2cu builds on the CPUs (scripts/llmc-build.sh) while the tests run.
llmc_build_pid=""
if [ -f "$llmc/train_gpt2.cu" ]; then
  timeout "$step_timeout" scripts/llmc-build.sh "$llmc" "$work/train_gpt2cu" "$logs/llmc_build.log" &
  llmc_build_pid=$!
fi

# Tests: run each binary directly (a bundle has no ctest tree); any failure or skip fails.
status=0
test_rows=()
for t in device_test cuda_kernels_test cuda_gpt2_test; do
  timeout "$step_timeout" "$(bin $t)" >"$logs/$t.log" 2>&1
  rc=$?
  passed=$(grep -c '^\[       OK \]' "$logs/$t.log")
  skipped=$(grep -c '^\[  SKIPPED \] [A-Za-z].*(' "$logs/$t.log")
  failed=$(grep '^\[  FAILED  \] [A-Za-z].*(' "$logs/$t.log" | wc -l)
  echo "--- $t: rc $rc, $passed passed, $failed failed, $skipped skipped"
  grep -E '^\[  FAILED  \]|^\[  SKIPPED \]|relative error|loss cpu|Failure|error' "$logs/$t.log" | head -60
  test_rows+=("$t|$passed|$failed|$skipped")
  if [ $rc -ne 0 ] || [ "$failed" -ne 0 ] || [ "$skipped" -ne 0 ]; then status=1; fi
done

# System tests: NCCL (one rank; every GPU when there are several), belay-worker training on
# the GPU (determinism, resume, ZeRO, against the CPU path) and a GPU campaign under belayd.
# Exit 77 is a skip, which fails here.
for t in nccl_communicator:tests/comm/nccl_communicator_test.sh:comm_nccl_communicator_test \
         train_gpu:tests/worker/gpu_train_test.sh: gpu_campaign:tests/daemon/gpu_campaign_test.py:; do
  IFS=: read -r name script arg <<<"$t"
  if [ -n "$arg" ]; then target=$(bin "$arg"); else target=$bindir; fi
  runner=()
  [[ $script == *.py ]] && runner=("$python")
  start=$SECONDS
  timeout "$step_timeout" "${runner[@]}" "$script" "$target" >"$logs/${name}_test.log" 2>&1
  rc=$?
  echo "--- $name: $((SECONDS - start)) s"
  echo "--- $name: rc $rc"
  tail -8 "$logs/${name}_test.log"
  if [ $rc -eq 0 ]; then test_rows+=("$name|1|0|0"); else test_rows+=("$name|0|1|0"); status=1; fi
done

# Benchmarks: belay picks the largest micro-batch that fits; PyTorch and llm.c run the same B.
# belay and llm.c train every step on the same tokens (the first B*T+1 of one llm.c token shard,
# enough for B = 64, T = 1024) and average the same steps: $bench_steps after $bench_warmup
# warm-up steps.
bench_warmup=3 bench_steps=10
tokens=$work/tokens.bin
data_args=()
if $python bench/llmc_peer.py shard "$tokens" --tokens $((64 * 1024 + 1)); then
  data_args=(--data "$tokens")
fi
steps_args=(--warmup "$bench_warmup" --steps "$bench_steps")
timeout "$step_timeout" "$(bin gpu_train_bench)" "${steps_args[@]}" "${data_args[@]}" 2>&1 | tee "$logs/belay_bench.log"
belay_json=$(grep '^{' "$logs/belay_bench.log" | tail -1)
[ -n "$belay_json" ] || status=1
B=$(echo "$belay_json" | $python -c 'import json,sys; print(json.load(sys.stdin)["B"])' 2>/dev/null || echo 16)
T=$(echo "$belay_json" | $python -c 'import json,sys; print(json.load(sys.stdin)["T"])' 2>/dev/null || echo 1024)
# The same step with the materialising attention, for what the fused kernel buys.
timeout "$step_timeout" "$(bin gpu_train_bench)" --batch "$B" --materialised-attention "${steps_args[@]}" \
  "${data_args[@]}" 2>&1 | tee "$logs/belay_materialised_bench.log"
materialised_json=$(grep '^{' "$logs/belay_materialised_bench.log" | tail -1)
PYTHONUNBUFFERED=1 timeout "$step_timeout" $python bench/gpt2_torch_cuda.py --batch "$B" 2>&1 | tee "$logs/torch_bench.log"
torch_json=$(grep '^{' "$logs/torch_bench.log" | tail -1)
compile_json=""
if [ "$compile" = 1 ]; then
  PYTHONUNBUFFERED=1 timeout "${BELAY_GPU_COMPILE_TIMEOUT:-420}" $python bench/gpt2_torch_cuda.py --batch "$B" --compile 2>&1 \
    | tee "$logs/torch_compile_bench.log"
  compile_json=$(grep '^{' "$logs/torch_compile_bench.log" | tail -1)
fi

# llm.c (train_gpt2cu, bf16, no cuDNN) on the same shape from random init (-e d12), batch B,
# the same tokens every step (-a 1: the first batch of the -i/-j shard, as gpu_train_bench
# --data), weight decay 0.1 as belay; validation only around the training steps (-v, one batch
# -m 1), no sampling (-s 0). Where the build here failed (no nvcc), the binary
# scripts/llmc-prepare.sh built beside the source runs instead.
llmc_json="" llmc_note=""
if [ -z "$llmc_build_pid" ]; then
  llmc_note="not measured: no llm.c source at $llmc (scripts/llmc-prepare.sh puts it in peers/llmc)"
else
  llmc_bin=$work/train_gpt2cu
  if wait "$llmc_build_pid"; then
    llmc_how="built here (scripts/llmc-build.sh)"
  elif [ -f "$llmc/train_gpt2cu" ] && cp "$llmc/train_gpt2cu" "$llmc_bin" && chmod +x "$llmc_bin"; then
    llmc_how="prebuilt by scripts/llmc-prepare.sh (build here failed: $(tail -1 "$logs/llmc_build.log"))"
  else
    llmc_bin=""
    llmc_note="not measured: build failed: $(grep -m1 -E 'error|no nvcc|has no' "$logs/llmc_build.log" ||
      tail -1 "$logs/llmc_build.log")"
  fi
  if [ -n "$llmc_bin" ]; then
    echo "--- llm.c: $llmc_how"
    mkdir -p "$work/llmc_run"
    (cd "$work/llmc_run" && timeout "$step_timeout" "$llmc_bin" -i "$tokens" -j "$tokens" -e d12 \
      -b "$B" -t "$T" -x $((bench_warmup + bench_steps)) -a 1 -c 0.1 -v 1000000 -m 1 -s 0 \
      -o "$work/llmc_run/log") >"$logs/llmc_bench.log" 2>&1
    rc=$?
    grep -E '^step|^device memory|WARNING' "$logs/llmc_bench.log"
    if llmc_json=$($python bench/llmc_peer.py parse "$logs/llmc_bench.log" --batch "$B" --seq "$T" \
         --warmup "$bench_warmup" --steps "$bench_steps"); then
      llmc_note="llm.c: train_gpt2cu $llmc_how; steps $((bench_warmup + 1))-$((bench_warmup + bench_steps)) timed, as belay's"
    else
      llmc_note="not measured: train_gpt2cu exited $rc: $llmc_json; last line: $(tail -1 "$logs/llmc_bench.log")"
      llmc_json=""
    fi
  fi
fi
echo "--- llm.c: ${llmc_json:-$llmc_note}"

# ZeRO stages 0, 1, 2 through the whole trainer on one GPU; with --baseline-bundle, an earlier
# build's trainer in the same run.
zero_args=()
if [ -n "$baseline" ]; then
  baseline_root=$(mktemp -d)
  tar -C "$baseline_root" -xJf "$baseline" && zero_args=(--baseline "$baseline_root/bin")
fi
timeout "$step_timeout" $python bench/gpu_zero_bench.py "$bindir" "${zero_args[@]}" 2>&1 | tee "$logs/zero_bench.log"
[ "${PIPESTATUS[0]}" -eq 0 ] || status=1

stamp=$(date -u +%Y-%m-%d)
slug=$(echo "$device" | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
table="$results/$stamp-$slug-gpu-check.txt"
{
  echo "gpu-check $stamp on $device ($(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1) driver)"
  echo
  printf '%-18s %7s %7s %8s\n' test passed failed skipped
  for r in "${test_rows[@]}"; do IFS='|' read -r n p f s <<<"$r"; printf '%-18s %7s %7s %8s\n' "$n" "$p" "$f" "$s"; done
  echo
  BELAY="$belay_json" MATERIALISED="$materialised_json" TORCH="$torch_json" COMPILED="$compile_json" \
    LLMC="$llmc_json" LLMC_NOTE="$llmc_note" $python - <<'PY'
import json, os
rows = [json.loads(os.environ[k]) for k in ("BELAY", "MATERIALISED", "TORCH", "COMPILED", "LLMC")
        if os.environ.get(k)]
print(f"{'GPT-2 124M train step':29} {'B':>3} {'T':>5} {'ms/step':>9} {'tokens/s':>10} {'MFU':>6} {'loss 1st→last':>16}")
for r in rows:
    print(f"{r['impl']:29} {r['B']:>3} {r['T']:>5} {r['step_ms']:>9.1f} {r['tokens_per_s']:>10.0f} "
          f"{100 * r['mfu']:>5.1f}% {r['first_loss']:>7.3f}→{r['last_loss']:.3f}")
base = {r["impl"]: r for r in rows}
if "belay" in base:
    for other in ("pytorch", "pytorch-compile", "llm.c"):
        if other in base:
            ratio = base["belay"]["tokens_per_s"] / base[other]["tokens_per_s"]
            goal = " (goal ≥ 1.15)" if other == "llm.c" else ""
            print(f"ratio belay/{other} (tokens/s): {ratio:.2f}{goal}")
if os.environ.get("LLMC_NOTE"):
    note = base.get("llm.c", {}).get("note")
    print(("llm.c " if "llm.c" not in base else "") + os.environ["LLMC_NOTE"] +
          (f" ({note})" if note else ""))
PY
  echo
  sed -n '/^GPT-2 124M shape/,/^{/p' "$logs/zero_bench.log" | grep -v '^{'
} >"$table"
echo
echo "=== $table"
cat "$table"
exit $status
