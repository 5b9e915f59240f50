#!/usr/bin/env bash
# The demo: installs what is missing, builds everything, prepares the demo corpus (the King
# James Bible from Debian's bible-kjv packages) and trains the demo campaign
# (deploy/examples/demo.toml) with belay-worker on this machine, printing the loss curve.
# It starts belayd (state under var/demo/belayd), submits the campaign (2 CPU ranks under
# mpirun, ZeRO stage 2), kills one rank midway, and shows belayd bringing the campaign back
# from its last checkpoint: the live progress, the loss curve, the event log and the goodput
# summary. belayd is stopped at the end. Each run submits a new campaign.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j "$(nproc)"
bin=build/bin
spec=deploy/examples/demo.toml

echo
"$bin/belay-worker" --version
"$bin/belay" validate "$spec" 2>/dev/null && [ -d var/demo/text ] || {
  scripts/demo-corpus.sh var/demo "$bin"
  "$bin/belay" validate "$spec"
}

# What a model that knows only letter frequencies would score: the corpus's unigram entropy.
python3 - <<'PY'
import collections, glob, math
counts = collections.Counter()
for path in glob.glob("var/demo/text/*.txt"):
    with open(path, "rb") as f:
        counts.update(f.read())
n = sum(counts.values())
h = -sum(c / n * math.log(c / n) for c in counts.values())
print(f"unigram entropy of the corpus: {h:.3f} nats/token (the loss of a model that learned only byte frequencies)")
PY

# belayd with its state under var/demo/belayd (store, campaign files, rank logs); stopped when
# this script ends. Ranks inherit its environment: one thread each, the ranks share the cores.
state=var/demo/belayd
ranks=$(sed -n 's/^ranks_per_node *= *\([0-9]*\).*/\1/p' "$spec")
export OMP_NUM_THREADS=$(( $(nproc) / ranks > 0 ? $(nproc) / ranks : 1 )) OPENBLAS_NUM_THREADS=1
export BELAY_SOCKET="$PWD/$state/belayd.sock"
mkdir -p "$state"
"$bin/belayd" --state-dir "$state" >var/demo/belayd.log 2>&1 &
belayd_pid=$!
killer_pid=
cleanup() {
  [ -n "$killer_pid" ] && kill "$killer_pid" 2>/dev/null || true
  kill "$belayd_pid" 2>/dev/null && wait "$belayd_pid" 2>/dev/null || true
}
trap cleanup EXIT
for _ in $(seq 100); do "$bin/belay" daemon >/dev/null 2>&1 && break; sleep 0.2; done
"$bin/belay" daemon

# A fresh campaign each run: checkpoints of an earlier demo are removed first.
rm -rf var/demo/checkpoints
id=$("$bin/belay" submit "$spec" | awk '{print $2}')
echo "submitted $id: $ranks CPU ranks under mpirun, ZeRO stage 2"

# Midway, rank 1 dies (SIGKILL): belayd must bring the campaign back by itself.
(
  while :; do
    last=$("$bin/belay" ckpt ls "$id" --json 2>/dev/null | python3 -c '
import json, sys
print(max([int(c["step"]) for c in json.load(sys.stdin).get("checkpoints", [])] or [0]))' 2>/dev/null || echo 0)
    [ "$last" -ge 100 ] && break
    sleep 1
  done
  sleep 5
  pid=$("$bin/belay" logs "$id" --rank 1 | grep -o 'belay-worker\[[0-9]*\]' | head -1 | tr -dc 0-9)
  echo "demo: killing rank 1 (pid $pid) with SIGKILL, a few steps after the checkpoint at step $last"
  kill -9 "$pid"
) &
killer_pid=$!

"$bin/belay" watch "$id" || true
wait "$killer_pid" 2>/dev/null || true
killer_pid=
echo
"$bin/belay" loss "$id"
echo
echo "event log ($("$bin/belay" events "$id" | wc -l) events):"
"$bin/belay" events "$id"
echo
"$bin/belay" goodput "$id"
echo
"$bin/belay" status "$id"
