"""GPT-2 training steps in PyTorch on one GPU: the baseline for bench/gpu_train_bench.

The same shapes and step as belay's GPU path: 12 layers, 12 heads, d_model 768, vocabulary
50257 padded to 50304 (tied output head), GELU (tanh), LayerNorm eps 1e-5, bf16 autocast
over fp32 parameters, causal scaled_dot_product_attention, fused AdamW (lr 3e-4, betas
0.9/0.95, weight decay 0.1 on matrices and embeddings), gradient clipping at 1.0.
Prints human lines, then one JSON line. With --compile the model goes through torch.compile.
"""
import argparse
import json
import math
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class Block(nn.Module):
    def __init__(self, C, NH):
        super().__init__()
        self.NH = NH
        self.ln_1 = nn.LayerNorm(C)
        self.c_attn = nn.Linear(C, 3 * C)
        self.c_proj = nn.Linear(C, C)
        self.ln_2 = nn.LayerNorm(C)
        self.c_fc = nn.Linear(C, 4 * C)
        self.mlp_proj = nn.Linear(4 * C, C)

    def forward(self, x):
        B, T, C = x.shape
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q, k, v = (t.view(B, T, self.NH, C // self.NH).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.c_proj(y.transpose(1, 2).contiguous().view(B, T, C))
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT2(nn.Module):
    def __init__(self, L, NH, C, T, V, Vp):
        super().__init__()
        self.V = V
        self.wte = nn.Embedding(Vp, C)
        self.wpe = nn.Embedding(T, C)
        self.h = nn.ModuleList(Block(C, NH) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                nn.init.normal_(p, 0.0, std)

    def forward(self, idx, targets):
        T = idx.shape[1]
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        for block in self.h:
            x = block(x)
        logits = F.linear(self.ln_f(x), self.wte.weight)[..., : self.V]
        return F.cross_entropy(logits.float().view(-1, self.V), targets.view(-1))


def run(B, T, L, steps, warmup, compile_model):
    torch.manual_seed(1234)
    dev = torch.device("cuda")
    model = GPT2(L, 12, 768, T, 50257, 50304).to(dev)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=3e-4, betas=(0.9, 0.95), eps=1e-8, fused=True)
    step_fn = torch.compile(model) if compile_model else model
    gen = torch.Generator().manual_seed(1)
    tokens = torch.randint(0, 50257, (B * T + 1,), generator=gen).to(dev)
    x, y = tokens[:-1].view(B, T), tokens[1:].view(B, T)
    timed = 0.0
    losses = []
    for s in range(1, warmup + steps + 1):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = step_fn(x, y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        losses.append(loss.item())
        if s > warmup:
            timed += dt
        print(f"step {s:2d}  loss {losses[-1]:.4f}  {dt * 1e3:.1f} ms" + ("  (warm-up)" if s <= warmup else ""))
    n_params = sum(p.numel() for p in model.parameters())
    return timed / steps, n_params, losses


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile", action="store_true")
    a = ap.parse_args()
    B = a.batch
    while True:
        try:
            step_s, n_params, losses = run(B, a.seq, a.layers, a.steps, a.warmup, a.compile)
            break
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            if B == 1:
                raise
            print(f"B={B}: out of GPU memory, trying {B // 2}")
            B //= 2
    tokens_per_s = B * a.seq / step_s
    flops_per_token = 6 * n_params + 6 * a.layers * 768 * a.seq
    mfu = tokens_per_s * flops_per_token / 989e12
    name = "pytorch-compile" if a.compile else "pytorch"
    device = torch.cuda.get_device_name(0)
    print(f"{name} {torch.__version__} {device}: B={B} T={a.seq}, {step_s * 1e3:.1f} ms/step, "
          f"{tokens_per_s:.0f} tokens/s, MFU {mfu * 100:.1f}%")
    print(json.dumps({"impl": name, "device": device, "B": B, "T": a.seq, "layers": a.layers,
                      "step_ms": round(step_s * 1e3, 3), "tokens_per_s": round(tokens_per_s, 1),
                      "mfu": round(mfu, 4), "first_loss": round(losses[0], 4),
                      "last_loss": round(losses[-1], 4)}))


if __name__ == "__main__":
    main()
