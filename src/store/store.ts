/**
 * KvStore: chunks of prompts' KV, addressed by prefix, in tiers walked in
 * order: a pinned DRAM tier (per process) and an NVMe tier (slab files
 * shared by the processes of a host, indexed in LMDB), surviving restarts and
 * never serving bytes that failed their checksum. DESIGN.md section 3 is the
 * data model, section 4b the tiers.
 *
 * This class is the facade: each job lives in its own module (open, config,
 * tenants, hit, load, plan-cache, put, demoter, dram, nvme, verify,
 * store-stats), sharing a StoreCore.
 *
 * Record format (DRAM slot and NVMe slot alike): for each layer of the
 * store's range, an extent of K of the chunk's tokens then V, 4 KiB aligned.
 */
import { rmSync } from 'node:fs';

import type { Device } from '../device/device.js';
import { waitSignal, type Event, type WaitOptions } from '../device/event.js';
import type { Stream } from '../device/stream.js';
import '../io/open-file.js';
import type { KvCache } from '../layout/kvcache.js';
import type { KvLayout } from '../layout/layout.js';
import type { LayerRange } from '../layout/pieces.js';
import { abortable } from '../util/abort.js';
import { checkBoolean, checkKnownOptions } from '../util/validate.js';
import type { KvStoreOptions, LayerMoveOptions, PutOptions } from './config.js';
import type { StoreCore } from './core.js';
import type { StoreGeometry } from './geometry.js';
import { lookup, type ChunkRef, type StoreHit } from './hit.js';
import { chunkKeys } from './keys.js';
import { loadLayer } from './load.js';
import { forgetTemporary, openStoreCore, type ArrangeTiers } from './open.js';
import { verify, type VerifyOptions, type VerifyReport } from './verify.js';
import { PlanCache } from './plan-cache.js';
import { storeStats, type KvStoreStats } from './store-stats.js';
import { TenantFingerprints, type TenantOptions } from './tenants.js';
import * as puts from './put.js';
import type { PendingPut, PutResult } from './put.js';
import type { Tier } from './tier.js';

export type { AdmissionInfo, AdmissionPolicy, KvStoreOptions, LayerMoveOptions, PutOptions } from './config.js';
export { StoreHit, type ChunkRef } from './hit.js';
export { PendingPut, type PutResult } from './put.js';
export type { ArrangeTiers } from './open.js';
export type { KvStoreStats } from './store-stats.js';
export type { TenantOptions } from './tenants.js';
export type { VerifyOptions, VerifyProblem, VerifyProgress, VerifyReport } from './verify.js';

/** @internal The cores of open stores, for store/testing.ts. */
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
  /** Fingerprints of the tenants seen lately, by name. */
  readonly #tenants: TenantFingerprints;
  /** Leaves the device's dispose list (the device closes a store left open when it is disposed). */
  readonly #detach: () => void;

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
    this.#tenants = new TenantFingerprints(c.fingerprint);
    this.extentBytes = c.extentBytes;
    this.recordBytes = c.recordBytes;
    this.geometry = core.nvme.geometry;
    storeCores.set(this, core);
    this.#detach = c.device.adopt(this);
  }

  /**
   * Opens (creating where new) the store in `options.dir`: a new path, an
   * empty directory or one a store made (anything else is ERR_INVALID_ARG;
   * an existing directory's mode is never changed). `options.signal` aborts
   * the open between its steps (ERR_ABORTED).
   */
  static async open(options: KvStoreOptions): Promise<KvStore> {
    return openStore(options, undefined);
  }

  get closed(): boolean {
    return this.#core.closed;
  }

  /** Keys of the full chunks of `tokens` (of `options.tenant`). */
  keys(tokens: ArrayLike<number>, options: TenantOptions = {}): string[] {
    return chunkKeys(this.#fingerprintOf(options), tokens, this.chunkTokens);
  }

  #keysOf(tokens: ArrayLike<number>, options: object, known: readonly string[]): string[] {
    return chunkKeys(this.#fingerprintOf(options, known), tokens, this.chunkTokens);
  }

  #fingerprintOf(options: TenantOptions, known: readonly string[] = ['tenant']): string {
    return this.#tenants.of(options, known);
  }

  /**
   * The longest cached prefix of `tokens`: chunk by chunk from the start, in
   * DRAM or on NVMe, stopping at the first chunk cached in neither. The
   * hit is a lease: its chunks stay loadable until `hit.release()` (DRAM
   * chunks pinned; NVMe chunks kept from eviction by every process of the
   * directory, for at most `leaseSeconds`). `options.tenant`: whose prompt
   * it is.
   */
  lookup(tokens: ArrayLike<number>, options: TenantOptions = {}): StoreHit {
    this.#core.live();
    return lookup(this.#core, this.keys(tokens, options));
  }

  /**
   * Enqueues on `stream` the load of layer `layer` of `chunks` into the
   * blocks of `blockTable` (its first chunks.length x blocksPerChunk ids, in
   * chunk order: a request's whole block table will do). Several requests
   * go in one call as `[hitA.chunks, hitB.chunks]` with `[tableA, tableB]`
   * (or concatenated chunks and tables); each hit's own outcome is
   * `await hit.settled()`. DRAM chunks are
   * copied from pinned memory; NVMe chunks are read (into a DRAM slot when
   * one is free: the chunk is promoted once every layer arrived), checked on
   * the IO thread, then copied. A chunk that cannot be loaded never throws:
   * its blocks hold zeros, never bad bytes, its hit lists it in `failed`,
   * and the returned event rejects with ERR_CHECKSUM (its bytes failed
   * their check: it is dropped from the store), ERR_EVICTED (it left every
   * tier since lookup: its lease expired) or ERR_IO. A failed chunk stays
   * failed for its hit in later layers.
   */
  loadLayer(chunks: readonly ChunkRef[] | readonly (readonly ChunkRef[])[], layer: number, kvCache: KvCache,
    blockTable: ArrayLike<number> | readonly ArrayLike<number>[], stream: Stream, options: LayerMoveOptions = {}): Event {
    return loadLayer(this.#core, this.#plans, chunks, layer, kvCache, blockTable, stream, checkKnownOptions(options, 'options', ['engine']) as LayerMoveOptions);
  }

  /**
   * Starts the put of a prompt's new chunks: its full chunks not cached yet
   * get a DRAM slot each (chunks for which none is free are skipped: the
   * tier never blocks a prefill). Fill it with putLayer, then commit().
   * When saving per layer, call it before the loads of the same prompt: a
   * chunk that fails its load is dropped, and a put begun after would count
   * it as new and save its zeros. `options.tenant`: whose prompt it is.
   * `options.hit`: the prompt's hit, when the KV to be put is computed from
   * that hit's loads and the runtime's own compute only (no blocks another
   * request loaded): commit then counts only that hit's load failures, not
   * another request's failure of a shared chunk.
   */
  beginPut(tokens: ArrayLike<number>, options: TenantOptions & { hit?: StoreHit } = {}): PendingPut {
    this.#core.live();
    const keys = this.#keysOf(tokens, options, ['tenant', 'hit']);
    return puts.beginPut(this.#core, keys, puts.checkPutHit(this.#core, keys, options.hit));
  }

  /**
   * Enqueues on `stream` the copy of layer `layer` of the pending chunks
   * from the blocks of `blockTable` (the prompt's block table: its first
   * chunkCount x blocksPerChunk ids are used, so the request's whole table
   * will do) into their DRAM slots. Several puts may go in one call (arrays
   * of puts and block tables): one batch moves them all. Putting a layer
   * again supersedes its earlier copy (after a failed load, once the layer
   * was computed again).
   */
  putLayer(pending: PendingPut | readonly PendingPut[], layer: number, kvCache: KvCache,
    blockTable: ArrayLike<number> | readonly ArrayLike<number>[], stream: Stream, options: LayerMoveOptions = {}): Event {
    return puts.putLayer(this.#core, pending, layer, kvCache, blockTable, stream, checkKnownOptions(options, 'options', ['engine']) as LayerMoveOptions);
  }

  /**
   * Enqueues the copy of every layer of the pending chunks (a whole-chunk
   * put), then commits once the copies completed. With `durable`, resolves
   * only after the chunks are written to NVMe and entered in the index
   * (admission is bypassed), the prompt's chunks that were in DRAM only
   * included: `durable` in the result lists every chunk it made durable;
   * otherwise admission decides in the background.
   */
  async put(tokens: ArrayLike<number>, kvCache: KvCache, blockTable: ArrayLike<number>, stream: Stream,
    options: (PutOptions & TenantOptions) | null = {}): Promise<PutResult> {
    this.#core.live();
    this.#core.checkCache(kvCache);
    return puts.put(this.#core, this.#keysOf(tokens, options ?? {}, ['durable', 'tenant']), kvCache, blockTable, stream, options);
  }

  /**
   * Makes a put's chunks visible, once every layer was put and the copies
   * completed. A failed copy or a missing layer aborts the put (nothing
   * becomes visible) and rejects. With `durable`, also writes them to NVMe
   * before resolving.
   */
  async commit(pending: PendingPut, options: PutOptions | null = {}): Promise<PutResult> {
    this.#core.live();
    checkKnownOptions(options, 'options', ['durable']);
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

  /**
   * Scrubs the store: reads every chunk's every layer, in DRAM and on NVMe
   * (at low IO priority: loads go first), checks each against its CRC32C
   * as loads do, and drops the bad chunks from their tier (unless `drop` is
   * false; on NVMe only while the index still maps the chunk to the slot
   * read). Leased chunks and loads in flight are left alone. Resolves with
   * what it found; rejects with ERR_ABORTED when `signal` aborts it (what
   * was dropped stays dropped), ERR_DISPOSED when the store closes first.
   */
  verify(options: VerifyOptions = {}): Promise<VerifyReport> {
    return verify(this.#core, options);
  }

  /**
   * Resolves once every chunk queued for NVMe was written (or failed) and
   * uses are recorded. `options.signal` stops the wait (ERR_ABORTED); the
   * writes go on in the background.
   */
  async flush(options?: WaitOptions): Promise<void> {
    const core = this.#core;
    core.live();
    const signal = waitSignal(options ?? {}, 'the flush');
    const work = (async () => {
      await core.demoter.idle();
      await Promise.all([...core.loads]);
      for (const tier of withNvme(core)) await tier.flush();
    })();
    return abortable(work, signal, 'the flush');
  }

  stats(): KvStoreStats {
    this.#core.live();
    return storeStats(this.#core);
  }

  /**
   * Closes the store: waits for loads in flight, writes queued chunks
   * (unless `abandon`), records uses, closes files and the index, frees the
   * DRAM tier, and removes a temporary directory. Idempotent. Options are
   * checked first (unknown names, a non-boolean `abandon`: ERR_INVALID_ARG,
   * and the store stays open); null means defaults. Use records that cannot
   * be written at close (a full disk) are lost with a process warning
   * (KVFLOW_USE_RECORDS_LOST) and do not fail it.
   */
  async close(options: { abandon?: boolean } | null = {}): Promise<void> {
    const abandon = checkBoolean(checkKnownOptions(options, 'options', ['abandon']).abandon ?? false, 'abandon');
    const core = this.#core;
    if (core.closed) return;
    if (!abandon) await core.demoter.idle();
    core.closed = true;
    await core.demoter.idle();
    await Promise.all([...core.loads]);
    this.#plans.clear();
    try {
      await closeAll(withNvme(core).filter((t) => t !== core.dram));
    } finally {
      await core.dram.close();
      if (this.#temporary) {
        rmSync(this.dir, { recursive: true, force: true });
        forgetTemporary(this.dir);
      }
      this.#detach();
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
  const { core, dir, temporary, warning } = await openStoreCore(options, arrange);
  return construct(core, dir, temporary, warning);
}
