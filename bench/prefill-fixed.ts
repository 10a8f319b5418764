/**
 * A prefill's fixed host cost: a 4k-token prompt with 3,840 tokens cached
 * (the 8B 4k / 95% shape, tiny heads so the copies cost next to nothing)
 * and a compute callback that enqueues nothing, so what is timed is the
 * pipeline's and the store's host work: from prefill() to the first
 * compute call (check, lookup, plan, the first loads issued), from the
 * first compute call to the last, and from the last to the prefill resolved
 * (the wait for the last layer, the attempt's wrap-up, learning). Medians
 * over --reps prefills after 50 unrecorded ones, on the host clock.
 *
 *   node dist/bench/prefill-fixed.js [--backend auto|cuda|cpu] [--reps 300] [--timing device|host] [--json out.json]
 */
import { parseArgs } from 'node:util';

import { KvLayout, KvStore, LayerPipeline, openDevice } from '../src/index.js';
import { median } from './lib/measure.js';
import { writeResult } from './lib/results.js';

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'auto' },
      reps: { type: 'string', default: '300' },
      timing: { type: 'string', default: 'device' },
      json: { type: 'string' },
    },
  });
  const reps = Number(values.reps);
  if (!(Number.isInteger(reps) && reps > 0)) throw new Error(`expected a positive integer for --reps, got ${values.reps}`);
  if (values.timing !== 'device' && values.timing !== 'host') throw new Error(`expected device or host for --timing, got ${values.timing}`);
  const dev = openDevice({ backend: values.backend as 'auto' | 'cuda' | 'cpu' });
  try {
    const n = 4096;
    const cached = 3840;
    const chunkTokens = 256;
    const blockTokens = 16;
    const layout = new KvLayout({ layers: 32, kvHeads: 1, headDim: 8, dtype: 'f16', blockTokens, numBlocks: n / blockTokens });
    const cache = dev.allocKvCache(layout);
    const computeStream = dev.createStream();
    const store = await KvStore.open({
      device: dev, layout, fingerprint: { model: 'bench/prefill-fixed' }, chunkTokens,
      dramBytes: layout.bytesPerToken * n * 2, nvmeBytes: layout.stagingBytes(chunkTokens) * 8, admit: 'never',
    });
    const tokens = Uint32Array.from({ length: n }, (_, t) => ((t + 1) * 2654435761) % 128000);
    const blocks = Array.from({ length: n / blockTokens }, (_, b) => b);
    let first = 0;
    let last = 0;
    const compute = (layer: number): void => {
      const t = performance.now();
      if (layer === 0) first = t;
      last = t;
    };
    const pipe = new LayerPipeline({ store, cache, computeStream, lookahead: 4, timing: values.timing });
    await pipe.prefill({ tokens: tokens.slice(0, cached + 1), blocks, compute, policy: 'recompute' });
    const parts = { toFirstComputeUs: [] as number[], computeCallsUs: [] as number[], lastToResolvedUs: [] as number[], totalUs: [] as number[] };
    for (let i = 0; i < reps + 50; i++) {
      const t0 = performance.now();
      const r = await pipe.prefill({ tokens, blocks, compute, policy: 'load-all', save: false });
      const t1 = performance.now();
      if (r.plan.loadTokens !== cached) throw new Error(`expected ${cached} tokens loaded, got ${r.plan.loadTokens}`);
      if (i < 50) continue;
      parts.toFirstComputeUs.push((first - t0) * 1e3);
      parts.computeCallsUs.push((last - first) * 1e3);
      parts.lastToResolvedUs.push((t1 - last) * 1e3);
      parts.totalUs.push((t1 - t0) * 1e3);
    }
    const medians = Object.fromEntries(Object.entries(parts).map(([k, v]) => [k, median(v)]));
    const info = dev.info();
    console.log(`prefill fixed cost on ${info.name} (${dev.backend}, timing ${values.timing}, ${reps} prefills), median us:`);
    for (const [k, v] of Object.entries(medians)) console.log(`  ${k.padEnd(18)} ${v.toFixed(1)}`);
    if (values.json) {
      writeResult(values.json, {
        bench: 'prefill-fixed', device: info.name,
        config: { backend: dev.backend, timing: values.timing, reps, tokens: n, cached, chunkTokens, layers: 32, node: process.version },
        results: Object.entries(medians).map(([metric, value]) => ({ metric, value, unit: 'us', baseline: null, ratio: null })),
      });
    }
    await pipe.dispose();
    await store.close();
  } finally {
    await dev.dispose();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
