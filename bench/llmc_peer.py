"""llm.c beside belay in scripts/gpu-check.sh: the token shard both read, and llm.c's log read back.

  llmc_peer.py shard OUT.bin --tokens N [--seed S]
      writes an llm.c GPT-2 token shard (256 int32 header: magic 20240520, version 1, count;
      then N uint16 tokens below 50257), random tokens from a fixed seed. gpu_train_bench
      (--data) and llm.c's train_gpt2cu (-i/-j, with -a 1) both train on its first B*T+1 tokens,
      every step.
  llmc_peer.py parse LOG --batch B --seq T --warmup W --steps N
      reads train_gpt2cu's output and prints one JSON line in gpu_train_bench's form (impl
      "llm.c", B, T, step_ms, tokens_per_s, mfu, first_loss, last_loss): the mean of the per-step
      times of steps W+1 .. W+N (the times llm.c prints per step; its tok/s column is a moving
      average, not used), tokens/s = B*T / that mean, MFU counted as gpu_train_bench counts it
      (6P + 6*L*C*T FLOPs per token, P the parameter count llm.c prints, against 989 TFLOP/s).
      Exits 1 with a one-line reason when the log has fewer steps, or a step or the parameter
      count is missing. When llm.c fell back to managed memory for its optimizer state, the row
      says so ("note").

Standard library only: the GPU machine may have no numpy.
"""
import argparse
import json
import random
import re
import struct
import sys
from array import array

MAGIC, VERSION, VOCAB = 20240520, 1, 50257
PEAK_BF16_FLOPS = 989e12  # as gpu_train_bench

# train_gpt2.cu's per-step line:
#   "step %4d/%d | loss %7.6f (%+.2fz)| norm %6.4f (%+.2fz)| lr %.2e | %.2f ms | %.1f%% bf16 MFU | %.0f tok/s"
STEP = re.compile(
    r"^step\s+(\d+)/(\d+) \| loss\s+(\S+) \([^)]*\)\| norm\s+\S+ \([^)]*\)\| lr \S+ \| "
    r"([0-9.]+) ms \| [0-9.]+% \S+ MFU \| [0-9.]+ tok/s")
PARAMS = re.compile(r"^num_parameters: (\d+) => bytes: \d+")
# Printed when the optimizer state did not fit and went to managed (host) memory: slow.
MANAGED = "Fell back to cudaMallocManaged"
TABLE = re.compile(r"^\| (num_layers L|channels C) +\| (\d+) +\|")


def write_shard(path, n, seed):
    rng = random.Random(seed)
    tokens = array("H", (rng.randrange(VOCAB) for _ in range(n)))
    if sys.byteorder != "little":
        tokens.byteswap()
    with open(path, "wb") as f:
        f.write(struct.pack("<256i", MAGIC, VERSION, n, *([0] * 253)))
        f.write(tokens.tobytes())


def parse_log(text, batch, seq, warmup, steps):
    """The JSON row for llm.c's log `text`; ValueError with the reason when it cannot."""
    times, losses, params, shape = {}, {}, None, {}
    for line in text.splitlines():
        m = STEP.match(line)
        if m:
            step = int(m.group(1))
            times[step], losses[step] = float(m.group(4)), float(m.group(3))
            continue
        m = PARAMS.match(line)
        if m:
            params = int(m.group(1))
            continue
        m = TABLE.match(line)
        if m:
            shape[m.group(1)] = int(m.group(2))
    want = range(warmup + 1, warmup + steps + 1)
    missing = [s for s in want if s not in times]
    if missing:
        raise ValueError(f"llm.c log has {len(times)} step lines, step {missing[0]} missing "
                         f"(want steps {want.start}..{want.stop - 1})")
    if params is None:
        raise ValueError("llm.c log has no num_parameters line")
    layers, channels = shape.get("num_layers L", 12), shape.get("channels C", 768)
    step_ms = sum(times[s] for s in want) / steps
    tokens_per_s = batch * seq / (step_ms / 1e3)
    flops_per_token = 6.0 * params + 6.0 * layers * channels * seq
    row = {"impl": "llm.c", "B": batch, "T": seq, "layers": layers, "step_ms": round(step_ms, 3),
           "tokens_per_s": round(tokens_per_s, 1),
           "mfu": round(tokens_per_s * flops_per_token / PEAK_BF16_FLOPS, 4),
           "first_loss": losses[min(losses)], "last_loss": losses[want.stop - 1]}
    if MANAGED in text:
        row["note"] = "optimizer state in managed memory"
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("shard")
    s.add_argument("out")
    s.add_argument("--tokens", type=int, required=True)
    s.add_argument("--seed", type=int, default=1)
    p = sub.add_parser("parse")
    p.add_argument("log")
    for flag in ("--batch", "--seq", "--warmup", "--steps"):
        p.add_argument(flag, type=int, required=True)
    args = ap.parse_args()
    if args.cmd == "shard":
        write_shard(args.out, args.tokens, args.seed)
        return 0
    with open(args.log, errors="replace") as f:
        text = f.read()
    try:
        row = parse_log(text, args.batch, args.seq, args.warmup, args.steps)
    except ValueError as e:
        print(e)
        return 1
    print(json.dumps(row))
    return 0


if __name__ == "__main__":
    sys.exit(main())
