#!/usr/bin/python3
"""System test of data-parallel training: `mpirun -np W belay-worker train` with ZeRO stages
0, 1 and 2 against one rank, determinism, resharding checkpoints, memory accounting and the
configurations that must be refused before training.

Usage: distributed_test.py BIN_DIR [--arch apertus]

With --arch apertus the same checks run on a small Apertus model (GQA, QK-norm, RoPE with
Llama-3 scaling, xIELU, untied head, document masking at the end-of-text token) trained with
AdEMAMix (three optimizer states per parameter, sharded by ZeRO like AdamW's two), plus: a
checkpoint of one architecture or optimizer is refused by a campaign of another, by name.

Tolerance. One rank and W ranks train on the same global batch (24 sequences: micro-batches
of 2, so 12, 6, 4 or 3 micro-steps per rank on 1, 2, 3 or 4 ranks), but add the per-sequence
gradients in a different grouping: one rank accumulates all micro-batches in turn, W ranks each
accumulate theirs and then sum over ranks. fp32 addition is not associative, so the updates
differ in the last bits (relative 1e-7 per element) and the difference grows slowly through
the steps. Losses must agree within a relative 1e-6 over 20 steps (measured: below 1e-8).
What does not depend on the grouping is checked exactly: the first step's loss (the
micro-batch losses are added in global micro-batch order on any world size), the tokens
trained and a digest of every step's sequences, and — at the same world size — stages 0 and 1
against each other (the same sums, only reduced differently), and stage 2 against them when
each rank runs one micro-batch per step.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "support"))
import mpi_sandbox  # noqa: E402
import tiny_campaign  # noqa: E402

BIN = pathlib.Path(sys.argv[1]).resolve()
APERTUS = sys.argv[2:] == ["--arch", "apertus"]
# Optimizer state per parameter: AdamW's m and v, or AdEMAMix's m_fast, m_slow and v (fp32).
STATE_BYTES = 12 if APERTUS else 8
TOL = 1e-6
failures = []


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def mpi_env():
    env = dict(os.environ)
    # Open MPI in a sandbox (root, shared memory, loopback, more ranks than cores).
    env.update(mpi_sandbox.environment("one-node"))
    # One thread per rank: ranks outnumber the cores, and the 1-rank reference must use the
    # same BLAS threading as the others (sgemm's bits depend on its thread count).
    env.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    for k in ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", "BELAY_RANK",
              "BELAY_WORLD_SIZE", "BELAY_LOCAL_RANK"):
        env.pop(k, None)
    return env


ENV = mpi_env()


def train(np, spec, out, *extra, expect_ok=True):
    cmd = ["mpirun", "-np", str(np), str(BIN / "belay-worker"),
           "--log-level", "warn", "train", "--spec", spec, "--out", out, *extra]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    if expect_ok and p.returncode != 0:
        fail(f"{' '.join(cmd)} exited {p.returncode}:\n{p.stderr[-3000:]}")
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    return p, lines


def steps(lines):
    return [l for l in lines if "loss" in l]


def memory(lines):
    m = [l for l in lines if l.get("event") == "memory"]
    if len(m) != 1:
        fail(f"expected one memory line, got {m}")
    return m[0]


def close(a, b):
    return abs(a - b) <= TOL * max(abs(a), abs(b))


def compare(name, got, ref, exact=False):
    """Step lines of a run against the reference's steps with the same numbers."""
    by_step = {l["step"]: l for l in ref}
    if not got:
        fail(f"{name}: no steps")
    worst = 0.0
    for l in got:
        r = by_step[l["step"]]
        for key in ("tokens", "data_digest"):
            if l[key] != r[key]:
                fail(f"{name} step {l['step']}: {key} {l[key]} != reference {r[key]} "
                     "(a sequence skipped or seen twice)")
        if exact:
            if l["loss"] != r["loss"]:
                fail(f"{name} step {l['step']}: loss {l['loss']!r} != {r['loss']!r} (bitwise)")
        elif not close(l["loss"], r["loss"]):
            fail(f"{name} step {l['step']}: loss {l['loss']} vs reference {r['loss']}, "
                 f"relative tolerance {TOL}")
        worst = max(worst, abs(l["loss"] - r["loss"]) / abs(r["loss"]))
    return worst


def main():
    tmp = pathlib.Path(tempfile.mkdtemp())
    try:
        os.chdir(tmp)
        subprocess.run([str(BIN / "belay"), "data", "prepare", "--out", "data", "--val-fraction",
                        "0.1", "/usr/share/common-licenses/GPL-3",
                        "/usr/share/common-licenses/Apache-2.0"],
                       check=True, capture_output=True)
        base = tiny_campaign.spec(
            campaign={"name": "dp"}, model={"d_model": 32},
            train={"total_steps": 20, "goldfish": {"k": 4, "h": 8}, "eval_every": 10, "eval_batches": 4},
            checkpoint={"every_steps": 10, "keep_last": 5})
        gpt2_base = base
        if APERTUS:
            base = tiny_campaign.spec(
                base,
                model={"arch": "apertus", "n_head": 4, "n_kv_head": 2, "d_ff": 64,
                       "rope_scaling": {"factor": 8.0, "original_context": 16}},
                data={"document_masking": True, "eod_token": 256},
                optimizer={"name": "ademamix", "alpha_warmup_steps": 8, "beta3_warmup_steps": 8})

        def write(path, gb, stage, base=base, **changes):
            tiny_campaign.write(path, base, train={"global_batch": gb, "zero_stage": stage}, **changes)

        for stage in (0, 1, 2):
            for gb in (24, 8, 6):
                write(f"s{stage}_g{gb}.toml", gb, stage)

        # The reference: one rank.
        _, ref_lines = train(1, "s0_g24.toml", "ref")
        ref = steps(ref_lines)
        if len(ref) != 20:
            fail(f"reference: {len(ref)} steps")
        ref_mem = memory(ref_lines)
        n_params = ref_mem["param_elements"]

        # Stages 0, 1, 2 on 2 and 4 ranks against it.
        runs = {}
        for np in (2, 4):
            for stage in (0, 1, 2):
                _, lines = train(np, f"s{stage}_g24.toml", f"s{stage}n{np}")
                got = steps(lines)
                if len(got) != 20:
                    fail(f"stage {stage} on {np} ranks: {len(got)} steps")
                worst = compare(f"stage {stage} on {np} ranks", got, ref)
                if got[0]["loss"] != ref[0]["loss"]:
                    fail(f"stage {stage} on {np} ranks: first loss {got[0]['loss']!r} is not "
                         f"bit-identical to one rank's {ref[0]['loss']!r}")
                runs[(stage, np)] = (lines, got)
                print(f"stage {stage}, {np} ranks: 20 steps, largest relative loss difference "
                      f"from 1 rank {worst:.2e}; final loss {got[-1]['loss']:.6f}")
            compare(f"stage 1 vs 0 on {np} ranks", runs[(1, np)][1], runs[(0, np)][1], exact=True)

        # Stage 2 reduces every micro-batch separately; with one micro-batch per rank per step
        # it adds exactly what stage 1 adds.
        _, one = train(4, "s1_g8.toml", "g8s1")
        _, two = train(4, "s2_g8.toml", "g8s2")
        compare("stage 2 vs 1, one micro-batch per rank", steps(two), steps(one), exact=True)
        print("stages 0 and 1 bit-identical at the same world size; stage 2 too with one "
              "micro-batch per rank")

        # Determinism: the same world size and stage again gives the same losses and state.
        _, again = train(4, "s2_g24.toml", "again")
        compare("stage 2 on 4 ranks, second run", steps(again), runs[(2, 4)][1], exact=True)
        for r in range(4):
            a = pathlib.Path(f"again/dp/step_000000020/rank_{r:05d}.bin").read_bytes()
            b = pathlib.Path(f"s2n4/dp/step_000000020/rank_{r:05d}.bin").read_bytes()
            if a != b:
                fail(f"two 4-rank runs end in different shards for rank {r}")

        # checkpoint.every_steps = "auto": rank 0 decides and every rank saves the same steps.
        # With a failure every microsecond that is every step; each saved step has all four
        # shards and a manifest (retention kept 16..20), and the state is that of fixed saves.
        write("auto.toml", 24, 2, checkpoint={"every_steps": "auto"})
        _, auto = train(4, "auto.toml", "auto", "--mtbf", "0.000001")
        compare("stage 2 on 4 ranks, auto save interval", steps(auto), runs[(2, 4)][1], exact=True)
        kept = sorted(p.name for p in pathlib.Path("auto/dp").glob("step_*"))
        if kept != [f"step_{s:09d}" for s in range(16, 21)]:
            fail(f"auto saves on 4 ranks: kept {kept}")
        for s in range(16, 21):
            d = pathlib.Path(f"auto/dp/step_{s:09d}")
            if not (d / "manifest.json").exists() or len(list(d.glob("rank_*.bin"))) != 4:
                fail(f"auto save of step {s} is incomplete: {sorted(p.name for p in d.iterdir())}")
        for r in range(4):
            if (pathlib.Path(f"auto/dp/step_000000020/rank_{r:05d}.bin").read_bytes() !=
                    pathlib.Path(f"s2n4/dp/step_000000020/rank_{r:05d}.bin").read_bytes()):
                fail(f"auto saves end in a different shard for rank {r}")
        print("auto save interval: four ranks saved every step together")

        # Memory: optimizer state per rank shrinks as 1/W under stages 1 and 2.
        print(f"optimizer bytes per rank ({n_params} parameters, {STATE_BYTES} bytes each for "
              "the optimizer's states):")
        for (stage, np), (lines, _) in sorted(runs.items()):
            mem = memory(lines)
            opt = mem["optimizer_bytes"]
            grad = mem["gradient_bytes"]
            print(f"  stage {stage}, {np} ranks: optimizer {opt}, gradients {grad}")
            if len(opt) != np or len(set(opt)) != 1:
                fail(f"stage {stage}, {np} ranks: optimizer bytes differ between ranks: {opt}")
            if stage == 0:
                if opt[0] != STATE_BYTES * n_params:
                    fail(f"stage 0 holds {opt[0]} optimizer bytes, expected "
                         f"{STATE_BYTES * n_params}")
            else:
                if opt[0] != STATE_BYTES * mem["shard_elements"]:
                    fail(f"stage {stage}: {opt[0]} optimizer bytes for a shard of "
                         f"{mem['shard_elements']} elements")
                # Padding: less than one element per rank per bucket (n_layer + 2 buckets).
                if not (STATE_BYTES * n_params <= np * opt[0] <
                        STATE_BYTES * (n_params + np * (2 + 2))):
                    fail(f"stage {stage}, {np} ranks: {np} × {opt[0]} bytes is not the "
                         f"{STATE_BYTES * n_params} of one rank split {np} ways")
        print("  one rank:", ref_mem["optimizer_bytes"])

        # Gradients: stage 1 keeps the full gradient and its shard; stage 2 the shard and, during
        # backward, the staging of three buckets (embeddings and two layers) — less than the
        # full gradient once the model has more than a few layers.
        grads = {}
        for stage in (1, 2):
            write(f"deep{stage}.toml", 8, stage, model={"n_layer": 8})
            _, lines = train(4, f"deep{stage}.toml", f"deep{stage}", "--steps", "1")
            mem = memory(lines)
            grads[stage] = mem["gradient_bytes"][0]
            n_deep = mem["param_elements"]
        print(f"  8 layers, {n_deep} parameters, 4 ranks: gradient bytes per rank: stage 1 "
              f"{grads[1]}, stage 2 {grads[2]} (full gradient {4 * n_deep})")
        if not grads[2] < 4 * n_deep < grads[1]:
            fail(f"stage 2 keeps {grads[2]} gradient bytes, stage 1 {grads[1]}: expected "
                 f"stage 2 < {4 * n_deep} < stage 1")

        # Bit-identical resume at the same world size.
        train(4, "s2_g24.toml", "half", "--steps", "10")
        _, rest = train(4, "s2_g24.toml", "half", "--resume", "half")
        compare("stage 2 on 4 ranks resumed at 10", steps(rest), runs[(2, 4)][1][10:], exact=True)

        # Save on 4 ranks at step 10, resume on 2 and on 3 ranks (uneven shards), in stages 2
        # and 1: the losses follow the 1-rank reference, and every step trains on the same
        # sequences as the uninterrupted run.
        saved = "s2n4/dp/step_000000010"
        for np, stage in ((2, 2), (3, 2), (3, 1), (1, 0)):
            _, lines = train(np, f"s{stage}_g24.toml", f"re{np}_{stage}", "--resume", saved)
            got = steps(lines)
            if [l["step"] for l in got] != list(range(11, 21)):
                fail(f"resume on {np} ranks: steps {[l['step'] for l in got]}")
            worst = compare(f"resumed on {np} ranks (stage {stage})", got, ref)
            print(f"saved on 4 ranks at step 10, resumed on {np} (stage {stage}): steps 11-20 "
                  f"within {worst:.2e} of 1 rank; tokens {got[-1]['tokens']} = reference "
                  f"{ref[-1]['tokens']}")

        # Refused before training, with a clear error.
        def refused(name, np, spec, out, pattern, *extra):
            p, lines = train(np, spec, out, *extra, expect_ok=False)
            if p.returncode == 0:
                fail(f"{name}: accepted")
            if steps(lines):
                fail(f"{name}: trained before failing")
            if not re.search(pattern, p.stderr):
                fail(f"{name}: error does not match /{pattern}/:\n{p.stderr[-2000:]}")
            msg = [l for l in p.stderr.splitlines() if re.search(pattern, l)][0]
            print(f"refused ({name}): {msg.strip()[:200]}")

        refused("global batch 6 on 4 ranks", 4, "s2_g6.toml", "bad1",
                r"global_batch = 6 does not divide into micro_batch 2 × 4 ranks = 8")

        def copy_step(name):
            dst = pathlib.Path(name) / "dp" / "step_000000010"
            shutil.copytree(saved, dst)
            return dst

        if APERTUS:
            # A checkpoint of another architecture, or of another optimizer, is refused by name.
            tiny_campaign.write("gpt2.toml", gpt2_base, train={"global_batch": 24, "zero_stage": 2})
            refused("GPT-2 campaign, Apertus checkpoint", 2, "gpt2.toml", "bad6",
                    r"checkpoint of a model of architecture \"apertus\"; this campaign trains "
                    r"\"gpt2\" \(model\.arch\)", "--resume", saved)
            tiny_campaign.write("adamw.toml", base, train={"global_batch": 24, "zero_stage": 2},
                                optimizer={"name": "adamw", "alpha_warmup_steps": None,
                                           "beta3_warmup_steps": None})
            refused("AdamW campaign, AdEMAMix checkpoint", 2, "adamw.toml", "bad7",
                    r"holds the state of optimizer ademamix; this campaign's is adamw "
                    r"\(optimizer\.name\)", "--resume", saved)

        d = copy_step("corrupt_map")
        manifest = json.loads((d / "manifest.json").read_text())
        manifest["shard_map"]["ranks"][1].pop(0)
        (d / "manifest.json").write_text(json.dumps(manifest))
        refused("shard map with a gap", 2, "s2_g24.toml", "bad2", r"manifest\.json: shard_map: .* are in no shard",
                "--resume", str(d))

        d = copy_step("missing")
        (d / "rank_00002.bin").unlink()
        refused("missing shard", 3, "s2_g24.toml", "bad3",
                r"rank_00002\.bin: shard of rank 2 \(of 4\) is missing", "--resume", str(d))

        d = copy_step("flipped")
        with open(d / "rank_00001.bin", "r+b") as f:
            f.seek(4000)
            b = f.read(1)
            f.seek(4000)
            f.write(bytes([b[0] ^ 0x55]))
        refused("flipped byte", 2, "s2_g24.toml", "bad4", r"rank_00001\.bin.*checksum", "--resume", str(d))

        d = copy_step("swapped")
        a, b = d / "rank_00001.bin", d / "rank_00002.bin"
        a.rename(d / "x")
        b.rename(a)
        (d / "x").rename(b)
        refused("swapped shards", 4, "s2_g24.toml", "bad5",
                r"rank_0000[12]\.bin: (shard of rank [12] is \d+ bytes, the manifest says \d+|"
                r"holds .* do not match the .* shard map lists for rank [12])", "--resume", str(d))
        print("distributed_test: all checks passed")
    finally:
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)


main()
