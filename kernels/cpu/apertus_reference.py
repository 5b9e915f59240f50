#!/usr/bin/env python3
"""PyTorch (float64, autograd) reference for the Apertus building blocks on the CPU path.

Usage: apertus_reference.py DIR. Reads DIR/config.json and the inputs the C++ test wrote
(*.f32 little-endian float32, *.i32 int32), computes every op's output and, through autograd
of sum(dout * output), its gradients, and writes them as DIR/ref_<name>.f64. Formulas are the
published ones (RMSNorm; RoPE with Llama 3 frequency scaling; xIELU; SwiGLU; attention with
grouped key/value heads and a document mask; AdEMAMix with its warmup schedulers); none is
taken from the C++ kernels.
"""
import json
import math
import sys

import numpy as np
import torch

torch.set_default_dtype(torch.float64)


def load(d, name, dtype=np.float32):
    return torch.from_numpy(np.fromfile(f"{d}/{name}", dtype=dtype).astype(np.float64))


def save(d, name, t):
    t.detach().numpy().astype(np.float64).tofile(f"{d}/ref_{name}.f64")


def leaf(t):
    return t.clone().requires_grad_(True)


def rmsnorm(d, c):
    x, w, g = leaf(load(d, "rms_x.f32")), leaf(load(d, "rms_w.f32")), load(d, "rms_dout.f32")
    x2 = x.view(c["rms_n"], c["rms_c"])
    y = x2 * torch.rsqrt(x2.pow(2).mean(-1, keepdim=True) + c["rms_eps"]) * w
    (y.flatten() * g).sum().backward()
    save(d, "rms_y", y.flatten())
    save(d, "rms_dx", x.grad)
    save(d, "rms_dw", w.grad)


def llama3_inv_freq(hs, c):
    base = c["rope_theta"] ** (-torch.arange(0, hs, 2) / hs)
    wavelen = 2 * math.pi / base
    low_wavelen = c["rope_original"] / c["rope_low"]
    high_wavelen = c["rope_original"] / c["rope_high"]
    smooth = (c["rope_original"] / wavelen - c["rope_low"]) / (c["rope_high"] - c["rope_low"])
    blended = (1 - smooth) * base / c["rope_factor"] + smooth * base
    out = torch.where(wavelen > low_wavelen, base / c["rope_factor"], blended)
    return torch.where(wavelen < high_wavelen, base, out)


def rope(d, c):
    n, h, hs = c["rope_n"], c["rope_h"], c["rope_hs"]
    x, g = leaf(load(d, "rope_x.f32")), load(d, "rope_dout.f32")
    pos = load(d, "rope_pos.i32", np.int32)
    # The kernel's frequencies are fp32 (as torch's and Megatron-LM's are): round them too.
    inv = llama3_inv_freq(hs, c).to(torch.float32).to(torch.float64)
    ang = pos[:, None] * inv[None, :]
    cos, sin = torch.cat([ang.cos()] * 2, -1), torch.cat([ang.sin()] * 2, -1)
    x3 = x.view(n, h, hs)
    rotated = torch.cat([-x3[..., hs // 2:], x3[..., :hs // 2]], -1)  # rotate_half
    y = x3 * cos[:, None, :] + rotated * sin[:, None, :]
    (y.flatten() * g).sum().backward()
    save(d, "rope_inv_freq", llama3_inv_freq(hs, c))
    save(d, "rope_y", y.flatten())
    save(d, "rope_dx", x.grad)


def xielu(d, c):
    x, g = leaf(load(d, "xielu_x.f32")), load(d, "xielu_dout.f32")
    a_p = torch.tensor(c["xielu_a_p"], requires_grad=True)
    a_n = torch.tensor(c["xielu_a_n"], requires_grad=True)
    beta, eps = 0.5, -1e-6
    alpha_p = torch.nn.functional.softplus(a_p)
    alpha_n = beta + torch.nn.functional.softplus(a_n)
    y = torch.where(x > 0, alpha_p * x * x + beta * x,
                    alpha_n * torch.expm1(torch.clamp(x, max=eps)) - alpha_n * x + beta * x)
    (y * g).sum().backward()
    save(d, "xielu_y", y)
    save(d, "xielu_dx", x.grad)
    save(d, "xielu_dscalars", torch.stack([a_p.grad, a_n.grad]))


def swiglu(d, c):
    x, g = leaf(load(d, "swiglu_x.f32")), load(d, "swiglu_dout.f32")
    gate, up = x.view(c["swiglu_n"], 2 * c["swiglu_f"]).chunk(2, -1)
    y = torch.nn.functional.silu(gate) * up
    (y.flatten() * g).sum().backward()
    save(d, "swiglu_y", y.flatten())
    save(d, "swiglu_dx", x.grad)


def gqa(d, c):
    b, t, nh, nkv, hs = c["gqa_b"], c["gqa_t"], c["gqa_nh"], c["gqa_nkv"], c["gqa_hs"]
    qkv, g = leaf(load(d, "gqa_qkv.f32")), load(d, "gqa_dout.f32")
    doc = load(d, "gqa_doc.i32", np.int32).view(b, t)
    x = qkv.view(b, t, nh + 2 * nkv, hs)
    q = x[:, :, :nh].transpose(1, 2)  # (b, nh, t, hs)
    k = x[:, :, nh:nh + nkv].transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
    v = x[:, :, nh + nkv:].transpose(1, 2).repeat_interleave(nh // nkv, dim=1)
    causal = torch.ones(t, t, dtype=torch.bool).tril()
    same_doc = doc[:, :, None] == doc[:, None, :]  # (b, t, t)
    mask = (causal[None] & same_doc)[:, None]  # (b, 1, t, t)
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(hs)
    att = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    y = (att @ v).transpose(1, 2).reshape(-1)
    (y * g).sum().backward()
    save(d, "gqa_y", y)
    save(d, "gqa_dqkv", qkv.grad)


def ademamix(d, c):
    p = load(d, "ade_p.f32")
    grads = load(d, "ade_grads.f32").view(c["ade_steps"], -1)
    b1, b2, b3, alpha = c["ade_beta1"], c["ade_beta2"], c["ade_beta3"], c["ade_alpha"]
    m1, m2, nu = torch.zeros_like(p), torch.zeros_like(p), torch.zeros_like(p)
    for t in range(1, c["ade_steps"] + 1):
        # alpha from 0 and beta3 from beta1, in the paper's closed forms.
        a_t = min(t * alpha / c["ade_alpha_warmup"], alpha)
        frac = t / c["ade_beta3_warmup"]
        lb1, lb3 = math.log(b1), math.log(b3)
        b3_t = min(math.exp(lb1 * lb3 / ((1 - frac) * lb3 + frac * lb1)), b3)
        g = grads[t - 1]
        m1 = b1 * m1 + (1 - b1) * g
        m2 = b3_t * m2 + (1 - b3_t) * g
        nu = b2 * nu + (1 - b2) * g * g
        step = (m1 / (1 - b1 ** t) + a_t * m2) / ((nu / (1 - b2 ** t)).sqrt() + c["ade_eps"])
        p = p - c["ade_lr"] * (step + c["ade_wd"] * p)
    save(d, "ade_p", p)
    save(d, "ade_states", torch.cat([m1, m2, nu]))


def main():
    d = sys.argv[1]
    with open(f"{d}/config.json") as f:
        c = json.load(f)
    for op in (rmsnorm, rope, xielu, swiglu, gqa, ademamix):
        op(d, c)


if __name__ == "__main__":
    main()
