#!/usr/bin/env bash
# Builds the libFuzzer harnesses (the `fuzz` preset: clang, ASan + UBSan) and runs each for a
# bounded time over a copy of its checked-in corpus (fuzz/corpus/<name>/) in a scratch
# directory, so the repository is not modified. Prints, per harness, the inputs executed and
# whether it found anything; exits non-zero if any harness crashed, leaked, hung or ran out
# of memory. What a failing harness found (the input and its log) is kept under
# build-fuzz/findings/<name>/. See docs/fuzzing.md.
#
#   scripts/fuzz.sh [SECONDS_PER_HARNESS [HARNESS...]]    (default: 20 s, every harness)
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-20}
shift || true

cmake --preset fuzz > /dev/null
cmake --build --preset fuzz -j "$(nproc)"

if [ $# -gt 0 ]; then
  harnesses=("$@")
else
  harnesses=()
  for f in fuzz/*_fuzzer.cc; do
    n=$(basename "$f" .cc)
    harnesses+=("${n%_fuzzer}")
  done
fi

# The harnesses write their inputs to files: in memory (/dev/shm) where there is one, as a
# disk-backed /tmp makes that a hundred times slower.
tmp=${TMPDIR:-/tmp}
[ -d /dev/shm ] && [ -w /dev/shm ] && tmp=/dev/shm
scratch=$(mktemp -d "$tmp/belay-fuzz.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
findings=build-fuzz/findings
failed=()
printf '%-14s %12s  %s\n' harness executions result
for h in "${harnesses[@]}"; do
  bin=build-fuzz/fuzz/${h}_fuzzer
  work=$scratch/$h
  mkdir -p "$work/corpus" "$work/artifacts" "$work/tmp"
  cp -R "fuzz/corpus/$h/." "$work/corpus/"
  args=(-max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -print_final_stats=1
        -artifact_prefix="$work/artifacts/")
  [ -f "fuzz/$h.dict" ] && args+=(-dict="fuzz/$h.dict")
  rc=0
  TMPDIR=$work/tmp "$bin" "${args[@]}" "$work/corpus" > "$work/log" 2>&1 || rc=$?
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$work/log" | tail -1)
  found=$(find "$work/artifacts" -type f | wc -l)
  if [ "$rc" -eq 0 ] && [ "$found" -eq 0 ]; then
    printf '%-14s %12s  %s\n' "$h" "${execs:-?}" "nothing found"
    continue
  fi
  failed+=("$h")
  rm -rf "${findings:?}/$h"
  mkdir -p "$findings/$h"
  cp "$work/log" "$findings/$h/log"
  cp -R "$work/artifacts/." "$findings/$h/"
  printf '%-14s %12s  %s\n' "$h" "${execs:-?}" "FOUND (exit $rc, $found inputs): $findings/$h/"
  grep -E '^(==[0-9]+==ERROR|SUMMARY|fuzz: promise broken|.*runtime error)' "$work/log" | head -5 | sed 's/^/    /' || true
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz.sh: ${failed[*]} found problems; reproduce with build-fuzz/fuzz/<name>_fuzzer <input>" >&2
  exit 1
fi
echo "fuzz.sh: ${#harnesses[@]} harnesses ran ${seconds}s each and found nothing"
