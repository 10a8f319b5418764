/**
 * A prefill meets the rest of the world mid-way: another process evicting
 * its chunks (held by the hit's lease, or not once the lease expired), an
 * abort, a failed load. The results are exact, the pinned pool returns to
 * where it was, and the store counts the prompt's lookup once.
 */

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvLayout, KvStore, LayerPipeline, type Device, type KvCache, type Stream } from '../../src/index.js';
import { holdCompletions, holdStream } from '../../src/device/testing.js';
import { dropDram, expireLeases } from '../../src/store/testing.js';
import { backends, open } from '../helpers/backends.js';
import { PatternCompute, expectPattern } from '../helpers/pattern.js';
import { failNextLoad, randomBlocks, randomTokens } from '../helpers/store.js';
import { pipelineSuite } from '../helpers/suite.js';

const SPEC = { layers: 4, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 512 };
const CHUNK = 8;
const BPC = CHUNK / SPEC.blockTokens;

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe.each(backends)('LayerPipeline races on $backend', ({ backend, skip }) => {
  const fx = pipelineSuite(backend, skip, { prefix: 'kvflow-races-', spec: SPEC, chunk: CHUNK, nvmeBytes: 256 * 8192, dramBytes: 128 * 8192 });
  const { options } = fx;
  // The other process's device, cache and stream: a CPU device of its own
  // (see otherPuts).
  let otherDev: Device;
  let otherCache: KvCache;
  let otherStream: Stream;
  beforeAll(() => {
    if (skip) return;
    otherDev = open('cpu');
    otherCache = otherDev.allocKvCache(new KvLayout(SPEC));
    otherStream = otherDev.createStream();
  });
  afterAll(async () => {
    if (skip) return;
    await otherDev.dispose();
  });

  /** Allocates the pattern's host buffers for `tokens` up front, so that the pinned pool's level is the prefill's own. */
  function prewarm(compute: PatternCompute, tokens: number[]): void {
    const fn = compute.fn();
    for (let l = 0; l < SPEC.layers; l++) fn(l, { stream: fx.stream, tokens, blocks: [], computeFrom: tokens.length, plan: undefined as never, attempt: 0 });
    compute.calls.length = 0;
    compute.log.length = 0;
  }

  /** The pinned pool's bytes in use, once the store's deferred releases ran. */
  async function pinnedSettled(store: KvStore, want: number): Promise<number> {
    await store.flush();
    for (let i = 0; i < 200 && fx.dev.pinnedStats().inUseBytes !== want; i++) await turns(1);
    return fx.dev.pinnedStats().inUseBytes;
  }

  /**
   * A store whose NVMe tier holds three chunks, the first two of `prompt`
   * on it (not in DRAM); the prefill of `prompt` starts held after its
   * first layer's load and compute were issued (the compute stream held on
   * the CPU backend, the device's completions on CUDA: see below); `between`
   * runs; the hold is released and the result returned.
   */
  async function raceEviction(between: (dir: string, recordBytes: number, store: KvStore) => Promise<void>) {
    const probe = await KvStore.open(options());
    const rec = probe.recordBytes;
    await probe.close();
    const o = options({ nvmeBytes: 3 * rec, admit: 'always' });
    const store = await KvStore.open(o);
    const compute = new PatternCompute(fx.dev, fx.cache);
    const stream = fx.dev.createStream();
    const pipe = new LayerPipeline({ store, cache: fx.cache, computeStream: stream, lookahead: 1 });
    const prompt = randomTokens(CHUNK * 3 + 1);
    const warmBlocks = randomBlocks(2 * BPC, SPEC.numBlocks);
    await pipe.prefill({ tokens: prompt.slice(0, 2 * CHUNK), blocks: warmBlocks, compute: compute.fn(), policy: 'recompute' });
    await store.flush();
    dropDram(store);
    prewarm(compute, prompt);
    const pinned = fx.dev.pinnedStats().inUseBytes;
    const lookups = store.stats().hits.lookups;
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    // The prefill must not go past layer 0 until `between` ran. The CPU
    // backend holds its compute stream. On CUDA, with the compute stream held
    // (host-function or wait-value gate alike), the JS thread was seen stuck
    // in the driver's first launch of the load kernel (an H100, driver 580;
    // likely CUDA's lazy module loading waiting for the held stream: devices
    // now load kvflow's kernels when they open, not yet run on a GPU). There
    // the device's completions are held instead: the GPU runs on, but layer
    // 0's compute is not seen done, so layer 1's load is not issued.
    // KVFLOW_RACES_HOLD=stream holds the stream on CUDA too (to check the eager kernel load).
    const holdCuda = backend === 'cuda' && process.env.KVFLOW_RACES_HOLD !== 'stream';
    const release = holdCuda ? holdCompletions(fx.dev) : holdStream(stream);
    let run: ReturnType<typeof pipe.prefill>;
    try {
      run = pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' });
      // Layer 0's load reads NVMe: wait for its compute call, up to 10 s.
      for (let i = 0; i < 10_000 && compute.calls.length === 0; i++) await new Promise((r) => setTimeout(r, 1));
      expect(compute.calls.map((c) => c.layer)).toEqual([0]); // layer 0 loaded and enqueued, layer 1's load waits for it
      await between(o.dir, rec, store);
    } finally {
      // Never left held: a held stream stalls what is queued behind it, and
      // held completions stall every wait on the device.
      release();
    }
    const r = await run;
    await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
    expect(store.stats().hits.lookups).toBe(lookups + 1); // once, restart or not
    expect(await pinnedSettled(store, pinned)).toBe(pinned);
    await pipe.dispose();
    await stream.dispose();
    await compute.dispose();
    await store.close();
    return r;
  }

  /**
   * Another store on the directory (as another process) puts two new chunks
   * durably: it must evict to make room. It runs while the prefill is held,
   * so it must not wait on that device (its completions are held on CUDA;
   * a held stream would also stall pinned and device allocations that
   * synchronise implicitly). Like another process, it has a device of its own.
   */
  async function otherPuts(dir: string, rec: number): Promise<void> {
    const other = await KvStore.open({ ...options({ dir, nvmeBytes: 3 * rec }), device: otherDev });
    await other.put(randomTokens(2 * CHUNK), otherCache, randomBlocks(2 * BPC, SPEC.numBlocks), otherStream, { durable: true }).catch(() => undefined);
    await other.close();
  }

  it.skipIf(skip)('another process cannot evict what the prefill leased between its lookup and its loads: no restart, exact', async () => {
    const r = await raceEviction((dir, rec) => otherPuts(dir, rec));
    expect(r.restarts).toEqual([]);
    expect(r.plan.loadTokens).toBe(2 * CHUNK);
  });

  it.skipIf(skip)('once the lease expired and a chunk was evicted mid-prefill, the prefill restarts without it: exact, pool back where it was', async () => {
    const r = await raceEviction(async (dir, rec, store) => {
      expireLeases(store);
      await otherPuts(dir, rec);
    });
    expect(r.restarts).toHaveLength(1);
    expect(r.restarts[0]).toMatchObject({ layer: 1, code: 'ERR_EVICTED' });
    expect(r.restarts[0]!.validTokens).toBeLessThan(2 * CHUNK);
    expect(r.plan.loadTokens).toBe(r.restarts[0]!.validTokens);
  });

  it.skipIf(skip)('abort mid-load and a failed load leave the pinned pool where it was; a restart counts one lookup', async () => {
    const store = await KvStore.open(options());
    const compute = new PatternCompute(fx.dev, fx.cache);
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 1 });
    const prompt = randomTokens(CHUNK * 4 + 2);
    await pipe.prefill({ tokens: prompt.slice(0, 3 * CHUNK), blocks: randomBlocks(3 * BPC, SPEC.numBlocks), compute: compute.fn(), policy: 'recompute' });
    prewarm(compute, prompt);
    const pinned = fx.dev.pinnedStats().inUseBytes;
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    // Abort after layer 1's compute was enqueued, loads in flight.
    const ac = new AbortController();
    const fn = compute.fn();
    await expect(pipe.prefill({
      tokens: prompt, blocks, policy: 'load-all', signal: ac.signal,
      compute: (l, w) => {
        fn(l, w);
        if (l === 1) ac.abort();
      },
    })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    const seen = store.lookup(prompt);
    expect(seen.tokens).toBe(3 * CHUNK); // nothing of the aborted prefill committed
    seen.release();
    expect(await pinnedSettled(store, pinned)).toBe(pinned);
    // A failed load of layer 2: one restart, one lookup, the hit's tokens counted once.
    failNextLoad(store, { layer: 2 });
    const before = store.stats().hits;
    const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' });
    expect(r.restarts).toHaveLength(1);
    expect(r.restarts[0]).toMatchObject({ layer: 2, code: 'ERR_IO' });
    const after = store.stats().hits;
    expect(after.lookups).toBe(before.lookups + 1);
    expect(after.dramTokens + after.nvmeTokens).toBe(before.dramTokens + before.nvmeTokens + 3 * CHUNK);
    await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
    expect(r.saved).toBe(1);
    expect(await pinnedSettled(store, pinned)).toBe(pinned);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });
});
