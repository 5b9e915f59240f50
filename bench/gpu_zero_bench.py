#!/usr/bin/python3
"""ZeRO stages on one GPU through the whole trainer: `belay-worker train --device cuda` on a
GPT-2 124M-sized model (12 layers, 12 heads, d_model 768, T 1024; byte vocabulary), two
micro-batches per step, at ZeRO stages 0, 1 and 2. On one rank the collectives move nothing
between GPUs, so what separates the stages is their own cost on the device and the host:
packing, the staging and group buffers, the ordering of reduce-scatters after backward, the
parameter all-gather and unpacking.

Usage: gpu_zero_bench.py BIN_DIR [--baseline BIN_DIR] [--micro-batch M] [--steps N]
Prints the median tokens/s of the steps after warm-up for each stage, the ratio to stage 0 of
the same build and, with --baseline (an earlier build's bin directory, run in the same
invocation), the ratio to that build per stage. Exits 77 without a GPU.
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
import tiny_campaign  # noqa: E402

# GPT-2 124M's shape with the byte vocabulary (tests/support/tiny_campaign.py, changed); no
# evaluation.
SPEC = tiny_campaign.spec(
    model={"n_layer": 12, "n_head": 12, "d_model": 768, "seq_len": 1024},
    data={"val": None},
    train={"lr": 3e-4, "eval_every": None, "eval_batches": None},
    checkpoint={"every_steps": 100000})


def prepare_data(bin_dir):
    texts = [p for p in ("/usr/share/common-licenses/GPL-3", "/usr/share/common-licenses/Apache-2.0")
             if pathlib.Path(p).is_file()]
    if not texts:
        pathlib.Path("text").mkdir()
        pathlib.Path("text/corpus.txt").write_text(pathlib.Path(__file__).read_text() * 40)
        texts = ["text/corpus.txt"]
    subprocess.run([str(bin_dir / "belay"), "data", "prepare", "--out", "data", *texts], check=True,
                   capture_output=True)


def run(bin_dir, stage, args, tag):
    spec = pathlib.Path(f"{tag}-zero{stage}.toml")
    tiny_campaign.write(spec, SPEC, campaign={"name": f"zero{stage}"},
                        train={"zero_stage": stage, "total_steps": args.steps, "micro_batch": args.micro_batch,
                               "global_batch": 2 * args.micro_batch})
    out = pathlib.Path(f"{tag}-out{stage}")
    p = subprocess.run([str(bin_dir / "belay-worker"), "--log-level", "warn", "train", "--spec", str(spec),
                        "--device", "cuda", "--out", str(out)], capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        sys.exit(f"{tag} stage {stage}: belay-worker exited {p.returncode}: {p.stderr.strip()[-2000:]}")
    steps = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    steps = [s for s in steps if "tokens_per_s" in s]
    timed = [s["tokens_per_s"] for s in steps[args.warmup:]]
    if not timed:
        sys.exit(f"{tag} stage {stage}: no step reports after warm-up")
    shutil.rmtree(out, ignore_errors=True)
    return statistics.median(timed), steps[-1].get("loss")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin", type=pathlib.Path)
    ap.add_argument("--baseline", type=pathlib.Path)
    ap.add_argument("--micro-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=14)
    ap.add_argument("--warmup", type=int, default=4)
    args = ap.parse_args()
    if shutil.which("nvidia-smi") is None or subprocess.run(["nvidia-smi", "-L"], capture_output=True).returncode:
        print("SKIP: no GPU (nvidia-smi -L failed)")
        sys.exit(77)
    builds = [("belay", args.bin.resolve())]
    if args.baseline:
        builds.append(("baseline", args.baseline.resolve()))
    os.chdir(tempfile.mkdtemp(prefix="gpu-zero-bench-"))
    prepare_data(builds[0][1])
    results = {}
    for stage in (0, 1, 2):
        for tag, bin_dir in builds:  # interleaved, so drift hits both builds alike
            results[(tag, stage)] = run(bin_dir, stage, args, tag)
            print(f"{tag:9} stage {stage}: {results[(tag, stage)][0]:10.0f} tokens/s  "
                  f"(loss {results[(tag, stage)][1]})", flush=True)
    print()
    print(f"GPT-2 124M shape, 1 GPU, micro-batch {args.micro_batch} x 2, T 1024: median tokens/s "
          f"of steps {args.warmup + 1}-{args.steps}")
    header = f"{'stage':>5} {'belay':>10} {'vs stage 0':>11}"
    if args.baseline:
        header += f" {'baseline':>10} {'belay/baseline':>15} {'same last loss':>15}"
    print(header)
    for stage in (0, 1, 2):
        tps = results[("belay", stage)][0]
        line = f"{stage:>5} {tps:>10.0f} {tps / results[('belay', 0)][0]:>11.3f}"
        if args.baseline:
            base = results[("baseline", stage)][0]
            same = results[("belay", stage)][1] == results[("baseline", stage)][1]
            line += f" {base:>10.0f} {tps / base:>15.3f} {'yes' if same else 'NO':>15}"
        print(line)
    record = {f"{tag}_stage{stage}": round(v[0], 1) for (tag, stage), v in results.items()}
    print(json.dumps(record))


if __name__ == "__main__":
    main()
