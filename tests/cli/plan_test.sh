#!/usr/bin/env bash
# System test of `belay plan`: its text and JSON for the shipped examples, its figures against
# what belay-worker reports holding, the fit against --memory and --gpu-memory, and exit
# codes. Run by ctest with the build's bin directory and
# the source tree as arguments.
set -euo pipefail
bin=$1
src=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
json() { python3 -c "import json, sys; d = json.load(sys.stdin); print($1)"; }

demo=$src/deploy/examples/demo.toml
apertus=$src/deploy/examples/apertus-small.toml
gh200=$src/deploy/examples/gh200-gpt2-124m.toml
"$bin/belay" --help | grep -qw plan || fail "belay --help does not list plan"

# The demo (GPT-2, 4 layers, d_model 128, 2 CPU ranks, ZeRO stage 2): its parameters, the
# stage table with the campaign's stage marked, and a fit against the node's memory.
out=$("$bin/belay" plan --memory 64GiB "$demo") || fail "plan demo: exit $?"
grep -q '^parameters        858,880 (non-embedding 793,344)$' <<<"$out" || fail "demo: $out"
grep -q 'stage 2 \*' <<<"$out" || fail "demo: campaign's stage not marked: $out"
grep -q '^available         32.0 GiB per rank (the node.s 64.0 GiB (--memory) / 2 ranks)$' \
  <<<"$out" || fail "demo: available: $out"
grep -q '^fits              yes: stage 2 needs ' <<<"$out" || fail "demo: fit: $out"

# --json: the same figures; the campaign's stage is its row of the table.
j=$("$bin/belay" plan --json --memory 64GiB "$demo")
[[ $(json 'd["parameters"], d["zero_stage"], d["world_size"], d["tokens_per_step"]' <<<"$j") \
  == "858880 2 2 2048" ]] || fail "demo json: $j"
[[ $(json 'd["per_rank"] == d["per_rank_by_stage"][2], d["fits"]' <<<"$j") == "True True" ]] \
  || fail "demo json stage row: $j"
[[ $(json 'd["per_rank"]["weights"] == 4 * d["parameters"]' <<<"$j") == True ]] \
  || fail "demo json weights: $j"
# Too little memory: the plan says so (and still exits 0: it is a plan, not a check).
j=$("$bin/belay" plan --json --memory 40MiB "$demo")
[[ $(json 'd["fits"], d["available_per_rank"]' <<<"$j") == "False 20971520" ]] \
  || fail "demo json small memory: $j"

# The Apertus example (AdEMAMix, ZeRO stage 1): its shape, three optimizer states, and no
# estimate: the trainer runs both on CPU ranks.
out=$("$bin/belay" plan --memory 64GiB "$apertus") || fail "plan apertus: exit $?"
grep -q '^campaign apertus-small: apertus, 4 layers, d_model 128, 4 heads (2 KV), d_ff 512, seq 128, vocab 257$' \
  <<<"$out" || fail "apertus: $out"
grep -q '^optimizer         ademamix, 3 states per parameter; ZeRO stage 1 ' <<<"$out" \
  || fail "apertus: optimizer: $out"
grep -q 'stage 1 \*' <<<"$out" || fail "apertus: campaign's stage not marked: $out"
! grep -q 'estimate: ' <<<"$out" || fail "apertus on CPU ranks names an estimate: $out"

# What a real rank reports holding (belay-worker's memory line, one rank, one step) is what
# the plan says, at every stage: weights, gradients, optimizer states and activations.
worker_holds_plan() {  # campaign file with a zero_stage line
  local file=$1 stage lines got want
  for stage in 0 1 2; do
    sed -i "s/^zero_stage = .*/zero_stage = $stage/" "$file"
    grep -q "^zero_stage = $stage\$" "$file" || fail "$file has no zero_stage line"
    lines=$("$bin/belay-worker" train --spec "$file" --steps 1 --out "$tmp/ckpt$stage" \
      2>"$tmp/worker.log") || fail "worker $file stage $stage: $(cat "$tmp/worker.log")"
    got=$(head -1 <<<"$lines" | json 'd["param_bytes"][0], d["gradient_bytes"][0],
      d["optimizer_bytes"][0], d["activation_bytes"][0]')
    want=$("$bin/belay" plan --json "$file" | json 'd["per_rank"]["weights"],
      d["per_rank"]["gradients"], d["per_rank"]["optimizer"], d["per_rank"]["activations"]')
    [[ $got == "$want" ]] || fail "$file stage $stage: the worker holds $got, the plan says $want"
    rm -rf "$tmp/ckpt$stage"
  done
}
python3 -c "print(' '.join(['the quick brown fox jumps over the lazy dog'] * 2000))" >"$tmp/text.txt"
"$bin/belay" data prepare --out "$tmp/data" "$tmp/text.txt" >/dev/null
sed -e "s#../../var/demo/data/#$tmp/data/#" -e "s#../../var/demo/checkpoints#$tmp/ckpt#" \
  -e 's/^ranks_per_node = .*/ranks_per_node = 1/' -e 's/^global_batch = .*/global_batch = 8/' \
  -e 's/^eval_every = .*/eval_every = 0/' "$demo" >"$tmp/one.toml"
worker_holds_plan "$tmp/one.toml"

# Apertus (xIELU, GQA, untied embeddings, document masking at the end-of-text token) with
# AdEMAMix's three states, two micro-batches a step: the same, and on CPU ranks the plan
# names no estimate.
cat >"$tmp/apertus.toml" <<EOF
[campaign]
name = "plan-apertus"
[model]
arch = "apertus"
n_layer = 2
n_head = 4
n_kv_head = 2
d_model = 64
d_ff = 96
seq_len = 64
vocab_size = 257
activation = "xielu"
tie_embeddings = false
[data]
train = "$tmp/data/train_*.bin"
document_masking = true
eod_token = 256
[train]
total_steps = 10
micro_batch = 2
global_batch = 4
lr = 1e-3
zero_stage = 0
[optimizer]
name = "ademamix"
[checkpoint]
dir = "$tmp/ckpt"
[resources]
ranks_per_node = 1
EOF
j=$("$bin/belay" plan --json "$tmp/apertus.toml")
[[ $(json 'd["arch"], d["optimizer"], d["optimizer_states"], d["grad_accum_steps"]' <<<"$j") \
  == "apertus ademamix 3 2" ]] || fail "apertus json: $j"
[[ $(json 'd["per_rank_by_stage"][0]["optimizer"] == 3 * d["per_rank"]["weights"]' <<<"$j") \
  == True ]] || fail "apertus json: AdEMAMix's states at stage 0: $j"
out=$("$bin/belay" plan "$tmp/apertus.toml")
! grep -q 'estimate' <<<"$out" || fail "apertus on CPU names an estimate: $out"
worker_holds_plan "$tmp/apertus.toml"

# GPU ranks: without a GPU size the fit is unknown; a named GPU or a size decides it.
j=$("$bin/belay" plan --json "$gh200")
[[ $(json 'd["device"], d["fits"], d["flops_per_token"]' <<<"$j") == "gpu None 803478528.0" ]] \
  || fail "gh200 json: $j"
[[ $(json 'd["fits"]' <<<"$("$bin/belay" plan --json --gpu-memory h100 "$gh200")") == True ]] \
  || fail "gh200 on h100 does not fit"
[[ $(json 'd["fits"]' <<<"$("$bin/belay" plan --json --gpu-memory 4GiB "$gh200")") == False ]] \
  || fail "gh200 in 4 GiB fits"
out=$("$bin/belay" plan --gpu-memory gh200 "$gh200")
grep -q '^available         96.0 GiB per rank (gh200: 96.0 GiB per GPU)$' <<<"$out" \
  || fail "gh200 text: $out"
grep -q 'estimate: ' <<<"$out" || fail "gh200 text names no estimate: $out"

# Bad memory sizes and GPU names: exit 2 with what is accepted.
set +e
err=$("$bin/belay" plan --gpu-memory h900 "$gh200" 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc == 2 && $err == *"or a GPU name: a100-40"*h100*h200*gh200* ]] || fail "h900: $rc '$err'"
set +e
err=$("$bin/belay" plan --memory lots "$demo" 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc == 2 && $err == *'"lots" is not a memory size'* ]] || fail "--memory lots: $rc '$err'"

# An invalid campaign file: exit 2 and the parser's file:line:column errors.
printf '[campaign]\nname = 5\n' >"$tmp/bad.toml"
set +e
err=$("$bin/belay" plan "$tmp/bad.toml" 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc == 2 ]] || fail "bad file: exit $rc, want 2"
grep -q "^$tmp/bad.toml:2:8: campaign.name: expected a string, got integer 5$" <<<"$err" \
  || fail "bad file: stderr '$err'"
set +e
err=$("$bin/belay" plan "$tmp/nope.toml" 2>&1 >/dev/null)
rc=$?
set -e
[[ $rc == 2 && $err == "$tmp/nope.toml:1:1: cannot open: No such file or directory" ]] \
  || fail "missing file: $rc '$err'"
set +e
"$bin/belay" plan >/dev/null 2>&1
rc=$?
set -e
[[ $rc == 2 ]] || fail "no file: exit $rc, want 2"

echo "PASS"
