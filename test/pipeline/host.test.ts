/**
 * The host side of a prefill: its host time per layer split into the
 * pipeline's own, the store's calls and the compute callback (batched and
 * deferred store calls charged to the prefills they carry); the load engine
 * a request forces; untimed events with `timing: 'host'`.
 */
import { describe, expect, it } from 'vitest';

import { LayerPipeline, type KvStore, type LayerCompute, type PrefillResult, type RecordOptions, type Stream } from '../../src/index.js';
import { backends } from '../helpers/backends.js';
import { PatternCompute, expectPattern } from '../helpers/pattern.js';
import { randomBlocks, randomTokens } from '../helpers/store.js';
import { pipelineSuite } from '../helpers/suite.js';

const SPEC = { layers: 4, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 1024 };
const CHUNK = 8;

/** Returns once `ms` of host time passed. */
function burn(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

function expectSplit(r: PrefillResult): void {
  for (const l of r.layers) {
    const { ownMs, storeMs, computeMs } = l.host;
    for (const x of [ownMs, storeMs, computeMs]) {
      expect(Number.isFinite(x)).toBe(true);
      expect(x).toBeGreaterThanOrEqual(0);
    }
    expect(l.hostMs).toBeCloseTo(ownMs + storeMs + computeMs, 9);
  }
  const mean = (f: (l: PrefillResult['layers'][number]) => number): number => r.layers.reduce((a, l) => a + f(l), 0) / r.layers.length;
  expect(r.host.ownMsPerLayer).toBeCloseTo(mean((l) => l.host.ownMs), 9);
  expect(r.host.storeMsPerLayer).toBeCloseTo(mean((l) => l.host.storeMs), 9);
  expect(r.host.computeMsPerLayer).toBeCloseTo(mean((l) => l.host.computeMs), 9);
  expect(r.hostMsPerLayer).toBeCloseTo(r.host.ownMsPerLayer + r.host.storeMsPerLayer + r.host.computeMsPerLayer, 9);
}

/** Logs the engine of every store load (one entry per call). */
function spyEngines(store: KvStore): string[] {
  const seen: string[] = [];
  const load = store.loadLayer.bind(store);
  store.loadLayer = (chunks, layer, cache, blocks, stream, o) => {
    seen.push(String(o?.engine));
    return load(chunks, layer, cache, blocks, stream, o);
  };
  return seen;
}

/** Logs the options of every event recorded on `stream`. */
function spyRecords(stream: Stream): (RecordOptions | undefined)[] {
  const seen: (RecordOptions | undefined)[] = [];
  const record = stream.record.bind(stream);
  stream.record = (o) => {
    seen.push(o);
    return record(o);
  };
  return seen;
}

describe.each(backends)('LayerPipeline host side on $backend', ({ backend, skip }) => {
  const fx = pipelineSuite(backend, skip, { prefix: 'kvflow-host-', spec: SPEC, chunk: CHUNK, nvmeBytes: 512 * 8192, dramBytes: 512 * 8192 });
  const { openStore } = fx;
  const blocksFor = (tokens: number[]) => randomBlocks(Math.ceil(tokens.length / SPEC.blockTokens), SPEC.numBlocks);

  it.skipIf(skip)('splits each layer\'s host time into own, store and compute: the compute callback\'s time shows in computeMs', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    const prompt = randomTokens(CHUNK * 4 + 3);
    // Without loads or saves no store call is made: nothing is charged to the store.
    const cold = await pipe.prefill({ tokens: prompt, blocks: blocksFor(prompt), compute: compute.fn(), policy: 'recompute', save: false });
    expectSplit(cold);
    for (const l of cold.layers) expect(l.host.storeMs).toBe(0);
    await pipe.prefill({ tokens: prompt.slice(0, CHUNK * 2), blocks: blocksFor(prompt), compute: compute.fn(), policy: 'recompute' });
    // A compute that burns 2 ms of host time per layer; loads and saves both go to the store.
    const fn = compute.fn();
    const slow: LayerCompute = (l, w) => {
      fn(l, w);
      burn(2);
    };
    const blocks = blocksFor(prompt);
    const r = await pipe.prefill({ tokens: prompt, blocks, compute: slow, policy: 'load-all' });
    expect(r.plan.loadTokens).toBe(CHUNK * 2);
    expect(r.saved).toBe(2);
    expectSplit(r);
    for (const l of r.layers) {
      expect(l.host.computeMs).toBeGreaterThanOrEqual(2);
      expect(l.host.storeMs).toBeGreaterThan(0);
      expect(l.hostMs).toBeGreaterThanOrEqual(l.host.computeMs + l.host.storeMs);
    }
    await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('batched prefills are charged their share of every store call, deferred saves included', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2, saveDepth: 1 });
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const batch = (from: number) => {
      const prompts = Array.from({ length: 6 }, () => randomTokens(CHUNK * 3 + 1));
      const per = Math.ceil(prompts[0]!.length / SPEC.blockTokens);
      return { prompts, tables: prompts.map((_, i) => all.slice((from + i) * per, (from + i + 1) * per)) }; // disjoint: they run at once
    };
    const check = async (rs: PrefillResult[], b: ReturnType<typeof batch>): Promise<number> => {
      let charged = 0;
      for (const [i, r] of rs.entries()) {
        expect(r.restarts).toEqual([]);
        expectSplit(r);
        for (const l of r.layers) {
          expect(l.host.storeMs).toBeGreaterThan(0);
          charged += l.host.storeMs;
        }
        await expectPattern(fx.dev, fx.stream, fx.cache, b.prompts[i]!, b.tables[i]!);
      }
      return charged;
    };
    // Batched loads only (cached prefixes, nothing saved): every layer of every prefill carries a share of a load call.
    const loaded = batch(0);
    for (const [i, t] of loaded.prompts.entries()) await pipe.prefill({ tokens: t, blocks: loaded.tables[i]!, compute: compute.fn(), policy: 'recompute' });
    let s0 = pipe.stats();
    const rl = await Promise.all(loaded.prompts.map((t, i) => pipe.prefill({ tokens: t, blocks: loaded.tables[i]!, compute: compute.fn(), policy: 'load-all', save: false })));
    let s1 = pipe.stats();
    expect(s1.loadRequests - s0.loadRequests).toBeGreaterThan(s1.loadCalls - s0.loadCalls); // batched
    await check(rl, loaded);
    // Saves only (nothing cached), queued behind a bound of one: every put burns 1 ms, all of it charged to the prefills.
    let puts = 0;
    const put = store.putLayer.bind(store);
    store.putLayer = (...args) => {
      puts++;
      burn(1);
      return put(...args);
    };
    const saved = batch(6);
    s0 = pipe.stats();
    const rs = await Promise.all(saved.prompts.map((t, i) => pipe.prefill({ tokens: t, blocks: saved.tables[i]!, compute: compute.fn(), policy: 'recompute' })));
    s1 = pipe.stats();
    expect(s1.savesDeferred).toBeGreaterThan(s0.savesDeferred);
    expect(rs.every((r) => r.saved === 3)).toBe(true);
    expect(puts).toBe(s1.saveCalls - s0.saveCalls);
    expect(await check(rs, saved)).toBeGreaterThanOrEqual(puts * 1);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('prefills whose loads went to the store in one call make the compute stream wait on it once; every cache is exact', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const stream = fx.dev.createStream();
    let waits = 0;
    const waitEvent = stream.waitEvent.bind(stream);
    stream.waitEvent = (e) => {
      waits++;
      waitEvent(e);
    };
    const pipe = new LayerPipeline({ store, cache: fx.cache, computeStream: stream, lookahead: 2 });
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const prompts = Array.from({ length: 8 }, () => randomTokens(CHUNK * 2 + 1));
    const per = Math.ceil(prompts[0]!.length / SPEC.blockTokens);
    const tables = prompts.map((_, i) => all.slice(i * per, (i + 1) * per));
    for (const [i, t] of prompts.entries()) await pipe.prefill({ tokens: t, blocks: tables[i]!, compute: compute.fn(), policy: 'recompute' });
    // Fresh tables: the loads must bring every cached byte.
    const fresh = prompts.map((_, i) => all.slice((8 + i) * per, (9 + i) * per));
    waits = 0;
    const s0 = pipe.stats();
    const rs = await Promise.all(prompts.map((t, i) => pipe.prefill({ tokens: t, blocks: fresh[i]!, compute: compute.fn(), policy: 'load-all', save: false })));
    const s1 = pipe.stats();
    const calls = s1.loadCalls - s0.loadCalls;
    expect(s1.loadRequests - s0.loadRequests).toBe(8 * SPEC.layers);
    expect(calls).toBeLessThan(8 * SPEC.layers); // batched
    expect(waits).toBe(calls);
    for (const [i, r] of rs.entries()) {
      expect(r.plan.loadTokens).toBe(CHUNK * 2);
      await expectPattern(fx.dev, fx.stream, fx.cache, prompts[i]!, fresh[i]!);
    }
    await pipe.dispose();
    await stream.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('engine: auto takes kernel before the first compute when alone and dma beside it; kernel or dma forces every load', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    const prompt = randomTokens(CHUNK * 3 + 1);
    await pipe.prefill({ tokens: prompt, blocks: blocksFor(prompt), compute: compute.fn(), policy: 'recompute' });
    const seen = spyEngines(store);
    const expected = { auto: ['kernel', 'kernel', 'dma', 'dma'], dma: ['dma', 'dma', 'dma', 'dma'], kernel: ['kernel', 'kernel', 'kernel', 'kernel'] };
    for (const engine of ['auto', 'dma', 'kernel', undefined] as const) {
      seen.length = 0;
      const blocks = blocksFor(prompt);
      const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all', save: false, ...(engine ? { engine } : {}) });
      expect(r.plan.loadTokens).toBe(CHUNK * 3);
      expect(seen, String(engine)).toEqual(expected[engine ?? 'auto']);
      await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
    }
    // Beside another prefill (where auto would take dma), a forced engine holds for every load.
    for (const engine of ['dma', 'kernel'] as const) {
      seen.length = 0;
      await Promise.all([0, 1].map(() => pipe.prefill({ tokens: prompt, blocks: blocksFor(prompt), compute: compute.fn(), policy: 'load-all', save: false, engine })));
      expect(seen.length).toBeGreaterThanOrEqual(SPEC.layers);
      expect(new Set(seen), engine).toEqual(new Set([engine]));
    }
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('timing host: no timed events, the timeline from host times, the cache exact', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const stream = fx.dev.createStream();
    const records = spyRecords(stream);
    for (const timing of ['device', 'host'] as const) {
      const prompt = randomTokens(CHUNK * 3 + 1);
      const pipe = new LayerPipeline({ store, cache: fx.cache, computeStream: stream, lookahead: 2, timing });
      expect(pipe.timing).toBe(timing);
      await pipe.prefill({ tokens: prompt.slice(0, CHUNK * 2), blocks: blocksFor(prompt), compute: compute.fn(), policy: 'recompute' });
      records.length = 0;
      const blocks = blocksFor(prompt);
      const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' });
      expect(r.plan.loadTokens).toBe(CHUNK * 2);
      expect(records.length).toBeGreaterThanOrEqual(SPEC.layers);
      expect(records.some((o) => o?.timing === true)).toBe(timing === 'device');
      expect(r.timeSource).toBe(timing);
      expectSplit(r);
      for (const l of r.layers) {
        expect(l.device === null).toBe(timing === 'host');
        for (const x of [l.loadMs, l.computeMs, l.stallMs]) expect(x).toBeGreaterThanOrEqual(0);
        expect(l.loadLandedMs).not.toBeNull();
      }
      await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
      await pipe.dispose();
    }
    await stream.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('rejects a bad engine or timing with ERR_INVALID_ARG and changes nothing', async () => {
    const store = await openStore();
    const pipe = new LayerPipeline({ store, cache: fx.cache });
    const t = randomTokens(CHUNK);
    const b = randomBlocks(2, SPEC.numBlocks);
    for (const engine of ['fast', 1, null, 'Kernel']) {
      expect(() => pipe.prefill({ tokens: t, blocks: b, compute: () => undefined, engine: engine as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    }
    for (const timing of ['gpu', true, null]) {
      expect(() => new LayerPipeline({ store, cache: fx.cache, timing: timing as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    }
    expect(store.stats().local.lookups).toBe(0);
    expect(pipe.inFlight).toBe(0);
    await pipe.dispose();
    await store.close();
  });
});
