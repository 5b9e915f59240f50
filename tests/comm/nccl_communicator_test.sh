#!/usr/bin/env bash
# System test of NcclCommunicator, run with the test program as argument: its gtest suite
# (Communicator contract through device staging, device sums, ids) as one rank, then as W
# ranks on W GPUs (one process each, joined by an id file) where the machine has W >= 2.
# Exits 77 (skip) without a CUDA device; one GPU runs the single rank only and says so.
set -uo pipefail
test_bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
unset SLURM_PROCID SLURM_NTASKS SLURM_LOCALID OMPI_COMM_WORLD_RANK OMPI_COMM_WORLD_SIZE \
  OMPI_COMM_WORLD_LOCAL_RANK BELAY_RANK BELAY_WORLD_SIZE BELAY_LOCAL_RANK

count=$("$test_bin" --device-count)
rc=$?
if [ $rc -eq 77 ]; then echo "$count"; exit 77; fi
[ $rc -eq 0 ] || fail "cannot count devices: $count"

timeout 120 "$test_bin" --gtest_brief=1 >"$tmp/single.log" 2>&1 || { cat "$tmp/single.log" >&2; fail "one rank"; }
grep -q PASSED "$tmp/single.log" || { cat "$tmp/single.log" >&2; fail "one rank: no gtest summary"; }
echo "ok: one rank on one GPU"

if [ "$count" -lt 2 ]; then
  echo "multi-rank NCCL: skipped, this machine has $count GPU (NCCL runs one rank per GPU)"
  exit 0
fi
"$test_bin" --new-id "$tmp/id" || fail "cannot make an NCCL id"
pids=()
for ((r = 0; r < count; r++)); do
  BELAY_RANK=$r BELAY_WORLD_SIZE=$count BELAY_LOCAL_RANK=$r BELAY_NCCL_TEST_ID=$tmp/id \
    timeout 180 "$test_bin" --gtest_brief=1 >"$tmp/rank$r.log" 2>&1 &
  pids+=($!)
done
status=0
for ((r = 0; r < count; r++)); do
  if ! wait "${pids[$r]}" || ! grep -q PASSED "$tmp/rank$r.log"; then
    echo "--- rank $r" >&2
    cat "$tmp/rank$r.log" >&2
    status=1
  fi
done
[ $status -eq 0 ] || fail "$count ranks"
echo "ok: $count ranks on $count GPUs"
