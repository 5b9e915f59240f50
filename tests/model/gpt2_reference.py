#!/usr/bin/env python3
"""PyTorch reference for belay's GPT-2: trains the same model on the same batches in float64.

Usage: gpt2_reference.py DIR. Reads DIR/config.json, params.f32 (belay's flat layout),
inputs.i32, targets.i32 and masks.u8 (steps x accum x micro_batch x seq_len); writes
DIR/ref_losses.f64, ref_grad_norms.f64, ref_lrs.f64, ref_grads1.f64 (the gradient of the
first step, before clipping, in belay's layout), ref_logits.f64 (the first micro-batch's
logits, real vocabulary columns only) and ref_params.f64 (after the last step). The Goldfish
masks belay computed are checked against this script's own implementation of the rule
(xxh3-64 from python3-xxhash); a mismatch exits 3.
"""
import json
import math
import sys

import numpy as np
import torch
import xxhash
import torch.nn.functional as F


def layout(cfg):
    L, C, Vp, T = cfg["n_layer"], cfg["d_model"], cfg["padded_vocab"], cfg["max_seq_len"]
    return [
        ("wte", (Vp, C), True), ("wpe", (T, C), True),
        ("h.ln_1.weight", (L, C), False), ("h.ln_1.bias", (L, C), False),
        ("h.attn.c_attn.weight", (L, 3 * C, C), True), ("h.attn.c_attn.bias", (L, 3 * C), False),
        ("h.attn.c_proj.weight", (L, C, C), True), ("h.attn.c_proj.bias", (L, C), False),
        ("h.ln_2.weight", (L, C), False), ("h.ln_2.bias", (L, C), False),
        ("h.mlp.c_fc.weight", (L, 4 * C, C), True), ("h.mlp.c_fc.bias", (L, 4 * C), False),
        ("h.mlp.c_proj.weight", (L, C, 4 * C), True), ("h.mlp.c_proj.bias", (L, C), False),
        ("ln_f.weight", (C,), False), ("ln_f.bias", (C,), False),
    ]


def forward(p, cfg, inputs, targets, mask, want_logits=False):
    L, NH, C, V = cfg["n_layer"], cfg["n_head"], cfg["d_model"], cfg["vocab_size"]
    B, T = inputs.shape
    hs = C // NH
    x = p["wte"][inputs] + p["wpe"][:T]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for l in range(L):
        h = F.layer_norm(x, (C,), p["h.ln_1.weight"][l], p["h.ln_1.bias"][l], eps=1e-5)
        qkv = h @ p["h.attn.c_attn.weight"][l].T + p["h.attn.c_attn.bias"][l]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = (t.view(B, T, NH, hs).transpose(1, 2) for t in (q, k, v))
        att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        att = att.masked_fill(~causal, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p["h.attn.c_proj.weight"][l].T + p["h.attn.c_proj.bias"][l]
        h = F.layer_norm(x, (C,), p["h.ln_2.weight"][l], p["h.ln_2.bias"][l], eps=1e-5)
        h = F.gelu(h @ p["h.mlp.c_fc.weight"][l].T + p["h.mlp.c_fc.bias"][l], approximate="tanh")
        x = x + h @ p["h.mlp.c_proj.weight"][l].T + p["h.mlp.c_proj.bias"][l]
    x = F.layer_norm(x, (C,), p["ln_f.weight"], p["ln_f.bias"], eps=1e-5)
    logits = (x @ p["wte"].T)[..., :V]  # padded vocabulary columns are never predicted
    if want_logits:
        return logits
    losses = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    return (losses * mask.reshape(-1)).sum()


GOLDFISH_SEED = 0x676F6C6466697368  # "goldfish"


def goldfish_mask(seq, k, h):
    """Mask of the T labels of a T+1-token sequence: 0 where the h-token window ending at the
    label hashes below 2^64 / k, 1 elsewhere and where the window does not fit."""
    threshold = (2**64 - 1) // k
    mask = []
    for t in range(len(seq) - 1):
        if t + 2 < h:
            mask.append(1)
            continue
        window = np.asarray(seq[t + 2 - h:t + 2], dtype="<i4").tobytes()
        mask.append(0 if xxhash.xxh3_64_intdigest(window, seed=GOLDFISH_SEED) < threshold else 1)
    return mask


def cosine_lr(cfg, step):
    lr, min_lr, warmup, total = cfg["lr"], cfg["min_lr"], cfg["warmup_steps"], cfg["total_steps"]
    if warmup > 0 and step <= warmup:
        return lr * step / warmup
    progress = (step - warmup) / (total - warmup)
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * progress))


def main():
    d = sys.argv[1]
    torch.set_default_dtype(torch.float64)
    with open(f"{d}/config.json") as f:
        cfg = json.load(f)
    S, A, M, T = cfg["steps"], cfg["accum"], cfg["micro_batch"], cfg["seq_len"]
    flat = np.fromfile(f"{d}/params.f32", dtype="<f4").astype(np.float64)
    inputs = torch.from_numpy(np.fromfile(f"{d}/inputs.i32", dtype="<i4").astype(np.int64))
    targets = torch.from_numpy(np.fromfile(f"{d}/targets.i32", dtype="<i4").astype(np.int64))
    masks = torch.from_numpy(np.fromfile(f"{d}/masks.u8", dtype="u1").astype(np.float64))
    inputs, targets, masks = (t.view(S, A, M, T) for t in (inputs, targets, masks))

    # Goldfish: recompute every mask from the tokens (sequence = inputs + last target).
    mismatches = 0
    for s in range(S):
        for a in range(A):
            for m in range(M):
                seq = inputs[s, a, m].tolist() + [int(targets[s, a, m, -1])]
                want = goldfish_mask(seq, cfg["goldfish_k"], cfg["goldfish_h"])
                mismatches += sum(int(x != y) for x, y in zip(want, masks[s, a, m].tolist()))
    if mismatches:
        print(f"goldfish: {mismatches} mask positions differ from the reference rule")
        sys.exit(3)

    params, decay, no_decay, off = {}, [], [], 0
    for name, shape, dec in layout(cfg):
        n = int(np.prod(shape))
        t = torch.tensor(flat[off:off + n].reshape(shape), requires_grad=True)
        params[name] = t
        (decay if dec else no_decay).append(t)
        off += n
    assert off == flat.size, (off, flat.size)
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg["weight_decay"]},
         {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"], foreach=False)

    order = [name for name, _, _ in layout(cfg)]
    losses, norms, lrs = [], [], []
    for s in range(S):
        opt.zero_grad(set_to_none=False)
        counted = masks[s].sum()
        total = 0.0
        for a in range(A):
            if s == 0 and a == 0:
                with torch.no_grad():
                    logits = forward(params, cfg, inputs[0, 0], targets[0, 0], masks[0, 0],
                                     want_logits=True)
                logits.numpy().astype("<f8").tofile(f"{d}/ref_logits.f64")
            loss_sum = forward(params, cfg, inputs[s, a], targets[s, a], masks[s, a])
            (loss_sum / counted).backward()
            total += loss_sum.item()
        losses.append(total / counted.item())
        grads = torch.cat([params[n].grad.reshape(-1) for n in order])
        if s == 0:
            grads.numpy().astype("<f8").tofile(f"{d}/ref_grads1.f64")
        norm = torch.sqrt((grads * grads).sum()).item()
        norms.append(norm)
        coef = cfg["grad_clip"] / (norm + 1e-6)
        if cfg["grad_clip"] > 0 and coef < 1:
            for t in params.values():
                t.grad.mul_(coef)
        lr = cosine_lr(cfg, s + 1)
        lrs.append(lr)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()

    np.array(losses, dtype="<f8").tofile(f"{d}/ref_losses.f64")
    np.array(norms, dtype="<f8").tofile(f"{d}/ref_grad_norms.f64")
    np.array(lrs, dtype="<f8").tofile(f"{d}/ref_lrs.f64")
    torch.cat([params[n].detach().reshape(-1) for n in order]).numpy().astype("<f8").tofile(
        f"{d}/ref_params.f64")


if __name__ == "__main__":
    main()
