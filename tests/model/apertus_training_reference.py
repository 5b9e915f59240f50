#!/usr/bin/env python3
"""PyTorch reference for belay's Apertus training: the same model on the same batches, in
float64, updated by AdEMAMix written here from the paper's formulas.

Usage: apertus_training_reference.py DIR. Reads DIR/config.json (the model and tensors as
apertus_reference.py reads them, plus the steps, the micro-batch shape, the learning-rate
schedule, the clipping threshold and the optimizer's hyperparameters), params.f32 (belay's flat
layout), inputs.i32, targets.i32 and mask.u8 (steps x accum x micro_batch x seq_len; the mask
is the caller's, before document ends are masked); writes DIR/ref_losses.f64,
ref_grad_norms.f64, ref_lrs.f64, ref_alphas.f64, ref_beta3s.f64 (one per step) and
ref_params.f64 (after the last step, belay's layout).

The training step: the loss of a step is the mean cross-entropy over the counted positions of
all its micro-batches (the caller's mask, and not where the input token ends a document);
gradients accumulate over the micro-batches, are clipped by torch.nn.utils.clip_grad_norm_,
and AdEMAMix (Pagliardini, Ablin, Grangier 2024, arXiv 2409.03137, Algorithm 1) makes update
t = 1, 2, ...:
  m1 = b1 m1 + (1 - b1) g;  m2 = b3(t) m2 + (1 - b3(t)) g;  v = b2 v + (1 - b2) g^2
  p -= lr(t) ((m1 / (1 - b1^t) + alpha(t) m2) / (sqrt(v / (1 - b2^t)) + eps) + wd p)
with alpha(t) = min(t / T_alpha, 1) alpha and the half-life-linear scheduler
  b3(t) = min(exp(ln b1 ln b3 / ((1 - t/T_b3) ln b3 + (t/T_b3) ln b1)), b3).
Weight decay applies to the matrices and embeddings (embedding, qkv, attention projection,
MLP up and down, LM head), not to norm weights or xIELU scalars. lr(t) is the cosine schedule
with linear warmup of gpt2_reference.py.
"""
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F

import apertus_reference
import gpt2_reference

DECAYED = ("embed.weight", "h.attn.qkv.weight", "h.attn.proj.weight", "h.mlp.up.weight",
           "h.mlp.down.weight", "lm_head.weight")


def ademamix_alpha(o, t):
    warmup = o["alpha_warmup"]
    return o["alpha"] * (min(t / warmup, 1.0) if warmup > 0 else 1.0)


def ademamix_beta3(o, t, beta1):
    warmup, beta3 = o["beta3_warmup"], o["beta3"]
    if warmup <= 0:
        return beta3
    a = min(t / warmup, 1.0)
    lb1, lb3 = math.log(beta1), math.log(beta3)
    return min(math.exp(lb1 * lb3 / ((1 - a) * lb3 + a * lb1)), beta3)


class Ademamix:
    def __init__(self, groups, o):
        self.groups, self.o = groups, o  # groups: [(tensors, weight decay)]
        self.state = {id(p): (torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p))
                      for ps, _ in groups for p in ps}

    @torch.no_grad()
    def step(self, lr, t):
        o = self.o
        b1, b2, eps = o["beta1"], o["beta2"], o["eps"]
        alpha, b3 = ademamix_alpha(o, t), ademamix_beta3(o, t, b1)
        for ps, wd in self.groups:
            for p in ps:
                m1, m2, v = self.state[id(p)]
                g = p.grad
                m1.mul_(b1).add_((1 - b1) * g)
                m2.mul_(b3).add_((1 - b3) * g)
                v.mul_(b2).add_((1 - b2) * g * g)
                update = (m1 / (1 - b1**t) + alpha * m2) / ((v / (1 - b2**t)).sqrt() + eps)
                p.sub_(lr * (update + wd * p))
        return alpha, b3


def main():
    d = sys.argv[1]
    torch.set_default_dtype(torch.float64)
    with open(f"{d}/config.json") as f:
        cfg = json.load(f)
    S, A, M, T, V = cfg["steps"], cfg["accum"], cfg["micro_batch"], cfg["seq_len"], \
        cfg["vocab_size"]
    flat = np.fromfile(f"{d}/params.f32", dtype="<f4").astype(np.float64)
    read = lambda name, dtype: torch.from_numpy(  # noqa: E731
        np.fromfile(f"{d}/{name}", dtype=dtype).astype(np.int64)).view(S, A, M, T)
    inputs, targets, mask = read("inputs.i32", "<i4"), read("targets.i32", "<i4"), \
        read("mask.u8", "u1").to(torch.float64)
    mask = mask * (inputs != cfg["eod_token"]).to(torch.float64)

    params, order = {}, []
    for t in cfg["tensors"]:
        n = int(np.prod(t["shape"]))
        params[t["name"]] = torch.tensor(
            flat[t["offset"]:t["offset"] + n].reshape(t["shape"]), requires_grad=True)
        order.append(t["name"])
    o = cfg["optimizer"]
    opt = Ademamix([([params[n] for n in order if n in DECAYED], o["weight_decay"]),
                    ([params[n] for n in order if n not in DECAYED], 0.0)], o)

    out = {k: [] for k in ("losses", "grad_norms", "lrs", "alphas", "beta3s")}
    for s in range(S):
        for p in params.values():
            p.grad = torch.zeros_like(p)
        counted, total = mask[s].sum(), 0.0
        for a in range(A):
            logits = apertus_reference.forward(params, cfg, inputs[s, a])
            losses = F.cross_entropy(logits.reshape(-1, V), targets[s, a].reshape(-1),
                                     reduction="none")
            loss_sum = (losses * mask[s, a].reshape(-1)).sum()
            (loss_sum / counted).backward()
            total += loss_sum.item()
        out["losses"].append(total / counted.item())
        norm = torch.nn.utils.clip_grad_norm_(list(params.values()), cfg["grad_clip"])
        out["grad_norms"].append(norm.item())
        lr = gpt2_reference.cosine_lr(cfg, s + 1)
        out["lrs"].append(lr)
        alpha, beta3 = opt.step(lr, s + 1)
        out["alphas"].append(alpha)
        out["beta3s"].append(beta3)

    for k, v in out.items():
        np.array(v, dtype="<f8").tofile(f"{d}/ref_{k}.f64")
    torch.cat([params[n].detach().reshape(-1) for n in order]).numpy().astype("<f8").tofile(
        f"{d}/ref_params.f64")


if __name__ == "__main__":
    main()
