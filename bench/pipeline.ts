/**
 * Pipeline benchmark (issue: the scheduler): prefills of a Llama-3-8B-shaped
 * KV cache (32 layers x 8 KV heads x 128 x bf16, 16-token blocks, 256-token
 * chunks) through LayerPipeline, with the prefix in the DRAM tier, against a
 * compute load of known per-layer time: cuBLAS bf16 GEMMs (CUDA), or the
 * stream's busy loop (CPU backend), in proportion to the tokens computed
 * (one 4096^3 GEMM per 256 new tokens, the store's chunk, at least one: a
 * forward's floor; finer steps made the host's GEMM launches the bottleneck).
 *
 * For each hit rate and policy (recompute, load-all, adaptive), in one run:
 * - `ttft_*`: the prefill's wall time (median of --samples, spread kept);
 * - its per-layer model (DESIGN.md section 5) from the same run's load alone
 *   (the plan's loaded tokens, a compute that enqueues nothing) and compute
 *   alone (the plan's computed tokens, nothing loaded): `model_ratio` is
 *   measured / model, `overlap` the overlap efficiency;
 * - host time per layer, split as the prefill's result splits it (medians
 *   of the samples): the pipeline's own scheduling, the store's calls, the
 *   runtime's compute callback.
 * At the 90% hit with load-all, A/B points (a warm-up each, then samples
 * interleaved with the default's, each round starting one later): the load engine forced to `kernel`, forced to `dma`, and a
 * second pipeline with `timing: 'host'` (untimed events), each against the
 * default (`auto` engine, timed events).
 * Plus 16 prefills of distinct prompts at once: host time per layer and
 * request (split likewise: a batched store call is charged 1/N to each), and
 * the store calls their loads took (batched per layer). Timed prefills do
 * not save (a save runs behind compute, on its own stream; leaving it out
 * keeps every sample's hit the same).
 *
 *   node dist/bench/pipeline.js [--json out.json] [--backend auto|cuda|cpu] [--tokens N] [--samples N] [--concurrent N]
 */
import { parseArgs } from 'node:util';

import { KvLayout, KvStore, LayerPipeline, openDevice, type LayerCompute, type PrefillPolicy, type PrefillResult, type Stream } from '../src/index.js';
import { busyKernel, gemmLoad } from '../src/device/testing.js';
import { median, now, since, spreadPct } from './lib/measure.js';
import { ratioOf, writeResult, type Result } from './lib/results.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: 'string' },
      backend: { type: 'string', default: 'auto' },
      tokens: { type: 'string', default: '4096' },
      samples: { type: 'string', default: '5' },
      hits: { type: 'string', default: '0.5,0.9,0.95' },
      concurrent: { type: 'string', default: '16' },
    },
  });
  const n = Number(values.tokens);
  const samples = Number(values.samples);
  const concurrent = Number(values.concurrent);
  const dev = openDevice({ backend: values.backend as 'auto' | 'cuda' | 'cpu' });
  const info = dev.info();
  const cuda = info.backend === 'cuda';
  const chunkTokens = 256;
  const blockTokens = 16;
  const perPrompt = Math.ceil(n / blockTokens);
  const layout = new KvLayout({ layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens, numBlocks: perPrompt * (concurrent + 1) });
  const cache = dev.allocKvCache(layout);
  const compute = dev.createStream();
  const store = await KvStore.open({
    device: dev, layout, fingerprint: { model: 'bench/llama-3-8b-shape' }, chunkTokens,
    dramBytes: layout.bytesPerToken * n * (concurrent + 2), nvmeBytes: layout.stagingBytes(chunkTokens) * 8,
    admit: 'never',
  });
  const pipe = new LayerPipeline({ store, cache, computeStream: compute, lookahead: 4 });
  const blocks = Array.from({ length: perPrompt }, (_, i) => i);
  const tokensOf = (seed: number): number[] => Array.from({ length: n }, (_, i) => ((i + 1) * 2654435761 + seed * 97) % 128000);

  // The compute load: per layer, one unit per 256 new tokens (at least one).
  const unitOf = (s: Stream, units: number): void => {
    if (cuda) gemmLoad(s, units, 4096);
    else busyKernel(s, units * 100_000);
  };
  const gemm: LayerCompute = (_l, w) => unitOf(w.stream, Math.max(1, Math.ceil((w.tokens.length - w.computeFrom) / 256)));
  const nothing: LayerCompute = () => undefined;

  const results: Result[] = [];
  const rows: string[][] = [];

  /** Host time per layer (us, medians over the results): the whole, and the pipeline's own, the store's, the compute callback's. */
  const hostOf = (rs: readonly PrefillResult[]) => ({
    hostUs: median(rs.map((r) => r.hostMsPerLayer)) * 1e3,
    ownUs: median(rs.map((r) => r.host.ownMsPerLayer)) * 1e3,
    storeUs: median(rs.map((r) => r.host.storeMsPerLayer)) * 1e3,
    computeUs: median(rs.map((r) => r.host.computeMsPerLayer)) * 1e3,
  });
  const hostCells = (h: ReturnType<typeof hostOf>): string[] => [h.hostUs, h.ownUs, h.storeUs, h.computeUs].map((x) => x.toFixed(1));
  const summary = (rs: PrefillResult[]) => {
    const ms = rs.map((r) => r.ms);
    return { ms: median(ms), spread: spreadPct(ms), last: rs[rs.length - 1]!, host: hostOf(rs) };
  };

  // Every prompt's prefix is put once (computed and saved), then timed.
  const timed = async (p: Parameters<LayerPipeline['prefill']>[0]) => {
    const rs = [];
    for (let i = 0; i < samples; i++) rs.push(await pipe.prefill({ ...p, save: false }));
    return summary(rs);
  };

  // Calibrate compute: full recomputes of an uncached prompt, and of a few suffix sizes.
  const cold = tokensOf(999);
  for (const held of [0, n / 2, (n * 7) / 8]) await timed({ tokens: cold, blocks, compute: gemm, policy: 'recompute', heldTokens: held });

  for (const hitRate of values.hits!.split(',').map(Number)) {
    const tokens = tokensOf(Math.round(hitRate * 1000));
    const hitTokens = Math.floor((hitRate * n) / chunkTokens) * chunkTokens;
    await pipe.prefill({ tokens: tokens.slice(0, hitTokens + 1), blocks, compute: gemm, policy: 'recompute' }); // saves the prefix
    for (const policy of ['recompute', 'load-all', 'adaptive'] as PrefillPolicy[]) {
      const r = await timed({ tokens, blocks, compute: gemm, policy });
      const plan = r.last.plan;
      const loadAlone = plan.loadTokens > 0
        ? (await timed({ tokens: tokens.slice(0, plan.loadFrom + plan.loadTokens + 1), blocks, compute: nothing, policy: 'load-all' })) : undefined;
      const computeAlone = await timed({ tokens, blocks, compute: gemm, policy: 'recompute', heldTokens: plan.computeFrom });
      const L = layout.layers;
      const load = loadAlone ? loadAlone.ms / L : 0;
      const comp = computeAlone.ms / L;
      const model = L * Math.max(load, comp) + Math.min(load, comp);
      const overlap = loadAlone ? (loadAlone.ms + computeAlone.ms - r.ms) / Math.min(loadAlone.ms, computeAlone.ms) : null;
      const tag = `${Math.round(hitRate * 100)}pct_${policy}`;
      const stall = median(r.last.layers.map((l) => l.stallMs));
      results.push(
        { metric: `ttft_${tag}`, value: r.ms, unit: 'ms', baseline: model, ratio: ratioOf(r.ms, model), spreadPct: r.spread, samples,
          plan: { loadTokens: plan.loadTokens, computeFrom: plan.computeFrom, predictedMs: plan.ms, reason: plan.reason },
          loadAloneMs: loadAlone?.ms ?? 0, computeAloneMs: computeAlone.ms, overlap, stallMedianMs: stall, timeSource: r.last.timeSource },
        { metric: `host_per_layer_${tag}`, value: r.host.hostUs, unit: 'us', baseline: null, ratio: null,
          pipelineOwnUs: r.host.ownUs, storeUs: r.host.storeUs, computeUs: r.host.computeUs },
      );
      rows.push([tag, r.ms.toFixed(2), model.toFixed(2), (r.ms / model).toFixed(3), overlap === null ? '-' : (overlap * 100).toFixed(1),
        `${plan.loadTokens}/${hitTokens}`, ...hostCells(r.host)]);
    }
  }

  // A/B at the 90% hit, load-all: the engine forced either way, and untimed events (a second pipeline, same store and cache).
  {
    const tokens = tokensOf(900);
    const hitTokens = Math.floor((0.9 * n) / chunkTokens) * chunkTokens;
    await pipe.prefill({ tokens: tokens.slice(0, hitTokens + 1), blocks, compute: gemm, policy: 'recompute' }); // saves the prefix (if not yet)
    const hostPipe = new LayerPipeline({ store, cache, computeStream: compute, lookahead: 4, timing: 'host', computeModel: pipe.computeModel, bandwidth: pipe.bandwidth });
    const base = { tokens, blocks, compute: gemm, policy: 'load-all' as const, save: false };
    const variants: [string, () => Promise<PrefillResult>][] = [
      ['default', () => pipe.prefill(base)],
      ['engine_kernel', () => pipe.prefill({ ...base, engine: 'kernel' })],
      ['engine_dma', () => pipe.prefill({ ...base, engine: 'dma' })],
      ['timing_host', () => hostPipe.prefill(base)],
    ];
    for (const [, f] of variants) await f(); // a warm-up each, not kept
    const runs = new Map<string, PrefillResult[]>(variants.map(([k]) => [k, []]));
    // Interleaved, each round starting one variant later: drift, and whatever the prefix's save left running, hit all alike.
    for (let i = 0; i < samples; i++) {
      for (let v = 0; v < variants.length; v++) {
        const [k, f] = variants[(i + v) % variants.length]!;
        runs.get(k)!.push(await f());
      }
    }
    const def = summary(runs.get('default')!);
    for (const [k] of variants) {
      const r = summary(runs.get(k)!);
      const tag = `90pct_load-all_${k}`;
      if (k !== 'default') {
        results.push({ metric: `ttft_${tag}`, value: r.ms, unit: 'ms', baseline: def.ms, ratio: ratioOf(r.ms, def.ms), spreadPct: r.spread, samples,
          loadTokens: r.last.plan.loadTokens, timeSource: r.last.timeSource, hostUs: r.host.hostUs, pipelineOwnUs: r.host.ownUs,
          storeUs: r.host.storeUs, computeUs: r.host.computeUs, baselineHostUs: def.host.hostUs, baselinePipelineOwnUs: def.host.ownUs });
      }
      rows.push([`${tag}`, r.ms.toFixed(2), k === 'default' ? '-' : def.ms.toFixed(2), k === 'default' ? '-' : (r.ms / def.ms).toFixed(3), '-', `${r.last.plan.loadTokens}/${hitTokens}`, ...hostCells(r.host)]);
    }
    await hostPipe.dispose();
  }
  // Recompute against adaptive, per hit rate: "never slower".
  for (const hitRate of values.hits!.split(',').map(Number)) {
    const tag = `${Math.round(hitRate * 100)}pct`;
    const get = (p: string) => results.find((x) => x.metric === `ttft_${tag}_${p}`)!.value;
    const best = Math.min(get('recompute'), get('load-all'));
    results.push({ metric: `adaptive_vs_best_${tag}`, value: get('adaptive'), unit: 'ms', baseline: best, ratio: ratioOf(get('adaptive'), best),
      speedupVsRecompute: get('recompute') / get('adaptive') });
  }

  // Many requests at once: distinct prompts, each with a 90% cached prefix.
  const many = Array.from({ length: concurrent }, (_, i) => tokensOf(5000 + i));
  const cut = Math.floor((0.9 * n) / chunkTokens) * chunkTokens;
  for (const [i, t] of many.entries()) {
    await pipe.prefill({ tokens: t.slice(0, cut + 1), blocks: blocks.map((b) => b + (i + 1) * perPrompt), compute: gemm, policy: 'recompute' });
  }
  const io0 = pipe.stats();
  const t0 = now();
  const rs = await Promise.all(many.map((t, i) => pipe.prefill({ tokens: t, blocks: blocks.map((b) => b + (i + 1) * perPrompt), compute: gemm, policy: 'load-all', save: false })));
  const wall = since(t0) * 1e3;
  const h = hostOf(rs);
  const io1 = pipe.stats();
  results.push({ metric: `host_per_layer_per_request_${concurrent}`, value: h.hostUs, unit: 'us', baseline: null, ratio: null, wallMs: wall,
    pipelineOwnUs: h.ownUs, storeUs: h.storeUs, computeUs: h.computeUs,
    loadCalls: io1.loadCalls - io0.loadCalls, loadRequests: io1.loadRequests - io0.loadRequests, timeSource: rs[0]!.timeSource });
  rows.push([`${concurrent} at once`, wall.toFixed(2), '-', '-', '-', `${cut}/${cut}`, ...hostCells(h)]);

  await pipe.dispose();
  await store.close();
  await compute.dispose();
  await dev.dispose();
  if (values.json) {
    writeResult(values.json, { bench: 'pipeline', device: info.name, config: { tokens: n, samples, chunkTokens, blockTokens, backend: info.backend, compute: cuda ? 'gemm 4096^3 per 256 new tokens' : 'busy loop' }, results });
  }
  // baseline: the per-layer model for the policies, the default (auto engine, timed events) for the A/B points.
  const head = ['point', 'ttft ms', 'baseline ms', 'ratio', 'overlap %', 'loaded/hit', 'host us/layer', 'own', 'store', 'compute'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padStart(widths[i]!)).join('  '));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
