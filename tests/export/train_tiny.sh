#!/usr/bin/env bash
# Trains the tests' tiny campaign (tests/support/tiny_campaign.py: GPT-2 at d_model 32 unless
# the settings say otherwise) for 4 steps with `belay-worker train`, standalone, so that the
# export tests read a checkpoint the trainer itself wrote.
# Usage: train_tiny.sh BIN_DIR WORK_DIR RANKS ZERO_STAGE [SECTION.KEY=VALUE ...]. The settings
# go to tiny_campaign.py after the script's own. Leaves the checkpoints under
# WORK_DIR/ckpt/tiny/; with RANKS > 1 the ranks run under mpirun.
set -euo pipefail
bin=$1 work=$2 ranks=$3 zero=$4
shift 4
support=$(cd "$(dirname "$0")/../support" && pwd)
mkdir -p "$work"
cd "$work"
"$bin/belay" data prepare --out data --val-fraction 0.1 /usr/share/common-licenses/GPL-3 >/dev/null
python3 "$support/tiny_campaign.py" c.toml model.d_model=32 train.total_steps=4 \
  train.global_batch=4 checkpoint.every_steps=4 "train.zero_stage=$zero" "$@"
train=("$bin/belay-worker" --log-level warn train --spec c.toml --out ckpt)
if [ "$ranks" = 1 ]; then
  "${train[@]}" >train.jsonl
else
  # Open MPI in the sandbox of scripts/mpi-sandbox.conf; one thread per rank.
  . "$support/../../scripts/mpi-env.sh" one-node
  unset SLURM_PROCID SLURM_NTASKS SLURM_LOCALID BELAY_RANK BELAY_WORLD_SIZE BELAY_LOCAL_RANK
  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 timeout 300 mpirun -np "$ranks" "${train[@]}" \
    >train.jsonl
fi
