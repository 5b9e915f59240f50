#!/usr/bin/env bash
# System test of MpiCommunicator, run by ctest with the test program as argument: the program's
# gtest suite (Communicator contract, rank environment, MPI specifics) under mpirun on 1, 2 and
# 4 ranks, then a second 4-rank run whose large sum must have the same bits as the first's.
set -euo pipefail
test_bin=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

# Open MPI in a sandbox (scripts/mpi-sandbox.conf): ctest may run as root, ranks of one node
# talk over shared memory without cross-memory attach, traffic stays on loopback, 4 ranks may
# exceed the cores.
. "$(dirname "$0")/../../scripts/mpi-env.sh" one-node
# In the sanitizer lane: Open MPI's own allocations are never freed. Full unwinding lets the
# suppressions see through its plugins, whose frames fast unwinding loses.
export LSAN_OPTIONS="suppressions=$(dirname "$0")/mpi_lsan.supp${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
# Only mpirun's rank variables: those of an enclosing Slurm job or belay backend would
# (rightly) disagree with them.
unset SLURM_PROCID SLURM_NTASKS SLURM_LOCALID BELAY_RANK BELAY_WORLD_SIZE BELAY_LOCAL_RANK

run() {
  local np=$1 log="$tmp/np$1.log"
  shift
  if ! BELAY_COMM_TEST_WORLD_SIZE=$np timeout 60 \
      mpirun -np "$np" "$test_bin" --gtest_brief=1 "$@" >"$log" 2>&1; then
    cat "$log" >&2
    fail "$np ranks: mpirun exited non-zero"
  fi
  grep -q "PASSED" "$log" || { cat "$log" >&2; fail "$np ranks: no gtest summary"; }
}

run 1
run 2
BELAY_COMM_TEST_DIGEST="$tmp/digest.1" run 4
BELAY_COMM_TEST_DIGEST="$tmp/digest.2" run 4 --gtest_filter='MpiCommunicator.LargeSum*'
[[ -s $tmp/digest.1 ]] || fail "the 4-rank run wrote no digest"
cmp -s "$tmp/digest.1" "$tmp/digest.2" ||
  fail "two 4-rank runs summed to different bits: $(cat "$tmp/digest.1") vs $(cat "$tmp/digest.2")"
echo "ok: 1, 2 and 4 ranks; 4-rank sum digest $(cat "$tmp/digest.1") in both runs"
