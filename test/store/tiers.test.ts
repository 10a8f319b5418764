/**
 * Tiers behind one interface: a test-only tier (memory-tier.ts) plugs into
 * a store through store/testing.ts, takes demotions as the first writable
 * tier after DRAM, serves loads byte-exact (promoting into DRAM), and shares
 * one batched load with the DRAM and NVMe tiers.
 */
import { existsSync } from 'node:fs';

import { describe, expect, it, vi } from 'vitest';

import { KvLayout, KvStore } from '../../src/index.js';
import { dropDram, openStoreWithTiers, storeFiles, storeTiers } from '../../src/store/testing.js';
import { backends, poison } from '../helpers/backends.js';
import { CHUNK, SPEC, fillCache, pieceOf, randomBlocks, randomTokens, readCache } from '../helpers/store.js';
import { storeSuite } from '../helpers/suite.js';
import { MemoryTier } from './memory-tier.js';

const layout = new KvLayout(SPEC);
const BPC = CHUNK / SPEC.blockTokens;
const EXTENT = layout.extentBytes(CHUNK);

describe.each(backends)('store tiers on $backend', ({ backend, skip }) => {
  const fx = storeSuite(backend, skip, 'kvflow-tiers-test-');

  /** Loads every layer of `tokens`' hit into fresh blocks of a poisoned dst, one call per layer, and checks the bytes against src's `srcBlocks`. */
  async function loadAndCheck(store: KvStore, tokens: number[], srcBlocks: number[]): Promise<void> {
    const poisoned = fx.dst.buffers.map((b) => {
      const a = new Uint8Array(b.byteLength);
      poison(a);
      return a;
    });
    await fillCache(fx.dev, fx.stream, fx.dst, poisoned);
    const hit = store.lookup(tokens);
    const blocks = randomBlocks(hit.chunks.length * BPC, SPEC.numBlocks);
    const events = [];
    for (let layer = 0; layer < SPEC.layers; layer++) events.push(store.loadLayer(hit.chunks, layer, fx.dst, blocks, fx.stream));
    await Promise.all(events.map((e) => e.done()));
    hit.release();
    await store.flush();
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

  it.skipIf(skip)('a test tier plugs in between DRAM and NVMe: it takes durable puts, serves loads byte-exact and promotes into DRAM', async () => {
    const mem = new MemoryTier(EXTENT, SPEC.layers);
    const store = await openStoreWithTiers(fx.options(), (dram, nvme) => [dram, mem, nvme]);
    expect(storeTiers(store).map((t) => t.name)).toEqual(['dram', 'memory', 'nvme']);
    const tokens = randomTokens(CHUNK * 3);
    const blocks = randomBlocks(3 * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream, { durable: true });
    expect(mem.records.size).toBe(3); // the first writable tier after DRAM is the demotion tier
    expect(store.stats().nvme.chunks).toBe(0);
    dropDram(store);

    const hit = store.lookup(tokens);
    expect(hit.chunks.map((c) => c.tier)).toEqual(['memory', 'memory', 'memory']);
    expect([hit.dram, hit.nvme]).toEqual([0, 0]);
    expect(mem.pins.size).toBe(3); // the hit's leases
    hit.release();
    expect(mem.pins.size).toBe(0);

    await loadAndCheck(store, tokens, blocks);
    expect(mem.readCalls).toBe(SPEC.layers); // one batch per layer
    expect(mem.extentsRead).toBe(3 * SPEC.layers);
    expect(store.stats().local.memoryLoads).toBe(3 * SPEC.layers);
    // Promoted once every layer arrived: the next lookup finds DRAM.
    const again = store.lookup(tokens);
    expect([again.dram, again.chunks.length]).toEqual([3, 3]);
    again.release();
    await loadAndCheck(store, tokens, blocks);
    expect(mem.readCalls).toBe(SPEC.layers);
    await store.close();
    expect(mem.closed).toBe(true);
  });

  it.skipIf(skip)('one load call spans DRAM, NVMe and a test tier placed last', async () => {
    const tokens = randomTokens(CHUNK * 3);
    const blocks = randomBlocks(3 * BPC, SPEC.numBlocks);
    // The third chunk's record, made by a store whose only lower tier is the test tier.
    const made = new MemoryTier(EXTENT, SPEC.layers);
    const maker = await openStoreWithTiers(fx.options(), (dram) => [dram, made]);
    await maker.put(tokens, fx.src, blocks, fx.stream, { durable: true });
    const key2 = maker.keys(tokens)[2]!;
    await maker.close();

    const mem = new MemoryTier(EXTENT, SPEC.layers);
    mem.records.set(key2, made.records.get(key2)!);
    const store = await openStoreWithTiers(fx.options(), (dram, nvme) => [dram, nvme, mem]);
    await store.put(tokens.slice(0, 2 * CHUNK), fx.src, blocks.slice(0, 2 * BPC), fx.stream, { durable: true });
    expect(store.stats().nvme.chunks).toBe(2);
    dropDram(store);
    await loadAndCheck(store, tokens.slice(0, CHUNK), blocks.slice(0, BPC)); // chunk 0 back in DRAM

    const hit = store.lookup(tokens);
    expect(hit.chunks.map((c) => c.tier)).toEqual(['dram', 'nvme', 'memory']);
    hit.release();
    const before = store.stats().local;
    await loadAndCheck(store, tokens, blocks);
    const after = store.stats().local;
    expect(after.nvmeLoads! - before.nvmeLoads!).toBe(SPEC.layers);
    expect(after.memoryLoads).toBe(SPEC.layers);
    expect(mem.readCalls).toBe(SPEC.layers);
    await store.close();
  });

  it.skipIf(skip)('a test tier\'s failed check marks the hit, drops the chunk from that tier, and gives its blocks zeros', async () => {
    const mem = new MemoryTier(EXTENT, SPEC.layers);
    const store = await openStoreWithTiers(fx.options(), (dram, nvme) => [dram, mem, nvme]);
    const tokens = randomTokens(CHUNK * 2);
    await store.put(tokens, fx.src, randomBlocks(2 * BPC, SPEC.numBlocks), fx.stream, { durable: true });
    dropDram(store);
    const [, bad] = store.keys(tokens);
    mem.corrupt.add(bad!);
    const hit = store.lookup(tokens);
    const blocks = randomBlocks(2 * BPC, SPEC.numBlocks);
    await store.loadLayer(hit.chunks, 0, fx.dst, blocks, fx.stream).done();
    await store.flush();
    expect(hit.failed).toEqual([1]);
    expect(hit.validTokens).toBe(CHUNK);
    expect(mem.records.has(bad!)).toBe(false);
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    for (const b of blocks.slice(BPC)) {
      for (const kv of [0, 1] as const) expect(pieceOf(fx.dst, got, 0, kv, b).every((v) => v === 0)).toBe(true);
    }
    hit.release();
    expect(store.lookup(tokens).chunks.length).toBe(1);
    await store.close();
  });

  it.skipIf(skip)('a layer load is one checked read per slab file and DRAM segment, and one batched scatter', async () => {
    const store = await openStoreWithTiers(fx.options(), (dram, nvme) => [dram, nvme]);
    const tokens = randomTokens(CHUNK * 4);
    const blocks = randomBlocks(4 * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream, { durable: true });
    dropDram(store);
    const reads = vi.spyOn(storeFiles(store)[0]!, 'readChecked');
    const scatters = vi.spyOn(fx.dst, 'moveRecords');
    try {
      // Chunk 0 named twice (prompts sharing a prefix): staged once.
      const hit = store.lookup(tokens);
      const chunks = [hit.chunks[0]!, ...hit.chunks];
      const to = randomBlocks(5 * BPC, SPEC.numBlocks);
      for (let layer = 0; layer < SPEC.layers; layer++) await store.loadLayer(chunks, layer, fx.dst, to, fx.stream).done();
      expect(reads).toHaveBeenCalledTimes(SPEC.layers);
      expect(reads.mock.calls.map((c) => c[1].length)).toEqual(Array(SPEC.layers).fill(4));
      expect(scatters).toHaveBeenCalledTimes(SPEC.layers);
      hit.release();
    } finally {
      reads.mockRestore();
      scatters.mockRestore();
    }
    await store.close();
  });

  it.skipIf(skip)('tiers must start with DRAM and have distinct names', async () => {
    await expect(openStoreWithTiers(fx.options(), (dram, nvme) => [nvme, dram])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    const twin = new MemoryTier(EXTENT, SPEC.layers);
    await expect(openStoreWithTiers(fx.options(), (dram, nvme) => [dram, twin, nvme, new MemoryTier(EXTENT, SPEC.layers)])).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
  });
  it.skipIf(skip)('preallocateDram pins the whole DRAM tier at open: puts take no more pinned memory and loads stay exact', async () => {
    // Small segments: one chunk record per segment would be a single step; give the tier several.
    const o = { ...fx.options(), dramBytes: 16 * 12288 };
    const before = fx.dev.pinnedStats().inUseBytes;
    const store = await KvStore.open({ ...o, preallocateDram: true });
    const capacity = store.stats().dram.capacityBytes;
    expect(capacity).toBeGreaterThan(0);
    expect(fx.dev.pinnedStats().inUseBytes - before).toBeGreaterThanOrEqual(capacity);
    const pinnedAtOpen = fx.dev.pinnedStats().inUseBytes;
    const tokens = randomTokens(CHUNK * 3);
    const blocks = randomBlocks(3 * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream);
    expect(store.stats().dram.chunks).toBe(3);
    expect(fx.dev.pinnedStats().inUseBytes).toBe(pinnedAtOpen);
    await loadAndCheck(store, tokens, blocks);
    await store.close();
    expect(fx.dev.pinnedStats().inUseBytes).toBe(before);
  });

  it.skipIf(skip)('preallocateDram must be a boolean: anything else is refused before the directory is touched', async () => {
    const o = fx.options();
    await expect(KvStore.open({ ...o, preallocateDram: 'yes' as unknown as boolean })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    expect(existsSync(o.dir!)).toBe(false);
  });
});
