/**
 * KvConnector.startLoads: the loads of several requests go to the store as
 * one call per layer; each request keeps its own waits and outcome, the
 * bytes are exact, and a refused call changes nothing.
 */
import { randomBytes } from 'node:crypto';

import { describe, expect, it } from 'vitest';

import { KvConnector, type ConnectorRequest, type KvStore } from '../../src/index.js';
import { dropDram, nvmeLocation } from '../../src/store/testing.js';
import { backends } from '../helpers/backends.js';
import { fillCache, readCache } from '../helpers/cache.js';
import { PatternCompute, expectPattern } from '../helpers/pattern.js';
import { failNextLoad, pieceOf, randomBlocks, randomTokens, spyLoads } from '../helpers/store.js';
import { flipBytes, pipelineSuite } from '../helpers/suite.js';

const SPEC = { layers: 3, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 256 };
const CHUNK = 8;
const BPC = CHUNK / SPEC.blockTokens;

describe.each(backends)('KvConnector.startLoads on $backend', ({ backend, skip }) => {
  const fx = pipelineSuite(backend, skip, { prefix: 'kvflow-connbatch-', spec: SPEC, chunk: CHUNK, nvmeBytes: 128 * 8192, dramBytes: 64 * 8192 });
  const { openStore } = fx;

  interface Saved {
    tokens: number[];
    /** Where the saved chunks' bytes were taken from. */
    src: number[];
    /** Where they load to. */
    dst: number[];
  }

  /**
   * Random bytes in the whole cache; `chunks[i]` full chunks of prompt i
   * (plus one token) put from random blocks, durably when asked; then the
   * cache is filled with other random bytes. Returns the bytes put.
   */
  async function savePrompts(store: KvStore, chunks: number[], durable = false): Promise<{ saved: Saved[]; data: Uint8Array[] }> {
    const data = fx.cache.buffers.map((b) => new Uint8Array(randomBytes(b.byteLength)));
    await fillCache(fx.dev, fx.stream, fx.cache, data);
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    let at = 0;
    const saved = chunks.map((n) => {
      const take = (): number[] => all.slice(at, (at += n * BPC + 1));
      return { tokens: randomTokens(n * CHUNK + 1), src: take(), dst: take() };
    });
    for (const s of saved) await store.put(s.tokens, fx.cache, s.src, fx.stream, { durable });
    await fillCache(fx.dev, fx.stream, fx.cache, fx.cache.buffers.map((b) => new Uint8Array(randomBytes(b.byteLength))));
    return { saved, data };
  }

  /** Expects the first `chunks` chunks of `s` loaded exactly (every layer, K and V). */
  function expectLoaded(now: Uint8Array[], data: Uint8Array[], s: Saved, chunks: number): void {
    for (let l = 0; l < SPEC.layers; l++) {
      for (const kv of [0, 1] as const) {
        for (let b = 0; b < chunks * BPC; b++) {
          expect(pieceOf(fx.cache, now, l, kv, s.dst[b]!), `layer ${l} kv ${kv} block ${b}`).toEqual(pieceOf(fx.cache, data, l, kv, s.src[b]!));
        }
      }
    }
  }

  /** What a runtime does before reading the cache: its stream waits for every layer. */
  function waitAll(conn: KvConnector, reqs: ConnectorRequest[]): void {
    for (let l = 0; l < SPEC.layers; l++) for (const r of reqs) conn.waitForLayerLoad(r, l, fx.stream);
  }

  it.skipIf(skip)('several requests in one startLoads load exactly, with one store call per layer', async () => {
    const store = await openStore();
    const { saved, data } = await savePrompts(store, [1, 2, 3, 2]);
    const conn = new KvConnector({ store, cache: fx.cache });
    const calls = spyLoads(store);
    const reqs = saved.map((s) => conn.lookup(s.tokens));
    expect(reqs.map((r) => r.loadableTokens)).toEqual([1, 2, 3, 2].map((n) => n * CHUNK));
    conn.startLoads(reqs.map((request, i) => ({ request, blocks: saved[i]!.dst })));
    expect(calls).toEqual(Array(SPEC.layers).fill(4));
    expect(conn.stats()).toEqual({ loadCalls: SPEC.layers, loadRequests: 4 * SPEC.layers });
    waitAll(conn, reqs);
    await fx.stream.record().done();
    const now = await readCache(fx.dev, fx.stream, fx.cache);
    saved.forEach((s, i) => expectLoaded(now, data, s, [1, 2, 3, 2][i]!));
    for (const [i, r] of reqs.entries()) expect(await conn.loadResult(r)).toEqual({ ok: true, validTokens: [1, 2, 3, 2][i]! * CHUNK });
    expect(conn.finished().map((f) => f.request.id).sort((x, y) => x - y)).toEqual(reqs.map((r) => r.id));
    // startLoad alone is one call per layer as before.
    const one = conn.lookup(saved[0]!.tokens);
    calls.length = 0;
    conn.startLoad(one, saved[0]!.dst);
    expect(calls).toEqual(Array(SPEC.layers).fill(1));
    expect(conn.stats()).toEqual({ loadCalls: 2 * SPEC.layers, loadRequests: 5 * SPEC.layers });
    await conn.dispose();
    await store.close();
  });

  it.skipIf(skip)('items that load nothing are left out of the calls; different engines go in a call each', async () => {
    const store = await openStore();
    const { saved, data } = await savePrompts(store, [2, 2, 2]);
    const conn = new KvConnector({ store, cache: fx.cache });
    const calls = spyLoads(store);
    const reqs = saved.map((s) => conn.lookup(s.tokens));
    const fresh = conn.lookup(randomTokens(CHUNK * 2 + 1));
    expect(fresh.loadableTokens).toBe(0);
    conn.startLoads([
      { request: reqs[0]!, blocks: saved[0]!.dst, options: { engine: 'dma' } },
      { request: fresh, blocks: [] },
      { request: reqs[1]!, blocks: saved[1]!.dst, options: { engine: 'kernel' } },
      { request: reqs[2]!, blocks: saved[2]!.dst, options: { engine: 'dma', tokens: CHUNK } },
    ]);
    // Per layer: the two dma loads together, then the kernel one.
    expect(calls).toEqual(Array.from({ length: SPEC.layers }, () => [2, 1]).flat());
    waitAll(conn, [...reqs, fresh]);
    await fx.stream.record().done();
    const now = await readCache(fx.dev, fx.stream, fx.cache);
    expectLoaded(now, data, saved[0]!, 2);
    expectLoaded(now, data, saved[1]!, 2);
    expectLoaded(now, data, saved[2]!, 1);
    expect(await conn.loadResult(fresh)).toEqual({ ok: true, validTokens: 0 });
    expect(await conn.loadResult(reqs[2]!)).toEqual({ ok: true, validTokens: CHUNK });
    await conn.dispose();
    await store.close();
  });

  it.skipIf(skip)('a corrupt chunk of one request fails only its outcome; the others stay ok and exact, and no wait hangs or fails the stream', async () => {
    let store = await openStore();
    const { saved, data } = await savePrompts(store, [3, 3, 3], true);
    // Layer 1 of chunk 1 of prompt 1, damaged on NVMe; DRAM holds nothing after the reopen.
    const loc = nvmeLocation(store, store.keys(saved[1]!.tokens)[1]!)!;
    const dir = store.dir;
    await store.close();
    flipBytes(loc.file.path, loc.offset + store.extentBytes + 6, 8);
    store = await openStore({ dir });
    dropDram(store);
    const conn = new KvConnector({ store, cache: fx.cache });
    const calls = spyLoads(store);
    const reqs = saved.map((s) => conn.lookup(s.tokens));
    conn.startLoads(reqs.map((request, i) => ({ request, blocks: saved[i]!.dst })));
    expect(calls).toEqual(Array(SPEC.layers).fill(3));
    // Waited on before any outcome is known: the stream is not failed by request 1's chunk.
    waitAll(conn, reqs);
    await expect(fx.stream.record().done()).resolves.toBeUndefined();
    const outcomes = await Promise.all(reqs.map((r) => conn.loadResult(r)));
    expect(outcomes[0]).toEqual({ ok: true, validTokens: CHUNK * 3 });
    expect(outcomes[1]).toMatchObject({ ok: false, validTokens: CHUNK, code: 'ERR_CHECKSUM' });
    expect(outcomes[2]).toEqual({ ok: true, validTokens: CHUNK * 3 });
    const now = await readCache(fx.dev, fx.stream, fx.cache);
    expectLoaded(now, data, saved[0]!, 3);
    expectLoaded(now, data, saved[1]!, 1); // the prefix before the bad chunk
    expectLoaded(now, data, saved[2]!, 3);
    const f = conn.finished();
    expect(f.filter((x) => !x.outcome.ok).map((x) => x.request)).toEqual([reqs[1]]);
    // Its outcome known, the failed request's waits are skipped.
    waitAll(conn, reqs);
    await expect(fx.stream.record().done()).resolves.toBeUndefined();
    await conn.dispose();
    await store.close();
  });

  it.skipIf(skip)('a batched call that fails as a whole fails every request it carried, and none of their waits hangs', async () => {
    const store = await openStore();
    const { saved } = await savePrompts(store, [2, 2]);
    const conn = new KvConnector({ store, cache: fx.cache });
    const reqs = saved.map((s) => conn.lookup(s.tokens));
    failNextLoad(store);
    conn.startLoads(reqs.map((request, i) => ({ request, blocks: saved[i]!.dst })));
    waitAll(conn, reqs);
    await expect(fx.stream.record().done()).resolves.toBeUndefined();
    for (const r of reqs) expect(await conn.loadResult(r)).toMatchObject({ ok: false, validTokens: 0, code: 'ERR_IO' });
    await conn.dispose();
    await store.close();
  });

  it.skipIf(skip)('the verbs of a runtime over several requests loaded together: recompute the rest, save, the caches are exact', async () => {
    const store = await openStore();
    const conn = new KvConnector({ store, cache: fx.cache });
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const prompts = [2, 3, 1].map((n) => randomTokens(CHUNK * n + 5));
    const all = randomBlocks(SPEC.numBlocks, SPEC.numBlocks);
    const tables = prompts.map((t, i) => all.slice(i * 8 * BPC, i * 8 * BPC + Math.ceil(t.length / SPEC.blockTokens)));
    const forward = (r: ConnectorRequest, blocks: number[], from: number): void => {
      const fn = pattern.fn();
      for (let l = 0; l < SPEC.layers; l++) {
        conn.waitForLayerLoad(r, l, fx.stream);
        fn(l, { stream: fx.stream, tokens: r.tokens, blocks, computeFrom: from, plan: undefined as never, attempt: 0 });
        conn.saveLayer(r, l, fx.stream, blocks);
      }
    };
    // Turn 1: each prompt's first chunks computed and saved.
    const firsts = prompts.map((t) => conn.lookup(t.slice(0, t.length - 5 - CHUNK + 1)));
    conn.startLoads(firsts.map((request, i) => ({ request, blocks: tables[i]! })));
    firsts.forEach((r, i) => forward(r, tables[i]!, 0));
    for (const r of firsts) await conn.waitForSave(r);
    for (const r of firsts) await conn.requestFinished(r);
    // Turn 2: the saved chunks load together, the rest computes.
    const reqs = prompts.map((t) => conn.lookup(t));
    expect(reqs.map((r) => r.loadableTokens)).toEqual([1, 2, 0].map((n) => n * CHUNK));
    const before = conn.stats();
    conn.startLoads(reqs.map((request, i) => ({ request, blocks: tables[i]! })));
    expect(conn.stats().loadCalls - before.loadCalls).toBe(SPEC.layers);
    expect(conn.stats().loadRequests - before.loadRequests).toBe(2 * SPEC.layers);
    reqs.forEach((r, i) => forward(r, tables[i]!, r.loadableTokens));
    expect(await Promise.all(reqs.map((r) => conn.waitForSave(r)))).toEqual([{ saved: 1 }, { saved: 1 }, { saved: 1 }]);
    for (const r of reqs) expect((await conn.loadResult(r)).ok).toBe(true);
    for (const [i, t] of prompts.entries()) await expectPattern(fx.dev, fx.stream, fx.cache, t, tables[i]!);
    await conn.dispose();
    await pattern.dispose();
    await store.close();
  });

  it.skipIf(skip)('bad items are refused with codes and change nothing: no put begun, no load issued', async () => {
    const store = await openStore();
    const { saved, data } = await savePrompts(store, [2, 2]);
    const conn = new KvConnector({ store, cache: fx.cache });
    const other = new KvConnector({ store, cache: fx.cache });
    const calls = spyLoads(store);
    let puts = 0;
    const beginPut = store.beginPut.bind(store);
    store.beginPut = (...args) => {
      puts++;
      return beginPut(...args);
    };
    const [a, b] = saved.map((s) => conn.lookup(s.tokens)) as [ConnectorRequest, ConnectorRequest];
    const foreign = other.lookup(saved[0]!.tokens);
    const done = conn.lookup(randomTokens(3));
    await conn.requestFinished(done);
    const ok = { request: a, blocks: saved[0]!.dst };
    const bad: [unknown, string][] = [
      [undefined, 'ERR_INVALID_ARG'],
      [{ request: a, blocks: saved[0]!.dst }, 'ERR_INVALID_ARG'],
      [[ok, null], 'ERR_INVALID_ARG'],
      [[ok, { request: b, blocks: saved[1]!.dst, extra: 1 }], 'ERR_INVALID_ARG'],
      [[ok, { request: b, blocks: saved[1]!.dst, options: { tokens: 3 } }], 'ERR_INVALID_ARG'],
      [[ok, { request: b, blocks: saved[1]!.dst, options: { tokens: CHUNK * 4 } }], 'ERR_INVALID_ARG'],
      [[ok, { request: b, blocks: saved[1]!.dst, options: { engine: 'fast' } }], 'ERR_INVALID_ARG'],
      [[ok, { request: b, blocks: saved[1]!.dst, options: { speed: 1 } }], 'ERR_INVALID_ARG'],
      [[ok, { request: b, blocks: saved[1]!.dst.slice(0, 3) }], 'ERR_INVALID_ARG'],
      [[ok, { request: b, blocks: [1, 2, 3, SPEC.numBlocks] }], 'ERR_OUT_OF_RANGE'],
      [[ok, { request: b, blocks: [1, 2, 3.5, 4] }], 'ERR_INVALID_ARG'],
      [[ok, { request: b }], 'ERR_INVALID_ARG'],
      [[ok, ok], 'ERR_INVALID_ARG'],
      [[ok, { request: foreign, blocks: saved[1]!.dst }], 'ERR_INVALID_ARG'],
      [[ok, { request: done, blocks: [] }], 'ERR_INVALID_ARG'],
      [[ok, { request: {}, blocks: [] }], 'ERR_INVALID_ARG'],
    ];
    for (const [i, [items, code]] of bad.entries()) {
      expect(() => conn.startLoads(items as never), `bad[${i}]`).toThrow(expect.objectContaining({ code }));
    }
    expect(calls).toEqual([]);
    expect(puts).toBe(0);
    expect(conn.stats()).toEqual({ loadCalls: 0, loadRequests: 0 });
    expect(conn.finished()).toEqual([]);
    // Nothing was started: the same requests load now, exactly.
    conn.startLoads([ok, { request: b, blocks: saved[1]!.dst }]);
    expect(puts).toBe(2);
    expect(calls).toEqual(Array(SPEC.layers).fill(2));
    waitAll(conn, [a, b]);
    await fx.stream.record().done();
    const now = await readCache(fx.dev, fx.stream, fx.cache);
    expectLoaded(now, data, saved[0]!, 2);
    expectLoaded(now, data, saved[1]!, 2);
    // Started once, a request is refused in a later call, and the call with it changes nothing.
    const c = conn.lookup(saved[1]!.tokens);
    expect(() => conn.startLoads([{ request: c, blocks: saved[1]!.dst }, ok])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(puts).toBe(2);
    conn.startLoads([{ request: c, blocks: saved[1]!.dst }]);
    expect(await conn.loadResult(c)).toEqual({ ok: true, validTokens: CHUNK * 2 });
    await conn.dispose();
    expect(() => conn.startLoads([])).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    await other.dispose();
    await store.close();
  });
});
