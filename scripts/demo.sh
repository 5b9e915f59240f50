#!/usr/bin/env bash
# The demo: installs what is missing, builds everything, prepares the demo corpus (the King
# James Bible from Debian's bible-kjv packages) and trains the demo campaign
# (deploy/examples/demo.toml) with belay-worker on this machine, printing the loss curve.
# Until belayd carries campaigns, the campaign runs standalone: its ranks (ranks_per_node in
# the campaign file) started by mpirun, data-parallel with ZeRO stage 2. Running it again
# resumes from the last checkpoint under var/demo/checkpoints (remove var/demo to start over).
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
  mkdir -p var/demo/text
  bible Gen1:1-Mal4:6 > var/demo/text/1-old-testament.txt
  bible Mat1:1-Rev22:21 > var/demo/text/2-new-testament.txt
  rm -rf var/demo/data
  "$bin/belay" data prepare --out var/demo/data var/demo/text/*.txt
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

resume=()
if [ -d var/demo/checkpoints/demo ]; then resume=(--resume var/demo/checkpoints); fi
ranks=$(sed -n 's/^ranks_per_node *= *\([0-9]*\).*/\1/p' "$spec")
source scripts/mpi-env.sh
# One thread per rank: the ranks share this machine's cores.
export OMP_NUM_THREADS=$(( $(nproc) / ranks > 0 ? $(nproc) / ranks : 1 )) OPENBLAS_NUM_THREADS=1
echo "training $spec on $ranks CPU ranks (mpirun; one line per 10 steps, evaluations as they come)"
mpirun -np "$ranks" "$bin/belay-worker" --log-level warn train --spec "$spec" "${resume[@]}" | python3 -c '
import json, sys
for line in sys.stdin:
    r = json.loads(line)
    if r.get("event") == "memory":
        print("%d ranks, ZeRO stage %d: per rank %.2f MB parameters, %.2f MB gradients, %.2f MB optimizer state"
              % (r["world_size"], r["zero_stage"], r["param_bytes"][0] / 1e6,
                 r["gradient_bytes"][0] / 1e6, r["optimizer_bytes"][0] / 1e6), flush=True)
        continue
    step = r["step"]
    if "val_loss" in r:
        print("step %5d  val_loss %.4f" % (step, r["val_loss"]), flush=True)
    elif step % 10 == 0 or step == 1:
        print("step %5d  loss %.4f  lr %.2e  grad_norm %.3f  %6.0f tok/s  goldfish %.1f%%"
              % (step, r["loss"], r["lr"], r["grad_norm"], r["tokens_per_s"],
                 100 * r["goldfish_dropped"]), flush=True)
'
echo "checkpoints: var/demo/checkpoints/demo/"
ls var/demo/checkpoints/demo/
