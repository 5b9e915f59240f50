#!/usr/bin/env bash
# System test of `belay-worker train --device cuda` (label gpu): two GPU runs bit-identical,
# a stop and resume that continues bit-identically, the GPU's losses against the CPU path's
# (bf16 against fp32: within a tolerance), a GPU checkpoint resumed on the CPU, with each
# attention kernel; ZeRO stages 1 and 2 on the GPU; then 2 GPU ranks over NCCL under mpirun
# (stages 0, 1 and 2) where the machine has 2 GPUs.
# Arguments: the bin directory with belay and belay-worker. Exits 77 (skip) without a GPU.
set -euo pipefail
bin=$1
scripts=$(cd "$(dirname "$0")/../../scripts" && pwd)
support=$(cd "$(dirname "$0")/../support" && pwd)
if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "SKIP: no GPU (nvidia-smi -L failed)"
  exit 77
fi
gpus=$(nvidia-smi -L | grep -c '^GPU')
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"
unset SLURM_PROCID SLURM_NTASKS SLURM_LOCALID BELAY_RANK BELAY_WORLD_SIZE BELAY_LOCAL_RANK

"$bin/belay" data prepare --out data --val-fraction 0.1 /usr/share/common-licenses/GPL-3 \
  /usr/share/common-licenses/Apache-2.0 >/dev/null 2>&1 || {
  # A machine without Debian's licence texts: any text will do.
  mkdir -p text && for i in $(seq 1 40); do cat "$0"; done > text/corpus.txt
  "$bin/belay" data prepare --out data --val-fraction 0.1 text/corpus.txt >/dev/null
}

# name, heads, width, sequence length: head size 16 (materialised attention) and 64 (fused).
# The tiny campaign of tests/support/tiny_campaign.py, changed (one "key = value" a line, which
# the sed edits below rely on).
campaign() {
  python3 "$support/tiny_campaign.py" "$1.toml" campaign.name="$1" model.n_head="$2" \
    model.d_model="$3" model.seq_len="$4" train.total_steps=20 train.global_batch=4 \
    train.goldfish.k=4 train.goldfish.h=8 train.eval_every=10 checkpoint.every_steps=10 \
    checkpoint.keep_last=5
}
losses() { grep -o '"loss":[^,}]*' "$1" | cut -d: -f2; }
# Largest |a - b| - tol·|b| over paired lines of two loss lists; fails when any is > atol.
close() {
  paste -d' ' <(echo "$1") <(echo "$2") | awk -v atol="$3" -v rtol="$4" -v what="$5" '
    { d = $1 - $2; if (d < 0) d = -d; b = $2 < 0 ? -$2 : $2; if (d > atol + rtol * b) { bad++; msg = msg " " NR ":" $1 "/" $2 } }
    END { if (bad) { print what ": " bad " losses outside tolerance:" msg > "/dev/stderr"; exit 1 } }'
}

for shape in "small 2 32 32" "fused 2 128 64"; do
  set -- $shape
  name=$1
  campaign "$@"
  gpu() { "$bin/belay-worker" --log-level warn train --spec "$name.toml" --device cuda "$@"; }
  gpu --out g1 > g1.jsonl 2> g1.err || fail "$name: GPU run: $(tail -5 g1.err)"
  gpu --out g2 > g2.jsonl 2> g2.err || fail "$name: second GPU run: $(tail -5 g2.err)"
  [ "$(losses g1.jsonl | wc -l)" = 20 ] || fail "$name: want 20 step lines, got $(cat g1.jsonl)"
  grep -q '"device":"cuda"' g1.jsonl || fail "$name: the memory line does not say cuda"
  [ "$(losses g1.jsonl)" = "$(losses g2.jsonl)" ] || fail "$name: two GPU runs differ"
  last=$name/step_000000020/rank_00000.bin
  cmp "g1/$last" "g2/$last" || fail "$name: two GPU runs end in different states"

  gpu --out g3 --steps 10 > g3a.jsonl 2>/dev/null
  gpu --out g3 --resume g3 > g3b.jsonl 2> g3b.err || fail "$name: GPU resume: $(tail -5 g3b.err)"
  [ "$(losses g3a.jsonl; losses g3b.jsonl)" = "$(losses g1.jsonl)" ] || fail "$name: resumed GPU run differs"
  cmp "g1/$last" "g3/$last" || fail "$name: resumed GPU run ends in a different state"

  "$bin/belay-worker" --log-level warn train --spec "$name.toml" --device cpu --out c1 > c1.jsonl
  # bf16 activations against fp32: the first step's loss (5.5) to 0.02, the trajectory to 3%.
  close "$(losses g1.jsonl | head -1)" "$(losses c1.jsonl | head -1)" 0.02 0 "$name: first step GPU/CPU"
  close "$(losses g1.jsonl)" "$(losses c1.jsonl)" 0.05 0.03 "$name: GPU/CPU trajectory"
  # The GPU's checkpoint of step 10 on the CPU: steps 11-20 follow the GPU run's.
  "$bin/belay-worker" --log-level warn train --spec "$name.toml" --device cpu --out c2 \
    --resume "g1/$name/step_000000010" > c2.jsonl 2> c2.err || fail "$name: CPU resume of a GPU checkpoint: $(tail -5 c2.err)"
  close "$(losses c2.jsonl)" "$(losses g1.jsonl | tail -10)" 0.05 0.03 "$name: CPU continuing the GPU checkpoint"
  echo "ok: $name: GPU runs bit-identical, resume bit-identical, GPU/CPU first loss" \
    "$(losses g1.jsonl | head -1)/$(losses c1.jsonl | head -1), last $(losses g1.jsonl | tail -1)/$(losses c1.jsonl | tail -1)"
done

# ZeRO stage 1 on the GPU (the optimizer state of the rank's shard only; one rank holds all
# of it, in bucket order): twice bit-identical, resumed bit-identically, close to stage 0 (the
# gradient norm sums in another order, so clipping differs in the last bits), and its
# checkpoint resumes at stage 0 on the CPU.
sed -i 's/^global_batch = 4$/global_batch = 4\nzero_stage = 1/' small.toml
grep -q '^zero_stage = 1' small.toml || fail "small.toml: no zero_stage line"
z() { "$bin/belay-worker" --log-level warn train --spec small.toml --device cuda "$@"; }
# Runs P1 and P2 of small.toml on the GPU, and P3 stopped at step 10 and resumed: P1 and P2
# bit-identical, P3 continuing P1 bit for bit (losses and final state). Arguments: P, stage.
repeatable() {
  z --out "${1}1" > "${1}1.jsonl" 2> "${1}1.err" || fail "stage $2 GPU run: $(tail -5 "${1}1.err")"
  z --out "${1}2" > "${1}2.jsonl" 2>/dev/null
  [ "$(losses "${1}1.jsonl")" = "$(losses "${1}2.jsonl")" ] || fail "two stage-$2 GPU runs differ"
  z --out "${1}3" --steps 10 > "${1}3a.jsonl" 2>/dev/null
  z --out "${1}3" --resume "${1}3" > "${1}3b.jsonl" 2> "${1}3b.err" || fail "stage $2 GPU resume: $(tail -5 "${1}3b.err")"
  [ "$(losses "${1}3a.jsonl"; losses "${1}3b.jsonl")" = "$(losses "${1}1.jsonl")" ] || fail "resumed stage-$2 GPU run differs"
  cmp "${1}1/small/step_000000020/rank_00000.bin" "${1}3/small/step_000000020/rank_00000.bin" ||
    fail "resumed stage-$2 GPU run ends in a different state"
}
repeatable z 1
sed -i 's/^zero_stage = 1$/zero_stage = 0/' small.toml
"$bin/belay-worker" --log-level warn train --spec small.toml --device cuda --out z4 > z4.jsonl 2>/dev/null
close "$(losses z1.jsonl)" "$(losses z4.jsonl)" 0.02 0.01 "stage 1 against stage 0 on the GPU"
"$bin/belay-worker" --log-level warn train --spec small.toml --device cpu --out z5 \
  --resume z1/small/step_000000010 > z5.jsonl 2> z5.err || fail "stage-1 GPU checkpoint on the CPU: $(tail -5 z5.err)"
close "$(losses z5.jsonl)" "$(losses z1.jsonl | tail -10)" 0.05 0.03 "CPU continuing the stage-1 GPU checkpoint"
echo "ok: ZeRO stage 1 on the GPU"

# ZeRO stage 2 on the GPU (no whole gradient: each bucket is reduce-scattered out of its own
# buffer during every micro-batch's backward): twice bit-identical, resumed bit-identically,
# close to stage 1 with two micro-batches per step (their gradients add after the reduce-scatter
# instead of before); with one micro-batch per step the very sums of stage 1, so the same losses
# bit for bit; its checkpoint resumes at stage 0 on the CPU.
sed -i 's/^zero_stage = 0$/zero_stage = 2/' small.toml
grep -q '^zero_stage = 2' small.toml || fail "small.toml: no zero_stage = 2 line"
repeatable y 2
close "$(losses y1.jsonl)" "$(losses z1.jsonl)" 0.02 0.01 "stage 2 against stage 1 on the GPU"
# (The fused shape: with d_model a multiple of 64 every gradient tensor has the same 256-byte
# alignment in a bucket buffer as in the whole gradient, so cuBLASLt picks the same kernels.)
sed 's/^global_batch = 4$/global_batch = 2\nzero_stage = 2/' fused.toml > one.toml
grep -q '^zero_stage = 2' one.toml || fail "one.toml: no zero_stage = 2 line"
"$bin/belay-worker" --log-level warn train --spec one.toml --device cuda --out y4 > y4.jsonl 2> y4.err ||
  fail "stage 2, one micro-batch: $(tail -5 y4.err)"
sed -i 's/^zero_stage = 2$/zero_stage = 1/' one.toml
"$bin/belay-worker" --log-level warn train --spec one.toml --device cuda --out y5 > y5.jsonl 2>/dev/null
[ "$(losses y4.jsonl)" = "$(losses y5.jsonl)" ] || fail "one micro-batch per step: stage 2 differs from stage 1"
sed -i 's/^zero_stage = 2$/zero_stage = 0/' small.toml
"$bin/belay-worker" --log-level warn train --spec small.toml --device cpu --out y6 \
  --resume y1/small/step_000000010 > y6.jsonl 2> y6.err || fail "stage-2 GPU checkpoint on the CPU: $(tail -5 y6.err)"
close "$(losses y6.jsonl)" "$(losses y1.jsonl | tail -10)" 0.05 0.03 "CPU continuing the stage-2 GPU checkpoint"
echo "ok: ZeRO stage 2 on the GPU"

if [ "$gpus" -lt 2 ] || ! command -v mpirun >/dev/null; then
  echo "2-rank NCCL training: skipped ($gpus GPU, mpirun $(command -v mpirun || echo missing))"
  exit 0
fi
# Open MPI in a sandbox (scripts/mpi-sandbox.conf): root, shared memory, loopback.
. "$scripts/mpi-env.sh" one-node
"$bin/belay-worker" --log-level warn train --spec small.toml --device cuda --out s1 > s1.jsonl
for stage in 0 1 2; do
  sed -i "s/^zero_stage = .*/zero_stage = $stage/" small.toml
  for run in 1 2; do
    mpirun -np 2 "$bin/belay-worker" --log-level warn train --spec small.toml --device cuda \
      --out "m$stage$run" > "m$stage$run.jsonl" 2> "m$stage$run.err" || fail "2 GPU ranks, stage $stage: $(tail -5 "m$stage$run.err")"
  done
  [ "$(losses "m${stage}1.jsonl")" = "$(losses "m${stage}2.jsonl")" ] || fail "two 2-rank GPU runs at stage $stage differ"
  close "$(losses "m${stage}1.jsonl")" "$(losses s1.jsonl)" 0.05 0.03 "2 GPU ranks at stage $stage against 1"
done
# The 2-rank stage-1 checkpoint on one GPU rank (at stage 2, where the loop left small.toml).
"$bin/belay-worker" --log-level warn train --spec small.toml --device cuda --out m3 \
  --resume m11/small/step_000000010 > m3.jsonl 2> m3.err || fail "2-rank checkpoint on 1 GPU: $(tail -5 m3.err)"
close "$(losses m3.jsonl)" "$(losses m11.jsonl | tail -10)" 0.05 0.03 "1 GPU continuing a 2-GPU checkpoint"
# The 2-rank stage-2 checkpoint on one GPU rank at stage 1.
sed -i "s/^zero_stage = .*/zero_stage = 1/" small.toml
"$bin/belay-worker" --log-level warn train --spec small.toml --device cuda --out m4 \
  --resume m21/small/step_000000010 > m4.jsonl 2> m4.err || fail "2-rank stage-2 checkpoint on 1 GPU: $(tail -5 m4.err)"
close "$(losses m4.jsonl)" "$(losses m21.jsonl | tail -10)" 0.05 0.03 "1 GPU continuing a 2-GPU stage-2 checkpoint"
echo "ok: 2 GPU ranks over NCCL, stages 0, 1 and 2: bit-identical twice, close to one rank, resharded onto one"
