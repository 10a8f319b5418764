import { describe, expect, it } from 'vitest';

import { ComputeModel, HostModel, LayerPipeline, type PrefillWork } from '../../src/index.js';
import { holdStream } from '../../src/device/testing.js';
import { nvmeLocation } from '../../src/store/testing.js';
import { backends } from '../helpers/backends.js';
import { PatternCompute, expectPattern } from '../helpers/pattern.js';
import { failNextLoad, randomBlocks, randomTokens } from '../helpers/store.js';
import { flipBytes, pipelineSuite } from '../helpers/suite.js';

const SPEC = { layers: 4, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 512 };
const CHUNK = 8;

describe.each(backends)('LayerPipeline on $backend', ({ backend, skip }) => {
  const fx = pipelineSuite(backend, skip, { prefix: 'kvflow-pipeline-', spec: SPEC, chunk: CHUNK, nvmeBytes: 256 * 8192, dramBytes: 128 * 8192 });
  const { openStore } = fx;

  const expectExact = (tokens: number[], blocks: number[]) => expectPattern(fx.dev, fx.stream, fx.cache, tokens, blocks);

  /** Runs a first prefill of `tokens` (everything computed and saved) and returns what it saved. */
  async function warm(pipe: LayerPipeline, compute: PatternCompute, tokens: number[]): Promise<number> {
    const blocks = randomBlocks(Math.ceil(tokens.length / SPEC.blockTokens), SPEC.numBlocks);
    const r = await pipe.prefill({ tokens, blocks, compute: compute.fn(), policy: 'recompute' });
    return r.saved;
  }

  it.skipIf(skip)('loads the cached prefix, computes the rest, saves the new chunks: the cache is exact', async () => {
    const store = await openStore();
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    const compute = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 6 + 3);
    expect(await warm(pipe, compute, prompt.slice(0, CHUNK * 4))).toBe(4);
    for (const policy of ['load-all', 'recompute', 'adaptive'] as const) {
      const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
      compute.calls.length = 0;
      const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy });
      expect(r.hitTokens).toBe(policy === 'load-all' ? CHUNK * 4 : CHUNK * 6); // the first prefill saved chunks 4 and 5
      if (policy === 'load-all') {
        expect(r.plan.loadTokens).toBe(CHUNK * 4);
        expect(r.plan.loaded).toEqual([{ tier: 'dram', tokens: CHUNK * 4 }]);
        expect(r.plan.computeFrom).toBe(CHUNK * 4);
        expect(r.saved).toBe(2); // chunks 4 and 5; the partial chunk is never stored
      }
      if (policy === 'recompute') expect(r.plan.loadTokens).toBe(0);
      expect(compute.calls.map((c) => c.layer)).toEqual([0, 1, 2, 3]);
      expect(compute.calls.every((c) => c.computeFrom === r.plan.computeFrom)).toBe(true);
      expect(r.restarts).toEqual([]);
      expect(r.layers).toHaveLength(SPEC.layers);
      expect(r.ttftMs).toBeGreaterThan(0);
      expect(r.ttftMs).toBeLessThanOrEqual(r.ms); // the first token does not wait for the save
      await expectExact(prompt, blocks);
    }
    expect(store.lookup(prompt).chunks).toHaveLength(6);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('token ids given as a Uint32Array are copied: changing them while the prefill runs changes nothing it computes or saves', async () => {
    const store = await openStore();
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    const compute = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 3 + 1);
    const ids = Uint32Array.from(prompt);
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    const inner = compute.fn();
    const seen: number[][] = [];
    const run = pipe.prefill({
      tokens: ids, blocks, policy: 'recompute',
      compute: (layer, work) => {
        seen.push(Array.from(work.tokens));
        inner(layer, work);
        ids.fill(7); // the caller reuses its buffer while the prefill runs
      },
    });
    expect((await run).saved).toBe(3);
    expect(seen).toEqual(Array.from({ length: SPEC.layers }, () => prompt));
    expect(store.lookup(prompt).chunks).toHaveLength(3);
    expect(store.lookup(Array.from(ids)).chunks).toHaveLength(0);
    await expectExact(prompt, blocks);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('compute is given one frozen work object for every layer of an attempt: a compute cannot change what later layers see', async () => {
    const store = await openStore();
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    const compute = new PatternCompute(fx.dev, fx.cache);
    const inner = compute.fn();
    const seen: PrefillWork[] = [];
    const prompt = randomTokens(CHUNK * 2 + 5);
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    const r = await pipe.prefill({
      tokens: prompt,
      blocks,
      policy: 'recompute',
      compute: (layer, work) => {
        seen.push(work);
        expect(() => {
          (work as { computeFrom: number }).computeFrom = 1;
        }).toThrow(TypeError);
        inner(layer, work);
      },
    });
    expect(seen).toHaveLength(SPEC.layers);
    expect(seen.every((w) => w === seen[0] && Object.isFrozen(w) && w.computeFrom === r.plan.computeFrom)).toBe(true);
    await expectExact(prompt, blocks);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('learns its host time per layer from its prefills, and plans with it: a host that loads slowly recomputes', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 4 + 3);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    await warm(pipe, compute, prompt);
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' });
    expect(pipe.hostModel.terms.samples).toBe(2); // the warm-up and this prefill
    expect(r.plan.hostMsPerLayer).toBeGreaterThan(0);
    expect(r.plan.loadTokens).toBe(CHUNK * 4);
    // The same prompt with a host model that says each loaded chunk costs a second of host time per layer.
    const host = new HostModel();
    host.observe({ chunks: 0, ms: 0 });
    host.observe({ chunks: 1, ms: 1000 });
    const slow = new LayerPipeline({ store, cache: fx.cache, lookahead: 2, hostModel: host, computeModel: pipe.computeModel, bandwidth: pipe.bandwidth });
    const again = await slow.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'adaptive' });
    expect(again.plan.loadTokens).toBe(0);
    expect(again.plan.loadAllMs).toBeGreaterThanOrEqual(SPEC.layers * 4000);
    await expectExact(prompt, blocks);
    expect(() => new LayerPipeline({ store, cache: fx.cache, hostModel: {} as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    await slow.dispose();
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('issues loads lookahead layers ahead of finished compute, compute right behind its load, saves behind compute', async () => {
    const store = await openStore();
    const stream = fx.dev.createStream();
    const pipe = new LayerPipeline({ store, cache: fx.cache, computeStream: stream, lookahead: 2 });
    const compute = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 5);
    await warm(pipe, compute, prompt.slice(0, CHUNK * 3));
    // Log the store calls in order with the compute calls.
    const load = store.loadLayer.bind(store);
    const putLayer = store.putLayer.bind(store);
    store.loadLayer = (chunks, layer, ...rest) => {
      compute.log.push(`load ${layer}`);
      return load(chunks, layer, ...rest);
    };
    store.putLayer = (p, layer, ...rest) => {
      compute.log.push(`save ${layer}`);
      return putLayer(p, layer, ...rest);
    };
    compute.log.length = 0;
    const blocks = randomBlocks(prompt.length / SPEC.blockTokens, SPEC.numBlocks);
    // While compute cannot finish, only the first `lookahead` loads are issued,
    // and the compute of each is enqueued (waiting on the device), saves behind them.
    const release = holdStream(stream);
    const run = pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' });
    for (let i = 0; i < 100; i++) await new Promise((r) => setImmediate(r));
    expect(compute.log).toEqual(['load 0', 'load 1', 'compute 0', 'save 0', 'compute 1', 'save 1']);
    release();
    const r = await run;
    const at = (s: string) => compute.log.indexOf(s);
    for (let l = 0; l < SPEC.layers; l++) {
      expect(at(`load ${l}`)).toBeLessThan(at(`compute ${l}`));
      expect(at(`save ${l}`)).toBeGreaterThan(at(`compute ${l}`));
    }
    expect(r.saved).toBe(2);
    await expectExact(prompt, blocks);
    await pipe.dispose();
    await stream.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('a compute stream held back keeps the prefill pending: the host never waits on a layer it need not', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const stream = fx.dev.createStream();
    const pipe = new LayerPipeline({ store, cache: fx.cache, computeStream: stream, lookahead: 8 });
    const prompt = randomTokens(CHUNK * 3);
    await warm(pipe, compute, prompt.slice(0, CHUNK * 2));
    const release = holdStream(stream);
    compute.calls.length = 0;
    const blocks = randomBlocks(prompt.length / SPEC.blockTokens, SPEC.numBlocks);
    let settled = false;
    const run = pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' }).finally(() => (settled = true));
    for (let i = 0; i < 50 && compute.calls.length < SPEC.layers; i++) await new Promise((r) => setImmediate(r));
    // Every layer was enqueued (loads ahead, compute waiting on the device), none has run.
    expect(compute.calls.map((c) => c.layer)).toEqual([0, 1, 2, 3]);
    expect(settled).toBe(false);
    release();
    const r = await run;
    expect(r.plan.loadTokens).toBe(CHUNK * 2);
    await expectExact(prompt, blocks);
    await pipe.dispose();
    await stream.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('a failed load restarts from layer 0 without the failed chunk: nothing of the failed attempt is committed', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 1 });
    const prompt = randomTokens(CHUNK * 5);
    await warm(pipe, compute, prompt.slice(0, CHUNK * 3));
    // The load stream's next operation (layer 0's load) fails, as an IO error would.
    failNextLoad(store, { layer: 2 });
    compute.calls.length = 0;
    const before = store.stats().local;
    const blocks = randomBlocks(prompt.length / SPEC.blockTokens, SPEC.numBlocks);
    const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' });
    expect(r.restarts).toHaveLength(1);
    expect(r.restarts[0]).toMatchObject({ layer: 2, code: 'ERR_IO', validTokens: 0 });
    // The second attempt computed everything from layer 0 (the failing chunk is not known: nothing loaded is trusted).
    expect(compute.calls.filter((c) => c.attempt === 1).map((c) => [c.layer, c.computeFrom])).toEqual([[0, 0], [1, 0], [2, 0], [3, 0]]);
    expect(r.plan.loadTokens).toBe(0);
    expect(r.saved).toBe(2);
    expect(store.stats().local.puts).toBe(before.puts! + 2);
    await expectExact(prompt, blocks);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('a checksum failure on NVMe cuts the hit before the bad chunk and recomputes from there', async () => {
    let store = await openStore({ admit: 'always' });
    const compute = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 4);
    let pipe = new LayerPipeline({ store, cache: fx.cache });
    await warm(pipe, compute, prompt.slice(0, CHUNK * 3));
    await store.flush();
    const bad = store.keys(prompt)[1]!;
    const loc = nvmeLocation(store, bad)!;
    const file = loc.file.path;
    const sdir = store.dir;
    await pipe.dispose();
    await store.close();
    flipBytes(file, loc.offset + 2 * store.extentBytes + 10, 8, 0x3c); // layer 2 of chunk 1

    store = await openStore({ dir: sdir });
    pipe = new LayerPipeline({ store, cache: fx.cache, computeModel: ComputeModel.fromTerms({ floorMs: 0, perTokenMs: 1, perPairMs: 0 }) });
    compute.calls.length = 0;
    const blocks = randomBlocks(prompt.length / SPEC.blockTokens, SPEC.numBlocks);
    const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' });
    expect(r.hitTokens).toBe(CHUNK * 3);
    expect(r.restarts).toHaveLength(1);
    expect(r.restarts[0]).toMatchObject({ code: 'ERR_CHECKSUM', validTokens: CHUNK });
    expect(r.plan.loadTokens).toBe(CHUNK);
    expect(r.plan.computeFrom).toBe(CHUNK);
    await expectExact(prompt, blocks);
    expect(store.lookup(prompt).chunks.length).toBeGreaterThanOrEqual(1);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('abort: ERR_ABORTED, nothing committed, the store and the pipeline stay usable', async () => {
    const store = await openStore();
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 1 });
    const prompt = randomTokens(CHUNK * 4);
    const ac = new AbortController();
    const fn = compute.fn();
    const blocks = randomBlocks(prompt.length / SPEC.blockTokens, SPEC.numBlocks);
    await expect(pipe.prefill({
      tokens: prompt, blocks, policy: 'recompute', signal: ac.signal,
      compute: (l, w) => {
        fn(l, w);
        if (l === 1) ac.abort();
      },
    })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    expect(store.lookup(prompt).chunks).toHaveLength(0);
    const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn() });
    expect(r.saved).toBe(4);
    await expectExact(prompt, blocks);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('a compute that throws rejects the prefill with its error and commits nothing', async () => {
    const store = await openStore();
    const pipe = new LayerPipeline({ store, cache: fx.cache });
    const prompt = randomTokens(CHUNK * 2);
    const blocks = randomBlocks(prompt.length / SPEC.blockTokens, SPEC.numBlocks);
    await expect(pipe.prefill({ tokens: prompt, blocks, compute: (l) => { if (l === 2) throw new RangeError('kernel launch failed'); } }))
      .rejects.toThrow('kernel launch failed');
    expect(store.lookup(prompt).chunks).toHaveLength(0);
    await pipe.dispose();
    await store.close();
  });

  it.skipIf(skip)('32 prefills at once on one pipeline: all finish, all exact', async () => {
    const store = await openStore({ dramBytes: 512 * 8192 });
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    const shared = randomTokens(CHUNK * 2);
    await warm(pipe, compute, shared);
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const reqs = Array.from({ length: 32 }, (_, i) => {
      const tokens = [...shared, ...randomTokens(CHUNK + 3)];
      const nb = Math.ceil(tokens.length / SPEC.blockTokens);
      return { tokens, blocks: all.slice(i * nb, (i + 1) * nb) };
    });
    const results = await Promise.all(reqs.map((q, i) => pipe.prefill({ ...q, compute: compute.fn(), policy: i % 2 ? 'load-all' : 'adaptive' })));
    expect(pipe.inFlight).toBe(0);
    for (const [i, r] of results.entries()) {
      expect(r.layers).toHaveLength(SPEC.layers);
      await expectExact(reqs[i]!.tokens, reqs[i]!.blocks);
    }
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('rejects bad requests with codes and changes nothing', async () => {
    const store = await openStore();
    const pipe = new LayerPipeline({ store, cache: fx.cache });
    const t = randomTokens(CHUNK);
    const b = randomBlocks(2, SPEC.numBlocks);
    const f = () => undefined;
    const cases: [unknown, string][] = [
      [null, 'ERR_INVALID_ARG'],
      [{ tokens: [], blocks: b, compute: f }, 'ERR_INVALID_ARG'],
      [{ tokens: t, blocks: [1], compute: f }, 'ERR_INVALID_ARG'],
      [{ tokens: t, blocks: [0, 99999], compute: f }, 'ERR_OUT_OF_RANGE'],
      [{ tokens: t, blocks: b, compute: 'x' }, 'ERR_INVALID_ARG'],
      [{ tokens: t, blocks: b, compute: f, policy: 'fast' }, 'ERR_INVALID_ARG'],
      [{ tokens: t, blocks: b, compute: f, heldTokens: CHUNK }, 'ERR_OUT_OF_RANGE'],
      [{ tokens: t, blocks: b, compute: f, signal: {} }, 'ERR_INVALID_ARG'],
    ];
    for (const [req, code] of cases) {
      expect(() => pipe.prefill(req as never), JSON.stringify(req)).toThrow(expect.objectContaining({ code }));
    }
    expect(() => new LayerPipeline({ store, cache: fx.cache, lookahead: 0 })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(store.stats().local.lookups).toBe(0);
    await pipe.dispose();
    expect(() => pipe.prefill({ tokens: t, blocks: b, compute: f })).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    await store.close();
  });
});
