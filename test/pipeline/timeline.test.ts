/**
 * The pipeline's per-layer timeline from timed events: every layer has device
 * times, in stream order (a load lands before the compute that waits on it
 * starts; a layer's compute ends before the next one's starts), and the
 * durations are the device's.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvLayout, KvStore, LayerPipeline, Stream, type Device, type KvCache, type KvEvent } from '../../src/index.js';
import { backends, open } from '../helpers/backends.js';
import { PatternCompute } from '../helpers/pattern.js';
import { FP, randomBlocks, randomTokens } from '../helpers/store.js';

const SPEC = { layers: 4, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 256 };
const CHUNK = 8;

describe.each(backends)('LayerPipeline timeline on $backend', ({ backend, skip }) => {
  let dev: Device;
  let cache: KvCache;
  let root: string;
  beforeAll(() => {
    if (skip) return;
    dev = open(backend);
    cache = dev.allocKvCache(new KvLayout(SPEC));
    root = mkdtempSync(path.join(os.tmpdir(), 'kvflow-timeline-'));
  });
  afterAll(async () => {
    if (skip) return;
    await dev.dispose();
    rmSync(root, { recursive: true, force: true });
  });

  it.skipIf(skip)('comes from device times, in stream order, with non-negative durations', async () => {
    const store = await KvStore.open({ device: dev, layout: cache.layout, fingerprint: FP, dir: path.join(root, 's'), chunkTokens: CHUNK, nvmeBytes: 64 * 8192, dramBytes: 64 * 8192 });
    const pipe = new LayerPipeline({ store, cache, lookahead: 2 });
    const compute = new PatternCompute(dev, cache);
    const prompt = randomTokens(CHUNK * 3 + 2);
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    await pipe.prefill({ tokens: prompt.slice(0, CHUNK * 2), blocks, compute: compute.fn(), policy: 'recompute' });
    const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'load-all' });
    expect(r.plan.loadTokens).toBe(CHUNK * 2);
    expect(r.timeSource).toBe('device');
    let prevEnd = 0;
    for (const l of r.layers) {
      const d = l.device!;
      expect(d).not.toBeNull();
      expect(d.loadStartMs).not.toBeNull();
      expect(d.loadStartMs!).toBeLessThanOrEqual(d.loadLandedMs!);
      expect(d.loadLandedMs!).toBeLessThanOrEqual(d.computeStartMs);
      expect(d.computeStartMs).toBeLessThanOrEqual(d.computeEndMs);
      expect(d.computeStartMs).toBeGreaterThanOrEqual(prevEnd);
      prevEnd = d.computeEndMs;
      expect(l.computeMs).toBe(d.computeEndMs - d.computeStartMs);
      expect(l.loadMs).toBe(d.loadLandedMs! - d.loadStartMs!);
      expect(l.stallMs).toBeGreaterThanOrEqual(0);
    }
    // Without loads, layers have no load times and no stall.
    const c = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy: 'recompute', save: false });
    expect(c.timeSource).toBe('device');
    for (const l of c.layers) expect([l.device!.loadLandedMs, l.loadMs, l.stallMs]).toEqual([null, 0, 0]);
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('carries each timed record\'s own device time, relative to the attempt\'s origin (a start shared with the compute before it read once)', async () => {
    const store = await KvStore.open({ device: dev, layout: cache.layout, fingerprint: FP, dir: path.join(root, 't'), chunkTokens: CHUNK, nvmeBytes: 64 * 8192, dramBytes: 64 * 8192 });
    const computeStream = dev.createStream();
    const pipe = new LayerPipeline({ store, cache, computeStream, lookahead: 2 });
    const compute = new PatternCompute(dev, cache);
    const prompt = randomTokens(CHUNK * 3 + 2);
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    await pipe.prefill({ tokens: prompt.slice(0, CHUNK * 2), blocks, compute: compute.fn(), policy: 'recompute' });
    // Every timed record of every stream, in order, and where the computes went between them.
    const log: ({ stream: Stream; event: KvEvent } | 'compute')[] = [];
    const record = Stream.prototype.record;
    Stream.prototype.record = function (this: Stream, o) {
      const event = record.call(this, o);
      if (o?.timing === true) log.push({ stream: this, event });
      return event;
    };
    const traced = compute.fn();
    const run = (policy: 'load-all' | 'recompute') => pipe.prefill({ tokens: prompt, blocks, policy, save: false, compute: (l, w) => {
      log.push('compute');
      traced(l, w);
    } });
    try {
      for (const policy of ['load-all', 'recompute'] as const) {
        log.length = 0;
        const r = await run(policy);
        expect(r.timeSource).toBe('device');
        const at = (e: KvEvent): number => e.timeMs() - o;
        const onCompute = log.filter((x) => x === 'compute' || x.stream === computeStream);
        const first = onCompute[0]!;
        expect(first).not.toBe('compute');
        const o = (first as { event: KvEvent }).event.timeMs(); // the origin: the attempt's first record on the compute stream
        // Loads (a prefill alone: each its own call): a record before and after each, on the load stream.
        const onLoad = log.filter((x): x is { stream: Stream; event: KvEvent } => x !== 'compute' && x.stream !== computeStream);
        expect(onLoad).toHaveLength(policy === 'load-all' ? 2 * SPEC.layers : 0);
        let k = 1;
        for (const [l, layer] of r.layers.entries()) {
          const d = layer.device!;
          if (policy === 'load-all') {
            expect(d.loadStartMs).toBe(at(onLoad[2 * l]!.event));
            expect(d.loadLandedMs).toBe(at(onLoad[2 * l + 1]!.event));
          } else {
            expect([d.loadStartMs, d.loadLandedMs]).toEqual([null, null]);
          }
          // The record just before the compute is its start (its own, or the one ending the compute before it), the one after its end.
          const c = onCompute.indexOf('compute', k);
          expect(d.computeStartMs).toBe(at((onCompute[c - 1] as { event: KvEvent }).event));
          expect(d.computeEndMs).toBe(at((onCompute[c + 1] as { event: KvEvent }).event));
          if (policy === 'recompute' && l > 0) expect(d.computeStartMs).toBe(r.layers[l - 1]!.device!.computeEndMs);
          k = c + 1;
        }
      }
    } finally {
      Stream.prototype.record = record;
    }
    await pipe.dispose();
    await computeStream.dispose();
    await compute.dispose();
    await store.close();
  });
});
