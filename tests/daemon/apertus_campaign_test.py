#!/usr/bin/python3
"""System test of the Apertus example (deploy/examples/apertus-small.toml) under belayd: the
local scheduler, 2 CPU ranks under mpirun, on the demo corpus (scripts/demo-corpus.sh).

Usage: apertus_campaign_test.py BIN_DIR

The campaign is the example file with its paths pointed here and its run shortened (fewer
steps; the warmups, cooldown, evaluations and checkpoints scaled with them); the model, data,
optimizer and resources are the example's own. Checked:
  - the copy validates, and the example still has the shape this test is about (Apertus with
    grouped-query attention, QK-norm, RoPE scaling, xIELU, document masking at the
    end-of-text token; AdEMAMix with both warmups; wsd; Goldfish; 2 local ranks);
  - the campaign completes in one attempt;
  - the final train loss (the mean of the last steps) and the final validation loss are both
    below the unigram entropy of the training tokens, computed here from the shards: the model
    learned more than the byte frequencies;
  - belay ckpt ls lists the committed checkpoints, the final step among them;
  - the final checkpoint is an Apertus one: its shard's metadata holds the "model" record with
    "arch": "apertus" and the example's shape, and belay export turns it into a config.json of
    model_type "apertus".
"""

import array
import collections
import json
import math
import os
import pathlib
import struct
import subprocess
import sys
import tempfile
import time
import tomllib

from harness import Daemon, belay, committed_steps, fail, status
import harness

REPO = pathlib.Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "examples" / "apertus-small.toml"
sys.path.insert(0, str(REPO / "tests" / "support"))
import tiny_campaign  # noqa: E402

harness.init(sys.argv[1])
BIN = harness.BIN

STEPS = 120
# The example shortened to STEPS, its schedule scaled with it; its paths under this directory.
SHORTER = {
    "campaign": {"name": "apertus-small-test"},
    "data": {"train": "corpus/data/train_*.bin", "val": "corpus/data/val_*.bin"},
    "train": {"total_steps": STEPS, "warmup_steps": 10, "cooldown_steps": 30, "eval_every": 40},
    "optimizer": {"alpha_warmup_steps": STEPS, "beta3_warmup_steps": STEPS},
    "checkpoint": {"dir": "ckpt", "every_steps": 40, "keep_every": 80},
    "restart": {"backoff": {"initial": "1s", "max": "5s", "jitter": 0.1}},
}
# Train steps whose mean loss counts as the final train loss (one step's loss is noisy).
LAST_STEPS = 10


def check_shape(spec):
    """Fails unless the example is the campaign this test is about."""
    m, d, t, o, r = spec["model"], spec["data"], spec["train"], spec["optimizer"], spec["resources"]
    expected = [
        ("model.arch", m.get("arch") == "apertus"),
        ("model.n_kv_head < n_head", m.get("n_kv_head", m["n_head"]) < m["n_head"]),
        ("model.qk_norm", m.get("qk_norm", True)),
        ("model.rope_scaling", "rope_scaling" in m),
        ("model.activation = xielu", m.get("activation", "xielu") == "xielu"),
        ("data.document_masking at 256", d.get("document_masking") and d.get("eod_token") == 256),
        ("train.lr_schedule = wsd", t.get("lr_schedule") == "wsd"),
        ("train.goldfish", "goldfish" in t),
        ("optimizer.name = ademamix", o.get("name") == "ademamix"),
        ("optimizer warmups", o.get("alpha_warmup_steps", 0) > 0 and o.get("beta3_warmup_steps", 0) > 0),
        ("resources: 2 local ranks", r.get("scheduler", "local") == "local" and r.get("ranks_per_node") == 2),
    ]
    wrong = [what for what, ok in expected if not ok]
    if wrong:
        fail(f"{EXAMPLE.name} lacks: {', '.join(wrong)}")


def unigram_entropy(pattern):
    """Entropy in nats of the token frequencies of the llm.c shards matching `pattern`: a
    256 × int32 header (magic 20240520, version, token count), then the tokens as uint16."""
    counts = collections.Counter()
    for shard in sorted(pathlib.Path().glob(pattern)):
        raw = shard.read_bytes()
        magic, version, n = struct.unpack_from("<3i", raw)
        if magic != 20240520 or len(raw) != 1024 + 2 * n:
            fail(f"{shard}: not an llm.c shard (magic {magic}, version {version}, {n} tokens, {len(raw)} bytes)")
        tokens = array.array("H")
        tokens.frombytes(raw[1024:])
        if sys.byteorder == "big":
            tokens.byteswap()
        counts.update(tokens)
    total = sum(counts.values())
    if total == 0:
        fail(f"no tokens in {pattern}")
    return -sum(c / total * math.log(c / total) for c in counts.values())


def shard_metadata(path):
    """The JSON metadata of a checkpoint shard (docs/checkpoints.md: offset and size at bytes
    24 and 32 of the header)."""
    raw = path.read_bytes()
    if raw[:8] != b"BELAYCKP":
        fail(f"{path}: not a checkpoint shard")
    offset, size = struct.unpack_from("<QQ", raw, 24)
    return json.loads(raw[offset:offset + size])


def main():
    started = time.monotonic()
    example = tomllib.loads(EXAMPLE.read_text())
    check_shape(example)
    tmp = pathlib.Path(tempfile.mkdtemp())
    state = tmp / "state"
    daemon = None
    try:
        os.chdir(tmp)
        corpus = subprocess.run([str(REPO / "scripts" / "demo-corpus.sh"), "corpus", str(BIN)],
                                capture_output=True, text=True)
        if corpus.returncode != 0:
            fail(f"scripts/demo-corpus.sh exited {corpus.returncode}: {corpus.stderr}")
        entropy = unigram_entropy(SHORTER["data"]["train"])

        pathlib.Path("apertus.toml").write_text(tiny_campaign.toml(tiny_campaign.merged(example, SHORTER)))
        v = subprocess.run([str(BIN / "belay"), "validate", "apertus.toml"], env=harness.ENV,
                           capture_output=True, text=True)
        if v.returncode != 0:
            fail(f"the shortened example does not validate:\n{v.stderr}")

        daemon = Daemon(state)
        daemon.start()
        submitted = time.monotonic()
        cid = belay("submit", "apertus.toml").stdout.split()[-1]
        w = belay("watch", cid, check=False, timeout=900)
        if w.returncode != 0:
            fail(f"watch {cid}: exit {w.returncode}\n{w.stdout[-3000:]}")
        st = status(cid)
        if st["campaign"]["state"] != "CAMPAIGN_STATE_COMPLETED" or len(st["attempts"]) != 1:
            fail(f"expected one attempt that completed: {json.dumps(st)[:2000]}")
        trained = time.monotonic()

        # --- The losses against the unigram entropy.
        metrics = json.loads(belay("loss", cid, "--json").stdout)
        steps = sorted((int(s["step"]), s["loss"]) for s in metrics.get("steps", []))
        evals = sorted((int(e["step"]), e["loss"]) for e in metrics.get("evals", []))
        if not steps or steps[-1][0] != STEPS or not evals or evals[-1][0] != STEPS:
            fail(f"expected train and validation losses up to step {STEPS}: {json.dumps(metrics)[:2000]}")
        final_train = sum(loss for _, loss in steps[-LAST_STEPS:]) / LAST_STEPS
        final_val = evals[-1][1]
        print(f"unigram entropy of the training tokens: {entropy:.4f} nats/token")
        print(f"train loss: step 1 {steps[0][1]:.4f}, step {STEPS} {steps[-1][1]:.4f}, "
              f"mean of the last {LAST_STEPS} steps {final_train:.4f}")
        print("val loss:   " + ", ".join(f"step {s} {loss:.4f}" for s, loss in evals))
        if not final_train < entropy:
            fail(f"final train loss {final_train:.4f} is not below the unigram entropy {entropy:.4f}")
        if not final_val < entropy:
            fail(f"final val loss {final_val:.4f} is not below the unigram entropy {entropy:.4f}")

        # --- Committed checkpoints, and the final one is Apertus.
        committed = committed_steps(cid)
        print(f"committed checkpoints: {committed}")
        if STEPS not in committed or 80 not in committed:
            fail(f"expected the checkpoints of steps 80 (keep_every) and {STEPS} committed: {committed}")
        final = tmp / "ckpt" / cid / f"step_{STEPS:09d}"
        model = shard_metadata(final / "rank_00000.bin").get("model", {})
        m = example["model"]
        want = {"arch": "apertus", "n_layer": m["n_layer"], "n_head": m["n_head"], "n_kv_head": m["n_kv_head"],
                "d_model": m["d_model"], "d_ff": m["d_ff"], "activation": m["activation"],
                "eod_token": example["data"]["eod_token"]}
        got = {k: model.get(k) for k in want}
        if got != want:
            fail(f"the checkpoint's model record is {json.dumps(model)}, expected {json.dumps(want)}")
        out = subprocess.run([str(BIN / "belay"), "export", str(final), "--out", "hf"], env=harness.ENV,
                             capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            fail(f"belay export exited {out.returncode}: {out.stderr}")
        config = json.loads(pathlib.Path("hf/config.json").read_text())
        if (config.get("model_type") != "apertus" or config.get("architectures") != ["ApertusForCausalLM"]
                or config.get("num_key_value_heads") != m["n_kv_head"] or config.get("hidden_act") != "xielu"):
            fail(f"exported config.json: {json.dumps(config)}")
        if not pathlib.Path("hf/model.safetensors").stat().st_size:
            fail("exported model.safetensors is empty")
        print(out.stdout.strip())
        print(f"campaign {cid}: {trained - submitted:.0f} s from submit to completed; "
              f"the test {time.monotonic() - started:.0f} s")
    finally:
        harness.clean_up(daemon, tmp)


if __name__ == "__main__":
    main()
