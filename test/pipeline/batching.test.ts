/**
 * Prefills in flight on one pipeline share its IO: loads of one layer go to
 * the store as one batched call, saves likewise; each prefill keeps its own
 * outcome, the saves in flight are bounded, and the results are exact.
 */

import { describe, expect, it } from 'vitest';

import { ComputeModel, LayerPipeline } from '../../src/index.js';
import { dropDram, nvmeLocation } from '../../src/store/testing.js';
import { backends } from '../helpers/backends.js';
import { readCache } from '../helpers/cache.js';
import { PatternCompute, expectPattern } from '../helpers/pattern.js';
import { randomBlocks, randomTokens, spyLoads } from '../helpers/store.js';
import { flipBytes, pipelineSuite } from '../helpers/suite.js';

const SPEC = { layers: 4, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 1024 };
const CHUNK = 8;
const BPC = CHUNK / SPEC.blockTokens;

describe.each(backends)('LayerPipeline batching on $backend', ({ backend, skip }) => {
  const fx = pipelineSuite(backend, skip, { prefix: 'kvflow-batching-', spec: SPEC, chunk: CHUNK, nvmeBytes: 512 * 8192, dramBytes: 512 * 8192 });
  const { layout, openStore } = fx;

  it.skipIf(skip)('32 prefills at once: loads of a layer go to the store together, every cache is exact and equals a serial load', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    const prompts = Array.from({ length: 32 }, (_, i) => randomTokens(CHUNK * (2 + (i % 3)) + 3));
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const need = (t: number[]) => Math.ceil(t.length / SPEC.blockTokens);
    let at = 0;
    const tables = prompts.map((t) => all.slice(at, (at += need(t))));
    // Every prompt's full chunks are cached (saved by a first prefill each).
    for (const [i, t] of prompts.entries()) await pipe.prefill({ tokens: t, blocks: tables[i]!, compute: compute.fn(), policy: 'recompute' });
    const poison = async (): Promise<void> => {
      const fill = fx.dev.allocPinned(layout.pieceBytes);
      fill.array.fill(0xa5);
      for (const b of all.slice(0, at)) {
        for (let l = 0; l < SPEC.layers; l++) {
          for (const kv of [0, 1] as const) {
            const p = layout.piece(l, kv, b);
            fx.stream.copy(fx.cache.buffers[p.buffer]!, p.offset, fill, 0, layout.pieceBytes);
          }
        }
      }
      await fx.stream.synchronize();
      await fill.dispose();
    };
    // Serially, with load-all: the reference bytes.
    await poison();
    for (const [i, t] of prompts.entries()) {
      const r = await pipe.prefill({ tokens: t, blocks: tables[i]!, compute: compute.fn(), policy: 'load-all' });
      expect(r.plan.loadTokens).toBe(Math.floor(t.length / CHUNK) * CHUNK);
    }
    const serial = await readCache(fx.dev, fx.stream, fx.cache);
    // The same blocks poisoned again, then all 32 at once.
    await poison();
    const spy = spyLoads(store);
    const before = pipe.stats();
    const results = await Promise.all(prompts.map((t, i) => pipe.prefill({ tokens: t, blocks: tables[i]!, compute: compute.fn(), policy: 'load-all' })));
    expect(pipe.inFlight).toBe(0);
    for (const [i, r] of results.entries()) {
      expect(r.restarts).toEqual([]);
      expect(r.plan.loadTokens).toBe(Math.floor(prompts[i]!.length / CHUNK) * CHUNK);
      await expectPattern(fx.dev, fx.stream, fx.cache, prompts[i]!, tables[i]!);
    }
    expect(await readCache(fx.dev, fx.stream, fx.cache)).toEqual(serial);
    const after = pipe.stats();
    const requests = after.loadRequests - before.loadRequests;
    expect(requests).toBe(32 * SPEC.layers);
    expect(after.loadCalls - before.loadCalls).toBe(spy.length);
    expect(spy.length).toBeLessThan(requests); // batched
    expect(spy.reduce((a, b) => a + b, 0)).toBe(requests);
    expect(Math.max(...spy)).toBeGreaterThan(1);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('16 prefills wanting the same layer at once make fewer store calls than requests; one alone is never held back', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 1 });
    const shared = randomTokens(CHUNK * 3);
    await pipe.prefill({ tokens: shared, blocks: randomBlocks(3 * BPC, SPEC.numBlocks), compute: compute.fn(), policy: 'recompute' });
    const spy = spyLoads(store);
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const reqs = Array.from({ length: 16 }, (_, i) => {
      const tokens = [...shared, ...randomTokens(5)];
      return { tokens, blocks: all.slice(i * 5 * BPC, (i + 1) * 5 * BPC) };
    });
    const results = await Promise.all(reqs.map((q) => pipe.prefill({ ...q, compute: compute.fn(), policy: 'load-all' })));
    expect(Math.max(...spy)).toBeGreaterThan(1);
    expect(spy.length).toBeLessThan(16 * SPEC.layers);
    for (const [i, r] of results.entries()) {
      expect(r.plan.loadTokens).toBe(CHUNK * 3);
      await expectPattern(fx.dev, fx.stream, fx.cache, reqs[i]!.tokens, reqs[i]!.blocks);
    }
    // Alone, each layer's load is its own call, made at once.
    spy.length = 0;
    const one = { tokens: [...shared, ...randomTokens(2)], blocks: all.slice(0, 4 * BPC) };
    await pipe.prefill({ ...one, compute: compute.fn(), policy: 'load-all' });
    expect(spy).toEqual([1, 1, 1, 1]);
    await expectPattern(fx.dev, fx.stream, fx.cache, one.tokens, one.blocks);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('a batched load with one prompt\'s chunk corrupt restarts only that prefill; the others load and stay exact', async () => {
    let store = await openStore({ admit: 'always' });
    const compute = new PatternCompute(fx.dev, fx.cache);
    let pipe = new LayerPipeline({ store, cache: fx.cache });
    const prompts = Array.from({ length: 4 }, () => randomTokens(CHUNK * 3 + 1));
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const tables = prompts.map((_, i) => all.slice(i * 2 * 3 * BPC, (i * 2 + 1) * 3 * BPC + 1));
    for (const [i, t] of prompts.entries()) await pipe.prefill({ tokens: t, blocks: tables[i]!, compute: compute.fn(), policy: 'recompute' });
    await store.flush();
    // Chunk 1 of prompt 2, layer 1, corrupt on NVMe.
    const loc = nvmeLocation(store, store.keys(prompts[2]!)[1]!)!;
    const sdir = store.dir;
    await pipe.dispose();
    await store.close();
    flipBytes(loc.file.path, loc.offset + store.extentBytes + 6, 8);

    store = await openStore({ dir: sdir });
    dropDram(store);
    pipe = new LayerPipeline({ store, cache: fx.cache, computeModel: ComputeModel.fromTerms({ floorMs: 0, perTokenMs: 1, perPairMs: 0 }) });
    const spy = spyLoads(store);
    const results = await Promise.all(prompts.map((t, i) => pipe.prefill({ tokens: t, blocks: tables[i]!, compute: compute.fn(), policy: 'load-all' })));
    expect(Math.max(...spy)).toBeGreaterThan(1); // the failure came through a batched call
    for (const [i, r] of results.entries()) {
      if (i === 2) {
        expect(r.restarts).toHaveLength(1);
        expect(r.restarts[0]).toMatchObject({ code: 'ERR_CHECKSUM', validTokens: CHUNK });
        expect(r.plan.loadTokens).toBe(CHUNK);
      } else {
        expect(r.restarts).toEqual([]);
        expect(r.plan.loadTokens).toBe(CHUNK * 3);
      }
      await expectPattern(fx.dev, fx.stream, fx.cache, prompts[i]!, tables[i]!);
    }
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('saves are batched per layer and bounded: past saveDepth they wait, and every prompt is saved and exact', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, saveDepth: 1 });
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const reqs = Array.from({ length: 8 }, (_, i) => ({ tokens: randomTokens(CHUNK * 2), blocks: all.slice(i * 2 * BPC, (i + 1) * 2 * BPC) }));
    const results = await Promise.all(reqs.map((q) => pipe.prefill({ ...q, compute: compute.fn(), policy: 'recompute' })));
    const s = pipe.stats();
    expect(s.saveRequests).toBe(8 * SPEC.layers);
    expect(s.saveCalls).toBeLessThan(s.saveRequests);
    expect(s.savesDeferred).toBeGreaterThan(0);
    for (const [i, r] of results.entries()) {
      expect(r.saved).toBe(2);
      expect(store.lookup(reqs[i]!.tokens).tokens).toBe(CHUNK * 2);
    }
    // What was saved loads back exact.
    const to = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    for (const [i, q] of reqs.entries()) {
      const blocks = to.slice(i * 2 * BPC, (i + 1) * 2 * BPC);
      const r = await pipe.prefill({ tokens: [...q.tokens, 7], blocks: [...blocks, to[900]!], compute: compute.fn(), policy: 'load-all' });
      expect(r.plan.loadTokens).toBe(CHUNK * 2);
      await expectPattern(fx.dev, fx.stream, fx.cache, [...q.tokens, 7], [...blocks, to[900]!]);
    }
    expect(() => new LayerPipeline({ store, cache: fx.cache, saveDepth: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });
});
