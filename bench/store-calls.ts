/**
 * The host time of the store's calls in a multi-turn chat, layer by layer:
 * Llama-3-8B-shaped KV (32 layers x 8 KV heads x 128 x bf16, 16-token
 * blocks, 256-token chunks), a first prompt of --first tokens growing by
 * --step tokens a turn (the demo's chat), each turn one LayerPipeline
 * prefill with `load-all` (the earlier turns' chunks loaded from DRAM, the
 * new ones saved) and a compute callback that enqueues nothing, so that the
 * host's time per layer is the pipeline's and the store's. Per call kind
 * (loadLayer, putLayer, beginPut): the median host time of a call at the
 * prefill's first layer and at the others, over turns 2..N; the store's
 * plan counters say how many layer calls a prepared plan served.
 *
 *   node dist/bench/store-calls.js [--backend auto|cuda|cpu] [--turns 8] [--first 2200] [--step 270] [--json out.json]
 *
 * No baseline: it measures kvflow's own cost, compared between builds run
 * in one call (KVFLOW_ADDON and another build's dist).
 */
import { parseArgs } from 'node:util';

import { KvLayout, KvStore, LayerPipeline, openDevice } from '../src/index.js';
import { median } from './lib/measure.js';
import { printTable, writeResult, type Result } from './lib/results.js';

type Kind = 'loadLayer' | 'putLayer' | 'beginPut';

/** Wraps the store's per-layer calls to time them on the host (microseconds, with the layer each was for). */
function timeCalls(store: KvStore): Record<Kind, { us: number; layer: number }[]> {
  const seen: Record<Kind, { us: number; layer: number }[]> = { loadLayer: [], putLayer: [], beginPut: [] };
  const target = store as unknown as Record<Kind, (...args: unknown[]) => unknown>;
  for (const kind of Object.keys(seen) as Kind[]) {
    const call = target[kind]!.bind(store);
    target[kind] = (...args: unknown[]) => {
      const t = performance.now();
      try {
        return call(...args);
      } finally {
        seen[kind].push({ us: (performance.now() - t) * 1e3, layer: kind === 'beginPut' ? 0 : (args[1] as number) });
      }
    };
  }
  return seen;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      backend: { type: 'string', default: 'auto' },
      turns: { type: 'string', default: '8' },
      first: { type: 'string', default: '2200' },
      step: { type: 'string', default: '270' },
      json: { type: 'string' },
    },
  });
  const turns = Number(values.turns);
  const first = Number(values.first);
  const step = Number(values.step);
  if (!(turns >= 2 && first >= 256 && step >= 1)) throw new Error('expected --turns >= 2, --first >= 256, --step >= 1');
  const dev = openDevice({ backend: values.backend as 'auto' | 'cuda' | 'cpu' });
  const info = dev.info();
  const blockTokens = 16;
  const chunkTokens = 256;
  const maxTokens = Math.ceil((first + step * (turns - 1)) / blockTokens) * blockTokens;
  const layout = new KvLayout({ layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens, numBlocks: maxTokens / blockTokens });
  const cache = dev.allocKvCache(layout);
  const computeStream = dev.createStream();
  const store = await KvStore.open({
    device: dev, layout, fingerprint: { model: 'bench/store-calls' }, chunkTokens,
    dramBytes: layout.bytesPerToken * maxTokens * 2, nvmeBytes: layout.stagingBytes(chunkTokens) * 8, admit: 'never', preallocateDram: true,
  });
  const pipe = new LayerPipeline({ store, cache, computeStream, lookahead: 4 });
  const calls = timeCalls(store);
  const blocks = Array.from({ length: layout.numBlocks }, (_, i) => (i * 7919) % layout.numBlocks);
  let tokens = Array.from({ length: first }, (_, t) => ((t + 1) * 2654435761) % 128000);
  const storeUs: number[] = [];
  const perTurn: Record<string, number>[] = [];
  const counters = (): Record<string, number> => store.stats().local as unknown as Record<string, number>;
  let before = counters();
  for (let turn = 1; turn <= turns; turn++) {
    for (const k of Object.keys(calls) as Kind[]) calls[k].length = 0;
    const r = await pipe.prefill({ tokens, blocks: blocks.slice(0, Math.ceil(tokens.length / blockTokens)), compute: () => undefined, policy: 'load-all' });
    const after = counters();
    const row: Record<string, number> = { turn, tokens: tokens.length, loadTokens: r.plan.loadTokens, saved: r.saved, storeUsPerLayer: r.host.storeMsPerLayer * 1e3 };
    for (const k of Object.keys(calls) as Kind[]) {
      row[`${k}_first_us`] = median(calls[k].filter((c) => c.layer === 0).map((c) => c.us));
      row[`${k}_other_us`] = median(calls[k].filter((c) => c.layer !== 0).map((c) => c.us));
    }
    for (const c of ['dramPlannedLayers', 'putPlannedLayers']) row[c] = (after[c] ?? Number.NaN) - (before[c] ?? Number.NaN);
    before = after;
    perTurn.push(row);
    if (turn > 1) storeUs.push(row.storeUsPerLayer!);
    tokens = tokens.concat(Array.from({ length: step }, (_, t) => ((turn * 100003 + t) * 2654435761) % 128000));
  }
  await pipe.dispose();
  await store.close();
  await computeStream.dispose();
  await dev.dispose();

  const later = perTurn.slice(1);
  const med = (key: string): number => median(later.map((r) => r[key]!).filter((x) => Number.isFinite(x)));
  const results: Result[] = [
    { metric: 'store_us_per_layer', value: median(storeUs), unit: 'us', baseline: null, ratio: null, turns: later.length },
    ...(['loadLayer', 'putLayer'] as const).flatMap((k) => [
      { metric: `${k}_first_layer_us`, value: med(`${k}_first_us`), unit: 'us', baseline: null, ratio: null },
      { metric: `${k}_other_layers_us`, value: med(`${k}_other_us`), unit: 'us', baseline: null, ratio: null },
    ]),
    { metric: 'beginPut_us', value: med('beginPut_first_us'), unit: 'us', baseline: null, ratio: null },
    { metric: 'dram_planned_layers_per_turn', value: med('dramPlannedLayers'), unit: 'count', baseline: null, ratio: null },
    { metric: 'put_planned_layers_per_turn', value: med('putPlannedLayers'), unit: 'count', baseline: null, ratio: null },
  ];
  if (values.json) {
    writeResult(values.json, {
      bench: 'store-calls', device: info.name,
      config: { backend: info.backend, turns, first, step, layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens, chunkTokens, perTurn },
      results,
    });
  }
  console.log(`store-calls on ${info.name} (${info.backend}), turns 2-${turns} (medians)`);
  printTable(results);
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
