#!/usr/bin/env python3
"""Peer of bench/prefill.ts: the same prefill as a PyTorch user runs it.

A Llama-architecture decoder of the --model shapes (bf16, random weights,
distinct per layer; llama-3-70b reuses one layer's weights for all 80 layers,
as kvflow's reference preset does): embedding, per layer RMSNorm, QKV
projection (QK-norm for qwen3-14b), RoPE, causal grouped-query attention
through torch's scaled_dot_product_attention (flash where it applies), output
projection, SwiGLU MLP, residuals; final RMSNorm. Per (tokens, hit) point,
with the cached prefix's K and V (per layer) in pinned host memory:

- recompute: the whole prompt, every layer (causal SDPA, no mask);
- load_then_compute: every layer's prefix K/V copied to HBM, then the suffix
  computed over it;
- overlap: per-layer overlap with perfect lookahead: every layer's load is
  issued on a copy stream up front (in layer order) and layer l's compute
  waits only for layer l's copy;
- load_alone and suffix_alone: the two halves on their own (the prefix
  already in HBM for the latter).

The suffix's attention concatenates cached and new K/V, repeats the KV heads
to the query heads and applies a lower-right causal mask
(torch.nn.attention.bias.causal_lower_right where this torch has it, else a
boolean mask), as a runtime without a paged flash kernel does. The prefix is
the hit rounded down to whole chunks (--chunk-tokens, 256 as kvflow's store),
so the points match bench/prefill's. Each figure is the median of --samples
runs (after one warm-up) timed with CUDA events, with min and max.

Prints one JSON object (DESIGN.md section 5's shape, plus "points", one per
(tokens, hit), which bench/prefill.ts reads with --peer) on stdout; progress on
stderr. Without torch or a GPU it prints {"bench": "torch_prefill", "error":
...} and exits 2.

    python3 bench/peers/torch_prefill.py [--model llama-3-8b] [--tokens 4096,16384]
        [--hits 0.5,0.9,0.95] [--samples 5] [--chunk-tokens 256] [--seed 1]

Unknown arguments are ignored (run-gpu.sh may pass the same extras to every
program).
"""

import argparse
import datetime
import json
import math
import sys
import time

PRESETS = {
    'llama-3-8b': dict(layers=32, weight_layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128,
                       intermediate=14336, vocab=128256, rope_theta=500000.0, eps=1e-5, qk_norm=False),
    'qwen3-14b': dict(layers=40, weight_layers=40, hidden=5120, heads=40, kv_heads=8, head_dim=128,
                      intermediate=17408, vocab=151936, rope_theta=1e6, eps=1e-6, qk_norm=True),
    'llama-3-70b': dict(layers=80, weight_layers=1, hidden=8192, heads=64, kv_heads=8, head_dim=128,
                        intermediate=28672, vocab=128256, rope_theta=500000.0, eps=1e-5, qk_norm=False),
    'tiny': dict(layers=4, weight_layers=4, hidden=64, heads=4, kv_heads=2, head_dim=16,
                 intermediate=128, vocab=512, rope_theta=500000.0, eps=1e-5, qk_norm=False),
}


def log(*parts):
    print(*parts, file=sys.stderr, flush=True)


def fail(message, **extra):
    print(json.dumps({'bench': 'torch_prefill', 'error': message, **extra}))
    return 2


def median(xs):
    s = sorted(xs)
    return s[len(s) // 2]


def stats(xs):
    m = median(xs)
    return {'median': m, 'min': min(xs), 'max': max(xs), 'spreadPct': 100.0 * (max(xs) - min(xs)) / m if m else None,
            'samples': xs}


class Model:
    def __init__(self, torch, cfg, seed, max_tokens):
        self.torch = torch
        self.F = torch.nn.functional
        self.cfg = cfg
        dev = torch.device('cuda')
        g = torch.Generator(device=dev)
        g.manual_seed(seed)
        bf = torch.bfloat16
        H, KV, d, D, I = cfg['heads'], cfg['kv_heads'], cfg['head_dim'], cfg['hidden'], cfg['intermediate']

        def w(rows, cols):
            return (torch.randn(rows, cols, generator=g, device=dev, dtype=torch.float32) / math.sqrt(rows)).to(bf)

        def norm(n):
            return (1 + 0.1 * torch.randn(n, generator=g, device=dev, dtype=torch.float32)).to(bf)

        self.embed = torch.randn(cfg['vocab'], D, generator=g, device=dev, dtype=torch.float32).to(bf)
        self.weights = []
        for _ in range(cfg['weight_layers']):
            self.weights.append(dict(
                attn_norm=norm(D), wqkv=w(D, (H + 2 * KV) * d), wo=w(H * d, D), mlp_norm=norm(D),
                w_gate_up=w(D, 2 * I), w_down=w(I, D),
                q_norm=norm(d) if cfg['qk_norm'] else None, k_norm=norm(d) if cfg['qk_norm'] else None))
        self.final_norm = norm(D)
        inv = 1.0 / (cfg['rope_theta'] ** (torch.arange(0, d, 2, device=dev, dtype=torch.float32) / d))
        ang = torch.outer(torch.arange(max_tokens, device=dev, dtype=torch.float32), inv)
        self.cos = ang.cos().to(bf)[:, None, :]  # [pos, 1, d/2]
        self.sin = ang.sin().to(bf)[:, None, :]
        self.gqa = self._probe_gqa()
        self.lower_right = self._lower_right()

    def _probe_gqa(self):
        """Whether the flash backend takes fewer KV heads than query heads (enable_gqa); else KV heads are repeated."""
        torch = self.torch
        q = torch.zeros(1, 4, 8, 64, device='cuda', dtype=torch.bfloat16)
        k = torch.zeros(1, 2, 8, 64, device='cuda', dtype=torch.bfloat16)
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                self.F.scaled_dot_product_attention(q, k, k, is_causal=True, enable_gqa=True)
            return True
        except (ImportError, TypeError, RuntimeError):
            return False

    def _lower_right(self):
        try:
            from torch.nn.attention.bias import causal_lower_right
            return causal_lower_right
        except ImportError:
            return None

    def rms(self, x, weight):
        eps = self.cfg['eps']
        if hasattr(self.F, 'rms_norm'):
            return self.F.rms_norm(x, (x.shape[-1],), weight, eps)
        xf = x.float()
        return (xf * self.torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype) * weight

    def rope(self, x, start):
        n = x.shape[0]
        cos, sin = self.cos[start:start + n], self.sin[start:start + n]
        h = x.shape[-1] // 2
        x1, x2 = x[..., :h], x[..., h:]
        return self.torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)

    def layer(self, l, x, start, prefix_k=None, prefix_v=None):
        """x: [n, hidden] at positions start..start+n; prefix_k/v: [start, kv, d] or None (start must be 0)."""
        torch, F, c = self.torch, self.F, self.cfg
        wt = self.weights[l % c['weight_layers']]
        H, KV, d = c['heads'], c['kv_heads'], c['head_dim']
        n = x.shape[0]
        qkv = self.rms(x, wt['attn_norm']) @ wt['wqkv']
        q = qkv[:, :H * d].view(n, H, d)
        k = qkv[:, H * d:(H + KV) * d].view(n, KV, d)
        v = qkv[:, (H + KV) * d:].view(n, KV, d)
        if wt['q_norm'] is not None:
            q = self.rms(q, wt['q_norm'])
            k = self.rms(k, wt['k_norm'])
        q = self.rope(q, start).transpose(0, 1).unsqueeze(0)   # [1, H, n, d]
        k = self.rope(k, start)
        if prefix_k is None:
            kt, vt = k.transpose(0, 1).unsqueeze(0), v.transpose(0, 1).unsqueeze(0)
            if self.gqa:
                o = F.scaled_dot_product_attention(q, kt, vt, is_causal=True, enable_gqa=True)
            else:
                rep = H // KV
                o = F.scaled_dot_product_attention(q, kt.repeat_interleave(rep, 1), vt.repeat_interleave(rep, 1), is_causal=True)
        else:
            ctx = start + n
            rep = H // KV
            kt = torch.cat((prefix_k, k), 0).transpose(0, 1).unsqueeze(0).repeat_interleave(rep, 1)
            vt = torch.cat((prefix_v, v), 0).transpose(0, 1).unsqueeze(0).repeat_interleave(rep, 1)
            if self.lower_right is not None:
                mask = self.lower_right(n, ctx)
            else:
                mask = torch.ones(n, ctx, device=x.device, dtype=torch.bool).tril(ctx - n)
            o = F.scaled_dot_product_attention(q, kt, vt, attn_mask=mask)
        x = x + o.squeeze(0).transpose(0, 1).reshape(n, H * d) @ wt['wo']
        gu = self.rms(x, wt['mlp_norm']) @ wt['w_gate_up']
        I = c['intermediate']
        return x + (F.silu(gu[:, :I]) * gu[:, I:]) @ wt['w_down']

    def run(self, ids, start, prefix=None, wait=None):
        """The prefill of ids[start:] over layers; prefix(l) -> (k, v) on the device; wait(l) before layer l."""
        x = self.embed[ids[start:]]
        for l in range(self.cfg['layers']):
            if wait is not None:
                wait(l)
            pk, pv = prefix(l) if prefix is not None else (None, None)
            x = self.layer(l, x, start, pk, pv)
        return self.rms(x, self.final_norm).float()


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--model', default='llama-3-8b', choices=sorted(PRESETS))
    p.add_argument('--tokens', default='4096,16384')
    p.add_argument('--hits', default='0.5,0.9,0.95')
    p.add_argument('--samples', type=int, default=5)
    p.add_argument('--chunk-tokens', type=int, default=256)
    p.add_argument('--seed', type=int, default=1)
    args, _unknown = p.parse_known_args()
    try:
        token_counts = [int(t) for t in args.tokens.split(',')]
        hits = [float(h) for h in args.hits.split(',')]
    except ValueError as e:
        return fail(f'bad --tokens or --hits: {e}')
    if args.samples < 1 or args.chunk_tokens < 1 or any(t < 2 for t in token_counts) or any(not 0 <= h < 1 for h in hits):
        return fail('expected --samples >= 1, --chunk-tokens >= 1, --tokens >= 2 and --hits in [0, 1)')

    try:
        import torch
    except ImportError as e:
        return fail(f'torch is not installed: {e}')
    if not torch.cuda.is_available():
        return fail('torch.cuda is not available; this peer needs a GPU', torch=torch.__version__)

    cfg = PRESETS[args.model]
    dev = torch.device('cuda')
    L, KV, d = cfg['layers'], cfg['kv_heads'], cfg['head_dim']
    log(f'torch_prefill: {args.model} on {torch.cuda.get_device_name(0)}, torch {torch.__version__}')
    t0 = time.time()
    model = Model(torch, cfg, args.seed, max(token_counts))
    log(f'torch_prefill: weights built in {time.time() - t0:.1f} s')
    compute = torch.cuda.current_stream()
    copy = torch.cuda.Stream()

    def timed(fn, samples):
        """Median and spread of fn() in ms, CUDA events on the compute stream, after one warm-up."""
        fn()
        torch.cuda.synchronize()
        out = []
        for _ in range(samples):
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            a.record(compute)
            fn(a)
            b.record(compute)
            torch.cuda.synchronize()
            out.append(a.elapsed_time(b))
        return stats(out)

    g = torch.Generator()
    g.manual_seed(args.seed)
    results, points = [], []
    for n in token_counts:
        ids = torch.randint(0, cfg['vocab'], (n,), generator=g).to(dev)
        prefixes = {h: min(n - 1, int(h * n) // args.chunk_tokens * args.chunk_tokens) for h in hits}
        pmax = max(prefixes.values())
        per = KV * d
        # The cached prefix per layer, K and V, token-major ([tokens, kv, d], as a paged cache keeps it).
        host = torch.empty((L, 2, max(pmax, 1) * per), dtype=torch.bfloat16, pin_memory=True)
        hbm = torch.empty((L, 2, max(pmax, 1) * per), dtype=torch.bfloat16, device=dev)
        hbm.normal_()  # random bytes made on the GPU (fast), then the pinned copy
        host.copy_(hbm)
        torch.cuda.synchronize()

        recompute = timed(lambda _a=None: model.run(ids, 0), args.samples)
        log(f'torch_prefill: {n} tokens, recompute {recompute["median"]:.2f} ms')
        results.append({'metric': f'ttft_{n}_recompute', 'value': recompute['median'], 'unit': 'ms', 'baseline': None,
                        'ratio': None, 'tokens': n, 'mode': 'recompute', **recompute})
        for h in hits:
            P = prefixes[h]
            if P == 0:
                continue

            def prefix(l, P=P):
                return hbm[l, 0, :P * per].view(P, KV, d), hbm[l, 1, :P * per].view(P, KV, d)

            def load(l, stream, P=P):
                # K, then V: two contiguous pinned -> HBM copies (a strided slice would go through pageable memory).
                with torch.cuda.stream(stream):
                    for j in (0, 1):
                        hbm[l, j, :P * per].copy_(host[l, j, :P * per], non_blocking=True)

            def load_alone(_a=None):
                for l in range(L):
                    load(l, compute)

            def suffix_alone(_a=None):
                model.run(ids, P, prefix)

            def load_then_compute(_a=None):
                load_alone()
                model.run(ids, P, prefix)

            def overlap(start=None):
                if start is not None:
                    copy.wait_event(start)
                else:
                    copy.wait_stream(compute)
                events = []
                for l in range(L):
                    load(l, copy)
                    e = torch.cuda.Event()
                    e.record(copy)
                    events.append(e)
                model.run(ids, P, prefix, wait=lambda l: compute.wait_event(events[l]))

            figs = {name: timed(fn, args.samples) for name, fn in (
                ('load_alone', load_alone), ('suffix_alone', suffix_alone),
                ('load_then_compute', load_then_compute), ('overlap', overlap))}
            gb = 2 * L * P * per * 2 / 1e9
            pt = {'tokens': n, 'hit': h, 'prefixTokens': P, 'recomputeMs': recompute['median'],
                  'loadMs': figs['load_alone']['median'], 'loadGBps': gb / (figs['load_alone']['median'] / 1e3),
                  'suffixMs': figs['suffix_alone']['median'],
                  'loadThenComputeMs': figs['load_then_compute']['median'], 'overlapMs': figs['overlap']['median'],
                  'spread': {k: {'min': v['min'], 'max': v['max']} for k, v in figs.items()}}
            points.append(pt)
            log(f'torch_prefill: {n} tokens, {P} cached: load {pt["loadMs"]:.2f} ms ({pt["loadGBps"]:.1f} GB/s), '
                f'suffix {pt["suffixMs"]:.2f}, load then compute {pt["loadThenComputeMs"]:.2f}, overlap {pt["overlapMs"]:.2f}')
            tag = f'{n}_{round(h * 100)}pct'
            for name, f in figs.items():
                ratio = recompute['median'] / f['median'] if name in ('load_then_compute', 'overlap') else None
                results.append({'metric': f'ttft_{tag}_{name}' if name in ('load_then_compute', 'overlap') else f'{name}_{tag}',
                                'value': f['median'], 'unit': 'ms', 'baseline': recompute['median'] if ratio else None,
                                'ratio': f['median'] / recompute['median'] if ratio else None,
                                'speedupVsRecompute': ratio, 'tokens': n, 'hit': h, 'prefixTokens': P, 'mode': name, **f})
        del host, hbm
        torch.cuda.empty_cache()

    print(json.dumps({
        'bench': 'torch_prefill', 'device': torch.cuda.get_device_name(0),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(), 'commit': None,
        'config': {'model': args.model, 'shapes': cfg, 'tokens': token_counts, 'hits': hits, 'samples': args.samples,
                   'chunkTokens': args.chunk_tokens, 'seed': args.seed, 'torch': torch.__version__, 'dtype': 'bf16',
                   'recomputeAttention': 'sdpa is_causal' + (', enable_gqa' if model.gqa else ', repeated kv heads'),
                   'suffixAttention': 'sdpa over cat(cached, new) K/V, repeated kv heads, ' +
                   ('causal_lower_right' if model.lower_right is not None else 'boolean lower-right mask'),
                   'timing': 'CUDA events on the compute stream, median of samples after one warm-up'},
        'results': results, 'points': points}, indent=1))
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except Exception as e:  # noqa: BLE001 - one JSON line for the caller, whatever failed (out of memory, a torch error)
        print(json.dumps({'bench': 'torch_prefill', 'error': f'{type(e).__name__}: {e}'}))
        sys.exit(1)
