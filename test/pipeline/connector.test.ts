import { describe, expect, it } from 'vitest';

import { KvConnector, KvStore } from '../../src/index.js';
import { nvmeLocation } from '../../src/store/testing.js';
import { backends } from '../helpers/backends.js';
import { PatternCompute, expectPattern } from '../helpers/pattern.js';
import { FP, failNextLoad, randomBlocks, randomTokens } from '../helpers/store.js';
import { flipBytes, pipelineSuite } from '../helpers/suite.js';

const SPEC = { layers: 3, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 256 };
const CHUNK = 8;

describe.each(backends)('KvConnector on $backend', ({ backend, skip }) => {
  const fx = pipelineSuite(backend, skip, { prefix: 'kvflow-connector-', spec: SPEC, chunk: CHUNK, nvmeBytes: 128 * 8192, dramBytes: 64 * 8192 });
  const { layout, openStore } = fx;

  /** What a runtime's forward does with the connector: wait per layer on the device, compute, save. */
  function forward(conn: KvConnector, req: ReturnType<KvConnector['lookup']>, blocks: number[], from: number, pattern: PatternCompute): void {
    const fn = pattern.fn();
    for (let l = 0; l < SPEC.layers; l++) {
      conn.waitForLayerLoad(req, l, fx.stream);
      fn(l, { stream: fx.stream, tokens: req.tokens, blocks, computeFrom: from, plan: undefined as never, attempt: 0 });
      conn.saveLayer(req, l, fx.stream, blocks);
    }
  }

  it.skipIf(skip)('lookup, startLoad, per-layer waits, saves, waitForSave, requestFinished: the cache is exact', async () => {
    const store = await openStore();
    const conn = new KvConnector({ store, cache: fx.cache });
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 4 + 5);
    // Turn 1: nothing cached; compute everything and save.
    const first = conn.lookup(prompt.slice(0, CHUNK * 3));
    expect(first.loadableTokens).toBe(0);
    const b1 = randomBlocks(6, SPEC.numBlocks);
    conn.startLoad(first, b1);
    forward(conn, first, b1, 0, pattern);
    expect(await conn.waitForSave(first)).toEqual({ saved: 3 });
    await conn.requestFinished(first);
    await conn.requestFinished(first); // idempotent
    // Turn 2: the first three chunks load, the rest computes.
    const req = conn.lookup(prompt);
    expect(req.loadableTokens).toBe(CHUNK * 3);
    const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
    conn.startLoad(req, blocks);
    forward(conn, req, blocks, req.loadableTokens, pattern);
    expect(await conn.waitForSave(req)).toEqual({ saved: 1 });
    expect(await conn.loadResult(req)).toEqual({ ok: true, validTokens: CHUNK * 3 });
    expect(conn.finished().map((f) => [f.request.id, f.outcome.ok])).toEqual([[first.id, true], [req.id, true]]);
    await conn.requestFinished(req);
    await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
    await conn.dispose();
    await pattern.dispose();
    await store.close();
  });

  it.skipIf(skip)('the last token is never counted loadable, even when every chunk is cached', async () => {
    const store = await openStore();
    const conn = new KvConnector({ store, cache: fx.cache });
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 2);
    const r = conn.lookup(prompt);
    const b = randomBlocks(4, SPEC.numBlocks);
    conn.startLoad(r, b);
    forward(conn, r, b, 0, pattern);
    await conn.waitForSave(r);
    await conn.requestFinished(r);
    const again = conn.lookup(prompt);
    expect(again.loadableTokens).toBe(CHUNK);
    await conn.dispose();
    await pattern.dispose();
    await store.close();
  });

  it.skipIf(skip)('a failed load is reported for its request only, with the tokens still good; the runtime recomputes and stays exact', async () => {
    const store = await openStore();
    const conn = new KvConnector({ store, cache: fx.cache });
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const a = randomTokens(CHUNK * 3);
    const c = randomTokens(CHUNK * 3);
    for (const t of [a, c]) {
      const r = conn.lookup(t);
      const b = randomBlocks(6, SPEC.numBlocks);
      conn.startLoad(r, b);
      forward(conn, r, b, 0, pattern);
      await conn.waitForSave(r);
      await conn.requestFinished(r);
    }
    const blocks = randomBlocks(12, SPEC.numBlocks);
    const ra = conn.lookup(a);
    const rc = conn.lookup(c);
    // The load of request a's first layer fails (an IO error on its stream).
    failNextLoad(store);
    conn.startLoad(ra, blocks.slice(0, 6));
    conn.startLoad(rc, blocks.slice(6));
    const oa = await conn.loadResult(ra);
    const oc = await conn.loadResult(rc);
    expect(oa).toMatchObject({ ok: false, validTokens: 0, code: 'ERR_IO' });
    expect(oc).toEqual({ ok: true, validTokens: CHUNK * 2 });
    // The runtime recomputes request a from its first bad token and c's suffix.
    forward(conn, ra, blocks.slice(0, 6), oa.validTokens, pattern);
    forward(conn, rc, blocks.slice(6), oc.validTokens, pattern);
    await conn.waitForSave(ra);
    await conn.waitForSave(rc);
    await expectPattern(fx.dev, fx.stream, fx.cache, a, blocks.slice(0, 6));
    await expectPattern(fx.dev, fx.stream, fx.cache, c, blocks.slice(6));
    await conn.dispose();
    await pattern.dispose();
    await store.close();
  });

  it.skipIf(skip)('a save computed before a failed load was known is never committed (the put begins with the loads)', async () => {
    let store = await openStore();
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 4);
    const b0 = randomBlocks(12, SPEC.numBlocks);
    let conn = new KvConnector({ store, cache: fx.cache });
    const first = conn.lookup(prompt.slice(0, CHUNK * 3 + 1));
    conn.startLoad(first, b0);
    forward(conn, first, b0, 0, pattern);
    await conn.waitForSave(first);
    await conn.requestFinished(first);
    await conn.dispose();
    // Durable on NVMe, then the DRAM copies dropped: the next loads read the slab.
    await store.put(prompt.slice(0, CHUNK * 3), fx.cache, b0, fx.stream, { durable: true });
    const loc = nvmeLocation(store, store.keys(prompt)[1]!)!;
    const dir = store.dir;
    await store.close();
    flipBytes(loc.file.path, loc.offset + 10, 8); // layer 0 of chunk 1
    store = await KvStore.open({ device: fx.dev, layout, fingerprint: FP, dir, chunkTokens: CHUNK });
    conn = new KvConnector({ store, cache: fx.cache });
    const req = conn.lookup(prompt);
    expect(req.loadableTokens).toBe(CHUNK * 3);
    const blocks = randomBlocks(8, SPEC.numBlocks);
    conn.startLoad(req, blocks);
    // The runtime computes and saves before it learns of the failure.
    forward(conn, req, blocks, req.loadableTokens, pattern);
    await expect(conn.waitForSave(req)).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
    expect(await conn.loadResult(req)).toMatchObject({ ok: false, validTokens: CHUNK, code: 'ERR_CHECKSUM' });
    await conn.requestFinished(req);
    // Chunk 3 (computed over chunk 1's zeros) was not saved; chunk 1 left the index.
    await store.flush();
    const after = store.lookup(prompt);
    expect(after.chunks.length).toBe(1);
    after.release();
    await conn.dispose();
    await pattern.dispose();
    await store.close();
  });

  it.skipIf(skip)('a request finished without waitForSave commits nothing; bad calls carry codes', async () => {
    const store = await openStore();
    const conn = new KvConnector({ store, cache: fx.cache });
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const t = randomTokens(CHUNK * 2);
    const r = conn.lookup(t);
    const b = randomBlocks(4, SPEC.numBlocks);
    expect(() => conn.startLoad(r, b, { tokens: CHUNK })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    conn.startLoad(r, b);
    expect(() => conn.startLoad(r, b)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => conn.waitForLayerLoad(r, 99, fx.stream)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    expect(() => conn.saveLayer(r, 0, fx.stream, [1])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    forward(conn, r, b, 0, pattern);
    await conn.requestFinished(r);
    expect(store.lookup(t).chunks).toHaveLength(0);
    expect(() => conn.lookup([])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    await expect(conn.waitForSave(r)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await conn.dispose();
    expect(() => conn.lookup(t)).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    await pattern.dispose();
    await store.close();
  });
});
