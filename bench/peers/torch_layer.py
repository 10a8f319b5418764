#!/usr/bin/env python3
"""Peer of bench/reference.ts: one decoder layer in PyTorch bf16, as a runtime
computes it.

The layer: RMSNorm, fused QKV projection (F.linear), QK-norm (Qwen3), RoPE
(rotate-half, cos/sin tables made once per shape outside the timed region),
attention, output projection + residual, RMSNorm, fused gate/up projection,
SiLU * up, down projection + residual. Weights are random bf16 (normal /
sqrt(fan_in)); the input is random.

Attention:
- whole prompt (no cached prefix): ``scaled_dot_product_attention(...,
  is_causal=True)`` under the flash backend, with ``enable_gqa=True`` where
  this torch's flash kernel takes it (native GQA), else over KV heads
  repeated with ``repeat_interleave`` (the JSON says which ran);
- suffix of a cached prefill (``start`` cached tokens, ``count`` new): the
  cached K and V (contiguous, [1, kv_heads, start, head_dim]) concatenated
  with the new ones, KV heads repeated, and SDPA with the lower-right causal
  mask (a boolean [count, start + count] tensor made once per shape), which
  the flash kernel does not take: PyTorch picks its masked path. What
  HF-transformers-style runtimes do.

Each case: 3 warm-up layers, then 7 samples of ``reps`` back-to-back layers
timed with CUDA events; the median per layer and its spread (min-max) are
reported. Prints one JSON object on stdout (progress on stderr); reference.ts
reads it with --peer.

    python3 bench/peers/torch_layer.py [--quick] [--cases a,b,...]
"""

import argparse
import json
import math
import sys
import time

import torch
import torch.nn.functional as F

MODELS = {
    "llama-3-8b": dict(hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336,
                       rope_theta=500000.0, norm_eps=1e-5, qk_norm=False),
    "qwen3-14b": dict(hidden=5120, heads=40, kv_heads=8, head_dim=128, intermediate=17408,
                      rope_theta=1000000.0, norm_eps=1e-6, qk_norm=True),
    "llama-3-70b": dict(hidden=8192, heads=64, kv_heads=8, head_dim=128, intermediate=28672,
                        rope_theta=500000.0, norm_eps=1e-5, qk_norm=False),
}

# name, model, cached tokens (start), new tokens (count): the same list as bench/reference.ts.
CASES = [
    ("llama-3-8b_whole_1k", "llama-3-8b", 0, 1024),
    ("llama-3-8b_whole_4k", "llama-3-8b", 0, 4096),
    ("llama-3-8b_whole_8k", "llama-3-8b", 0, 8192),
    ("llama-3-8b_whole_16k", "llama-3-8b", 0, 16384),
    ("llama-3-8b_suffix_512_of_4k", "llama-3-8b", 3584, 512),
    ("llama-3-8b_suffix_1024_of_16k", "llama-3-8b", 15360, 1024),
    ("qwen3-14b_whole_4k", "qwen3-14b", 0, 4096),
    ("llama-3-70b_whole_4k", "llama-3-70b", 0, 4096),
]


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def make_weights(m, dev):
    g = torch.Generator(device=dev).manual_seed(1)
    d, hd = m["hidden"], m["head_dim"]
    qkv_out = (m["heads"] + 2 * m["kv_heads"]) * hd

    def mat(out_f, in_f):
        return (torch.randn(out_f, in_f, device=dev, generator=g) / math.sqrt(in_f)).to(torch.bfloat16)

    def norm(n):
        return (1.0 + 0.1 * torch.randn(n, device=dev, generator=g)).to(torch.bfloat16)

    return dict(attn_norm=norm(d), mlp_norm=norm(d), q_norm=norm(hd), k_norm=norm(hd),
                qkv=mat(qkv_out, d), wo=mat(d, m["heads"] * hd),
                gate_up=mat(2 * m["intermediate"], d), down=mat(d, m["intermediate"]))


def rope_tables(m, start, count, dev):
    hd = m["head_dim"]
    inv = 1.0 / (m["rope_theta"] ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float32) / hd))
    pos = torch.arange(start, start + count, device=dev, dtype=torch.float32)
    ang = torch.outer(pos, inv)
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(torch.bfloat16)[None, :, None, :], ang.sin().to(torch.bfloat16)[None, :, None, :]


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class Layer:
    def __init__(self, m, w, start, count, dev, gqa_flash):
        self.m, self.w, self.start, self.count = m, w, start, count
        self.cos, self.sin = rope_tables(m, start, count, dev)
        self.gqa_flash = gqa_flash
        kvh, hd = m["kv_heads"], m["head_dim"]
        if start > 0:
            self.k_cached = torch.randn(1, kvh, start, hd, device=dev).to(torch.bfloat16)
            self.v_cached = torch.randn(1, kvh, start, hd, device=dev).to(torch.bfloat16)
            # Lower-right causal: new token i (position start + i) sees keys [0, start + i].
            q_pos = torch.arange(start, start + count, device=dev)[:, None]
            k_pos = torch.arange(0, start + count, device=dev)[None, :]
            self.mask = k_pos <= q_pos

    def __call__(self, x):
        m, w = self.m, self.w
        n, d = x.shape
        h, kvh, hd = m["heads"], m["kv_heads"], m["head_dim"]
        eps = m["norm_eps"]
        y = F.rms_norm(x, (d,), w["attn_norm"], eps)
        qkv = F.linear(y, w["qkv"])
        q, k, v = qkv.split([h * hd, kvh * hd, kvh * hd], dim=-1)
        q = q.view(1, n, h, hd)
        k = k.view(1, n, kvh, hd)
        v = v.view(1, n, kvh, hd)
        if m["qk_norm"]:
            q = F.rms_norm(q, (hd,), w["q_norm"], eps)
            k = F.rms_norm(k, (hd,), w["k_norm"], eps)
        q = q * self.cos + rotate_half(q) * self.sin
        k = k * self.cos + rotate_half(k) * self.sin
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        if self.start == 0:
            if self.gqa_flash:
                with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
            else:
                k = k.repeat_interleave(h // kvh, dim=1)
                v = v.repeat_interleave(h // kvh, dim=1)
                with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            k = torch.cat([self.k_cached, k], dim=2).repeat_interleave(h // kvh, dim=1)
            v = torch.cat([self.v_cached, v], dim=2).repeat_interleave(h // kvh, dim=1)
            o = F.scaled_dot_product_attention(q, k, v, attn_mask=self.mask)
        o = o.transpose(1, 2).reshape(n, h * hd)
        x = x + F.linear(o, w["wo"])
        y = F.rms_norm(x, (d,), w["mlp_norm"], eps)
        gu = F.linear(y, w["gate_up"])
        g, u = gu.chunk(2, dim=-1)
        return x + F.linear(F.silu(g) * u, w["down"])


def flops(m, start, count):
    """Matrix FLOPs of one layer: projections plus causal attention."""
    d, hd, h, kvh, inter = m["hidden"], m["head_dim"], m["heads"], m["kv_heads"], m["intermediate"]
    proj = 2 * count * d * ((h + 2 * kvh) * hd + h * hd + 3 * inter)
    pairs = count * start + count * (count + 1) / 2
    return proj + 4 * h * hd * pairs


def time_layer(layer, x, reps, samples=7):
    for _ in range(3):
        layer(x)
    torch.cuda.synchronize()
    out = []
    for _ in range(samples):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            layer(x)
        b.record()
        b.synchronize()
        out.append(a.elapsed_time(b) / reps)
    out.sort()
    return out[len(out) // 2], out[0], out[-1]


def probe_gqa_flash(dev):
    try:
        q = torch.randn(1, 4, 64, 128, device=dev, dtype=torch.bfloat16)
        k = torch.randn(1, 1, 64, 128, device=dev, dtype=torch.bfloat16)
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.FLASH_ATTENTION):
            F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
        torch.cuda.synchronize()
        return True
    except Exception as e:  # noqa: BLE001 - any refusal means: repeat the heads
        log("flash SDPA refuses enable_gqa:", e)
        return False


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--cases", default="")
    args = ap.parse_args()
    dev = torch.device("cuda")
    torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = True
    gqa_flash = probe_gqa_flash(dev)
    wanted = set(filter(None, args.cases.split(",")))
    results = []
    weights = {}
    for name, model, start, count in CASES:
        if wanted and name not in wanted:
            continue
        if args.quick and start + count > 4096:
            continue
        m = MODELS[model]
        if model not in weights:
            weights.clear()
            torch.cuda.empty_cache()
            weights[model] = make_weights(m, dev)
        w = weights[model]
        layer = Layer(m, w, start, count, dev, gqa_flash)
        x = torch.randn(count, m["hidden"], device=dev).to(torch.bfloat16)
        with torch.no_grad():
            ms1 = time_layer(layer, x, 1, samples=3)[0]
            reps = max(1, min(50, int(math.ceil(60.0 / max(ms1, 1e-3)))))
            ms, lo, hi = time_layer(layer, x, reps)
        tf = flops(m, start, count) / (ms * 1e-3) / 1e12
        log(f"{name}: {ms:.3f} ms ({lo:.3f}-{hi:.3f}), {tf:.0f} TFLOP/s")
        results.append(dict(case=name, model=model, start=start, count=count, ms=ms, ms_min=lo, ms_max=hi,
                            reps=reps, tflops=tf))
        del layer, x
    print(json.dumps(dict(peer="torch_layer", device=torch.cuda.get_device_name(0), torch=torch.__version__,
                          gqa_flash=gqa_flash, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                          cases=results)))


if __name__ == "__main__":
    main()
