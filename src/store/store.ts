/**
 * KvStore: chunks of prompts' KV, addressed by prefix, in tiers walked in
 * order: a pinned DRAM tier (per process) and an NVMe tier (slab files
 * shared by the processes of a host, indexed in LMDB), surviving restarts and
 * never serving bytes that failed their checksum. DESIGN.md section 3 is the
 * data model, section 4b the tiers.
 *
 * This class is the facade: each job lives in its own module (config, hit,
 * load, plan-cache, put, demoter, dram, nvme), sharing a StoreCore.
 *
 * Record format (DRAM slot and NVMe slot alike): for each layer of the
 * store's range, an extent of K of the chunk's tokens then V, 4 KiB aligned.
 */
import { rmSync } from 'node:fs';

import type { Device } from '../device/device.js';
import type { Event, Stream } from '../device/stream.js';
import type { KvCache } from '../layout/kvcache.js';
import type { KvLayout } from '../layout/layout.js';
import type { LayerRange } from '../layout/pieces.js';
import { Catalog, type StoreGeometry } from './catalog.js';
import { createStoreDir, resolveStoreConfig, type KvStoreOptions, type LayerMoveOptions, type PutOptions } from './config.js';
import { StoreCore } from './core.js';
import { Demoter } from './demoter.js';
import { DramTier } from './dram.js';
import { lookup, type ChunkRef, type StoreHit } from './hit.js';
import { isIndexDamage } from './index-check.js';
import { STORE_FORMAT_VERSION, chunkKeys } from './keys.js';
import { loadLayer } from './load.js';
import { NvmeTier } from './nvme.js';
import { PlanCache } from './plan-cache.js';
import * as puts from './put.js';
import type { PendingPut } from './put.js';
import type { Tier } from './tier.js';

export type { AdmissionInfo, AdmissionPolicy, KvStoreOptions, LayerMoveOptions, PutOptions } from './config.js';
export { StoreHit, type ChunkRef } from './hit.js';
export { PendingPut } from './put.js';

/** Counters of one store instance, plus the shared ones of its directory. */
export interface KvStoreStats {
  dram: { capacityBytes: number; usedBytes: number; chunks: number; evictions: number };
  nvme: { capacityBytes: number; slotBytes: number; slots: number; chunks: number };
  /**
   * This process: lookups and the chunks they hit or missed, loads (per chunk
   * and layer; `dramPlans`: DRAM loads planned for every layer at once,
   * `dramPlannedLayers`: layer loads those plans served), checksum failures,
   * NVMe writes.
   */
  local: Record<string, number>;
  /** Every process of the directory (written in batches). */
  shared: Record<string, number>;
}

/** The order of a store's tiers, from its DRAM and NVMe tiers (see store/testing.ts). */
export type ArrangeTiers = (dram: Tier, nvme: Tier) => readonly Tier[];

/** The cores of open stores, for store/testing.ts. */
export const storeCores = new WeakMap<KvStore, StoreCore>();

let construct: (core: StoreCore, dir: string, temporary: boolean, warning: string | undefined) => KvStore;

export class KvStore {
  readonly device: Device;
  readonly layout: KvLayout;
  readonly dir: string;
  readonly chunkTokens: number;
  readonly blocksPerChunk: number;
  readonly layers: LayerRange;
  /** Fingerprint (hex) of this store's keys. */
  readonly fingerprint: string;
  /** Bytes of one layer extent of a chunk record. */
  readonly extentBytes: number;
  /** Bytes of a chunk record (every layer). */
  readonly recordBytes: number;
  readonly geometry: StoreGeometry;
  /**
   * What opening the store had to give up, when it did: with
   * `onCorruptIndex: 'reset'`, that the damaged index was set aside (where
   * to) and the NVMe tier's chunks were lost. Undefined when nothing was.
   */
  readonly warning: string | undefined;
  readonly #core: StoreCore;
  readonly #plans = new PlanCache();
  readonly #temporary: boolean;

  static {
    construct = (core, dir, temporary, warning) => new KvStore(core, dir, temporary, warning);
  }

  private constructor(core: StoreCore, dir: string, temporary: boolean, warning: string | undefined) {
    const c = core.config;
    this.warning = warning;
    this.#core = core;
    this.device = c.device;
    this.layout = c.layout;
    this.dir = dir;
    this.#temporary = temporary;
    this.chunkTokens = c.chunkTokens;
    this.blocksPerChunk = c.chunkTokens / c.layout.blockTokens;
    this.layers = c.layers;
    this.fingerprint = c.fingerprint;
    this.extentBytes = c.extentBytes;
    this.recordBytes = c.recordBytes;
    this.geometry = core.nvme.geometry;
    storeCores.set(this, core);
  }

  /** Opens (creating where new) the store in `options.dir`. */
  static async open(options: KvStoreOptions): Promise<KvStore> {
    return openStore(options, undefined);
  }

  get closed(): boolean {
    return this.#core.closed;
  }

  /** Keys of the full chunks of `tokens`. */
  keys(tokens: ArrayLike<number>): string[] {
    return chunkKeys(this.fingerprint, tokens, this.chunkTokens);
  }

  /**
   * The longest cached prefix of `tokens`: chunk by chunk from the start, in
   * DRAM or on NVMe, stopping at the first chunk cached in neither. DRAM
   * chunks stay pinned until `hit.release()`.
   */
  lookup(tokens: ArrayLike<number>): StoreHit {
    this.#core.live();
    return lookup(this.#core, this.keys(tokens));
  }

  /**
   * Enqueues on `stream` the load of layer `layer` of `chunks` into the
   * blocks of `blockTable` (chunks.length x blocksPerChunk ids, in chunk
   * order; chunks of several requests may be concatenated). DRAM chunks are
   * copied from pinned memory; NVMe chunks are read (into a DRAM slot when
   * one is free: the chunk is promoted once every layer arrived), checked on
   * the IO thread, then copied. The returned event fails with ERR_CHECKSUM
   * when a chunk failed its check: that chunk is dropped from the store and
   * its blocks hold zeros, never the bad bytes; look the prompt up again to
   * learn the new hit.
   */
  loadLayer(chunks: readonly ChunkRef[], layer: number, kvCache: KvCache, blockTable: ArrayLike<number>, stream: Stream,
    options: LayerMoveOptions = {}): Event {
    return loadLayer(this.#core, this.#plans, chunks, layer, kvCache, blockTable, stream, options);
  }

  /**
   * Starts the put of a prompt's new chunks: its full chunks not cached yet
   * get a DRAM slot each (chunks for which none is free are skipped: the
   * tier never blocks a prefill). Fill it with putLayer, then commit().
   */
  beginPut(tokens: ArrayLike<number>): PendingPut {
    this.#core.live();
    return puts.beginPut(this.#core, this.keys(tokens));
  }

  /**
   * Enqueues on `stream` the copy of layer `layer` of the pending chunks
   * from the blocks of `blockTable` (the prompt's block table: chunkCount x
   * blocksPerChunk ids) into their DRAM slots. Several puts may go in one
   * call (arrays of puts and block tables): one batch moves them all.
   */
  putLayer(pending: PendingPut | readonly PendingPut[], layer: number, kvCache: KvCache,
    blockTable: ArrayLike<number> | readonly ArrayLike<number>[], stream: Stream, options: LayerMoveOptions = {}): Event {
    return puts.putLayer(this.#core, pending, layer, kvCache, blockTable, stream, options);
  }

  /**
   * Enqueues the copy of every layer of the pending chunks (a whole-chunk
   * put), then commits once the copies completed. With `durable`, resolves
   * only after the chunks are written to NVMe and entered in the index
   * (admission is bypassed); otherwise admission decides in the background.
   */
  async put(tokens: ArrayLike<number>, kvCache: KvCache, blockTable: ArrayLike<number>, stream: Stream,
    options: PutOptions | null = {}): Promise<{ added: number; keys: string[] }> {
    this.#core.live();
    this.#core.checkCache(kvCache);
    return puts.put(this.#core, this.keys(tokens), kvCache, blockTable, stream, options);
  }

  /**
   * Makes a put's chunks visible, once every layer was put and the copies
   * completed. A failed copy or a missing layer aborts the put (nothing
   * becomes visible) and rejects. With `durable`, also writes them to NVMe
   * before resolving.
   */
  async commit(pending: PendingPut, options: PutOptions | null = {}): Promise<{ added: number; keys: string[] }> {
    this.#core.live();
    return puts.commit(this.#core, pending, options);
  }

  /**
   * Drops a put: nothing becomes visible; slots return once the copies in
   * flight completed. Too late once commit() was called: it then waits for
   * the commit to end and leaves its outcome alone.
   */
  async abort(pending: PendingPut): Promise<void> {
    return puts.abort(this.#core, pending);
  }

  /** Resolves once every chunk queued for NVMe was written (or failed) and uses are recorded. */
  async flush(): Promise<void> {
    const core = this.#core;
    core.live();
    await core.demoter.idle();
    await Promise.all([...core.loads]);
    for (const tier of withNvme(core)) await tier.flush();
  }

  stats(): KvStoreStats {
    const core = this.#core;
    core.live();
    return {
      dram: core.dram.stats(),
      nvme: core.nvme.stats(),
      local: { ...core.local },
      shared: core.nvme.catalog.counters(),
    };
  }

  /**
   * Closes the store: waits for loads in flight, writes queued chunks
   * (unless `abandon`), records uses, closes files and the index, frees the
   * DRAM tier, and removes a temporary directory. Idempotent.
   */
  async close(options: { abandon?: boolean } = {}): Promise<void> {
    const core = this.#core;
    if (core.closed) return;
    if (!options.abandon) await core.demoter.idle();
    core.closed = true;
    await core.demoter.idle();
    await Promise.all([...core.loads]);
    this.#plans.clear();
    try {
      await closeAll(withNvme(core).filter((t) => t !== core.dram));
    } finally {
      await core.dram.close();
      if (this.#temporary) rmSync(this.dir, { recursive: true, force: true });
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }
}

/** The store's tiers, and its NVMe tier where they leave it out: the index lives there. */
function withNvme(core: StoreCore): Tier[] {
  return core.tiers.includes(core.nvme) ? [...core.tiers] : [...core.tiers, core.nvme];
}

/** Closes every tier, last first, then throws the first failure, if any. */
async function closeAll(tiers: readonly Tier[]): Promise<void> {
  let first: { error: unknown } | undefined;
  for (const tier of [...tiers].reverse()) {
    try {
      await tier.close();
    } catch (e) {
      first ??= { error: e };
    }
  }
  if (first) throw first.error;
}

/**
 * Opens a store; `arrange` (store/testing.ts) orders its tiers, which may
 * include tiers of the caller's: the DRAM tier must come first.
 */
export async function openStore(options: KvStoreOptions, arrange: ArrangeTiers | undefined): Promise<KvStore> {
  const config = resolveStoreConfig(options);
  const { dir, temporary, created } = createStoreDir(options.dir);
  const { device, layers, recordBytes, extentBytes } = config;
  const wanted: StoreGeometry = {
    version: STORE_FORMAT_VERSION,
    slotBytes: recordBytes,
    slotCount: Math.floor(config.nvmeBytes / recordBytes),
    slotsPerFile: Math.max(1, Math.floor(config.slabFileBytes / recordBytes)),
    layers: layers.count,
    extentBytes,
  };
  // A failed create leaves nothing behind: the geometry it wrote would bind every later open.
  const undo = (fresh: boolean): void => {
    if (temporary) rmSync(dir, { recursive: true, force: true });
    else if (fresh) Catalog.removeCreated(dir, created);
  };
  const openNvme = async (): Promise<NvmeTier> => {
    const fresh = Catalog.isNew(dir);
    try {
      return await NvmeTier.open(device, dir, wanted, config.fingerprint, config.file);
    } catch (e) {
      if (!(isIndexDamage(e) && config.onCorruptIndex === 'reset')) undo(fresh);
      throw e;
    }
  };
  let warning: string | undefined;
  let nvme: NvmeTier;
  try {
    nvme = await openNvme();
  } catch (e) {
    if (!(isIndexDamage(e) && config.onCorruptIndex === 'reset')) throw e;
    warning = Catalog.reset(dir, (e as Error).message);
    nvme = await openNvme();
  }
  const dram = new DramTier(extentBytes, layers.count, config.dramBytes, (bytes) => device.allocPinned(bytes), config.rank);
  let core: StoreCore;
  try {
    core = new StoreCore(config, dram, nvme, arrange ? arrange(dram, nvme) : [dram, nvme]);
  } catch (e) {
    await nvme.close();
    if (temporary) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  core.demoter = new Demoter(core);
  return construct(core, dir, temporary, warning);
}
