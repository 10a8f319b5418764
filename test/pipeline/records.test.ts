/**
 * Timed records the pipeline's compute steps share (src/pipeline/runs.ts): a
 * step's compute-end record marks the next step's compute start only where
 * the next step runs in the same synchronous run with no wait between them.
 * The timeline stays in stream order and the caches stay exact; a step that
 * waits on a load, or that begins a run, records its own start.
 */
import { describe, expect, it } from 'vitest';

import { LayerPipeline, type KvEvent as Event, type LayerCompute, type PrefillResult, type Stream } from '../../src/index.js';
import { ComputeRuns } from '../../src/pipeline/runs.js';
import { backends } from '../helpers/backends.js';
import { PatternCompute, expectPattern } from '../helpers/pattern.js';
import { randomBlocks, randomTokens } from '../helpers/store.js';
import { pipelineSuite } from '../helpers/suite.js';

const SPEC = { layers: 4, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 1024 };
const CHUNK = 8;
const L = SPEC.layers;

type Entry = { kind: 'record'; event: Event; timed: boolean } | { kind: 'wait' } | { kind: 'compute'; prefill: number; layer: number };

/** Logs the stream's records and waits from now on, and (through `compute`) the computes between them. */
function trace(stream: Stream, fn: LayerCompute): { log: Entry[]; compute: (prefill: number) => LayerCompute } {
  const log: Entry[] = [];
  const record = stream.record.bind(stream);
  stream.record = (o) => {
    const event = record(o);
    log.push({ kind: 'record', event, timed: o?.timing === true });
    return event;
  };
  const waitEvent = stream.waitEvent.bind(stream);
  stream.waitEvent = (e) => {
    log.push({ kind: 'wait' });
    waitEvent(e);
  };
  return {
    log,
    compute: (prefill) => (layer, work) => {
      log.push({ kind: 'compute', prefill, layer });
      fn(layer, work);
    },
  };
}

/**
 * Every compute of the log lies between the record just before it (no wait
 * between them) and the one just after: its device start and end, which the
 * prefills' timelines must give, to the device's time (differences of one
 * prefill's times: each is relative to its own origin).
 */
function expectBracketed(log: Entry[], rs: PrefillResult[]): { timed: number; waits: number } {
  const bounds = new Map<string, { start: Event; end: Event }>();
  for (let k = 0; k < log.length; k++) {
    const c = log[k]!;
    if (c.kind !== 'compute') continue;
    const before = log[k - 1];
    const after = log[k + 1];
    expect(before?.kind).toBe('record');
    expect(after?.kind).toBe('record');
    bounds.set(`${c.prefill}:${c.layer}`, { start: (before as { event: Event }).event, end: (after as { event: Event }).event });
  }
  for (const [i, r] of rs.entries()) {
    expect(r.timeSource).toBe('device');
    for (let l = 0; l < r.layers.length; l++) {
      const b = bounds.get(`${i}:${l}`)!;
      const d = r.layers[l]!.device!;
      expect(d.computeEndMs - d.computeStartMs).toBeCloseTo(b.end.timeMs() - b.start.timeMs(), 9);
      if (l > 0) {
        const p = bounds.get(`${i}:${l - 1}`)!;
        expect(d.computeStartMs - r.layers[l - 1]!.device!.computeEndMs).toBeCloseTo(b.start.timeMs() - p.end.timeMs(), 9);
      }
    }
  }
  return { timed: log.filter((e) => e.kind === 'record' && e.timed).length, waits: log.filter((e) => e.kind === 'wait').length };
}

describe('ComputeRuns', () => {
  const e1 = {} as never;
  const e2 = {} as never;

  it('a record is taken once; a run clears what its steps leave', () => {
    const runs = new ComputeRuns();
    runs.run(() => {
      expect(runs.take()).toBeUndefined();
      runs.set(e1);
      expect(runs.take()).toBe(e1);
      expect(runs.take()).toBeUndefined();
      runs.set(e2);
    });
    expect(runs.take()).toBeUndefined();
  });

  it('steps resumed inside gather run after its body, in order, in one run; outside it, each on a microtask of its own', async () => {
    const runs = new ComputeRuns();
    const seen: string[] = [];
    runs.gather(() => {
      runs.resume(() => {
        seen.push(`a:${String(runs.take())}`);
        runs.set(e1);
      });
      runs.resume(() => {
        seen.push(runs.take() === e1 ? 'b:shared' : 'b:fresh');
        runs.set(e2);
      });
      seen.push('body');
    });
    expect(seen).toEqual(['body', 'a:undefined', 'b:shared']);
    expect(runs.take()).toBeUndefined();
    runs.resume(() => runs.set(e1));
    runs.resume(() => seen.push(runs.take() === undefined ? 'c:fresh' : 'c:shared'));
    expect(seen).toHaveLength(3);
    await Promise.resolve();
    expect(seen).toEqual(['body', 'a:undefined', 'b:shared', 'c:fresh']);
    expect(runs.take()).toBeUndefined();
  });
});

describe.each(backends)('LayerPipeline shared compute records on $backend', ({ backend, skip }) => {
  const fx = pipelineSuite(backend, skip, { prefix: 'kvflow-records-', spec: SPEC, chunk: CHUNK, nvmeBytes: 512 * 8192, dramBytes: 512 * 8192 });

  it.skipIf(skip)('recomputed layers one after another: each compute starts where the one before ended; work enqueued between prefills is never inside one', async () => {
    const store = await fx.openStore();
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const stream = fx.dev.createStream();
    const pipe = new LayerPipeline({ store, cache: fx.cache, computeStream: stream, lookahead: 2 });
    const prompt = randomTokens(CHUNK * 3 + 1);
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    const t = trace(stream, pattern.fn());
    const r = await pipe.prefill({ tokens: prompt, blocks, compute: t.compute(0), policy: 'recompute' });
    expect(r.saved).toBe(3);
    // The origin, layer 0's start, every layer's end.
    expect(expectBracketed(t.log, [r]).timed).toBe(2 + L);
    for (let l = 1; l < L; l++) expect(r.layers[l]!.device!.computeStartMs).toBe(r.layers[l - 1]!.device!.computeEndMs);
    for (const l of r.layers) expect([l.computeMs, l.stallMs]).toEqual([l.device!.computeEndMs - l.device!.computeStartMs, 0]);
    await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
    // The runtime's own work on the stream between two prefills is inside
    // neither: the next prefill's first compute records its own start.
    const a = fx.dev.allocPinned(8 << 20);
    const b = fx.dev.allocPinned(8 << 20);
    t.log.length = 0;
    const own = stream.record({ timing: true });
    stream.copy(b, 0, a, 0, a.byteLength);
    const r2 = await pipe.prefill({ tokens: prompt, blocks, compute: t.compute(0), policy: 'recompute', save: false });
    expect(expectBracketed(t.log, [r2]).timed).toBe(1 + 2 + L);
    expect(t.log.findIndex((e) => e.kind === 'compute')).toBeGreaterThan(t.log.findIndex((e) => e.kind === 'record' && e.event === own) + 1);
    await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
    await a.dispose();
    await b.dispose();
    await pipe.dispose();
    await stream.dispose();
    await pattern.dispose();
    await store.close();
  });

  it.skipIf(skip)('a prefill alone with loads records its own start behind every wait: never before its load landed', async () => {
    const store = await fx.openStore();
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const stream = fx.dev.createStream();
    const pipe = new LayerPipeline({ store, cache: fx.cache, computeStream: stream, lookahead: 2 });
    const prompt = randomTokens(CHUNK * 2 + 1);
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    await pipe.prefill({ tokens: prompt, blocks, compute: pattern.fn(), policy: 'recompute' });
    const fresh = randomBlocks(blocks.length, SPEC.numBlocks);
    const t = trace(stream, pattern.fn());
    const r = await pipe.prefill({ tokens: prompt, blocks: fresh, compute: t.compute(0), policy: 'load-all', save: false });
    expect(r.plan.loadTokens).toBe(CHUNK * 2);
    expect(expectBracketed(t.log, [r])).toEqual({ timed: 1 + 2 * L, waits: L });
    let prevEnd = 0;
    for (const l of r.layers) {
      const d = l.device!;
      expect(d.loadLandedMs!).toBeLessThanOrEqual(d.computeStartMs);
      expect(d.computeStartMs).toBeGreaterThanOrEqual(prevEnd);
      prevEnd = d.computeEndMs;
    }
    await expectPattern(fx.dev, fx.stream, fx.cache, prompt, fresh);
    await pipe.dispose();
    await stream.dispose();
    await pattern.dispose();
    await store.close();
  });

  it.skipIf(skip)('prefills loaded in one call share records: each compute lies between the records around it, none starts before its load landed, caches exact', async () => {
    const store = await fx.openStore();
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const stream = fx.dev.createStream();
    const pipe = new LayerPipeline({ store, cache: fx.cache, computeStream: stream, lookahead: 2 });
    const N = 8;
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const prompts = Array.from({ length: N }, () => randomTokens(CHUNK * 2 + 1));
    const per = Math.ceil(prompts[0]!.length / SPEC.blockTokens);
    const tables = prompts.map((_, i) => all.slice(i * per, (i + 1) * per));
    for (const [i, p] of prompts.entries()) await pipe.prefill({ tokens: p, blocks: tables[i]!, compute: pattern.fn(), policy: 'recompute' });
    const fresh = prompts.map((_, i) => all.slice((N + i) * per, (N + i + 1) * per));
    const t = trace(stream, pattern.fn());
    const s0 = pipe.stats();
    const rs = await Promise.all(prompts.map((p, i) => pipe.prefill({ tokens: p, blocks: fresh[i]!, compute: t.compute(i), policy: 'load-all', save: false })));
    expect(pipe.stats().loadCalls - s0.loadCalls).toBeLessThan(N * L); // batched
    const n = expectBracketed(t.log, rs);
    // Fewer records than a start and an end per compute beside the origins,
    // and a start recorded behind every wait.
    expect(n.timed).toBeLessThan(N + 2 * N * L);
    expect(n.timed - N - N * L).toBeGreaterThanOrEqual(n.waits);
    for (const [i, r] of rs.entries()) {
      expect(r.plan.loadTokens).toBe(CHUNK * 2);
      let prevEnd = 0;
      for (const l of r.layers) {
        const d = l.device!;
        expect(d.loadLandedMs!).toBeLessThanOrEqual(d.computeStartMs);
        expect(d.computeStartMs).toBeGreaterThanOrEqual(prevEnd);
        expect(d.computeStartMs).toBeLessThanOrEqual(d.computeEndMs);
        prevEnd = d.computeEndMs;
      }
      await expectPattern(fx.dev, fx.stream, fx.cache, prompts[i]!, fresh[i]!);
    }
    await pipe.dispose();
    await stream.dispose();
    await pattern.dispose();
    await store.close();
  });
});
