/**
 * The pipeline's own host cost per layer, alone: prefills of a 32-layer
 * cache with tiny heads (1 KV head x 8, f16: the device's copies take next to
 * nothing) and a compute callback that enqueues nothing, so what the host
 * spends is the pipeline's scheduling and the store's calls. Reports the
 * per-layer split of the prefills' results (src/pipeline/hostcost.ts):
 * medians and the 10th / 90th percentiles over --reps prefills, for
 * recompute (no store calls), load-all alone, and load-all with --concurrent
 * prefills at once (per prefill and layer). Timed events (`timing: 'device'`)
 * and untimed ones (`'host'`) each. `wall us/layer` is a prefill's wall
 * time over its layers (its per-prefill work included: lookup, plan,
 * timeline; the 16 at once: the batch's wall time over 16 x 32 layers).
 * `records` / `waits`: what the pipeline enqueued on the compute stream per
 * prefill and layer (records timed or not, and waits on loads), counted in
 * one more round of each point after the timed ones (src/pipeline/runs.ts:
 * consecutive computes share a record where nothing comes between them).
 * `rec us` / `wait us`: the host time of one such record (or wait) call, in
 * that round (the calls the pipeline's own time per layer is mostly made of
 * on CUDA, where a timed record costs more than an untimed one).
 *
 *   node dist/bench/pipeline-host.js [--json out.json] [--backend auto|cuda|cpu] [--reps N] [--concurrent N] [--timing device|host|both]
 */
import { parseArgs } from 'node:util';

import { KvLayout, KvStore, LayerPipeline, openDevice, type PrefillResult } from '../src/index.js';
import { median } from './lib/measure.js';
import { writeResult, type Result } from './lib/results.js';

function quantile(values: readonly number[], q: number): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: 'string' },
      backend: { type: 'string', default: 'auto' },
      reps: { type: 'string', default: '200' },
      concurrent: { type: 'string', default: '16' },
      timing: { type: 'string', default: 'both' },
    },
  });
  const reps = Number(values.reps);
  const concurrent = Number(values.concurrent);
  if (!['device', 'host', 'both'].includes(values.timing)) throw new Error(`expected device, host or both for --timing, got ${values.timing}`);
  const timings = values.timing === 'both' ? (['device', 'host'] as const) : [values.timing as 'device' | 'host'];
  const dev = openDevice({ backend: values.backend as 'auto' | 'cuda' | 'cpu' });
  const info = dev.info();
  const n = 1024;
  const chunkTokens = 256;
  const blockTokens = 16;
  const perPrompt = n / blockTokens;
  const layout = new KvLayout({ layers: 32, kvHeads: 1, headDim: 8, dtype: 'f16', blockTokens, numBlocks: perPrompt * concurrent });
  const cache = dev.allocKvCache(layout);
  const computeStream = dev.createStream();
  const store = await KvStore.open({
    device: dev, layout, fingerprint: { model: 'bench/pipeline-host' }, chunkTokens,
    dramBytes: layout.bytesPerToken * n * (concurrent + 1), nvmeBytes: layout.stagingBytes(chunkTokens) * 8, admit: 'never',
  });
  const compute = (): void => undefined;
  const prompts = Array.from({ length: concurrent }, (_, i) => Array.from({ length: n }, (_, t) => ((t + 1) * 2654435761 + i * 7919) % 128000));
  const tables = prompts.map((_, i) => Array.from({ length: perPrompt }, (_, b) => i * perPrompt + b));
  const results: Result[] = [];
  const rows: string[][] = [];
  interface Enqueued {
    records: number;
    waits: number;
    /** Host time of one record call (us), of one wait call. */
    recordUs: number;
    waitUs: number;
  }
  // Counts (and times) the compute stream's records and waits while `fn` runs (wrapped only then: the timed rounds run unwrapped).
  const enqueued = async (prefills: number, fn: () => Promise<unknown>): Promise<Enqueued> => {
    const n = { records: 0, waits: 0, recordMs: 0, waitMs: 0 };
    const { record, waitEvent } = computeStream;
    computeStream.record = (o) => {
      n.records++;
      const t = performance.now();
      const e = record.call(computeStream, o);
      n.recordMs += performance.now() - t;
      return e;
    };
    computeStream.waitEvent = (e) => {
      n.waits++;
      const t = performance.now();
      waitEvent.call(computeStream, e);
      n.waitMs += performance.now() - t;
    };
    try {
      await fn();
    } finally {
      computeStream.record = record;
      computeStream.waitEvent = waitEvent;
    }
    const per = prefills * layout.layers;
    return { records: n.records / per, waits: n.waits / per, recordUs: (n.recordMs * 1e3) / n.records, waitUs: n.waits > 0 ? (n.waitMs * 1e3) / n.waits : 0 };
  };
  const report = (name: string, rs: PrefillResult[], wallUs: number[], stream: Enqueued): void => {
    const us = (f: (r: PrefillResult) => number) => rs.map((r) => f(r) * 1e3);
    const own = us((r) => r.host.ownMsPerLayer);
    const store_ = us((r) => r.host.storeMsPerLayer);
    const host = us((r) => r.hostMsPerLayer);
    results.push({ metric: `own_us_per_layer_${name}`, value: median(own), unit: 'us', baseline: null, ratio: null,
      p10: quantile(own, 0.1), p90: quantile(own, 0.9), storeUs: median(store_), hostUs: median(host), wallUsPerLayer: median(wallUs), prefills: rs.length,
      computeRecordsPerLayer: stream.records, computeWaitsPerLayer: stream.waits, computeRecordUs: stream.recordUs, computeWaitUs: stream.waitUs });
    rows.push([name, median(own).toFixed(2), quantile(own, 0.1).toFixed(2), quantile(own, 0.9).toFixed(2), median(store_).toFixed(2), median(host).toFixed(2),
      median(wallUs).toFixed(2), stream.records.toFixed(3), stream.waits.toFixed(3), stream.recordUs.toFixed(2), stream.waitUs.toFixed(2)]);
  };

  let seeded = false;
  for (const timing of timings) {
    const pipe = new LayerPipeline({ store, cache, computeStream, lookahead: 4, timing });
    // Every prompt's first 768 tokens cached (3 chunks), once.
    if (!seeded) {
      for (const [i, t] of prompts.entries()) await pipe.prefill({ tokens: t.slice(0, 769), blocks: tables[i]!, compute, policy: 'recompute' });
      seeded = true;
    }
    const run = (i: number, policy: 'recompute' | 'load-all') => pipe.prefill({ tokens: prompts[i]!, blocks: tables[i]!, compute, policy, save: false });
    for (let i = 0; i < 20; i++) await run(0, 'load-all'); // warm-up
    const recompute: PrefillResult[] = [];
    const alone: PrefillResult[] = [];
    const many: PrefillResult[] = [];
    const wall = { recompute: [] as number[], alone: [] as number[], many: [] as number[] };
    const L = layout.layers;
    for (let i = 0; i < reps; i++) {
      let t = performance.now();
      recompute.push(await run(0, 'recompute'));
      wall.recompute.push(((performance.now() - t) / L) * 1e3);
      t = performance.now();
      alone.push(await run(0, 'load-all'));
      wall.alone.push(((performance.now() - t) / L) * 1e3);
      if (i % concurrent === 0) {
        t = performance.now();
        many.push(...await Promise.all(prompts.map((_, k) => run(k, 'load-all'))));
        wall.many.push(((performance.now() - t) / (L * concurrent)) * 1e3);
      }
    }
    const counts = {
      recompute: await enqueued(1, () => run(0, 'recompute')),
      alone: await enqueued(1, () => run(0, 'load-all')),
      many: await enqueued(concurrent, () => Promise.all(prompts.map((_, k) => run(k, 'load-all')))),
    };
    report(`recompute_${timing}`, recompute, wall.recompute, counts.recompute);
    report(`load-all_${timing}`, alone, wall.alone, counts.alone);
    report(`load-all_${concurrent}_at_once_${timing}`, many, wall.many, counts.many);
    await pipe.dispose();
  }

  await store.close();
  await computeStream.dispose();
  await dev.dispose();
  if (values.json) {
    writeResult(values.json, { bench: 'pipeline-host', device: info.name, config: { backend: info.backend, reps, concurrent, layers: 32, tokens: n, chunkTokens, timing: values.timing }, results });
  }
  const head = ['point', 'own us/layer', 'p10', 'p90', 'store us', 'host us', 'wall us/layer', 'records', 'waits', 'rec us', 'wait us'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  for (const r of [head, ...rows]) console.log(r.map((c, i) => c.padStart(widths[i]!)).join('  '));
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
