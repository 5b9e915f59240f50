#!/usr/bin/env bash
# System test of `belay-worker train`: determinism, bit-identical resume, checkpoint
# corruption detected by checksum with fall-back to the previous checkpoint.
# Arguments: the build's bin directory.
set -euo pipefail
bin=$1
support=$(cd "$(dirname "$0")/../support" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
cd "$tmp"

# A small corpus: the licence texts every Debian system has.
"$bin/belay" data prepare --out data --val-fraction 0.1 /usr/share/common-licenses/GPL-3 \
  /usr/share/common-licenses/Apache-2.0 >/dev/null

# The tiny campaign of tests/support/tiny_campaign.py, changed; further settings
# (section.key=value) after the file name.
campaign() {
  local file=$1
  shift
  python3 "$support/tiny_campaign.py" "$file" model.d_model=32 train.total_steps=20 \
    train.global_batch=4 train.goldfish.k=4 train.goldfish.h=8 train.eval_every=10 \
    checkpoint.every_steps=10 checkpoint.keep_last=5 "$@"
}
campaign c.toml

train() { "$bin/belay-worker" --log-level warn train --spec c.toml "$@"; }

train --out a > a.jsonl
train --out b > b.jsonl
[ "$(grep -c '"loss"' a.jsonl)" = 20 ] || fail "expected 20 step lines: $(cat a.jsonl)"
[ "$(grep -c '"val_loss"' a.jsonl)" = 2 ] || fail "expected 2 eval lines"
for key in step loss lr grad_norm tokens_per_s goldfish_dropped tokens data_digest; do
  grep -m1 '"loss"' a.jsonl | grep -q "\"$key\":" || fail "step line lacks $key: $(grep -m1 loss a.jsonl)"
done
losses() { grep -o '"loss":[^,}]*' "$1"; }
[ "$(losses a.jsonl)" = "$(losses b.jsonl)" ] || fail "two runs with the same seed differ"
ls a/tiny/step_000000010/manifest.json a/tiny/step_000000020/rank_00000.bin >/dev/null

# Stop at step 10, resume to 20: the same losses, bit for bit, and the same final state (the
# shard holds parameters, AdamW moments, step and loader position; no timestamps).
cmp a/tiny/step_000000020/rank_00000.bin b/tiny/step_000000020/rank_00000.bin \
  || fail "two runs end in different states"
# Saves are asynchronous by default (the shard of step 10 is written while step 11 trains):
# written at once instead (checkpoint.async = false), every shard has the same bytes.
campaign sync.toml checkpoint.async=false
grep -q '^async = false$' sync.toml || fail "sync.toml lacks async = false"
"$bin/belay-worker" --log-level warn train --spec sync.toml --out s > s.jsonl
[ "$(losses a.jsonl)" = "$(losses s.jsonl)" ] || fail "synchronous saves change the losses"
for step in 000000010 000000020; do
  cmp a/tiny/step_$step/rank_00000.bin s/tiny/step_$step/rank_00000.bin \
    || fail "the asynchronous save of step $step differs from the synchronous one"
done
# The same tokens as Megatron indexed datasets (<prefix>.bin + .idx, laid out as Megatron's
# preprocessing writes them, in documents of up to 97 tokens; the glob matches the indexes
# too): the same losses, bit for bit.
mkdir mega
/usr/bin/python3 - <<'PY'
import glob, os, struct
for src in sorted(glob.glob("data/*.bin")):
    raw = open(src, "rb").read()
    version, n = struct.unpack_from("<ii", raw, 4)
    width, dtype = (2, 8) if version == 1 else (4, 4)
    starts = range(0, n, 97)
    lengths = [min(97, n - i) for i in starts]
    name = os.path.join("mega", os.path.basename(src))
    with open(name, "wb") as f:
        f.write(raw[1024:1024 + width * n])
    with open(name[:-4] + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<QBQQ", 1, dtype, len(lengths), len(lengths) + 1))
        f.write(struct.pack(f"<{len(lengths)}i", *lengths))
        f.write(struct.pack(f"<{len(lengths)}q", *(width * i for i in starts)))
        f.write(struct.pack(f"<{len(lengths) + 1}q", *range(len(lengths) + 1)))
PY
campaign mega.toml data.format=megatron 'data.train=mega/train_*' 'data.val=mega/val_*.bin'
grep -q '^format = "megatron"$' mega.toml || fail "mega.toml lacks format = \"megatron\""
"$bin/belay-worker" --log-level warn train --spec mega.toml --out m > m.jsonl 2> m.err || fail "training on Megatron data failed: $(cat m.err)"
[ "$(losses a.jsonl)" = "$(losses m.jsonl)" ] || fail "Megatron data trains differently: $(losses m.jsonl)"
[ "$(grep -o '"val_loss":[^,}]*' m.jsonl)" = "$(grep -o '"val_loss":[^,}]*' a.jsonl)" ] \
  || fail "Megatron validation data evaluates differently"
# A damaged index is refused, naming the file and the byte.
idx=$(ls mega/train_*.idx | head -1)
printf '\x07' | dd of="$idx" bs=1 seek=17 conv=notrunc status=none
set +e
err=$("$bin/belay-worker" train --spec mega.toml --out m2 2>&1 >/dev/null)
rc=$?
set -e
[ $rc = 1 ] && echo "$err" | grep -q "$(basename "$idx"): byte 17: dtype code 7 (float32)" \
  || fail "damaged Megatron index: rc $rc, $err"

# checkpoint.every_steps = "auto" (Young/Daly). Failures a year apart: no save but those of
# keep_every's multiples and the last step. A failure every microsecond: a save after every
# step (keep_last 5 and keep_every 10 retained). The losses and the saved states never change.
campaign auto.toml checkpoint.every_steps=auto checkpoint.keep_every=10
grep -q '^every_steps = "auto"$' auto.toml || fail "auto.toml lacks every_steps = \"auto\""
BELAY_CHECKPOINT_MTBF=365d "$bin/belay-worker" --log-level warn train --spec auto.toml --out v > v.jsonl
[ "$(losses a.jsonl)" = "$(losses v.jsonl)" ] || fail "auto save intervals change the losses"
[ "$(ls v/tiny | grep step_ | tr '\n' ' ')" = "step_000000010 step_000000020 " ] \
  || fail "rare failures: expected saves at steps 10 and 20 only, got $(ls v/tiny)"
"$bin/belay-worker" --log-level info train --spec auto.toml --out u --mtbf 0.000001 > u.jsonl 2> u.err
[ "$(losses a.jsonl)" = "$(losses u.jsonl)" ] || fail "auto save intervals change the losses"
[ "$(ls u/tiny | grep step_ | tr '\n' ' ')" \
  = "step_000000010 step_000000016 step_000000017 step_000000018 step_000000019 step_000000020 " ] \
  || fail "constant failures: expected a save after every step, kept 10 and 16..20, got $(ls u/tiny)"
[ "$(grep -c 'the save held training up' u.err)" = 20 ] || fail "expected 20 timed saves: $(cat u.err)"
for step in 000000010 000000020; do
  cmp a/tiny/step_$step/rank_00000.bin u/tiny/step_$step/rank_00000.bin \
    || fail "the auto save of step $step differs from the fixed-interval one"
done
set +e
err=$("$bin/belay-worker" train --spec auto.toml --out w --mtbf 0 2>&1 >/dev/null)
rc=$?
set -e
[ $rc = 1 ] && echo "$err" | grep -q 'must be above zero' || fail "--mtbf 0: rc $rc, $err"

train --out c --steps 10 > c1.jsonl
train --out c --resume c > c2.jsonl
[ "$(losses c1.jsonl; losses c2.jsonl)" = "$(losses a.jsonl)" ] \
  || fail "resumed run differs: $(losses c1.jsonl c2.jsonl) vs $(losses a.jsonl)"
cmp a/tiny/step_000000020/rank_00000.bin c/tiny/step_000000020/rank_00000.bin \
  || fail "resumed run ends in a different state"
[ "$(grep -o '"val_loss":[^,}]*' c2.jsonl)" = "$(grep -o '"val_loss":[^,}]*' a.jsonl | tail -1)" ] \
  || fail "val loss after resume differs"

# A flipped byte in the newest checkpoint: naming it fails with the file and the checksum;
# resuming from the root falls back to step 10 and still reproduces steps 11..20.
shard=a/tiny/step_000000020/rank_00000.bin
printf '\x55' | dd of="$shard" bs=1 seek=5000 conv=notrunc status=none
set +e
err=$(train --out d --resume a/tiny/step_000000020 2>&1 >/dev/null)
rc=$?
set -e
[ $rc = 1 ] || fail "corrupt checkpoint: exit $rc"
echo "$err" | grep -q "rank_00000.bin" || fail "error does not name the shard: $err"
echo "$err" | grep -qi "checksum\|differ\|mismatch" || fail "error does not say checksum: $err"
train --out e --resume a 2> e.err > e.jsonl || fail "fall-back resume failed: $(cat e.err)"
grep -q "skipping checkpoint .*step_000000020" e.err || fail "fall-back not logged: $(cat e.err)"
[ "$(losses e.jsonl)" = "$(losses a.jsonl | tail -10)" ] || fail "fall-back run differs"

# A truncated shard is reported, never loaded.
head -c 1000 c/tiny/step_000000020/rank_00000.bin > t.bin && mv t.bin c/tiny/step_000000020/rank_00000.bin
set +e
err=$(train --out f --resume c/tiny/step_000000020 2>&1 >/dev/null)
rc=$?
set -e
[ $rc = 1 ] && echo "$err" | grep -q "rank_00000.bin" || fail "truncated shard: rc $rc, $err"
# Asked for a GPU where there is none (or a build without CUDA): a clear error, no training.
if ! nvidia-smi -L >/dev/null 2>&1; then
  set +e
  err=$(train --out g --device cuda 2>&1 >/dev/null)
  rc=$?
  set -e
  [ $rc = 1 ] && echo "$err" | grep -q "asked to train on a GPU" || fail "--device cuda without a GPU: rc $rc, $err"
  [ ! -e g ] || fail "--device cuda without a GPU left a checkpoint directory"
fi
echo "train_test: all checks passed"
