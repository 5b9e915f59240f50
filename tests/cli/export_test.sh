#!/usr/bin/env bash
# System test of `belay export` as a command: what it prints, its outputs and exit codes on a
# checkpoint belay-worker wrote, on a corrupt one and on bad arguments. (The exported values
# are checked against PyTorch by tests/export/export_reference_test.)
# Arguments: the build's bin directory.
set -euo pipefail
bin=$1
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

"$here/../export/train_tiny.sh" "$bin" "$tmp" 1 0
cd "$tmp"
step=ckpt/tiny/step_000000004

# The root resolves to the newest committed step; bf16 by default.
out=$("$bin/belay" export ckpt --out hf) || fail "export exited $?"
echo "$out" | grep -q "^GPT2LMHeadModel from $step: 28 tensors, " || fail "printed: $out"
[ -s hf/model.safetensors ] && [ -s hf/config.json ] || fail "outputs missing: $(ls hf)"
grep -q '"torch_dtype": "bfloat16"' hf/config.json || fail "config.json: $(cat hf/config.json)"
"$bin/belay" export "$step" --out hf32 --dtype fp32 >/dev/null || fail "fp32 export exited $?"
# Two bytes per value against four, the headers aside.
size() { stat -c %s "$1"; }
[ $(($(size hf32/model.safetensors) - $(size hf/model.safetensors))) -gt 60000 ] ||
  fail "fp32 file not about twice the bf16 one"

# Bad arguments: exit 2.
rc=0
"$bin/belay" export ckpt --out x --dtype fp16 2>/dev/null || rc=$?
[ "$rc" = 2 ] || fail "--dtype fp16 exited $rc, expected 2"
# No checkpoint there: exit 1, naming the directory.
rc=0
"$bin/belay" export nowhere --out x 2>err || rc=$?
[ "$rc" = 1 ] && grep -q "nowhere" err || fail "a missing checkpoint exited $rc: $(cat err)"
# A flipped byte in the shard: exit 1 naming the file, and nothing written.
printf '\xff' | dd of="$step/rank_00000.bin" bs=1 seek=300 conv=notrunc status=none
rc=0
"$bin/belay" export "$step" --out corrupt 2>err || rc=$?
[ "$rc" = 1 ] && grep -q "rank_00000.bin: checksum mismatch" err ||
  fail "a corrupt shard exited $rc: $(cat err)"
[ ! -e corrupt/model.safetensors ] || fail "a corrupt checkpoint was exported"
echo OK
