#!/usr/bin/python3
"""Data-parallel training step: step time and communication volume of ZeRO stages 0, 1 and 2
on 1, 2 and 4 CPU ranks (mpirun), all in one invocation.

Each configuration trains the same campaign (the demo's model shape: 4 layers, d_model 128,
seq_len 128, vocabulary 257, micro-batch 4, global batch 16, so 4, 2 and 1 micro-batches per
rank per step on 1, 2 and 4 ranks) for a few steps with `belay-worker train`. Reported:

  step ms      median step time over the timed steps (the first steps are warm-up)
  vs 1 rank    that time against the 1-rank stage-0 run of this invocation (the baseline)
  sent MB      payload bytes all ranks sent per step (the step's comm_bytes, the
               Communicator's volume model: what a ring algorithm sends)
  theory MB    the volume of the stage's collectives on Ψ parameters (Ψ padded to the
               shard plan; 4 bytes each):
                 stage 0: all-reduce             2 (W-1) Ψ
                 stage 1: reduce-scatter + all-gather   (W-1) Ψ + (W-1) Ψ = 2 (W-1) Ψ
                 stage 2: a reduce-scatter per micro-batch (A of them) + all-gather
                          (A+1) (W-1) Ψ
               Per rank that is 2 (W-1)/W Ψ for stages 0 and 1: "2Ψ per step".
  sent/theory  measured over theoretical; above 1 by the small collectives of a step
               (batch counts, losses, gradient norm), which this prints separately.

Usage: zero_bench.py BIN_DIR [--steps N] [--out FILE]
Ranks share this machine's cores (one thread each), so on a 2-core machine 4 ranks are
oversubscribed: the step times measure the algorithm's overheads, not a cluster's scaling.
"""

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "support"))
import mpi_sandbox  # noqa: E402
import tiny_campaign  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("bin_dir")
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--warmup", type=int, default=2)
parser.add_argument("--out")
args = parser.parse_args()
BIN = pathlib.Path(args.bin_dir).resolve()

ENV = dict(os.environ)
ENV.update(mpi_sandbox.environment("one-node"))
ENV.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")

# The demo shape, global batch 16 (tests/support/tiny_campaign.py, changed), no evaluation.
SPEC = tiny_campaign.spec(
    campaign={"name": "zero-bench"},
    model={"n_layer": 4, "n_head": 4, "d_model": 128, "seq_len": 128},
    data={"val": None},
    train={"total_steps": 1000, "micro_batch": 4, "global_batch": 16, "lr": 1e-3, "warmup_steps": 10,
           "eval_every": None, "eval_batches": None},
    checkpoint={"every_steps": 100000})


def run(np, stage):
    tiny_campaign.write(f"s{stage}.toml", SPEC, train={"zero_stage": stage})
    out = f"ck_{np}_{stage}"
    cmd = ["mpirun", "-np", str(np), str(BIN / "belay-worker"), "--log-level", "warn", "train",
           "--spec", f"s{stage}.toml", "--steps", str(args.steps), "--out", out]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr[-2000:]}")
    shutil.rmtree(out, ignore_errors=True)
    lines = [json.loads(l) for l in p.stdout.splitlines() if l.startswith("{")]
    mem = next(l for l in lines if l.get("event") == "memory")
    steps = [l for l in lines if "loss" in l][args.warmup:]
    tokens = 16 * 128
    ms = statistics.median(tokens / l["tokens_per_s"] * 1e3 for l in steps)
    sent = statistics.median(l["comm_bytes"] for l in steps)
    return ms, sent, mem


def main():
    tmp = pathlib.Path(tempfile.mkdtemp())
    os.chdir(tmp)
    try:
        subprocess.run([str(BIN / "belay"), "data", "prepare", "--out", "data",
                        "/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0"],
                       check=True, capture_output=True)
        rows = []
        base_ms = None
        for np in (1, 2, 4):
            for stage in (0, 1, 2):
                ms, sent, mem = run(np, stage)
                if base_ms is None:
                    base_ms = ms
                psi = mem["shard_elements"] * np  # padded parameter count
                accum = 16 // (4 * np)
                factor = 2 * (np - 1) if stage < 2 else (accum + 1) * (np - 1)
                theory = 4 * factor * psi
                rows.append((np, stage, accum, ms, ms / base_ms, sent, theory, mem))
        n = rows[0][7]["param_elements"]
        lines = [f"ZeRO data-parallel step, demo shape ({n} parameters), micro-batch 4, "
                 f"global batch 16, median of {args.steps - args.warmup} steps after "
                 f"{args.warmup} warm-up; one thread per rank",
                 f"{'ranks':>5} {'stage':>5} {'accum':>5} {'step ms':>9} {'vs 1 rank':>9} "
                 f"{'sent MB':>9} {'theory MB':>9} {'sent/theory':>11} {'other KB':>9} "
                 f"{'optim MB/rank':>13} {'grad MB/rank':>12}"]
        for np, stage, accum, ms, rel, sent, theory, mem in rows:
            ratio = f"{sent / theory:11.4f}" if theory else f"{'-':>11}"
            lines.append(f"{np:>5} {stage:>5} {accum:>5} {ms:>9.1f} {rel:>9.2f} "
                         f"{sent / 1e6:>9.3f} {theory / 1e6:>9.3f} {ratio} "
                         f"{(sent - theory) / 1e3:>9.1f} {mem['optimizer_bytes'][0] / 1e6:>13.3f} "
                         f"{mem['gradient_bytes'][0] / 1e6:>12.3f}")
        text = "\n".join(lines)
        print(text)
        if args.out:
            pathlib.Path(args.out).write_text(text + "\n")
    finally:
        os.chdir("/")
        shutil.rmtree(tmp, ignore_errors=True)


main()
