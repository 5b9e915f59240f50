#!/usr/bin/env python3
"""PyTorch reference for belay's Apertus model, in float64, from the published formulas.

Usage: apertus_reference.py DIR. Reads DIR/config.json (the model config and the tensors of
belay's flat layout: name, offset, shape), params.f32, inputs.i32, targets.i32 and mask.u8
(B x T); runs the model, backpropagates the mean cross-entropy over the counted positions and
writes DIR/ref_logits.f64 (B x T x V, real vocabulary columns), ref_grads.f64 (belay's
layout) and ref_loss.f64.

The model: pre-norm decoder blocks with RMSNorm (weight, no bias); attention with grouped
query heads (query head h reads key/value head h // (n_head / n_kv_head)), RMSNorm over each
query and key head (QK-norm) before RoPE (rotate-half form, Llama-3 frequency scaling),
causal and block-diagonal over documents (an EOD token closes its document; positions restart
after it); MLP up -> xIELU | SwiGLU | tanh-GELU -> down; final RMSNorm and an untied or tied
LM head. Positions whose input token is EOD do not count in the loss.
"""
import json
import math
import sys

import numpy as np
import torch
import torch.nn.functional as F


def rms_norm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def llama3_inverse_frequencies(hs, r):
    """Llama 3.1's rope scaling (Hugging Face _compute_llama3_parameters)."""
    inv = 1.0 / (r["theta"] ** (torch.arange(0, hs, 2, dtype=torch.float64) / hs))
    factor, low, high, old = r["factor"], r["low_freq_factor"], r["high_freq_factor"], \
        r["original_context"]
    wavelen = 2 * math.pi / inv
    scaled = torch.where(wavelen > old / low, inv / factor, inv)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= old / high) & (wavelen <= old / low)
    return torch.where(medium, smoothed, scaled)


def rotate(x, pos, inv):
    """x (B, H, T, hs); pos (B, T)."""
    ang = pos.to(torch.float64)[:, None, :, None] * inv  # (B, 1, T, hs/2)
    cos = torch.cat([ang.cos(), ang.cos()], dim=-1)
    sin = torch.cat([ang.sin(), ang.sin()], dim=-1)
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def documents(tokens, eod):
    """Document ids and positions (B, T): a document ends with its EOD token."""
    B, T = tokens.shape
    doc = torch.zeros(B, T, dtype=torch.int64)
    pos = torch.zeros(B, T, dtype=torch.int64)
    for b in range(B):
        d, start = 0, 0
        for t in range(T):
            doc[b, t], pos[b, t] = d, t - start
            if eod >= 0 and int(tokens[b, t]) == eod:
                d, start = d + 1, t + 1
    return doc, pos


def xielu(x, a_p, a_n):
    beta, eps = 0.5, -1e-6
    alpha_p = F.softplus(a_p)
    alpha_n = beta + F.softplus(a_n)
    return torch.where(x > 0, alpha_p * x * x + beta * x,
                       alpha_n * torch.expm1(torch.clamp(x, max=eps)) - alpha_n * x + beta * x)


def forward(p, cfg, tokens):
    L, C, NH, NKV = cfg["n_layer"], cfg["d_model"], cfg["n_head"], cfg["n_kv_head"]
    V, eps, hs = cfg["vocab_size"], cfg["norm_eps"], cfg["d_model"] // cfg["n_head"]
    B, T = tokens.shape
    doc, pos = documents(tokens, cfg["eod_token"])
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    allowed = causal[None] & (doc[:, :, None] == doc[:, None, :])  # (B, Tq, Tk)
    inv = llama3_inverse_frequencies(hs, cfg["rope"])
    x = p["embed.weight"][tokens]
    for l in range(L):
        h = rms_norm(x, p["h.attn_norm.weight"][l], eps)
        qkv = h @ p["h.attn.qkv.weight"][l].T
        q, k, v = qkv.split([NH * hs, NKV * hs, NKV * hs], dim=-1)
        q = q.view(B, T, NH, hs).transpose(1, 2)
        k = k.view(B, T, NKV, hs).transpose(1, 2)
        v = v.view(B, T, NKV, hs).transpose(1, 2)
        if cfg["qk_norm"]:
            q = rms_norm(q, p["h.attn.q_norm.weight"][l], eps)
            k = rms_norm(k, p["h.attn.k_norm.weight"][l], eps)
        q, k = rotate(q, pos, inv), rotate(k, pos, inv)
        k = k.repeat_interleave(NH // NKV, dim=1)
        v = v.repeat_interleave(NH // NKV, dim=1)
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(hs)
        scores = scores.masked_fill(~allowed[:, None], float("-inf"))
        y = (scores.softmax(dim=-1) @ v).transpose(1, 2).reshape(B, T, NH * hs)
        x = x + y @ p["h.attn.proj.weight"][l].T
        h = rms_norm(x, p["h.mlp_norm.weight"][l], eps)
        u = h @ p["h.mlp.up.weight"][l].T
        if cfg["activation"] == "xielu":
            a = xielu(u, p["h.mlp.act.a_p"][l], p["h.mlp.act.a_n"][l])
        elif cfg["activation"] == "swiglu":
            gate, up = u.chunk(2, dim=-1)
            a = F.silu(gate) * up
        else:
            a = F.gelu(u, approximate="tanh")
        x = x + a @ p["h.mlp.down.weight"][l].T
    x = rms_norm(x, p["final_norm.weight"], eps)
    head = p["embed.weight"] if cfg["tie_embeddings"] else p["lm_head.weight"]
    return (x @ head.T)[..., :V]


def main():
    d = sys.argv[1]
    torch.set_default_dtype(torch.float64)
    with open(f"{d}/config.json") as f:
        cfg = json.load(f)
    B, T, V = cfg["batch"], cfg["seq_len"], cfg["vocab_size"]
    flat = np.fromfile(f"{d}/params.f32", dtype="<f4").astype(np.float64)
    tokens = torch.from_numpy(np.fromfile(f"{d}/inputs.i32", dtype="<i4").astype(np.int64))
    targets = torch.from_numpy(np.fromfile(f"{d}/targets.i32", dtype="<i4").astype(np.int64))
    mask = torch.from_numpy(np.fromfile(f"{d}/mask.u8", dtype="u1").astype(np.float64))
    tokens, targets, mask = tokens.view(B, T), targets.view(B, T), mask.view(B, T)
    if cfg["eod_token"] >= 0:
        mask = mask * (tokens != cfg["eod_token"]).to(torch.float64)

    params = {}
    for t in cfg["tensors"]:
        n = int(np.prod(t["shape"]))
        params[t["name"]] = torch.tensor(
            flat[t["offset"]:t["offset"] + n].reshape(t["shape"]), requires_grad=True)
    logits = forward(params, cfg, tokens)
    losses = F.cross_entropy(logits.reshape(-1, V), targets.reshape(-1), reduction="none")
    loss = (losses * mask.reshape(-1)).sum() / mask.sum()
    loss.backward()

    logits.detach().numpy().astype("<f8").tofile(f"{d}/ref_logits.f64")
    grads = np.zeros(flat.size)
    for t in cfg["tensors"]:
        g = params[t["name"]].grad
        if g is not None:
            grads[t["offset"]:t["offset"] + g.numel()] = g.reshape(-1).numpy()
    grads.astype("<f8").tofile(f"{d}/ref_grads.f64")
    np.array([loss.item()], dtype="<f8").tofile(f"{d}/ref_loss.f64")


if __name__ == "__main__":
    main()
