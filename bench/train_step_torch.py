#!/usr/bin/env python3
"""The PyTorch baseline of train_step_bench: one GPT-2 training step in float32 on the CPU.

The same architecture as belay's GPT-2 (learned positions, pre-LN, tanh GELU, tied
embeddings, a vocabulary padded to a multiple of 128 whose padded logits are never
predicted), the same step (forward + backward over `accum` micro-batches, clip_grad_norm_,
AdamW with weight decay on matrices and embeddings only), random tokens and all-ones masks.
Warms up, then times each step; prints one JSON object on stdout.

Usage: train_step_torch.py --threads N --n-layer L --n-head H --d-model C --seq-len T
         --vocab V --micro-batch B --accum A [--steps S] [--warmup W]
"""
import argparse
import ctypes
import json
import math
import os
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, n_head, C):
        super().__init__()
        self.n_head = n_head
        self.ln_1 = nn.LayerNorm(C, eps=1e-5)
        self.c_attn = nn.Linear(C, 3 * C)
        self.attn_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C, eps=1e-5)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x, causal):
        B, T, C = x.shape
        hs = C // self.n_head
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=-1)
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(hs))
        att = att.masked_fill(~causal[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.attn_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class Gpt2(nn.Module):
    def __init__(self, n_layer, n_head, C, max_seq_len, vocab, padded_vocab):
        super().__init__()
        self.vocab = vocab
        self.wte = nn.Embedding(padded_vocab, C)  # also the output projection (tied)
        self.wpe = nn.Embedding(max_seq_len, C)
        self.h = nn.ModuleList(Block(n_head, C) for _ in range(n_layer))
        self.ln_f = nn.LayerNorm(C, eps=1e-5)
        self.register_buffer(
            "causal", torch.tril(torch.ones(max_seq_len, max_seq_len, dtype=torch.bool)))
        # GPT-2 initialisation, as belay's InitGpt2; the values do not change the timing.
        for name, p in self.named_parameters():
            if p.dim() == 2:
                std = 0.02 / math.sqrt(2 * n_layer) if name.endswith("_proj.weight") else 0.02
                nn.init.normal_(p, std=std)
            elif name.endswith(".weight"):  # the 1-D weights are LayerNorm's
                nn.init.ones_(p)
            else:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.wte.weight[vocab:].zero_()

    def forward(self, inputs, targets, mask):
        B, T = inputs.shape
        x = self.wte(inputs) + self.wpe.weight[:T]
        for block in self.h:
            x = block(x, self.causal)
        logits = (self.ln_f(x) @ self.wte.weight.T)[..., :self.vocab]
        losses = F.cross_entropy(logits.reshape(-1, self.vocab), targets.reshape(-1),
                                 reduction="none")
        return (losses * mask.reshape(-1)).sum()


def openblas_threads():
    """OpenBLAS's thread count in this process (PyTorch's BLAS here), or None if not loaded."""
    try:
        lib = ctypes.CDLL("libopenblas.so.0", mode=os.RTLD_NOLOAD)
        return int(lib.openblas_get_num_threads())
    except (OSError, AttributeError):
        return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for flag in ("threads", "n-layer", "n-head", "d-model", "seq-len", "vocab", "micro-batch",
                 "accum"):
        ap.add_argument(f"--{flag}", type=int, required=True)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    a = ap.parse_args()

    torch.set_num_threads(a.threads)  # explicit: PyTorch's default here need not match OpenMP's
    torch.manual_seed(1234)
    padded = (a.vocab + 127) // 128 * 128
    model = Gpt2(a.n_layer, a.n_head, a.d_model, a.seq_len, a.vocab, padded)
    decay = [p for p in model.parameters() if p.dim() == 2]
    no_decay = [p for p in model.parameters() if p.dim() != 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=3e-4, betas=(0.9, 0.95), eps=1e-8)

    B, T, A = a.micro_batch, a.seq_len, a.accum
    gen = torch.Generator().manual_seed(99)
    tokens = torch.randint(0, a.vocab, (A, B, T + 1), generator=gen)
    inputs, targets = tokens[..., :-1].contiguous(), tokens[..., 1:].contiguous()
    masks = torch.ones(A, B, T)

    def step():
        opt.zero_grad(set_to_none=True)
        counted = masks.sum()
        loss = 0.0
        for i in range(A):
            loss_sum = model(inputs[i], targets[i], masks[i])
            (loss_sum / counted).backward()
            loss += loss_sum.item()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss / counted.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({
        "side": "pytorch",
        "torch_version": torch.__version__,
        "params": sum(p.numel() for p in model.parameters()),
        "padded_vocab": padded,
        "tokens_per_step": A * B * T,
        "median_s": median,
        "tokens_per_s": A * B * T / median,
        "step_s": times,
        "loss": loss,
        "omp_threads": torch.get_num_threads(),  # its OpenMP pool
        "openblas_threads": openblas_threads(),
        "omp_num_threads_env": os.environ.get("OMP_NUM_THREADS"),
        "openblas_num_threads_env": os.environ.get("OPENBLAS_NUM_THREADS"),
    }))


if __name__ == "__main__":
    main()
