/** What `KvStore.stats()` reports, read from a store's core. */
import type { StoreCore } from './core.js';
import type { KvStoreLocalCounters, KvStoreSharedCounters } from './stats.js';

/** Counters of one store instance, plus the shared ones of its directory. */
export interface KvStoreStats {
  dram: { capacityBytes: number; usedBytes: number; chunks: number; evictions: number };
  nvme: { capacityBytes: number; slotBytes: number; slots: number; chunks: number };
  /** This process's lookups, in tokens (the chunk counts are in `local`). */
  hits: {
    lookups: number;
    /** Tokens lookups found in DRAM, on NVMe (a tier of another name: `local[name + 'HitTokens']`). */
    dramTokens: number;
    nvmeTokens: number;
    /** Tokens of full chunks lookups did not find. */
    missTokens: number;
    /** Tokens of hits' chunks whose load failed since (ERR_CHECKSUM, ERR_EVICTED, ERR_IO): recomputed by the runtime. */
    failedTokens: number;
  };
  /** Chunks that `put({ durable: true })` wrote to NVMe from DRAM (not added by that put, in DRAM only before). */
  madeDurable: number;
  /**
   * This process: lookups and the chunks they hit or missed, loads (per chunk
   * and layer; `dramPlans`: DRAM loads planned for every layer at once,
   * `dramPlannedLayers`: layer loads those plans served; `putPlans` and
   * `putPlannedLayers` the same of puts' copies), checksum failures, NVMe
   * writes.
   */
  local: KvStoreLocalCounters;
  /** Every process of the directory (written in batches). */
  shared: KvStoreSharedCounters;
}

/** Shared counters no process has written yet read as 0. */
const NO_SHARED_COUNTS: KvStoreSharedCounters = {
  lookups: 0, hitChunks: 0, missChunks: 0, checksumFailures: 0, evictions: 0, writes: 0, lostReservations: 0,
};

/** The stats of an open store. */
export function storeStats(core: StoreCore): KvStoreStats {
  return {
    dram: core.dram.stats(),
    nvme: core.nvme.stats(),
    hits: {
      lookups: core.local.lookups!, dramTokens: core.local.dramHitTokens!, nvmeTokens: core.local.nvmeHitTokens!,
      missTokens: core.local.missTokens!, failedTokens: core.local.failedTokens!,
    },
    madeDurable: core.local.madeDurable!,
    local: { ...core.local },
    shared: { ...NO_SHARED_COUNTS, ...core.nvme.catalog.counters() },
  };
}
