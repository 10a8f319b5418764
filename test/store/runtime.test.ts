// The store as a runtime drives it: batched loads of several requests with
// failures mid-prefill, per-request outcomes, puts after a failed load, whole
// block tables, tenants and the stats a runtime reads (issue #12).
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { open as openIndex } from 'lmdb';

import { KvStore, STORE_FORMAT_VERSION } from '../../src/index.js';
import { dropDram, expireLeases, nvmeLocation } from '../../src/store/testing.js';
import { backends, randomBytes } from '../helpers/backends.js';
import { CHUNK, SPEC, fillCache, pieceOf, randomBlocks, randomTokens, readCache } from '../helpers/store.js';
import { corruptExtent, storeSuite } from '../helpers/suite.js';

const BPC = CHUNK / SPEC.blockTokens;

describe.each(backends)('KvStore as a runtime uses it, on $backend', ({ backend, skip }) => {
  const fx = storeSuite(backend, skip, 'kvflow-store-runtime-');
  const { storeDir, openStore } = fx;

  /** Whether blocks `to` of dst hold src's `from` blocks (or zeros where `from` is null) in `layers`. */
  function expectBlocks(got: Uint8Array[], to: readonly number[], from: readonly (number | null)[], layers: readonly number[], what: string): void {
    for (const layer of layers) {
      for (let i = 0; i < to.length; i++) {
        for (const kv of [0, 1] as const) {
          const have = pieceOf(fx.dst, got, layer, kv, to[i]!);
          const f = from[i];
          if (f === null || f === undefined) expect(have.every((x) => x === 0), `${what}: layer ${layer} block ${i} kv ${kv} zeros`).toBe(true);
          else expect(Buffer.compare(have, pieceOf(fx.src, fx.srcData, layer, kv, f)), `${what}: layer ${layer} block ${i} kv ${kv}`).toBe(0);
        }
      }
    }
  }


  it.skipIf(skip)('a checksum failure on layer 0 of one request in a batched load: later layers never throw, the other request loads exactly, each hit settles with its own outcome', async () => {
    const dir = storeDir();
    const a = randomTokens(CHUNK * 3);
    const b = randomTokens(CHUNK * 2);
    const from = randomBlocks(5 * BPC, SPEC.numBlocks);
    const fa = from.slice(0, 3 * BPC);
    const fb = from.slice(3 * BPC);
    let store = await openStore(dir);
    await store.put(a, fx.src, fa, fx.stream, { durable: true });
    await store.put(b, fx.src, fb, fx.stream, { durable: true });
    const loc = nvmeLocation(store, store.keys(a)[1]!)!;
    await store.close();
    corruptExtent(loc, store.extentBytes, 0);

    store = await openStore(dir);
    const ha = store.lookup(a);
    const hb = store.lookup(b);
    expect([ha.nvme, hb.nvme]).toEqual([3, 2]);
    const to = randomBlocks(5 * BPC, SPEC.numBlocks);
    await fillCache(fx.dev, fx.stream, fx.dst, fx.dst.buffers.map((x) => randomBytes(x.byteLength)));
    const chunks = [...ha.chunks, ...hb.chunks];
    const e0 = store.loadLayer(chunks, 0, fx.dst, to, fx.stream);
    await expect(e0.done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
    // Each request's outcome, without store.flush().
    expect(await ha.settled()).toEqual({ ok: false, failed: [1], validTokens: CHUNK, codes: { 1: 'ERR_CHECKSUM' } });
    expect(await hb.settled()).toEqual({ ok: true, failed: [], validTokens: 2 * CHUNK, codes: {} });
    // Whether or not the bad chunk's drop from the index has landed, later layers load (never a throw).
    await store.flush();
    const later = [1, 2].map((layer) => store.loadLayer(chunks, layer, fx.dst, to, fx.stream));
    for (const e of later) await expect(e.done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
    expect(await hb.settled()).toMatchObject({ ok: true, failed: [] });
    expect(ha.failed).toEqual([1]);
    expect(ha.validTokens).toBe(CHUNK);
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    // A's chunk 1 holds zeros in every layer; A's other chunks and all of B are exact.
    const want = [...fa.slice(0, BPC), ...fa.slice(BPC, 2 * BPC).map(() => null), ...fa.slice(2 * BPC), ...fb];
    expectBlocks(got, to, want, [0, 1, 2], 'batched');
    expect(store.stats().local.checksumFailures).toBe(1);
    expect(store.stats().hits).toMatchObject({ nvmeTokens: 5 * CHUNK, failedTokens: CHUNK });
    ha.release();
    hb.release();
    await store.close();
  });

  it.skipIf(skip)('after a failed load the runtime learns which tokens to recompute; once it computed and put those layers again, the cache is exact and the suffix is committed', async () => {
    const dir = storeDir();
    const tokens = randomTokens(CHUNK * 5);
    const from = randomBlocks(5 * BPC, SPEC.numBlocks);
    let store = await openStore(dir);
    await store.put(tokens.slice(0, 3 * CHUNK), fx.src, from.slice(0, 3 * BPC), fx.stream, { durable: true });
    const loc = nvmeLocation(store, store.keys(tokens)[1]!)!;
    await store.close();
    corruptExtent(loc, store.extentBytes, 0);
    store = await openStore(dir);
    const computeStream = fx.dev.createStream();
    const save = fx.dev.createStream();
    const table = randomBlocks(5 * BPC, SPEC.numBlocks);
    const hit = store.lookup(tokens);
    expect(hit.tokens).toBe(3 * CHUNK);
    // Call order: the put is begun before the loads.
    const put = store.beginPut(tokens);
    expect(put.chunks.map((c) => c.index)).toEqual([3, 4]);
    const suffix = hit.tokens / CHUNK * BPC;
    for (let layer = 0; layer < SPEC.layers; layer++) {
      computeStream.waitEvent(store.loadLayer(hit.chunks, layer, fx.dst, table, fx.stream));
      fx.compute(computeStream, layer, from.slice(suffix), table.slice(suffix));
      save.waitEvent(computeStream.record());
      store.putLayer(put, layer, fx.dst, table, save);
    }
    const outcome = await hit.settled();
    expect(outcome).toMatchObject({ ok: false, failed: [1], validTokens: CHUNK });
    // Compute again from validTokens (chunks 1 to 4) and put every layer again, on a clean stream.
    const redo = outcome.validTokens / CHUNK * BPC;
    for (let layer = 0; layer < SPEC.layers; layer++) {
      fx.compute(computeStream, layer, from.slice(redo), table.slice(redo));
      save.waitEvent(computeStream.record());
      store.putLayer(put, layer, fx.dst, table, save);
    }
    expect(await store.commit(put)).toMatchObject({ added: 2 });
    hit.release();
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    expectBlocks(got, table, from, [0, 1, 2], 'recomputed');
    // The bad chunk is put again from the recomputed cache: the whole prompt is cached and exact.
    await store.flush();
    expect(await store.put(tokens, fx.dst, table, fx.stream)).toMatchObject({ added: 1 });
    const again = store.lookup(tokens);
    expect(again.tokens).toBe(5 * CHUNK);
    const to = randomBlocks(5 * BPC, SPEC.numBlocks);
    for (let layer = 0; layer < SPEC.layers; layer++) store.loadLayer(again.chunks, layer, fx.dst, to, fx.stream);
    expect(await again.settled()).toMatchObject({ ok: true });
    again.release();
    expectBlocks(await readCache(fx.dev, fx.stream, fx.dst), to, from, [0, 1, 2], 'reloaded');
    await computeStream.dispose();
    await save.dispose();
    await store.close();
  });

  it.skipIf(skip)('a put never saves KV computed over an evicted chunk\'s zeros: commit rejects with ERR_EVICTED unless the layers were put again', async () => {
    const dir = storeDir();
    const tokens = randomTokens(CHUNK * 3);
    const from = randomBlocks(3 * BPC, SPEC.numBlocks);
    const store = await openStore(dir, { nvmeBytes: 3 * 12288 });
    await store.put(tokens.slice(0, 2 * CHUNK), fx.src, from.slice(0, 2 * BPC), fx.stream, { durable: true });
    dropDram(store);
    const hit = store.lookup(tokens);
    expect(hit.nvme).toBe(2);
    const put = store.beginPut(tokens);
    // Its lease expired; another store instance on the directory (as another process would) evicts the prefix's tail.
    expireLeases(store);
    const other = await openStore(dir, { nvmeBytes: 3 * 12288 });
    await other.put(randomTokens(2 * CHUNK), fx.src, from.slice(0, 2 * BPC), fx.stream, { durable: true });
    await other.close();
    const table = randomBlocks(3 * BPC, SPEC.numBlocks);
    const save = fx.dev.createStream();
    const loads = [];
    for (let layer = 0; layer < SPEC.layers; layer++) {
      const loaded = store.loadLayer(hit.chunks, layer, fx.dst, table, fx.stream);
      loads.push(loaded);
      save.waitEvent(loaded);
      fx.compute(save, layer, from.slice(2 * BPC), table.slice(2 * BPC));
      store.putLayer(put, layer, fx.dst, table, save);
    }
    for (const e of loads) await expect(e.done()).rejects.toMatchObject({ code: 'ERR_EVICTED' });
    expect(await hit.settled()).toEqual({ ok: false, failed: [1], validTokens: CHUNK, codes: { 1: 'ERR_EVICTED' } });
    const puts = store.stats().local.puts;
    await expect(store.commit(put)).rejects.toMatchObject({ code: 'ERR_EVICTED' });
    expect(store.stats().local.puts).toBe(puts);
    hit.release();
    await save.dispose();
    await store.close();
  });

  it.skipIf(skip)('runtimes\' whole block tables (more blocks, a partial last one) go to put, putLayer and loadLayer; several requests load in one call with a table each', async () => {
    const store = await openStore(storeDir());
    // 2 chunks and 5 more tokens: 4 + 2 blocks, the last one partial.
    const a = randomTokens(2 * CHUNK + 5);
    const b = randomTokens(3 * CHUNK + 1);
    const all = randomBlocks(13 * BPC, SPEC.numBlocks);
    const ta = all.slice(0, 3 * BPC);
    const tb = all.slice(3 * BPC, 7 * BPC);
    expect((await store.put(a, fx.src, ta, fx.stream)).added).toBe(2);
    const pb = store.beginPut(b);
    for (let layer = 0; layer < SPEC.layers; layer++) store.putLayer(pb, layer, fx.src, tb, fx.stream);
    expect((await store.commit(pb)).added).toBe(3);
    const ha = store.lookup(a);
    const hb = store.lookup(b);
    const da = all.slice(7 * BPC, 9 * BPC + 1);
    const db = all.slice(9 * BPC + 1);
    const poison = fx.dst.buffers.map((x) => randomBytes(x.byteLength));
    await fillCache(fx.dev, fx.stream, fx.dst, poison);
    for (let layer = 0; layer < SPEC.layers; layer++) store.loadLayer([ha.chunks, hb.chunks], layer, fx.dst, [da, db], fx.stream);
    expect(await ha.settled()).toMatchObject({ ok: true, validTokens: 2 * CHUNK });
    expect(await hb.settled()).toMatchObject({ ok: true, validTokens: 3 * CHUNK });
    let got = await readCache(fx.dev, fx.stream, fx.dst);
    expectBlocks(got, da.slice(0, 2 * BPC), ta.slice(0, 2 * BPC), [0, 1, 2], 'a');
    expectBlocks(got, db.slice(0, 3 * BPC), tb.slice(0, 3 * BPC), [0, 1, 2], 'b');
    // The blocks past the prefix were left alone.
    for (const extra of [da[2 * BPC]!, db[3 * BPC]!]) {
      expect(Buffer.compare(pieceOf(fx.dst, got, 1, 0, extra), pieceOf(fx.dst, poison, 1, 0, extra))).toBe(0);
    }
    // One request's whole table, with the flat form (a DRAM plan of its prefix).
    const dc = randomBlocks(3 * BPC, SPEC.numBlocks);
    for (let layer = 0; layer < SPEC.layers; layer++) store.loadLayer(ha.chunks, layer, fx.dst, dc, fx.stream);
    expect(await ha.settled()).toMatchObject({ ok: true });
    got = await readCache(fx.dev, fx.stream, fx.dst);
    expectBlocks(got, dc.slice(0, 2 * BPC), ta.slice(0, 2 * BPC), [0, 1, 2], 'flat');
    // A table shorter than the chunks is still an error, as is one table for two requests.
    expect(() => store.loadLayer(ha.chunks, 0, fx.dst, dc.slice(0, 3), fx.stream)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => store.loadLayer([ha.chunks, hb.chunks], 0, fx.dst, [da], fx.stream)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    ha.release();
    hb.release();
    await store.close();
  });

  it.skipIf(skip)('two tenants with identical token streams share one store and its DRAM budget; neither hits the other\'s prefixes, in DRAM or on NVMe', async () => {
    const dir = storeDir();
    const tokens = randomTokens(3 * CHUNK);
    const all = randomBlocks(9 * BPC, SPEC.numBlocks);
    const tables = { a: all.slice(0, 3 * BPC), b: all.slice(3 * BPC, 6 * BPC) };
    let store = await openStore(dir, { dramBytes: 6 * 12288 });
    expect(store.keys(tokens, { tenant: 'a' })[0]).not.toBe(store.keys(tokens, { tenant: 'b' })[0]);
    expect(store.keys(tokens, { tenant: '' })).toEqual(store.keys(tokens));
    expect(store.keys(tokens)[0]).not.toBe(store.keys(tokens, { tenant: 'a' })[0]);
    expect((await store.put(tokens, fx.src, tables.a, fx.stream, { tenant: 'a' })).added).toBe(3);
    expect(store.lookup(tokens, { tenant: 'b' }).chunks).toHaveLength(0);
    expect(store.lookup(tokens).chunks).toHaveLength(0);
    // b's identical prompt is new to b: its own chunks, with b's bytes.
    const pb = store.beginPut(tokens, { tenant: 'b' });
    expect(pb.chunks).toHaveLength(3);
    for (let layer = 0; layer < SPEC.layers; layer++) store.putLayer(pb, layer, fx.src, tables.b, fx.stream);
    expect((await store.commit(pb)).added).toBe(3);
    expect(store.stats().dram.chunks).toBe(6); // one DRAM budget for both
    const check = async (s: KvStore, tenant: 'a' | 'b', tier: 'dram' | 'nvme'): Promise<void> => {
      const hit = s.lookup(tokens, { tenant });
      expect(hit.chunks.map((c) => c.tier)).toEqual([tier, tier, tier]);
      const to = all.slice(6 * BPC);
      for (let layer = 0; layer < SPEC.layers; layer++) s.loadLayer(hit.chunks, layer, fx.dst, to, fx.stream);
      expect(await hit.settled()).toMatchObject({ ok: true });
      hit.release();
      expectBlocks(await readCache(fx.dev, fx.stream, fx.dst), to, tables[tenant], [0, 1, 2], `${tenant} ${tier}`);
    };
    await check(store, 'a', 'dram');
    await check(store, 'b', 'dram');
    // Durable for both, then a restart: each finds its own chunks on NVMe.
    await store.put(tokens, fx.src, tables.a, fx.stream, { tenant: 'a', durable: true });
    await store.put(tokens, fx.src, tables.b, fx.stream, { tenant: 'b', durable: true });
    await store.close();
    store = await openStore(dir, { dramBytes: 6 * 12288 });
    expect(store.stats().nvme.chunks).toBe(6);
    await check(store, 'b', 'nvme');
    await check(store, 'a', 'nvme');
    expect(store.lookup(tokens, { tenant: 'c' }).chunks).toHaveLength(0);
    expect(() => store.lookup(tokens, { tenant: 7 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    await store.close();
  });

  it.skipIf(skip)('a directory of another format version is refused with ERR_UNSUPPORTED naming both versions', async () => {
    const dir = storeDir();
    const store = await openStore(dir);
    await store.close();
    const root = openIndex({ path: path.join(dir, 'index.mdb'), noSubdir: true, maxDbs: 12 });
    const meta = root.openDB<Record<string, number>, string>({ name: 'meta' });
    const geometry = meta.get('geometry')!;
    expect(geometry.version).toBe(STORE_FORMAT_VERSION);
    await meta.put('geometry', { ...geometry, version: 1 });
    await root.close();
    const err = await openStore(dir).then(() => undefined, (e: unknown) => e);
    expect(err).toMatchObject({ code: 'ERR_UNSUPPORTED' });
    expect((err as Error).message).toMatch(new RegExp(`format version 1; this kvflow reads version ${STORE_FORMAT_VERSION}`));
  });

  it.skipIf(skip)('stats give hit tokens per tier by name; a durable put of chunks in DRAM only says it made them durable', async () => {
    const store = await openStore(storeDir(), { admit: 'never' });
    const tokens = randomTokens(4 * CHUNK);
    const table = randomBlocks(4 * BPC, SPEC.numBlocks);
    await store.put(tokens.slice(0, 2 * CHUNK), fx.src, table, fx.stream, { durable: true });
    dropDram(store);
    // Chunks 0-1 on NVMe only, chunk 2 in DRAM only, chunk 3 nowhere.
    const keys = store.keys(tokens);
    expect(await store.put(tokens.slice(0, 3 * CHUNK), fx.src, table, fx.stream)).toEqual({ added: 1, keys: [keys[2]], durable: [] });
    const hit = store.lookup(tokens);
    expect(hit.chunks.map((c) => c.tier)).toEqual(['nvme', 'nvme', 'dram']);
    hit.release();
    const stats = store.stats();
    expect(stats.hits).toEqual({ lookups: 1, dramTokens: CHUNK, nvmeTokens: 2 * CHUNK, missTokens: CHUNK, failedTokens: 0 });
    expect(stats.local.lookups).toBe(1);
    expect(stats.nvme.chunks).toBe(2);
    // The durable put adds chunk 3 and writes chunk 2, which was in DRAM only.
    const r = await store.put(tokens, fx.src, table, fx.stream, { durable: true });
    expect(r.added).toBe(1);
    expect(r.keys).toEqual([keys[3]]);
    expect([...r.durable].sort()).toEqual([keys[2], keys[3]].sort());
    expect(store.stats().madeDurable).toBe(1);
    expect(store.stats().nvme.chunks).toBe(4);
    // Again: everything is durable already.
    expect(await store.put(tokens, fx.src, table, fx.stream, { durable: true })).toEqual({ added: 0, keys: [], durable: [] });
    await store.close();
  });
});
