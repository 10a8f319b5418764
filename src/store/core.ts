/**
 * What the store's modules share: the resolved config, the tiers in order,
 * this process's counters, the work in flight, and the checks every call
 * makes. The KvStore facade owns one; hit, load, put and the demoter read it.
 */
import { describe, fail, type KvflowErrorCode } from '../errors.js';
import type { Event } from '../device/event.js';
import { KvCache } from '../layout/kvcache.js';
import { checkBlocks } from '../layout/pieces.js';
import type { DramChunk } from './arena.js';
import type { ChunkRef } from './tier.js';
import type { StoreConfig } from './config.js';
import type { DramTier } from './dram.js';
import type { NvmeTier } from './nvme.js';
import type { KvStoreLocalCounters } from './stats.js';
import type { Tier } from './tier.js';

/** Load failures remembered for the put check (puts older than this many failures are rare). */
const LOAD_FAILURES_KEPT = 4096;

/** Admission and demotion as the other modules call them (demoter.ts). */
export interface Admission {
  /** Applies the admission policy to a ready DRAM chunk not yet in the demotion tier. */
  consider(c: DramChunk): void;
  /** Queues a chunk for the demotion tier; resolves once it is written there (see Demoter). */
  demote(c: DramChunk, force: boolean): Promise<void>;
  /** This process committed `key` once more. */
  committed(key: string): void;
  /** Resolves once nothing is queued or being written. */
  idle(): Promise<void>;
}

/** Counters of this process (KvStoreStats.local). */
export type LocalCounters = KvStoreLocalCounters;

export class StoreCore {
  readonly config: StoreConfig;
  readonly dram: DramTier;
  /**
   * @internal The store's index and its counters shared by every process of the directory live with the NVMe tier.
   * (Internal so that the published types never reach the index's LMDB types.)
   */
  readonly nvme: NvmeTier;
  /** Every tier, in lookup order; the first is the DRAM tier. */
  readonly tiers: readonly Tier[];
  /** The tiers after DRAM, in order: where loads read from when DRAM has no copy. */
  readonly lower: readonly Tier[];
  /** The first lower tier that can be written: where chunks are demoted to. */
  readonly demoteTo: Tier | undefined;
  readonly local: LocalCounters = {
    lookups: 0, hitChunks: 0, missChunks: 0, dramLoads: 0, nvmeLoads: 0, dramPlans: 0, dramPlannedLayers: 0, putPlans: 0, putPlannedLayers: 0, checksumFailures: 0, evictedLoads: 0, leaseMisses: 0,
    puts: 0, putSkipped: 0, madeDurable: 0, dramHitTokens: 0, nvmeHitTokens: 0, missTokens: 0, failedTokens: 0, demoted: 0, demoteDropped: 0, writeErrors: 0, admitErrors: 0,
  };
  /** Loads and their bookkeeping in flight (flush and close wait for them). */
  readonly loads = new Set<Promise<unknown>>();
  /** Orders puts' layer copies and load failures (put.ts judges a put by it). */
  seq = 0;
  /**
   * Chunks whose load failed, by key: when the failure was known (after the
   * load's event settled) and why. The oldest are forgotten past a bound.
   */
  readonly loadFailures = new Map<string, { seq: number; code: KvflowErrorCode }>();
  closed = false;
  demoter!: Admission;

  /** @internal */
  constructor(config: StoreConfig, dram: DramTier, nvme: NvmeTier, tiers: readonly Tier[]) {
    if (tiers[0] !== dram) fail('ERR_INVALID_ARG', 'expected the DRAM tier first in the store\'s tiers');
    const names = new Set(tiers.map((t) => t.name));
    if (names.size !== tiers.length) fail('ERR_INVALID_ARG', `expected tiers of distinct names, got ${tiers.map((t) => t.name).join(', ')}`);
    this.config = config;
    this.dram = dram;
    this.nvme = nvme;
    this.tiers = Object.freeze([...tiers]);
    this.lower = this.tiers.slice(1);
    this.demoteTo = this.lower.find((t) => typeof t.write === 'function');
  }

  /** A load of `key` failed (its blocks hold zeros): puts computed over it before now are stale. Returns when (core.seq). */
  noteLoadFailure(key: string, code: KvflowErrorCode): number {
    this.loadFailures.delete(key);
    const seq = ++this.seq;
    this.loadFailures.set(key, { seq, code });
    if (this.loadFailures.size > LOAD_FAILURES_KEPT) this.loadFailures.delete(this.loadFailures.keys().next().value!);
    return seq;
  }

  live(): void {
    if (this.closed) fail('ERR_DISPOSED', 'the store is closed');
  }

  track(p: Promise<unknown>): void {
    const q = p.catch(() => undefined).finally(() => this.loads.delete(q));
    this.loads.add(q);
  }

  /** Counts `n` under `name` for every process of the directory (written in batches). */
  countShared(name: string, n = 1): void {
    this.nvme.catalog.count(name, n);
  }

  checkCache(kvCache: KvCache): void {
    if (!(kvCache instanceof KvCache)) fail('ERR_INVALID_ARG', `expected a KvCache for kvCache, got ${describe(kvCache)}`);
    if (kvCache.disposed) fail('ERR_DISPOSED', 'the KvCache is disposed');
    const l = kvCache.layout;
    const { layout, layers, chunkTokens } = this.config;
    if (l.kvHeads !== layout.kvHeads || l.headDim !== layout.headDim || l.dtype !== layout.dtype ||
      l.layers < layers.first + layers.count || chunkTokens % l.blockTokens !== 0) {
      fail('ERR_INVALID_ARG', `expected a KvCache of ${layout.kvHeads} KV heads x ${layout.headDim} ${layout.dtype} ` +
        `covering layers ${layers.first}..${layers.first + layers.count - 1}, got ${l.kvHeads} x ${l.headDim} ${l.dtype}, ${l.layers} layers`);
    }
  }

  /** The extent index (0-based within the store's range) of `layer`. */
  extentIndex(layer: number): number {
    const { layers } = this.config;
    if (!Number.isSafeInteger(layer) || layer < layers.first || layer >= layers.first + layers.count) {
      fail(Number.isSafeInteger(layer) ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG',
        `expected a layer in [${layers.first}, ${layers.first + layers.count}) for layer, got ${describe(layer)}`);
    }
    return layer - layers.first;
  }

  /**
   * Checks the first `chunks` x blocksPerChunk ids of a block table for
   * `kvCache` (a runtime's whole table may be longer: more blocks, a partial
   * last one; the rest is not used); returns its blocks per chunk.
   */
  blocksOf(blockTable: ArrayLike<number>, chunks: number, kvCache: KvCache, unique: boolean): number {
    const bpc = this.config.chunkTokens / kvCache.layout.blockTokens;
    if (blockTable === null || typeof blockTable !== 'object' || typeof blockTable.length !== 'number') {
      fail('ERR_INVALID_ARG', `expected an array of block ids for blockTable, got ${describe(blockTable)}`);
    }
    if (blockTable.length < chunks * bpc) {
      fail('ERR_INVALID_ARG', `expected at least ${chunks * bpc} block ids in blockTable (${chunks} chunks x ${bpc} blocks), got ${blockTable.length}`);
    }
    checkBlocks(kvCache.layout, blockTable.length === chunks * bpc ? blockTable : Array.prototype.slice.call(blockTable, 0, chunks * bpc) as number[], unique);
    return bpc;
  }

  /**
   * One flat list of chunks and one block table from one per request
   * (`[hitA.chunks, hitB.chunks]` with `[tableA, tableB]`, each table used
   * by its prefix); a flat list and table pass through.
   */
  flatten(chunks: readonly ChunkRef[] | readonly (readonly ChunkRef[])[], blockTable: ArrayLike<number> | readonly ArrayLike<number>[],
    kvCache: KvCache): { chunks: readonly ChunkRef[]; blockTable: ArrayLike<number> } {
    if (!Array.isArray(chunks) || chunks.length === 0 || !Array.isArray(chunks[0])) {
      return { chunks: chunks as readonly ChunkRef[], blockTable: blockTable as ArrayLike<number> };
    }
    const groups = chunks as readonly (readonly ChunkRef[])[];
    const tables = blockTable as readonly ArrayLike<number>[];
    if (!Array.isArray(tables) || tables.length !== groups.length) {
      fail('ERR_INVALID_ARG', `expected one block table per request's chunks (${groups.length}), got ${describe(blockTable)}`);
    }
    this.checkCache(kvCache);
    const flat: ChunkRef[] = [];
    const table: number[] = [];
    groups.forEach((g, i) => {
      if (!Array.isArray(g)) fail('ERR_INVALID_ARG', `expected an array of chunks (hit.chunks) at chunks[${i}], got ${describe(g)}`);
      const n = g.length * this.blocksOf(tables[i]!, g.length, kvCache, false);
      flat.push(...g);
      for (let b = 0; b < n; b++) table.push(tables[i]![b]!);
    });
    return { chunks: flat, blockTable: table };
  }

  /**
   * A load of a chunk in DRAM: pinned until the load's event settles (unless
   * the caller pinned it), used, and counted; at the first layer its hit
   * counts for admission and keeps the demotion tier's copy warm.
   */
  dramHit(c: DramChunk, index: number, li: number, pin = true): void {
    if (pin) this.dram.pin(c);
    this.dram.arena.use(c);
    this.local.dramLoads!++;
    if (li === 0 && c.state === 'ready') {
      c.hits++;
      // Another process may have evicted it from the tier below: then it is a candidate again.
      if (c.stored && !this.demoteTo?.touch(c.key, index, false)) c.stored = false;
      this.demoter.consider(c);
    }
  }
}

/** Settles when `event` does, whatever its outcome. */
export function settle(event: Event): Promise<void> {
  return event.untilDone().then(
    () => undefined,
    () => undefined,
  );
}
