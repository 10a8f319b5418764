// Whole prefills of the tiny model: split into two calls, or with the prefix's
// KV loaded from a KvStore into other blocks, they give the final hidden
// states of a one-call prefill; the K/V a layer writes for a token do not
// depend on how its prefix arrived.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvStore, type Device, type KvCache, type Stream } from '../../src/index.js';
import { ReferenceModel, presets } from '../../src/reference/index.js';
import { backends, open } from '../helpers/backends.js';
import { readCache } from '../helpers/cache.js';
import { randomTokens, readRows, relErr, shuffledBlocks, tokenKv, tolerance } from './helpers.js';

const BLOCK = 8;
const CHUNK = 32;
const N = 150; // not a multiple of the block or the chunk
const NUM_BLOCKS = 64;

describe.each(backends)('reference prefill on $backend', ({ backend, skip }) => {
  let dev: Device;
  let stream: Stream;
  let model: ReferenceModel;
  let tokens: number[];
  let full: Float64Array[];
  let fullCache: KvCache;
  let fullBlocks: number[];
  const tol = tolerance(backend);
  const hidden = presets.tiny.hidden;

  const newCache = (): { cache: KvCache; blocks: number[] } => ({
    cache: dev.allocKvCache(model.kvLayout({ blockTokens: BLOCK, numBlocks: NUM_BLOCKS })),
    blocks: shuffledBlocks(Math.ceil(N / BLOCK), NUM_BLOCKS),
  });

  const outRows = async (out: Awaited<ReturnType<ReferenceModel['prefill']>>, rows: number) => {
    const r = await readRows(dev, stream, out, rows, hidden);
    await out.dispose();
    return r;
  };

  beforeAll(async () => {
    if (skip) return;
    dev = open(backend);
    stream = dev.createStream();
    model = ReferenceModel.create(dev, { ...presets.tiny, seed: 3, maxTokens: 256 });
    tokens = randomTokens(N, presets.tiny.vocab);
    ({ cache: fullCache, blocks: fullBlocks } = newCache());
    const out = model.prefill(stream, { tokens, cache: fullCache, blocks: fullBlocks });
    await stream.synchronize();
    full = await outRows(out, N);
  });
  afterAll(async () => {
    await model?.dispose();
    await dev?.dispose();
  });

  it.skipIf(skip)('the final hidden states are finite and O(1)', () => {
    const max = Math.max(...full.map((r) => Math.max(...r.map(Math.abs))));
    expect(Number.isFinite(max)).toBe(true);
    expect(max).toBeGreaterThan(0.1);
    expect(max).toBeLessThan(100);
  });

  it.skipIf(skip).each([1, 37, 64, 149])('a prefill in two calls (first %i tokens, then the rest) equals one call', async (p) => {
    const { cache, blocks } = newCache();
    const first = model.prefill(stream, { tokens: tokens.slice(0, p), cache, blocks });
    const second = model.prefill(stream, { tokens, cache, blocks, start: p });
    await stream.synchronize();
    const rows = [...(await outRows(first, p)), ...(await outRows(second, N - p))];
    expect(relErr(rows, full)).toBeLessThanOrEqual(tol);
    await cache.dispose();
  });

  it.skipIf(skip)('a prefix loaded from the store into other blocks, then the rest computed, equals a full compute', async () => {
    const store = await KvStore.open({
      device: dev, layout: fullCache.layout, fingerprint: { model: 'kvflow/reference-tiny', revision: 'seed-3' },
      chunkTokens: CHUNK, dramBytes: 1 << 20, nvmeBytes: 1 << 20,
    });
    try {
      // The prompt's KV as a one-call prefill computed it; the store keeps its full chunks.
      const computed = newCache();
      const head = model.prefill(stream, { tokens, cache: computed.cache, blocks: computed.blocks });
      await stream.synchronize();
      await head.dispose();
      const stored = Math.floor(N / CHUNK) * CHUNK;
      await store.put(tokens.slice(0, stored), computed.cache, computed.blocks.slice(0, stored / BLOCK), stream);
      const hit = store.lookup(tokens);
      const p = hit.tokens;
      expect(p).toBe(stored);

      // Load it layer by layer into a fresh cache with other block ids; each layer's compute waits for its load.
      const loaded = newCache();
      const load = dev.createStream();
      const n = N - p;
      const h = model.allocHidden(n);
      const out = dev.allocDevice(n * hidden * 4);
      model.embed(stream, h, tokens.slice(p));
      for (let layer = 0; layer < model.config.layers; layer++) {
        stream.waitEvent(store.loadLayer(hit.chunks, layer, loaded.cache, loaded.blocks.slice(0, p / BLOCK), load));
        model.layer(stream, layer, { hidden: h, cache: loaded.cache, blocks: loaded.blocks, start: p, count: n });
      }
      model.finalNorm(stream, out, h, n);
      await stream.synchronize();
      hit.release();
      expect(relErr(await outRows(out, n), full.slice(p))).toBeLessThanOrEqual(tol);

      // The suffix's K/V: computed over a computed prefix (two calls) and over the loaded one.
      const twoCalls = newCache();
      const a = model.prefill(stream, { tokens: tokens.slice(0, p), cache: twoCalls.cache, blocks: twoCalls.blocks });
      const b = model.prefill(stream, { tokens, cache: twoCalls.cache, blocks: twoCalls.blocks, start: p });
      await stream.synchronize();
      await Promise.all([a.dispose(), b.dispose()]);
      const viaCompute = await readCache(dev, stream, twoCalls.cache);
      const viaStore = await readCache(dev, stream, loaded.cache);
      for (let layer = 0; layer < model.config.layers; layer++) {
        for (let t = p; t < N; t++) {
          for (const kv of [0, 1] as const) {
            const x = tokenKv(twoCalls.cache, viaCompute, twoCalls.blocks, layer, kv, t);
            const y = tokenKv(loaded.cache, viaStore, loaded.blocks, layer, kv, t);
            expect(Buffer.compare(Buffer.from(x), Buffer.from(y)), `layer ${layer} ${kv ? 'V' : 'K'} of token ${t}`).toBe(0);
          }
        }
      }
      await Promise.all([h.dispose(), load.dispose(), computed.cache.dispose(), loaded.cache.dispose(), twoCalls.cache.dispose()]);
    } finally {
      await store.close();
    }
  });

  it.skipIf(skip)('one model serves several streams at once', async () => {
    const streams = [dev.createStream(), dev.createStream(), dev.createStream()];
    const caches = streams.map(() => newCache());
    const outs = streams.map((s, i) => model.prefill(s, { tokens, cache: caches[i]!.cache, blocks: caches[i]!.blocks }));
    await Promise.all(streams.map((s) => s.synchronize()));
    for (const out of outs) expect(relErr(await outRows(out, N), full)).toBeLessThanOrEqual(tol);
    await Promise.all([...streams.map((s) => s.dispose()), ...caches.map((c) => c.cache.dispose())]);
  });

  it.skipIf(skip)('block-major caches give the same prefill as layer-major ones', async () => {
    const cache = dev.allocKvCache(model.kvLayout({ blockTokens: BLOCK, numBlocks: NUM_BLOCKS, arrangement: 'block-major' }));
    const out = model.prefill(stream, { tokens, cache, blocks: fullBlocks });
    await stream.synchronize();
    expect(relErr(await outRows(out, N), full)).toBeLessThanOrEqual(tol);
    await cache.dispose();
  });
});
