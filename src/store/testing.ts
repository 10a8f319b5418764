/**
 * Test-only hooks of the store (not exported from the package entry point):
 * its slab files, where a chunk lives on NVMe, the index's slot accounting,
 * dropping the DRAM tier as a restart would, and opening a store whose tiers
 * the caller arranges (a tier of its own among them).
 */
import { fail } from '../errors.js';
import type { KvFile } from '../io/file.js';
import type { Catalog } from './catalog.js';
import type { StoreCore } from './core.js';
import { openStore, storeCores, type ArrangeTiers, type KvStore, type KvStoreOptions } from './store.js';

export type { ArrangeTiers } from './store.js';
export { IndexThread, INDEX_THREAD_LINGER_MS, indexEnvState, indexThreadState, setIndexThreadLinger } from './index-thread.js';
export type { ReadBatch, ReadOutcome, Staging, Tier, TierRead, TierWrite, WriteResult } from './tier.js';

function coreOf(store: KvStore): StoreCore {
  const core = storeCores.get(store);
  if (core === undefined) fail('ERR_INVALID_ARG', 'expected a KvStore');
  return core;
}

/** The store's slab files. */
export function storeFiles(store: KvStore): readonly KvFile[] {
  return coreOf(store).nvme.files;
}

/** The store's index (the power-loss test records its write transactions). */
export function storeIndex(store: KvStore): Catalog {
  return coreOf(store).nvme.catalog;
}

/** Where a chunk lives on NVMe, or undefined. */
export function nvmeLocation(store: KvStore, key: string): { file: KvFile; offset: number; slot: number } | undefined {
  const nvme = coreOf(store).nvme;
  const e = nvme.catalog.get(key);
  if (!e) return undefined;
  const p = nvme.place(e.slot);
  return { file: p.file, offset: p.offset, slot: e.slot };
}

/** The bytes of a ready DRAM chunk's record (a view of its pinned slot), or undefined. */
export function dramRecord(store: KvStore, key: string): Uint8Array | undefined {
  const core = coreOf(store);
  const c = core.dram.arena.ready(key);
  if (!c) return undefined;
  return c.slot.buffer.array.subarray(c.slot.offset, c.slot.offset + core.config.recordBytes);
}

/** Slot accounting problems of the index ([] when consistent). */
export function indexProblems(store: KvStore): string[] {
  return coreOf(store).nvme.catalog.check();
}

/** Drops the DRAM tier's chunks that nothing holds (as a restart would). */
export function dropDram(store: KvStore): void {
  coreOf(store).dram.dropIdle();
}

/** Every lease this store holds is past its expiry from now on (as if its hits were held longer than leaseSeconds). */
export function expireLeases(store: KvStore): void {
  coreOf(store).nvme.leases.expireAll();
}

/**
 * Calls `hook` while each NVMe slot reservation of the store is in flight
 * (its index transaction posted, not yet done), with whether it may evict
 * (then the directory's eviction lock is held); undefined removes it.
 */
export function onReserve(store: KvStore, hook: ((evicting: boolean) => void) | undefined): void {
  coreOf(store).nvme.reserving = hook;
}

/** The store's tiers, in lookup order. */
export function storeTiers(store: KvStore): readonly { readonly name: string }[] {
  return coreOf(store).tiers;
}

/**
 * Opens a store whose tiers `arrange` orders, from its DRAM and NVMe tiers:
 * the DRAM tier first, then any (a tier of the caller's may be one). Chunks
 * are demoted to the first tier after DRAM that can be written.
 */
export function openStoreWithTiers(options: KvStoreOptions, arrange: ArrangeTiers): Promise<KvStore> {
  return openStore(options, arrange);
}
