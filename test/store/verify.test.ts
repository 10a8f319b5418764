// store.verify(): the scrub reads every chunk's every layer in both tiers,
// reports exactly the extents that fail their checksum, drops those chunks
// and leaves every other chunk loadable and byte-exact (issue #12 item 9).

import { describe, expect, it } from 'vitest';

import { KvStore, type VerifyProgress } from '../../src/index.js';
import { dramRecord, dropDram, indexProblems, nvmeLocation } from '../../src/store/testing.js';
import { backends, randomBytes } from '../helpers/backends.js';
import { CHUNK, SPEC, fillCache, pieceOf, randomBlocks, randomTokens, readCache } from '../helpers/store.js';
import { corruptExtent, storeSuite } from '../helpers/suite.js';

const BPC = CHUNK / SPEC.blockTokens;

describe.each(backends)('KvStore.verify on $backend', ({ backend, skip }) => {
  const fx = storeSuite(backend, skip, 'kvflow-store-verify-');
  const { storeDir, openStore } = fx;

  /** Loads the whole hit of `tokens` into fresh blocks and checks it holds src's `from` blocks in every layer; returns the hit's tiers. */
  async function expectExact(store: KvStore, tokens: number[], from: readonly number[]): Promise<string[]> {
    const hit = store.lookup(tokens);
    const to = randomBlocks(hit.chunks.length * BPC, SPEC.numBlocks);
    await fillCache(fx.dev, fx.stream, fx.dst, fx.dst.buffers.map((b) => randomBytes(b.byteLength)));
    for (let layer = 0; layer < SPEC.layers; layer++) store.loadLayer(hit.chunks, layer, fx.dst, to, fx.stream);
    expect(await hit.settled()).toMatchObject({ ok: true });
    const tiers = hit.chunks.map((c) => c.tier);
    hit.release();
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    for (let layer = 0; layer < SPEC.layers; layer++) {
      for (let i = 0; i < to.length; i++) {
        for (const kv of [0, 1] as const) {
          expect(Buffer.compare(pieceOf(fx.dst, got, layer, kv, to[i]!), pieceOf(fx.src, fx.srcData, layer, kv, from[i]!)), `layer ${layer} block ${i} kv ${kv}`).toBe(0);
        }
      }
    }
    return tiers;
  }

  it.skipIf(skip)('finds exactly the NVMe extent whose bytes were flipped, drops that chunk only, and every other chunk stays loadable and exact; progress grows to the totals', async () => {
    const dir = storeDir();
    const a = randomTokens(3 * CHUNK);
    const b = randomTokens(2 * CHUNK);
    const blocks = randomBlocks(5 * BPC, SPEC.numBlocks);
    const fa = blocks.slice(0, 3 * BPC);
    const fb = blocks.slice(3 * BPC);
    let store = await openStore(dir);
    await store.put(a, fx.src, fa, fx.stream, { durable: true });
    await store.put(b, fx.src, fb, fx.stream, { durable: true });
    const bad = store.keys(a)[1]!;
    const loc = nvmeLocation(store, bad)!;
    await store.close();
    corruptExtent(loc, store.extentBytes, 2);

    store = await openStore(dir);
    // A hit of b is leased and loading while the scrub runs.
    const hb = store.lookup(b);
    const to = randomBlocks(2 * BPC, SPEC.numBlocks);
    for (let layer = 0; layer < SPEC.layers; layer++) store.loadLayer(hb.chunks, layer, fx.dst, to, fx.stream);
    const progress: VerifyProgress[] = [];
    const report = await store.verify({ onProgress: (p) => progress.push(p) });
    expect(await hb.settled()).toMatchObject({ ok: true });
    hb.release();
    expect(report.bad).toEqual([{ key: bad, layer: 2, tier: 'nvme', code: 'ERR_CHECKSUM' }]);
    expect(report.dropped).toBe(1);
    expect(report.chunks).toBe(5);
    expect(report.layers).toBe(5 * SPEC.layers);
    expect(report.bytes).toBe(5 * store.recordBytes);
    expect(report.skipped).toBe(0);
    // Progress: one call per chunk, counts that only grow, ending at the totals.
    expect(progress).toHaveLength(5);
    for (let i = 0; i < progress.length; i++) {
      expect(progress[i]!.chunks).toBe(i + 1);
      if (i > 0) expect(progress[i]!.bytes).toBeGreaterThan(progress[i - 1]!.bytes);
      expect(progress[i]!.totalChunks).toBe(5);
    }
    expect(progress.at(-1)).toEqual({ chunks: 5, totalChunks: 5, bytes: 5 * store.recordBytes, totalBytes: 5 * store.recordBytes });
    // The bad chunk left the index; a lookup stops before it; everything else is exact.
    expect(nvmeLocation(store, bad)).toBeUndefined();
    expect(store.stats().nvme.chunks).toBe(4);
    expect(indexProblems(store)).toEqual([]);
    const cut = store.lookup(a);
    expect(cut.chunks.map((c) => c.index)).toEqual([0]);
    cut.release();
    expect(await expectExact(store, a, fa)).toEqual(['nvme']);
    expect(await expectExact(store, b, fb)).toEqual(['dram', 'dram']); // promoted by the load during the scrub
    dropDram(store);
    expect(await expectExact(store, b, fb)).toEqual(['nvme', 'nvme']);
    // A second pass finds nothing more.
    const again = await store.verify();
    expect(again).toMatchObject({ bad: [], dropped: 0 });
    expect(store.stats().local.checksumFailures).toBe(1);
    await store.close();
  });

  it.skipIf(skip)('a clean store reports nothing bad, counting DRAM chunks of known checksums and NVMe chunks; DRAM chunks never written or read from NVMe are unchecked', async () => {
    const store = await openStore(undefined, { admit: 'never' });
    const a = randomTokens(2 * CHUNK);
    const b = randomTokens(3 * CHUNK);
    const table = randomBlocks(3 * BPC, SPEC.numBlocks);
    await store.put(a, fx.src, table, fx.stream, { durable: true }); // DRAM (checksums of its write) and NVMe
    await store.put(b, fx.src, table, fx.stream); // DRAM only: no checksum known
    const report = await store.verify();
    expect(report).toEqual({ chunks: 4, layers: 4 * SPEC.layers, bytes: 4 * store.recordBytes, bad: [], dropped: 0, skipped: 0, unchecked: 3 });
    expect(await store.verify({ drop: false })).toEqual(report);
    // An empty store.
    const empty = await openStore();
    expect(await empty.verify()).toEqual({ chunks: 0, layers: 0, bytes: 0, bad: [], dropped: 0, skipped: 0, unchecked: 0 });
    await empty.close();
    await store.close();
  });

  it.skipIf(skip)('a flipped byte in a DRAM slot: the DRAM copy is reported and dropped, and the chunk is loaded exact from NVMe', async () => {
    const store = await openStore();
    const a = randomTokens(2 * CHUNK);
    const table = randomBlocks(2 * BPC, SPEC.numBlocks);
    await store.put(a, fx.src, table, fx.stream, { durable: true });
    const key = store.keys(a)[0]!;
    dramRecord(store, key)![store.extentBytes + 100]! ^= 0x01;
    // Reported only, then dropped.
    const seen = await store.verify({ drop: false });
    expect(seen.bad).toEqual([{ key, layer: 1, tier: 'dram', code: 'ERR_CHECKSUM' }]);
    expect(seen.dropped).toBe(0);
    expect(dramRecord(store, key)).toBeDefined();
    const report = await store.verify();
    expect(report.bad).toEqual([{ key, layer: 1, tier: 'dram', code: 'ERR_CHECKSUM' }]);
    expect(report.dropped).toBe(1);
    expect(dramRecord(store, key)).toBeUndefined();
    expect(await expectExact(store, a, table)).toEqual(['nvme', 'dram']);
    // Promoted again from NVMe (with the checksums it was read against): clean now.
    expect(await store.verify()).toMatchObject({ bad: [], chunks: 4, unchecked: 0 });
    await store.close();
  });

  it.skipIf(skip)('an aborted verify rejects with ERR_ABORTED; one aborted before it starts changes nothing; bad options are refused', async () => {
    const dir = storeDir();
    let store = await openStore(dir);
    const tokens = randomTokens(4 * CHUNK);
    const table = randomBlocks(4 * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, table, fx.stream, { durable: true });
    // The chunk the scrub reaches last (the index is read in key order).
    const bad = [...store.keys(tokens)].sort().at(-1)!;
    const loc = nvmeLocation(store, bad)!;
    await store.close();
    corruptExtent(loc, store.extentBytes, 0);
    store = await openStore(dir);
    const before = new AbortController();
    before.abort();
    await expect(store.verify({ signal: before.signal })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    // Aborted after the first chunk: the bad (last) chunk is never reached.
    const ac = new AbortController();
    let calls = 0;
    await expect(store.verify({ signal: ac.signal, onProgress: () => (calls++, ac.abort()) })).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    expect(calls).toBeLessThan(4);
    expect(nvmeLocation(store, bad)).toBeDefined();
    for (const options of [{ drop: 1 }, { signal: {} }, { onProgress: 3 }, { dorp: true }, 5]) {
      await expect(store.verify(options as never)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    }
    expect(nvmeLocation(store, bad)).toBeDefined();
    expect((await store.verify()).bad).toEqual([{ key: bad, layer: 0, tier: 'nvme', code: 'ERR_CHECKSUM' }]);
    // A scrub under way when the store closes stops and rejects; close does not wait for it.
    await store.put(randomTokens(4 * CHUNK), fx.src, table, fx.stream, { durable: true });
    const running = store.verify().then(() => undefined, (e: unknown) => e);
    await store.close();
    expect(await running).toMatchObject({ code: 'ERR_DISPOSED' });
    await expect(store.verify()).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
  });
});
