import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { KvflowError, KvStore, KvLayout, STORE_FORMAT_VERSION } from '../../src/index.js';
import { injectIoFault } from '../../src/io/testing.js';
import { dropDram, indexProblems, nvmeLocation, storeFiles } from '../../src/store/testing.js';
import { backends, randomBytes } from '../helpers/backends.js';
import { CHUNK, FP, SPEC, fillCache, pieceOf, randomBlocks, randomTokens, readCache } from '../helpers/store.js';
import { flipBytes, storeSuite } from '../helpers/suite.js';

const layout = new KvLayout(SPEC);
const BPC = CHUNK / SPEC.blockTokens;

describe.each(backends)('KvStore on $backend', ({ backend, skip }) => {
  const fx = storeSuite(backend, skip, 'kvflow-store-test-');
  const { storeDir, openStore } = fx;

  /**
   * A prompt of `chunks` chunks put durably into a fresh store directory,
   * then that store reopened (an empty DRAM tier) with `reopen` options.
   */
  async function storedOnNvme(chunks: number, reopen: Partial<Parameters<typeof KvStore.open>[0]> = {}, create: Partial<Parameters<typeof KvStore.open>[0]> = {}) {
    const dir = storeDir();
    const tokens = randomTokens(CHUNK * chunks);
    const blocks = randomBlocks(chunks * BPC, SPEC.numBlocks);
    const first = await openStore(dir, create);
    await first.put(tokens, fx.src, blocks, fx.stream, { durable: true });
    await first.close();
    return { store: await openStore(dir, reopen), tokens, blocks };
  }

  /** Loads every layer of `hit` into `blocks` of dst and checks the bytes against src's `srcBlocks`. */
  async function loadAndCheck(store: KvStore, tokens: number[], srcBlocks: number[], expectChunks: number): Promise<void> {
    const hit = store.lookup(tokens);
    expect(hit.chunks.length).toBe(expectChunks);
    const blocks = randomBlocks(hit.chunks.length * BPC, SPEC.numBlocks);
    const events = [];
    for (let layer = 0; layer < SPEC.layers; layer++) events.push(store.loadLayer(hit.chunks, layer, fx.dst, blocks, fx.stream));
    await Promise.all(events.map((e) => e.done()));
    hit.release();
    await store.flush(); // promotions and use records settle in the background
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    for (let layer = 0; layer < SPEC.layers; layer++) {
      for (let i = 0; i < blocks.length; i++) {
        for (const kv of [0, 1] as const) {
          const want = pieceOf(fx.src, fx.srcData, layer, kv, srcBlocks[i]!);
          const have = pieceOf(fx.dst, got, layer, kv, blocks[i]!);
          expect(Buffer.compare(want, have), `layer ${layer} block ${i} kv ${kv}`).toBe(0);
        }
      }
    }
  }

  it.skipIf(skip)('keys follow the documented SHA-256 chain and are identical for identical prefixes', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK * 3 + 5);
    const keys = store.keys(tokens);
    expect(keys).toHaveLength(3); // the partial last chunk has no key
    let prev = Buffer.alloc(32);
    const version = Buffer.alloc(4);
    version.writeUInt32LE(STORE_FORMAT_VERSION);
    for (let c = 0; c < 3; c++) {
      const ids = Buffer.alloc(CHUNK * 4);
      for (let t = 0; t < CHUNK; t++) ids.writeUInt32LE(tokens[c * CHUNK + t]!, t * 4);
      prev = createHash('sha256').update(version).update(Buffer.from(store.fingerprint, 'hex')).update(prev).update(ids).digest();
      expect(keys[c]).toBe(prev.toString('hex'));
    }
    const other = await KvStore.open({ device: fx.dev, layout, fingerprint: { ...FP, tenantSalt: 'tenant-b' }, dir: storeDir(), chunkTokens: CHUNK, nvmeBytes: 4 * 12288, dramBytes: 2 * 12288 });
    expect(other.fingerprint).not.toBe(store.fingerprint);
    expect(other.keys(tokens)[0]).not.toBe(keys[0]);
    await other.close();
    await store.close();
  });

  it.skipIf(skip)('put then load from DRAM round-trips every layer into other blocks', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK * 4);
    const blocks = randomBlocks(4 * BPC, SPEC.numBlocks);
    const r = await store.put(tokens, fx.src, blocks, fx.stream);
    expect(r.added).toBe(4);
    const hit = store.lookup(tokens);
    expect([hit.dram, hit.nvme]).toEqual([4, 0]);
    hit.release();
    await loadAndCheck(store, tokens, blocks, 4);
    await store.close();
  });

  it.skipIf(skip)('DRAM loads follow a block table changed in place between layers, and a disposed cache is ERR_DISPOSED', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK * 3);
    const blocks = randomBlocks(3 * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream);
    const hit = store.lookup(tokens);
    expect(hit.dram).toBe(3);
    // One table object, rewritten before every other layer: each layer lands in the table it was called with.
    const table = randomBlocks(3 * BPC, SPEC.numBlocks);
    const used: number[][] = [];
    for (let layer = 0; layer < SPEC.layers; layer++) {
      if (layer % 2 === 1) table.splice(0, table.length, ...randomBlocks(3 * BPC, SPEC.numBlocks));
      used.push([...table]);
      await store.loadLayer(hit.chunks, layer, fx.dst, table, fx.stream).done();
      const got = await readCache(fx.dev, fx.stream, fx.dst);
      for (let i = 0; i < table.length; i++) {
        for (const kv of [0, 1] as const) {
          expect(Buffer.compare(pieceOf(fx.src, fx.srcData, layer, kv, blocks[i]!), pieceOf(fx.dst, got, layer, kv, table[i]!)), `layer ${layer} block ${i} kv ${kv}`).toBe(0);
        }
      }
    }
    expect(new Set(used.map((u) => u.join())).size).toBeGreaterThan(1);
    // Layer 0 planned every layer; the table changed at layer 1, so later layers took the general path.
    const local = store.stats().local;
    expect(local.dramPlans).toBe(1);
    expect(local.dramPlannedLayers).toBe(1);
    // A second lookup of the same prompt with one table reuses one plan for every layer.
    const again = store.lookup(tokens);
    for (let layer = 0; layer < SPEC.layers; layer++) await store.loadLayer(again.chunks, layer, fx.dst, table, fx.stream).done();
    again.release();
    expect(store.stats().local.dramPlans).toBe(2);
    expect(store.stats().local.dramPlannedLayers).toBe(1 + SPEC.layers);
    // A bad block table after a plan exists is still a typed error.
    expect(() => store.loadLayer(hit.chunks, 0, fx.dst, null as never, fx.stream)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    const other = fx.dev.allocKvCache(layout);
    await store.loadLayer(hit.chunks, 0, other, table, fx.stream).done();
    await other.dispose();
    expect(() => store.loadLayer(hit.chunks, 1, other, table, fx.stream)).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    hit.release();
    await store.close();
  });

  it.skipIf(skip).each(['dma', 'kernel'] as const)('pagedEngine %s: puts and loads from DRAM and NVMe round-trip', async (pagedEngine) => {
    const { store, tokens, blocks } = await storedOnNvme(4, { pagedEngine }, { pagedEngine });
    await loadAndCheck(store, tokens, blocks, 4); // from NVMe, promoted
    await loadAndCheck(store, tokens, blocks, 4); // from DRAM
    await store.close();
    await expect(openStore(storeDir(), { pagedEngine: 'fast' as never })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });

  it.skipIf(skip)('per-layer putLayer is invisible until commit; abort and missing layers add nothing', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK * 2 + 3);
    const blocks = randomBlocks(2 * BPC, SPEC.numBlocks);
    const p = store.beginPut(tokens);
    expect(p.chunks.map((c) => c.index)).toEqual([0, 1]);
    for (let layer = 0; layer < SPEC.layers; layer++) {
      store.putLayer(p, layer, fx.src, blocks, fx.stream);
      expect(store.lookup(tokens).chunks).toHaveLength(0);
    }
    const done = await store.commit(p);
    expect(done.added).toBe(2);
    await loadAndCheck(store, tokens, blocks, 2);

    const t2 = randomTokens(CHUNK);
    const p2 = store.beginPut(t2);
    store.putLayer(p2, 0, fx.src, blocks.slice(0, BPC), fx.stream);
    await expect(store.commit(p2)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    expect(store.lookup(t2).chunks).toHaveLength(0);
    const p3 = store.beginPut(t2);
    store.putLayer(p3, 0, fx.src, blocks.slice(0, BPC), fx.stream);
    await store.abort(p3);
    expect(store.lookup(t2).chunks).toHaveLength(0);
    await expect(store.commit(p3)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await store.close();
  });

  it.skipIf(skip)('putLayer follows a block table changed in place between layers (its plan is made once, used while the table holds)', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK * 2);
    const table = randomBlocks(2 * BPC, SPEC.numBlocks);
    const used: number[][] = [];
    const p = store.beginPut(tokens);
    for (let layer = 0; layer < SPEC.layers; layer++) {
      // Layers 0 and 2 from one table; layer 1 from another, written into the same array.
      const before = [...table];
      if (layer === 1) table.splice(0, table.length, ...randomBlocks(2 * BPC, SPEC.numBlocks));
      used.push([...table]);
      store.putLayer(p, layer, fx.src, table, fx.stream);
      if (layer === 1) table.splice(0, table.length, ...before);
    }
    expect((await store.commit(p)).added).toBe(2);
    expect(used[0]).not.toEqual(used[1]);
    // Planned at layer 0 and used for layer 2; layer 1 (another table) took the general path.
    expect(store.stats().local).toMatchObject({ putPlans: 1, putPlannedLayers: 2 });
    const hit = store.lookup(tokens);
    const dst = randomBlocks(2 * BPC, SPEC.numBlocks);
    for (let layer = 0; layer < SPEC.layers; layer++) await store.loadLayer(hit.chunks, layer, fx.dst, dst, fx.stream).done();
    hit.release();
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    for (let layer = 0; layer < SPEC.layers; layer++) {
      for (let i = 0; i < dst.length; i++) {
        for (const kv of [0, 1] as const) {
          expect(Buffer.compare(pieceOf(fx.src, fx.srcData, layer, kv, used[layer]![i]!), pieceOf(fx.dst, got, layer, kv, dst[i]!)), `layer ${layer} block ${i} kv ${kv}`).toBe(0);
        }
      }
    }
    await store.close();
  });

  it.skipIf(skip)('a store of a layer range plans its puts and DRAM loads by the range: bytes exact, either engine, any order', async () => {
    const store = await openStore(storeDir(), { layers: { first: 1, count: SPEC.layers - 1 } });
    const tokens = randomTokens(CHUNK * 2);
    const blocks = randomBlocks(2 * BPC, SPEC.numBlocks);
    const p = store.beginPut(tokens);
    expect(() => store.putLayer(p, 0, fx.src, blocks, fx.stream)).toThrow(expect.objectContaining({ code: 'ERR_OUT_OF_RANGE' }));
    for (let layer = SPEC.layers - 1; layer >= 1; layer--) store.putLayer(p, layer, fx.src, blocks, fx.stream, { engine: layer % 2 ? 'kernel' : 'dma' });
    expect((await store.commit(p)).added).toBe(2);
    const hit = store.lookup(tokens);
    const dst = randomBlocks(2 * BPC, SPEC.numBlocks);
    for (let layer = 1; layer < SPEC.layers; layer++) {
      await store.loadLayer(hit.chunks, layer, fx.dst, dst, fx.stream, { engine: layer % 2 ? 'dma' : 'kernel' }).done();
    }
    hit.release();
    expect(store.stats().local).toMatchObject({ putPlans: 1, putPlannedLayers: SPEC.layers - 1, dramPlans: 1, dramPlannedLayers: SPEC.layers - 1 });
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    for (let layer = 1; layer < SPEC.layers; layer++) {
      for (let i = 0; i < dst.length; i++) {
        for (const kv of [0, 1] as const) {
          expect(Buffer.compare(pieceOf(fx.src, fx.srcData, layer, kv, blocks[i]!), pieceOf(fx.dst, got, layer, kv, dst[i]!)), `layer ${layer} block ${i} kv ${kv}`).toBe(0);
        }
      }
    }
    await store.close();
  });

  it.skipIf(skip)('a per-call engine overrides the store\'s for putLayer and loadLayer; one DRAM plan serves both engines', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK * 3);
    const blocks = randomBlocks(3 * BPC, SPEC.numBlocks);
    const p = store.beginPut(tokens);
    for (let layer = 0; layer < SPEC.layers; layer++) store.putLayer(p, layer, fx.src, blocks, fx.stream, { engine: layer % 2 === 0 ? 'kernel' : 'dma' });
    expect((await store.commit(p)).added).toBe(3);
    const table = randomBlocks(3 * BPC, SPEC.numBlocks);
    for (const engine of ['kernel', 'dma', 'kernel'] as const) {
      const hit = store.lookup(tokens);
      for (let layer = 0; layer < SPEC.layers; layer++) await store.loadLayer(hit.chunks, layer, fx.dst, table, fx.stream, { engine }).done();
      hit.release();
      const got = await readCache(fx.dev, fx.stream, fx.dst);
      for (let layer = 0; layer < SPEC.layers; layer++) {
        for (let i = 0; i < table.length; i++) {
          for (const kv of [0, 1] as const) {
            expect(Buffer.compare(pieceOf(fx.src, fx.srcData, layer, kv, blocks[i]!), pieceOf(fx.dst, got, layer, kv, table[i]!)), `${engine} layer ${layer} block ${i} kv ${kv}`).toBe(0);
          }
        }
      }
    }
    // One plan for all three loads, whichever engine moved it.
    expect(store.stats().local.dramPlans).toBe(1);
    expect(store.stats().local.dramPlannedLayers).toBe(3 * SPEC.layers);
    // A load that starts on the kernel engine and goes on with the copy engines (as a prefill's
    // first layers before compute starts) keeps its plan for every layer, and lands exact.
    {
      const other = randomBlocks(3 * BPC, SPEC.numBlocks);
      const hit = store.lookup(tokens);
      for (let layer = 0; layer < SPEC.layers; layer++) {
        await store.loadLayer(hit.chunks, layer, fx.dst, other, fx.stream, { engine: layer === 0 ? 'kernel' : 'dma' }).done();
      }
      hit.release();
      expect(store.stats().local.dramPlans).toBe(2);
      expect(store.stats().local.dramPlannedLayers).toBe(4 * SPEC.layers);
      const got = await readCache(fx.dev, fx.stream, fx.dst);
      for (let layer = 0; layer < SPEC.layers; layer++) {
        for (let i = 0; i < other.length; i++) {
          for (const kv of [0, 1] as const) {
            expect(Buffer.compare(pieceOf(fx.src, fx.srcData, layer, kv, blocks[i]!), pieceOf(fx.dst, got, layer, kv, other[i]!)), `switched layer ${layer} block ${i} kv ${kv}`).toBe(0);
          }
        }
      }
    }
    const hit = store.lookup(tokens);
    expect(() => store.loadLayer(hit.chunks, 0, fx.dst, table, fx.stream, { engine: 'fast' as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    // null options are the defaults (the store's engine).
    await store.loadLayer(hit.chunks, 0, fx.dst, table, fx.stream, null as never).done();
    hit.release();
    const p2 = store.beginPut(randomTokens(CHUNK));
    expect(() => store.putLayer(p2, 0, fx.src, blocks.slice(0, BPC), fx.stream, { engine: 7 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    await store.abort(p2);
    await store.close();
  });

  it.skipIf(skip)('puts of several requests go in one putLayer call', async () => {
    const store = await openStore(storeDir());
    const ta = randomTokens(CHUNK * 2);
    const tb = randomTokens(CHUNK * 3);
    const ba = randomBlocks(2 * BPC, SPEC.numBlocks);
    const bb = randomBlocks(3 * BPC, SPEC.numBlocks);
    const pa = store.beginPut(ta);
    const pb = store.beginPut(tb);
    for (let layer = 0; layer < SPEC.layers; layer++) store.putLayer([pa, pb], layer, fx.src, [ba, bb], fx.stream);
    await store.commit(pa);
    await store.commit(pb);
    await loadAndCheck(store, ta, ba, 2);
    await loadAndCheck(store, tb, bb, 3);
    await store.close();
  });

  it.skipIf(skip)('lookup returns the longest prefix: a diverging token stops the match at its chunk', async () => {
    const store = await openStore(storeDir(), { admit: 'always' });
    const tokens = randomTokens(CHUNK * 5);
    await store.put(tokens, fx.src, randomBlocks(5 * BPC, SPEC.numBlocks), fx.stream);
    expect(store.lookup(tokens).chunks.map((c) => c.index)).toEqual([0, 1, 2, 3, 4]);
    const changed = tokens.slice();
    changed[CHUNK * 2 + 3] = (changed[CHUNK * 2 + 3]! + 1) % 128000;
    expect(store.lookup(changed).chunks).toHaveLength(2);
    expect(store.lookup(changed.slice(0, CHUNK * 2 - 1)).chunks).toHaveLength(1);
    const first = changed.slice();
    first[0] = (first[0]! + 7) % 128000;
    expect(store.lookup(first).chunks).toHaveLength(0);
    await store.close();
  });

  it.skipIf(skip)('durable chunks survive close and reopen, load from NVMe, and are promoted to DRAM', async () => {
    const { store, tokens, blocks } = await storedOnNvme(3);
    const hit = store.lookup(tokens);
    expect([hit.dram, hit.nvme]).toEqual([0, 3]);
    hit.release();
    await loadAndCheck(store, tokens, blocks, 3);
    const again = store.lookup(tokens);
    expect([again.dram, again.nvme]).toEqual([3, 0]);
    again.release();
    expect(store.stats().local.nvmeLoads).toBe(9);
    await store.close();
  });

  it.skipIf(skip)('a promotion that did not receive every layer is dropped with its hit and frees its DRAM slot', async () => {
    const { store, tokens, blocks } = await storedOnNvme(2, { dramBytes: 2 * 12288 });
    const hit = store.lookup(tokens);
    await store.loadLayer(hit.chunks, 0, fx.dst, randomBlocks(2 * BPC, SPEC.numBlocks), fx.stream).done();
    expect(store.stats().dram.usedBytes).toBe(2 * 12288); // two promotions filling
    hit.release();
    await store.flush();
    expect(store.stats().dram).toMatchObject({ usedBytes: 0, chunks: 0 });
    expect(store.lookup(tokens).nvme).toBe(2);
    await loadAndCheck(store, tokens, blocks, 2);
    expect(store.stats().dram.chunks).toBe(2);
    await store.close();
  });

  it.skipIf(skip)('admission: a chunk goes to NVMe once hit or committed twice, in the background', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK);
    const blocks = randomBlocks(BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream);
    await store.flush();
    expect(store.stats().nvme.chunks).toBe(0);
    await loadAndCheck(store, tokens, blocks, 1); // a hit admits it
    await store.flush();
    expect(store.stats().nvme.chunks).toBe(1);
    await store.close();
  });

  it.skipIf(skip)('NVMe eviction is least recently used first', async () => {
    const store = await openStore(storeDir(), { nvmeBytes: 3 * 12288 });
    const prompts = [0, 1, 2, 3].map(() => randomTokens(CHUNK));
    const blocks = randomBlocks(BPC, SPEC.numBlocks);
    for (const t of prompts.slice(0, 3)) {
      await store.put(t, fx.src, blocks, fx.stream, { durable: true });
      await new Promise((r) => setTimeout(r, 5));
    }
    dropDram(store);
    // Use the first chunk again: the second becomes the least recently used.
    await loadAndCheck(store, prompts[0]!, blocks, 1);
    await store.flush();
    await store.put(prompts[3]!, fx.src, blocks, fx.stream, { durable: true });
    dropDram(store);
    expect(prompts.map((t) => store.lookup(t).chunks.length)).toEqual([1, 0, 1, 1]);
    expect(store.stats().shared.evictions).toBe(1);
    await store.close();
  });

  it.skipIf(skip)('DRAM eviction is least recently used first and never drops a pinned chunk', async () => {
    const store = await openStore(storeDir(), { dramBytes: 2 * 12288, admit: 'never' });
    const a = randomTokens(CHUNK);
    const b = randomTokens(CHUNK);
    const c = randomTokens(CHUNK);
    const blocks = randomBlocks(BPC, SPEC.numBlocks);
    await store.put(a, fx.src, blocks, fx.stream);
    await new Promise((r) => setTimeout(r, 5));
    await store.put(b, fx.src, blocks, fx.stream);
    const pinA = store.lookup(a); // a is older but pinned: b goes
    await store.put(c, fx.src, blocks, fx.stream);
    expect([a, b, c].map((t) => store.lookup(t).chunks.length)).toEqual([1, 0, 1]);
    pinA.release();
    await store.close();
  });

  it.skipIf(skip)('a corrupted slab is a miss for that chunk only: its blocks get zeros, never the bad bytes', async () => {
    const dir = storeDir();
    let store = await openStore(dir);
    const tokens = randomTokens(CHUNK * 3);
    const blocks = randomBlocks(3 * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream, { durable: true });
    const bad = store.keys(tokens)[1]!;
    const loc = nvmeLocation(store, bad)!;
    const file = loc.file.path;
    await store.close();
    // Flip bytes inside layer 1's extent of chunk 1.
    flipBytes(file, loc.offset + store.extentBytes + 100, 16);

    store = await openStore(dir);
    const hit = store.lookup(tokens);
    expect(hit.nvme).toBe(3);
    const to = randomBlocks(3 * BPC, SPEC.numBlocks);
    const poison = fx.dst.buffers.map((b) => randomBytes(b.byteLength));
    await fillCache(fx.dev, fx.stream, fx.dst, poison);
    const e0 = store.loadLayer(hit.chunks, 0, fx.dst, to, fx.stream);
    const e1 = store.loadLayer(hit.chunks, 1, fx.dst, to, fx.stream);
    await e0.done();
    const err = await e1.done().then(() => undefined, (x: unknown) => x);
    expect(err).toBeInstanceOf(KvflowError);
    expect((err as KvflowError).code).toBe('ERR_CHECKSUM');
    await store.flush();
    // The hit says which of its chunks failed, and how much of its prefix is still good.
    expect(hit.failed).toEqual([1]);
    expect(hit.validTokens).toBe(CHUNK);
    hit.release();
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    for (let i = 0; i < 3; i++) {
      for (let b = 0; b < BPC; b++) {
        const have = pieceOf(fx.dst, got, 1, 0, to[i * BPC + b]!);
        const want = pieceOf(fx.src, fx.srcData, 1, 0, blocks[i * BPC + b]!);
        if (i === 1) expect(have.every((x) => x === 0)).toBe(true);
        else expect(Buffer.compare(have, want)).toBe(0);
      }
    }
    // The chunk is gone: the hit stops before it; the counter rose.
    expect(store.lookup(tokens).chunks).toHaveLength(1);
    expect(store.stats().local.checksumFailures).toBe(1);
    expect(store.stats().shared.checksumFailures).toBe(1);
    await store.close();
  });

  it.skipIf(skip)('disk full during a durable put: ERR_NO_SPACE, nothing entered, the store stays usable', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK);
    const blocks = randomBlocks(BPC, SPEC.numBlocks);
    injectIoFault(storeFiles(store)[0]!, 1, 28 /* ENOSPC */);
    await expect(store.put(tokens, fx.src, blocks, fx.stream, { durable: true })).rejects.toMatchObject({ code: 'ERR_NO_SPACE' });
    expect(store.stats().nvme.chunks).toBe(0);
    expect(indexProblems(store)).toEqual([]);
    // A batch where one chunk of three fails: the other two are entered, the failed one's slot is free again.
    const three = randomTokens(CHUNK * 3);
    const b3 = randomBlocks(3 * BPC, SPEC.numBlocks);
    injectIoFault(storeFiles(store)[0]!, 2, 28);
    await expect(store.put(three, fx.src, b3, fx.stream, { durable: true })).rejects.toMatchObject({ code: 'ERR_NO_SPACE' });
    expect(store.stats().nvme.chunks).toBe(2);
    expect(indexProblems(store)).toEqual([]);
    dropDram(store);
    const present = store.keys(three).map((k) => nvmeLocation(store, k) !== undefined);
    expect(present.filter(Boolean)).toHaveLength(2);
    const t2 = randomTokens(CHUNK);
    await store.put(t2, fx.src, blocks, fx.stream, { durable: true });
    expect(store.stats().nvme.chunks).toBe(3);
    dropDram(store);
    await loadAndCheck(store, t2, blocks, 1);
    await store.close();
  });

  it.skipIf(skip)('abort while a commit runs leaves the commit alone and never hands one DRAM slot to two chunks', async () => {
    const store = await openStore(storeDir(), { dramBytes: 3 * 12288, admit: 'always' });
    const prompts = [0, 1, 2].map(() => randomTokens(CHUNK));
    const tables = [0, 1, 2].map(() => randomBlocks(BPC, SPEC.numBlocks));
    const p = store.beginPut(prompts[0]!);
    for (let layer = 0; layer < SPEC.layers; layer++) store.putLayer(p, layer, fx.src, tables[0]!, fx.stream);
    const committed = store.commit(p);
    await store.abort(p);
    expect((await committed).added).toBe(1);
    await store.flush();
    await store.put(prompts[1]!, fx.src, tables[1]!, fx.stream);
    await store.put(prompts[2]!, fx.src, tables[2]!, fx.stream);
    for (let i = 0; i < 3; i++) await loadAndCheck(store, prompts[i]!, tables[i]!, 1);
    expect(indexProblems(store)).toEqual([]);
    await store.close();
  });

  it.skipIf(skip)('prompts sharing a prefix load in one batched call, from NVMe and from DRAM', async () => {
    const dir = storeDir();
    const shared = randomTokens(CHUNK);
    const a = [...shared, ...randomTokens(CHUNK)];
    const b = [...shared, ...randomTokens(CHUNK)];
    const ta = randomBlocks(2 * BPC, SPEC.numBlocks);
    const tb = [...ta.slice(0, BPC), ...randomBlocks(SPEC.numBlocks, SPEC.numBlocks).filter((x) => !ta.includes(x)).slice(0, BPC)];
    let store = await openStore(dir);
    await store.put(a, fx.src, ta, fx.stream, { durable: true });
    await store.put(b, fx.src, tb, fx.stream, { durable: true });
    await store.close();
    store = await openStore(dir);
    for (const round of ['nvme', 'dram']) {
      const ha = store.lookup(a);
      const hb = store.lookup(b);
      expect(ha.chunks.map((c) => c.tier)).toEqual(round === 'nvme' ? ['nvme', 'nvme'] : ['dram', 'dram']);
      const to = randomBlocks(4 * BPC, SPEC.numBlocks);
      for (let layer = 0; layer < SPEC.layers; layer++) await store.loadLayer([...ha.chunks, ...hb.chunks], layer, fx.dst, to, fx.stream).done();
      ha.release();
      hb.release();
      await store.flush();
      const got = await readCache(fx.dev, fx.stream, fx.dst);
      const from = [...ta, ...tb];
      for (let layer = 0; layer < SPEC.layers; layer++) {
        for (let i = 0; i < to.length; i++) {
          expect(Buffer.compare(pieceOf(fx.dst, got, layer, 1, to[i]!), pieceOf(fx.src, fx.srcData, layer, 1, from[i]!)), `${round} layer ${layer} block ${i}`).toBe(0);
        }
      }
    }
    await store.close();
  });

  it.skipIf(skip)('with DRAM full, NVMe chunks load through temporary pinned memory', async () => {
    const { store, tokens, blocks } = await storedOnNvme(3, { dramBytes: 12288 });
    await loadAndCheck(store, tokens, blocks, 3);
    expect(store.stats().dram.chunks).toBe(1); // one promoted, two loaded without a slot
    await store.close();
  });

  it.skipIf(skip)('admission by default: a chunk committed a second time is written to NVMe', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK);
    const blocks = randomBlocks(BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream);
    await store.flush();
    expect(store.stats().nvme.chunks).toBe(0);
    dropDram(store);
    await store.put(tokens, fx.src, blocks, fx.stream);
    await store.flush();
    expect(store.stats().nvme.chunks).toBe(1);
    await store.close();
  });

  it.skipIf(skip)('NVMe slots of unreleased hits are not evicted by their own process', async () => {
    const { store, tokens: a, blocks } = await storedOnNvme(2, {}, { nvmeBytes: 2 * 12288 });
    const hit = store.lookup(a);
    await store.loadLayer(hit.chunks, 0, fx.dst, blocks, fx.stream).done();
    const b = randomTokens(CHUNK);
    await expect(store.put(b, fx.src, blocks.slice(0, BPC), fx.stream, { durable: true })).rejects.toMatchObject({ code: 'ERR_NO_SPACE' });
    await store.loadLayer(hit.chunks, 1, fx.dst, blocks, fx.stream).done();
    await store.loadLayer(hit.chunks, 2, fx.dst, blocks, fx.stream).done();
    hit.release();
    await store.flush();
    expect(store.stats().local.checksumFailures).toBe(0);
    dropDram(store);
    await store.put(b, fx.src, blocks.slice(0, BPC), fx.stream, { durable: true });
    expect(nvmeLocation(store, store.keys(b)[0]!)).toBeDefined();
    expect(indexProblems(store)).toEqual([]);
    await store.close();
  });

  it.skipIf(skip)('bad input gets typed errors and moves nothing', async () => {
    const store = await openStore(storeDir());
    const tokens = randomTokens(CHUNK * 2);
    const blocks = randomBlocks(2 * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream);
    const hit = store.lookup(tokens);
    const code = (fn: () => unknown): string => {
      try {
        fn();
        return 'no error';
      } catch (e) {
        return (e as KvflowError).code;
      }
    };
    expect(code(() => store.loadLayer(hit.chunks, 3, fx.dst, blocks, fx.stream))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => store.loadLayer(hit.chunks, 0, fx.dst, blocks.slice(1), fx.stream))).toBe('ERR_INVALID_ARG');
    expect(code(() => store.loadLayer(hit.chunks, 0, fx.dst, [...blocks.slice(1), blocks[0]! + 1000], fx.stream))).toBe('ERR_OUT_OF_RANGE');
    expect(code(() => store.loadLayer(hit.chunks, 0, fx.dst, [blocks[0]!, ...blocks.slice(0, -1)], fx.stream))).toBe('ERR_INVALID_ARG');
    expect(code(() => store.loadLayer([{ key: 'x', index: 0, tier: 'dram' }], 0, fx.dst, blocks.slice(0, BPC), fx.stream))).toBe('ERR_INVALID_ARG');
    expect(code(() => store.lookup([1.5]))).toBe('ERR_INVALID_ARG');
    expect(code(() => store.lookup([-1]))).toBe('ERR_INVALID_ARG');
    const other = fx.dev.allocKvCache({ ...SPEC, headDim: 16 });
    expect(code(() => store.loadLayer(hit.chunks, 0, other, blocks, fx.stream))).toBe('ERR_INVALID_ARG');
    await other.dispose();
    hit.release();
    expect(code(() => store.loadLayer(hit.chunks, 0, fx.dst, blocks, fx.stream))).toBe('ERR_INVALID_ARG');
    await expect(KvStore.open({ device: fx.dev, layout, fingerprint: FP, dir: storeDir(), chunkTokens: 6 })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(KvStore.open({ device: fx.dev, layout, fingerprint: { model: '' }, dir: storeDir(), chunkTokens: CHUNK })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await expect(openStore(store.dir, { layout: new KvLayout({ ...SPEC, headDim: 256 }) })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await store.close();
    expect(code(() => store.lookup(tokens))).toBe('ERR_DISPOSED');
  });

  it.skipIf(skip)('store files are 0600 in a 0700 directory; a default store lives in a temp directory removed by close', async () => {
    const store = await openStore(storeDir());
    expect(statSync(store.dir).mode & 0o777).toBe(0o700);
    for (const f of ['index.mdb', 'slab-0000.kv']) expect(statSync(path.join(store.dir, f)).mode & 0o777).toBe(0o600);
    await store.close();
    const temp = await KvStore.open({ device: fx.dev, layout, fingerprint: FP, chunkTokens: CHUNK, nvmeBytes: 4 * 12288, dramBytes: 2 * 12288 });
    const tdir = temp.dir;
    expect(statSync(tdir).isDirectory()).toBe(true);
    await temp.close();
    expect(() => statSync(tdir)).toThrow();
  });
});
