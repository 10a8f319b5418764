/** The named counters of KvStoreStats (a module of types only). */

/**
 * This process's counters (KvStoreStats.local). A tier of another name than
 * `dram` and `nvme` adds its own `<name>Loads` and `<name>HitTokens`.
 */
export interface KvStoreLocalCounters {
  [tierCounter: string]: number;
  /** Lookups, and the full chunks they found or did not find. */
  lookups: number;
  hitChunks: number;
  missChunks: number;
  /** Tokens lookups found in DRAM, on NVMe, and did not find. */
  dramHitTokens: number;
  nvmeHitTokens: number;
  missTokens: number;
  /** Tokens of hits' chunks whose load failed since (recomputed by the runtime). */
  failedTokens: number;
  /** Chunk loads (per chunk and layer) from DRAM and from NVMe. */
  dramLoads: number;
  nvmeLoads: number;
  /** DRAM loads planned for every layer at once, and the layer loads those plans served. */
  dramPlans: number;
  dramPlannedLayers: number;
  /** Puts whose gather was planned for every layer at their first putLayer, and the layer copies those plans served. */
  putPlans: number;
  putPlannedLayers: number;
  /** Loads whose data failed its checksum, loads of chunks evicted before they were read, hit chunks whose lease was lost. */
  checksumFailures: number;
  evictedLoads: number;
  leaseMisses: number;
  /** Puts committed, and chunks a put skipped (no free DRAM slot). */
  puts: number;
  putSkipped: number;
  /** Chunks `put({ durable: true })` wrote to NVMe from DRAM. */
  madeDurable: number;
  /** Chunks written to NVMe by demotion, demotions dropped (queue full or a write failed), failed durable writes, admission policy errors. */
  demoted: number;
  demoteDropped: number;
  writeErrors: number;
  admitErrors: number;
}

/** Counters of every process of the store's directory (KvStoreStats.shared), written in batches. */
export interface KvStoreSharedCounters {
  lookups: number;
  hitChunks: number;
  missChunks: number;
  checksumFailures: number;
  /** NVMe chunks evicted to make room, chunk records written, slot reservations of dead writers recovered. */
  evictions: number;
  writes: number;
  lostReservations: number;
}
