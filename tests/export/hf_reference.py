#!/usr/bin/python3
"""Independent check of `belay export`: reads the exported Hugging Face model directories by
hand (no belay code, no transformers), checks the safetensors layout and that the bf16 file
is the fp32 one rounded to nearest even, loads the fp32 weights into the float64 references
of tests/model (GPT-2 or Apertus, from the published formulas) and writes their logits.

Usage: hf_reference.py FP32_DIR BF16_DIR TOKENS B T OUT
TOKENS: B x T int32 little-endian; OUT: the logits, B x T x vocab_size float64. Exits 1 with a
message on the first check that fails.
"""
import json
import pathlib
import sys

import numpy as np
import torch

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "model"))
import apertus_reference  # noqa: E402
import gpt2_reference  # noqa: E402

DTYPES = {"F32": np.dtype("<f4"), "BF16": np.dtype("<u2")}


def fail(msg):
    print("FAIL: " + msg, file=sys.stderr)
    sys.exit(1)


def read_safetensors(path):
    """{name: (dtype name, shape, numpy array of the raw elements)} and the metadata."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    if (8 + n) % 8:
        fail(f"{path}: data starts at byte {8 + n}, not 8-byte aligned")
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    tensors, spans = {}, []
    for name, t in header.items():
        begin, end = t["data_offsets"]
        dtype = DTYPES[t["dtype"]]
        count = int(np.prod(t["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            fail(f"{path}: {name}: {end - begin} bytes for shape {t['shape']}")
        arr = np.frombuffer(data[begin:end], dtype=dtype).reshape(t["shape"])
        tensors[name] = (t["dtype"], t["shape"], arr)
        spans.append((begin, end))
    spans.sort()
    at = 0
    for begin, end in spans:
        if begin != at:
            fail(f"{path}: a gap or overlap at byte {at} of the data")
        at = end
    if at != len(data):
        fail(f"{path}: {len(data) - at} bytes after the last tensor")
    return tensors, meta


def check_bf16(f32, b16):
    if f32.keys() != b16.keys():
        fail("the bf16 and fp32 files name different tensors")
    for name, (dtype, shape, values) in f32.items():
        bdtype, bshape, bits = b16[name]
        if dtype != "F32" or bdtype != "BF16" or shape != bshape:
            fail(f"{name}: {dtype} {shape} vs {bdtype} {bshape}")
        # PyTorch's float -> bfloat16 conversion rounds to nearest even.
        want = torch.from_numpy(values.copy()).to(torch.bfloat16).view(torch.int16).numpy()
        got = bits.view(np.int16)
        if not np.array_equal(want, got):
            i = int(np.argmax(want.reshape(-1) != got.reshape(-1)))
            fail(f"{name}: element {i} is bf16 {got.reshape(-1)[i]:#06x}, "
                 f"round-to-nearest-even gives {want.reshape(-1)[i]:#06x}")


def gpt2(cfg, w):
    for key, want in (("model_type", "gpt2"), ("architectures", ["GPT2LMHeadModel"]),
                      ("activation_function", "gelu_new"), ("layer_norm_epsilon", 1e-5),
                      ("tie_word_embeddings", True)):
        if cfg.get(key) != want:
            fail(f"config.json: {key} is {cfg.get(key)!r}, expected {want!r}")
    if cfg["n_ctx"] != cfg["n_positions"]:
        fail("config.json: n_ctx differs from n_positions")
    L, C = cfg["n_layer"], cfg["n_embd"]
    ref_cfg = {"n_layer": L, "n_head": cfg["n_head"], "d_model": C, "vocab_size": cfg["vocab_size"]}
    layer = lambda l, s: w.pop(f"transformer.h.{l}.{s}")  # noqa: E731
    stack = lambda s, conv1d=False: torch.stack(  # noqa: E731
        [layer(l, s).T if conv1d else layer(l, s) for l in range(L)])
    p = {"wte": w.pop("transformer.wte.weight"), "wpe": w.pop("transformer.wpe.weight")}
    # Conv1D weights are (in, out); the reference multiplies by (out, in) transposed.
    for ours, theirs, conv1d in (
            ("h.ln_1.weight", "ln_1.weight", False), ("h.ln_1.bias", "ln_1.bias", False),
            ("h.attn.c_attn.weight", "attn.c_attn.weight", True),
            ("h.attn.c_attn.bias", "attn.c_attn.bias", False),
            ("h.attn.c_proj.weight", "attn.c_proj.weight", True),
            ("h.attn.c_proj.bias", "attn.c_proj.bias", False),
            ("h.ln_2.weight", "ln_2.weight", False), ("h.ln_2.bias", "ln_2.bias", False),
            ("h.mlp.c_fc.weight", "mlp.c_fc.weight", True),
            ("h.mlp.c_fc.bias", "mlp.c_fc.bias", False),
            ("h.mlp.c_proj.weight", "mlp.c_proj.weight", True),
            ("h.mlp.c_proj.bias", "mlp.c_proj.bias", False)):
        p[ours] = stack(theirs, conv1d)
    p["ln_f.weight"] = w.pop("transformer.ln_f.weight")
    p["ln_f.bias"] = w.pop("transformer.ln_f.bias")
    if p["wte"].shape[0] != cfg["vocab_size"] or p["wpe"].shape[0] != cfg["n_positions"]:
        fail("wte or wpe rows differ from vocab_size or n_positions")
    return lambda tokens: gpt2_reference.forward(p, ref_cfg, tokens, None, None, want_logits=True)


def apertus(cfg, w):
    for key, want in (("model_type", "apertus"), ("architectures", ["ApertusForCausalLM"])):
        if cfg.get(key) != want:
            fail(f"config.json: {key} is {cfg.get(key)!r}, expected {want!r}")
    L, NH = cfg["num_hidden_layers"], cfg["num_attention_heads"]
    scaling = cfg["rope_scaling"]
    rope = {"theta": cfg["rope_theta"], "factor": 1.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_context": 8192}
    if scaling is not None:
        if scaling["rope_type"] != "llama3":
            fail(f"config.json: rope_scaling {scaling}")
        if not isinstance(scaling["original_max_position_embeddings"], int):
            fail(f"config.json: original_max_position_embeddings "
                 f"{scaling['original_max_position_embeddings']!r} is not an integer")
        rope.update(factor=scaling["factor"], low_freq_factor=scaling["low_freq_factor"],
                    high_freq_factor=scaling["high_freq_factor"],
                    original_context=scaling["original_max_position_embeddings"])
    params = cfg["rope_parameters"]
    if params["rope_theta"] != cfg["rope_theta"] or \
            params["rope_type"] != ("default" if scaling is None else "llama3"):
        fail(f"config.json: rope_parameters {params} disagree with rope_theta/rope_scaling")
    act = {"xielu": "xielu", "gelu_new": "gelu"}.get(cfg["hidden_act"])
    if act is None:
        fail(f"config.json: hidden_act {cfg['hidden_act']}")
    ref_cfg = {"n_layer": L, "d_model": cfg["hidden_size"], "n_head": NH,
               "n_kv_head": cfg["num_key_value_heads"], "vocab_size": cfg["vocab_size"],
               "norm_eps": cfg["rms_norm_eps"], "eod_token": -1, "rope": rope, "qk_norm": True,
               "activation": act, "tie_embeddings": cfg["tie_word_embeddings"]}
    layer = lambda l, s: w.pop(f"model.layers.{l}.{s}")  # noqa: E731
    stack = lambda s: torch.stack([layer(l, s) for l in range(L)])  # noqa: E731
    p = {"embed.weight": w.pop("model.embed_tokens.weight"),
         "h.attn_norm.weight": stack("attention_layernorm.weight"),
         "h.attn.qkv.weight": torch.stack([torch.cat(
             [layer(l, f"self_attn.{x}_proj.weight") for x in "qkv"]) for l in range(L)]),
         "h.attn.q_norm.weight": stack("self_attn.q_norm.weight"),
         "h.attn.k_norm.weight": stack("self_attn.k_norm.weight"),
         "h.attn.proj.weight": stack("self_attn.o_proj.weight"),
         "h.mlp_norm.weight": stack("feedforward_layernorm.weight"),
         "h.mlp.up.weight": stack("mlp.up_proj.weight"),
         "h.mlp.down.weight": stack("mlp.down_proj.weight"),
         "final_norm.weight": w.pop("model.norm.weight")}
    if act == "xielu":
        # Hugging Face's XIELUActivation: alpha_p = softplus(alpha_p),
        # alpha_n = beta + softplus(alpha_n), beta and eps fixed buffers.
        p["h.mlp.act.a_p"] = stack("mlp.act_fn.alpha_p")
        p["h.mlp.act.a_n"] = stack("mlp.act_fn.alpha_n")
        for l in range(L):
            beta, eps = layer(l, "mlp.act_fn.beta"), layer(l, "mlp.act_fn.eps")
            if beta.shape != () or float(beta) != 0.5 or abs(float(eps) + 1e-6) > 1e-12:
                fail(f"layer {l}: xIELU beta {beta} eps {eps}")
    if not cfg["tie_word_embeddings"]:
        p["lm_head.weight"] = w.pop("lm_head.weight")
    return lambda tokens: apertus_reference.forward(p, ref_cfg, tokens)


def main():
    f32_dir, b16_dir = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    B, T = int(sys.argv[4]), int(sys.argv[5])
    torch.set_default_dtype(torch.float64)
    f32, meta = read_safetensors(f32_dir / "model.safetensors")
    b16, _ = read_safetensors(b16_dir / "model.safetensors")
    if meta.get("format") != "pt":
        fail(f"__metadata__ {meta}: format must be pt")
    check_bf16(f32, b16)
    cfg = json.loads((f32_dir / "config.json").read_text())
    if cfg.get("torch_dtype") != "float32":
        fail(f"config.json: torch_dtype {cfg.get('torch_dtype')}")
    if json.loads((b16_dir / "config.json").read_text()).get("torch_dtype") != "bfloat16":
        fail("the bf16 export's config.json does not say bfloat16")
    weights = {name: torch.from_numpy(v.astype(np.float64)) for name, (_, _, v) in f32.items()}
    model = {"gpt2": gpt2, "apertus": apertus}[cfg["model_type"]](cfg, weights)
    if weights:
        fail(f"tensors no {cfg['model_type']} parameter uses: {sorted(weights)}")
    tokens = torch.from_numpy(np.fromfile(sys.argv[3], dtype="<i4").astype(np.int64)).view(B, T)
    with torch.no_grad():
        logits = model(tokens)
    logits.numpy().astype("<f8").tofile(sys.argv[6])


if __name__ == "__main__":
    main()
