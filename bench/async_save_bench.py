#!/usr/bin/python3
"""Asynchronous checkpoint saves against synchronous ones, through the whole trainer:
`belay-worker train` on the CPU (a 6-layer, d_model 384 model: about 11M parameters, so a
shard of about 130 MB of parameters and AdamW moments) saving every `--every` steps, once
with checkpoint.async = true (the default) and once with false, in the same invocation.

Usage: async_save_bench.py BIN_DIR [--steps N] [--every K] [--runs R]
Prints each run's wall time, the median per setting and the ratio sync/async (above 1: the
asynchronous saves hid part of the writing behind training), and checks that both settings
wrote the same shard bytes.
"""

import argparse
import filecmp
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "support"))
import tiny_campaign  # noqa: E402

# 6 layers, d_model 384 (tests/support/tiny_campaign.py, changed): a 130 MB shard; no evaluation.
SPEC = tiny_campaign.spec(
    campaign={"name": "saves"},
    model={"n_layer": 6, "n_head": 6, "d_model": 384, "seq_len": 128},
    data={"val": None},
    train={"micro_batch": 4, "global_batch": 4, "lr": 3e-4, "eval_every": None, "eval_batches": None},
    checkpoint={"keep_last": 2})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("bin", type=pathlib.Path)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--runs", type=int, default=2)
    args = ap.parse_args()
    bin_dir = args.bin.resolve()
    work = pathlib.Path(tempfile.mkdtemp(prefix="async-save-bench-"))
    try:
        subprocess.run([str(bin_dir / "belay"), "data", "prepare", "--out", str(work / "data"),
                        "/usr/share/common-licenses/GPL-3"], check=True, capture_output=True)
        times = {"true": [], "false": []}
        for run in range(args.runs):
            for setting in ("true", "false"):  # interleaved, so drift hits both alike
                spec = work / f"{setting}.toml"
                tiny_campaign.write(spec, SPEC, train={"total_steps": args.steps},
                                    checkpoint={"every_steps": args.every, "async": setting == "true"})
                out = work / f"out-{setting}"
                shutil.rmtree(out, ignore_errors=True)
                start = time.monotonic()
                p = subprocess.run([str(bin_dir / "belay-worker"), "--log-level", "warn", "train", "--spec", str(spec),
                                    "--out", str(out)], cwd=work, capture_output=True, text=True)
                wall = time.monotonic() - start
                if p.returncode != 0:
                    sys.exit(f"async = {setting}: belay-worker exited {p.returncode}: {p.stderr[-2000:]}")
                times[setting].append(wall)
                print(f"run {run + 1}, async = {setting:5}: {wall:6.2f} s", flush=True)
        last = f"step_{args.steps:09d}"
        same = filecmp.cmp(work / "out-true" / "saves" / last / "rank_00000.bin",
                           work / "out-false" / "saves" / last / "rank_00000.bin", shallow=False)
        shard_mb = (work / "out-true" / "saves" / last / "rank_00000.bin").stat().st_size / 1e6
        a, s = statistics.median(times["true"]), statistics.median(times["false"])
        print()
        print(f"{args.steps} steps, a {shard_mb:.0f} MB shard every {args.every} steps, median of {args.runs} runs:")
        print(f"  async {a:.2f} s, sync {s:.2f} s, sync/async {s / a:.2f}; same shard bytes: {'yes' if same else 'NO'}")
        if not same:
            sys.exit(1)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
