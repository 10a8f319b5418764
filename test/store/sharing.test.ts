// Requests that share chunks and the store directory: a load scattering a
// chunk another request's read is still filling, puts linked to their own
// hit beside another request's failed load of a shared chunk, and NVMe slot
// reservations beside lookups (the eviction lock, leases) (issue #12).
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { loadBinding } from '../../src/binding/load.js';
import { KvLayout } from '../../src/index.js';
import { dramRecord, dropDram, indexProblems, nvmeLocation, onReserve } from '../../src/store/testing.js';
import { backends } from '../helpers/backends.js';
import { CHUNK, SPEC, pieceOf, randomBlocks, randomTokens } from '../helpers/store.js';
import { corruptExtent, storeSuite } from '../helpers/suite.js';

const layout = new KvLayout(SPEC);
const BPC = CHUNK / SPEC.blockTokens;

describe.each(backends)('KvStore requests sharing chunks and a directory, on $backend', ({ backend, skip }) => {
  const fx = storeSuite(backend, skip, 'kvflow-store-sharing-');
  const { storeDir, openStore } = fx;


  it.skipIf(skip)('a load that scatters a chunk another request\'s read is still filling learns that read\'s failure for its own hit, beside a failure of its own', async () => {
    const dir = storeDir();
    const tokens = randomTokens(CHUNK * 2);
    const from = randomBlocks(2 * BPC, SPEC.numBlocks);
    let store = await openStore(dir);
    await store.put(tokens, fx.src, from, fx.stream, { durable: true });
    const keys = store.keys(tokens);
    const locs = keys.map((k) => nvmeLocation(store, k)!);
    await store.close();
    for (const loc of locs) corruptExtent(loc, store.extentBytes, 0);
    store = await openStore(dir);
    // A's hit is chunk 0; B's is chunks 0 and 1 (the same chunk 0).
    const ha = store.lookup(tokens.slice(0, CHUNK));
    const hb = store.lookup(tokens);
    expect([ha.nvme, hb.nvme]).toEqual([1, 2]);
    const ta = randomBlocks(BPC, SPEC.numBlocks);
    const tb = randomBlocks(2 * BPC, SPEC.numBlocks);
    // A's load reads chunk 0 into a DRAM promotion; B's load, a call of its own, scatters from that
    // promotion once A's read landed, and reads chunk 1 itself.
    const ea = store.loadLayer(ha.chunks, 0, fx.dst, ta, fx.stream);
    const eb = store.loadLayer(hb.chunks, 0, fx.dst, tb, fx.stream);
    await expect(ea.done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
    await expect(eb.done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
    expect(await ha.settled()).toMatchObject({ ok: false, failed: [0], validTokens: 0 });
    // B's chunk 0 received zeros too: B must recompute from token 0, not from its chunk 1.
    expect(await hb.settled()).toEqual({ ok: false, failed: [0, 1], validTokens: 0, codes: { 0: 'ERR_CHECKSUM', 1: 'ERR_CHECKSUM' } });
    ha.release();
    hb.release();
    await store.close();
  });

  it.skipIf(skip)('another request\'s failed load of a shared chunk refuses a put only when the put is not linked to its own hit (beginPut({ hit }))', async () => {
    for (const link of [false, true]) {
      const dir = storeDir();
      const tokens = randomTokens(2 * CHUNK);
      const from = randomBlocks(2 * BPC, SPEC.numBlocks);
      // One DRAM slot: B's put takes it, so every load of chunk 0 reads the NVMe slot.
      const store = await openStore(dir, { dramBytes: 12288 });
      await store.put(tokens.slice(0, CHUNK), fx.src, from, fx.stream, { durable: true });
      dropDram(store);
      const loc = nvmeLocation(store, store.keys(tokens)[0]!)!;
      // Request B: loads chunk 0 (its bytes verify), computes chunk 1 over them and puts it.
      const hb = store.lookup(tokens);
      expect(hb.nvme).toBe(1);
      const pb = store.beginPut(tokens, link ? { hit: hb } : {});
      expect(pb.chunks.map((c) => c.index)).toEqual([1]);
      const tb = randomBlocks(2 * BPC, SPEC.numBlocks);
      for (let layer = 0; layer < SPEC.layers; layer++) {
        store.loadLayer(hb.chunks, layer, fx.dst, tb, fx.stream);
        fx.compute(fx.stream, layer, from.slice(BPC), tb.slice(BPC));
        store.putLayer(pb, layer, fx.dst, tb, fx.stream);
      }
      expect(await hb.settled()).toMatchObject({ ok: true });
      // Then the slot rots, and request A's load of the same chunk fails its check.
      corruptExtent(loc, store.extentBytes, 0);
      const ha = store.lookup(tokens.slice(0, CHUNK));
      expect(ha.nvme).toBe(1);
      const ta = randomBlocks(BPC, SPEC.numBlocks);
      await expect(store.loadLayer(ha.chunks, 0, fx.dst, ta, fx.stream).done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
      expect(await ha.settled()).toMatchObject({ ok: false, failed: [0] });
      ha.release();
      if (link) {
        // B's KV came from its own good load: it commits, and its chunk holds exactly what B computed.
        expect(await store.commit(pb)).toMatchObject({ added: 1, keys: [store.keys(tokens)[1]] });
        const record = dramRecord(store, store.keys(tokens)[1]!)!;
        for (let layer = 0; layer < SPEC.layers; layer++) {
          const k0 = pieceOf(fx.src, fx.srcData, layer, 0, from[BPC]!);
          const at = layout.recordOffset(CHUNK, layer, 0, 0);
          expect(Buffer.compare(record.subarray(at, at + k0.length), k0), `layer ${layer}`).toBe(0);
        }
      } else {
        // Unlinked, the store cannot tell B's blocks from ones A's failed load wrote: a lost save, never wrong bytes.
        await expect(store.commit(pb)).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
      }
      hb.release();
      await store.close();
    }
  });

  it.skipIf(skip)('beginPut refuses a hit of another prompt or store', async () => {
    const store = await openStore(storeDir());
    const a = randomTokens(2 * CHUNK);
    await store.put(a, fx.src, randomBlocks(2 * BPC, SPEC.numBlocks), fx.stream);
    await store.put(a, fx.src, randomBlocks(2 * BPC, SPEC.numBlocks), fx.stream, { tenant: 't' });
    const hit = store.lookup(a);
    const other = store.lookup(a, { tenant: 't' });
    expect([hit.chunks.length, other.chunks.length]).toEqual([2, 2]);
    for (const bad of [{ hit: {} }, { hit: other }, { hit: hit.chunks[0] }]) {
      expect(() => store.beginPut(a, bad as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    }
    other.release();
    expect(() => store.beginPut(randomTokens(2 * CHUNK), { hit })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => store.beginPut(a, { hit, tenant: 't' })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    await store.abort(store.beginPut(a, { hit }));
    hit.release();
    await store.close();
  });

  it.skipIf(skip)('a put that reserves free NVMe slots takes no eviction lock: a lookup meanwhile counts its NVMe chunks; one that must evict does, and a lookup then misses', async () => {
    const dir = storeDir();
    const tokens = randomTokens(3 * CHUNK);
    const table = randomBlocks(3 * BPC, SPEC.numBlocks);
    const store = await openStore(dir, { nvmeBytes: 5 * 12288 });
    await store.put(tokens, fx.src, table, fx.stream, { durable: true });
    dropDram(store);
    const seen: { evicting: boolean; tiers: string[] }[] = [];
    onReserve(store, (evicting) => {
      // Runs while the reservation's index transaction is in flight.
      const hit = store.lookup(tokens);
      seen.push({ evicting, tiers: hit.chunks.map((c) => c.tier) });
      hit.release();
    });
    // 2 free slots of 5: reserved without the lock.
    await store.put(randomTokens(2 * CHUNK), fx.src, table, fx.stream, { durable: true });
    expect(seen).toEqual([{ evicting: false, tiers: ['nvme', 'nvme', 'nvme'] }]);
    expect(store.stats().local.leaseMisses).toBe(0);
    // The tier is full: this reservation evicts (the two chunks just put rank lowest), under the lock.
    seen.length = 0;
    await store.put(randomTokens(CHUNK), fx.src, table, fx.stream, { durable: true });
    expect(seen).toEqual([{ evicting: true, tiers: [] }]);
    expect(store.stats().local.leaseMisses).toBe(1);
    onReserve(store, undefined);
    expect(store.stats().nvme.chunks).toBe(5);
    expect(indexProblems(store)).toEqual([]);
    await store.close();
  });

  it.skipIf(skip)('a lookup that meets an eviction under way (its lock held) counts no NVMe chunk from there, and leases nothing', async () => {
    const dir = storeDir();
    const tokens = randomTokens(3 * CHUNK);
    const table = randomBlocks(3 * BPC, SPEC.numBlocks);
    const store = await openStore(dir);
    await store.put(tokens, fx.src, table, fx.stream, { durable: true });
    dropDram(store);
    // Chunk 0 back in DRAM (a load promotes it).
    const first = store.lookup(tokens.slice(0, CHUNK));
    for (let layer = 0; layer < SPEC.layers; layer++) store.loadLayer(first.chunks, layer, fx.dst, table, fx.stream);
    await first.settled();
    first.release();
    await store.flush();
    const { binding } = loadBinding();
    const fd = binding.holdLock(path.join(dir, 'leases', 'evict.lock'));
    let hit;
    try {
      hit = store.lookup(tokens);
    } finally {
      binding.releaseLock(fd);
    }
    expect(hit.chunks.map((c) => c.tier)).toEqual(['dram']);
    expect(store.stats().local.leaseMisses).toBe(1);
    hit.release();
    const again = store.lookup(tokens);
    expect(again.chunks.map((c) => c.tier)).toEqual(['dram', 'nvme', 'nvme']);
    again.release();
    await store.close();
  });
});
