/**
 * KvStore: chunks of prompts' KV, addressed by prefix, in a pinned DRAM tier
 * (per process) and an NVMe tier (slab files shared by the processes of a
 * host, indexed in LMDB), surviving restarts and never serving bytes that
 * failed their checksum. DESIGN.md section 3 is the data model.
 *
 * Record format (DRAM slot and NVMe slot alike): for each layer of the
 * store's range, an extent of K of the chunk's tokens then V, 4 KiB aligned.
 */
import { mkdirSync, mkdtempSync, chmodSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { Device } from '../device/device.js';
import type { PinnedBuffer } from '../device/buffer.js';
import type { Event } from '../device/event.js';
import type { Stream } from '../device/stream.js';
import { KvflowError, describe, fail } from '../errors.js';
import type { KvFile, OpenFileOptions } from '../io/file.js';
import '../io/open-file.js';
import { KvCache, type PagedEngine, type PreparedTransfer, type StagingRecord } from '../layout/kvcache.js';
import { KvLayout, type KvLayoutSpec } from '../layout/layout.js';
import { checkBlocks, type LayerRange } from '../layout/pieces.js';
import { Catalog, type CatalogEntry, type StoreGeometry } from './catalog.js';
import { DramTier, lruRank, type DramChunk, type EvictionRank } from './dram.js';
import { STORE_FORMAT_VERSION, chunkKeys, extentSeed, fingerprintOf, type FingerprintSpec } from './keys.js';

const GiB = 1 << 30;
const MiB = 1 << 20;

/** What an admission policy sees of a chunk that could be written to NVMe. */
export interface AdmissionInfo {
  key: string;
  /** Loads of the chunk served from DRAM so far. */
  hits: number;
  /** Times this process committed the chunk (2 means it was computed twice). */
  seen: number;
}

/**
 * Which DRAM chunks are written to NVMe (in the background): `hit-or-twice`
 * (default: chunks that were loaded, or committed twice), `always`, `never`,
 * or a function.
 */
export type AdmissionPolicy = 'hit-or-twice' | 'always' | 'never' | ((chunk: AdmissionInfo) => boolean);

export interface KvStoreOptions {
  /** The device whose pinned memory and IO engine the store uses. */
  device: Device;
  /** The KV cache's layout (the store keeps the layers of `layers`). */
  layout: KvLayout | KvLayoutSpec;
  /** What makes KV bytes interchangeable: model, revision, adapter, RoPE, TP, tenant. */
  fingerprint: FingerprintSpec;
  /** Store directory (created 0700). Default: a new temporary directory, removed by close(). */
  dir?: string;
  /** Tokens per chunk, a multiple of the layout's blockTokens. Default 256. */
  chunkTokens?: number;
  /** Layers kept (a pipeline stage's). Default all. */
  layers?: LayerRange;
  /** Pinned DRAM tier capacity in bytes (grown on demand). Default 1 GiB. */
  dramBytes?: number;
  /** NVMe tier capacity in bytes, used when the directory is created. Default 4 GiB. */
  nvmeBytes?: number;
  /** Largest slab file, in bytes. Default 4 GiB. */
  slabFileBytes?: number;
  /** Which chunks go to NVMe. Default `hit-or-twice`. */
  admit?: AdmissionPolicy;
  /** Eviction order of both tiers (lowest rank first). Default LRU. */
  evictionRank?: EvictionRank;
  /** Chunks queued for NVMe at most; more are not written (counted as `demoteDropped`). Default 64. */
  demoteBacklog?: number;
  /** IO engine and direct IO of the slab files (see `device.openFile`). */
  file?: Pick<OpenFileOptions, 'engine' | 'direct'>;
  /**
   * How loads and puts move between the DRAM tier and the KV cache on CUDA
   * (see `KvCache.gather`). Default `auto` (`KVFLOW_PAGED_ENGINE`, else
   * `dma`: copy engines only, which a busy GPU does not starve); `kernel`
   * moves small blocks faster when the SMs are free.
   */
  pagedEngine?: PagedEngine;
}

/** Options of one `loadLayer` or `putLayer` call. */
export interface LayerMoveOptions {
  /**
   * The paged engine of this call, over the store's `pagedEngine`: a
   * scheduler that knows the GPU is idle right now (say, loading the first
   * layers before any compute) can take `kernel` there and `dma` elsewhere.
   */
  engine?: PagedEngine;
}

/** A chunk of a hit. */
export interface ChunkRef {
  readonly key: string;
  /** Position of the chunk in the prompt. */
  readonly index: number;
  /** Where it was found by lookup. */
  readonly tier: 'dram' | 'nvme';
}

interface RefState extends ChunkRef {
  hit: StoreHit;
  /** The index entry seen by lookup (NVMe chunks). */
  entry: CatalogEntry | undefined;
}

/** Planned DRAM loads kept per store (each a prepared transfer of every layer), least recently used dropped first. */
const PREPARED_LOADS = 8;
/** Larger loads plan per call (a plan's piece table grows with chunks x layers). */
const PREPARED_MAX_CHUNKS = 1024;

/** A DRAM load planned for all layers (KvStore#dramLoad). */
interface PreparedLoad {
  cache: KvCache;
  blocks: number[];
  dram: DramChunk[];
  transfer: PreparedTransfer;
  engine: PagedEngine;
}

function sameBlocks(a: readonly number[], b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** The longest cached prefix of a prompt. Chunks stay pinned in DRAM until release(). */
export class StoreHit {
  /** The cached chunks, in prompt order. */
  readonly chunks: readonly ChunkRef[];
  /** Tokens the chunks cover. */
  readonly tokens: number;
  /** Chunks found in DRAM and on NVMe. */
  readonly dram: number;
  readonly nvme: number;
  /**
   * Positions (ChunkRef.index) of this hit's chunks whose bytes failed their
   * checksum in a load, ascending: when a batched load rejects with
   * ERR_CHECKSUM, each request learns here whether it was hit, and how much
   * of its prefix is still good (`validTokens`). Filled once the failing
   * read has been handled (`store.flush()` waits for it).
   */
  readonly failed: number[] = [];
  /** @internal */
  readonly pinned: DramChunk[] = [];
  /** @internal NVMe slots of the hit's chunks: kept from eviction by this process until release. */
  readonly slots: number[] = [];
  /** @internal */
  readonly owner: object;
  #release: (hit: StoreHit) => void;
  #released = false;

  /** @internal */
  constructor(owner: object, chunks: RefState[], chunkTokens: number, release: (hit: StoreHit) => void) {
    this.owner = owner;
    for (const c of chunks) c.hit = this;
    this.chunks = Object.freeze(chunks);
    this.tokens = chunks.length * chunkTokens;
    this.dram = chunks.filter((c) => c.tier === 'dram').length;
    this.nvme = chunks.length - this.dram;
    this.#release = release;
  }

  get released(): boolean {
    return this.#released;
  }

  /** Tokens of the prefix before the first chunk that failed its checksum. */
  get validTokens(): number {
    if (this.failed.length === 0) return this.tokens;
    const first = this.chunks.findIndex((c) => c.index === this.failed[0]);
    return first * (this.tokens / this.chunks.length);
  }

  /** @internal */
  markFailed(index: number): void {
    if (this.failed.includes(index)) return;
    this.failed.push(index);
    this.failed.sort((a, b) => a - b);
  }

  /** Unpins the chunks (loads already enqueued keep theirs until they complete). Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#release(this);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/** A chunk a checked read fills, and the refs of the call that share it. */
interface ReadOwner {
  ref: RefState;
  chunk: DramChunk | undefined;
  slot: number;
  also: RefState[];
}

interface PendingChunk {
  index: number;
  key: string;
  dram: DramChunk | undefined;
}

/** A prefill's new chunks, filled layer by layer, visible only after commit(). */
export class PendingPut {
  /** Chunks this put will add (the prompt's full chunks not cached yet). */
  readonly chunks: readonly { index: number; key: string }[];
  /** Full chunks of the prompt (the block table covers these). */
  readonly chunkCount: number;
  /** @internal */
  readonly parts: PendingChunk[];
  /** @internal */
  readonly layersPut: Uint8Array;
  /** @internal */
  readonly events: Event[] = [];
  /** @internal */
  state: 'open' | 'committing' | 'done' = 'open';
  /** @internal Settles when a commit in progress ends. */
  committing: Promise<unknown> | undefined;
  /** @internal */
  readonly owner: object;

  /** @internal */
  constructor(owner: object, parts: PendingChunk[], chunkCount: number, layers: number) {
    this.owner = owner;
    this.parts = parts;
    this.chunks = Object.freeze(parts.map(({ index, key }) => ({ index, key })));
    this.chunkCount = chunkCount;
    this.layersPut = new Uint8Array(layers);
  }
}

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

interface Demotion {
  chunk: DramChunk;
  /** A durable put waits on it: failing to write it is an error, not a drop. */
  force: boolean;
  waiters: { resolve: () => void; reject: (e: unknown) => void }[];
}

function positive(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    fail('ERR_INVALID_ARG', `expected a positive integer for ${name}, got ${describe(value)}`);
  }
  return value;
}

/** Waits for every promise, then rejects with the first failure, if any. */
async function settleAll(promises: readonly Promise<unknown>[]): Promise<void> {
  const results = await Promise.allSettled(promises);
  const failed = results.find((r) => r.status === 'rejected');
  if (failed) throw (failed as PromiseRejectedResult).reason;
}

function settle(event: Event): Promise<void> {
  return event.done().then(
    () => undefined,
    () => undefined,
  );
}

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
  readonly #catalog: Catalog;
  readonly #files: KvFile[];
  readonly #dram: DramTier;
  readonly #admit: AdmissionPolicy;
  readonly #backlog: number;
  readonly #temporary: boolean;
  readonly #seen = new Map<string, number>();
  readonly #queue: Demotion[] = [];
  #writer: Promise<void> | undefined;
  readonly #reading = new Map<number, number>();
  /** NVMe slots of unreleased hits of this process: never evicted by it. */
  readonly #hitSlots = new Map<number, number>();
  readonly #inflight = new Map<DramChunk, Map<number, Event>>();
  readonly #loads = new Set<Promise<unknown>>();
  /** Promotions whose hit was released while reads into them were in flight. */
  readonly #abandoned = new Set<DramChunk>();
  readonly #local: Record<string, number> = {
    lookups: 0, hitChunks: 0, missChunks: 0, dramLoads: 0, nvmeLoads: 0, dramPlans: 0, dramPlannedLayers: 0, checksumFailures: 0,
    puts: 0, putSkipped: 0, demoted: 0, demoteDropped: 0, writeErrors: 0, admitErrors: 0,
  };
  readonly #timer: NodeJS.Timeout;
  #closed = false;
  readonly #engine: PagedEngine;
  /** Planned DRAM loads (see #dramLoad), oldest first. */
  readonly #prepared: PreparedLoad[] = [];

  private constructor(init: {
    device: Device; layout: KvLayout; dir: string; temporary: boolean; chunkTokens: number; layers: LayerRange;
    fingerprint: string; catalog: Catalog; files: KvFile[]; dram: DramTier; admit: AdmissionPolicy; backlog: number;
    engine: PagedEngine;
  }) {
    this.device = init.device;
    this.layout = init.layout;
    this.dir = init.dir;
    this.#temporary = init.temporary;
    this.chunkTokens = init.chunkTokens;
    this.blocksPerChunk = init.chunkTokens / init.layout.blockTokens;
    this.layers = init.layers;
    this.fingerprint = init.fingerprint;
    this.extentBytes = init.layout.extentBytes(init.chunkTokens);
    this.recordBytes = this.extentBytes * init.layers.count;
    this.#catalog = init.catalog;
    this.geometry = init.catalog.geometry;
    this.#files = init.files;
    this.#dram = init.dram;
    this.#admit = init.admit;
    this.#backlog = init.backlog;
    this.#engine = init.engine;
    this.#timer = setInterval(() => {
      // Uses are hints: a failed batch is not retried.
      this.#track(this.#catalog.flushTouches());
    }, 1000);
    this.#timer.unref();
  }

  /** Opens (creating where new) the store in `options.dir`. */
  static async open(options: KvStoreOptions): Promise<KvStore> {
    if (typeof options !== 'object' || options === null) fail('ERR_INVALID_ARG', `expected store options, got ${describe(options)}`);
    const { device } = options;
    if (typeof device !== 'object' || device === null || typeof device.allocPinned !== 'function') {
      fail('ERR_INVALID_ARG', `expected a Device for device, got ${describe(device)}`);
    }
    const layout = options.layout instanceof KvLayout ? options.layout : new KvLayout(options.layout);
    const chunkTokens = positive(options.chunkTokens, 'chunkTokens', 256);
    if (chunkTokens % layout.blockTokens !== 0) {
      fail('ERR_INVALID_ARG', `expected chunkTokens to be a multiple of the layout's blockTokens (${layout.blockTokens}), got ${chunkTokens}`);
    }
    const layers = options.layers ?? { first: 0, count: layout.layers };
    if (typeof layers !== 'object' || layers === null) fail('ERR_INVALID_ARG', `expected { first, count } for layers, got ${describe(layers)}`);
    layout.checkLayer(layers.first, 'layers.first');
    if (!Number.isSafeInteger(layers.count) || layers.count < 1 || layers.first + layers.count > layout.layers) {
      fail('ERR_OUT_OF_RANGE', `expected layers within [0, ${layout.layers}), got first ${layers.first} count ${describe(layers.count)}`);
    }
    const fingerprint = fingerprintOf(options.fingerprint, {
      kvHeads: layout.kvHeads, headDim: layout.headDim, dtype: layout.dtype, chunkTokens,
      firstLayer: layers.first, layerCount: layers.count,
    });
    const dramBytes = positive(options.dramBytes, 'dramBytes', GiB);
    const nvmeBytes = positive(options.nvmeBytes, 'nvmeBytes', 4 * GiB);
    const slabFileBytes = positive(options.slabFileBytes, 'slabFileBytes', 4 * GiB);
    const backlog = positive(options.demoteBacklog, 'demoteBacklog', 64);
    const admit = options.admit ?? 'hit-or-twice';
    if (typeof admit !== 'function' && admit !== 'hit-or-twice' && admit !== 'always' && admit !== 'never') {
      fail('ERR_INVALID_ARG', `expected 'hit-or-twice', 'always', 'never' or a function for admit, got ${describe(admit)}`);
    }
    const engine = options.pagedEngine ?? 'auto';
    if (engine !== 'auto' && engine !== 'dma' && engine !== 'kernel') {
      fail('ERR_INVALID_ARG', `expected 'auto', 'dma' or 'kernel' for pagedEngine, got ${describe(engine)}`);
    }
    const rank = options.evictionRank ?? lruRank;
    if (typeof rank !== 'function') fail('ERR_INVALID_ARG', `expected a function for evictionRank, got ${describe(rank)}`);
    const extentBytes = layout.extentBytes(chunkTokens);
    const recordBytes = extentBytes * layers.count;
    if (dramBytes < recordBytes) fail('ERR_INVALID_ARG', `expected dramBytes of at least one chunk record (${recordBytes} bytes), got ${dramBytes}`);
    if (nvmeBytes < recordBytes) fail('ERR_INVALID_ARG', `expected nvmeBytes of at least one chunk record (${recordBytes} bytes), got ${nvmeBytes}`);

    let dir: string;
    let temporary = false;
    if (options.dir === undefined) {
      dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-store-'));
      temporary = true;
    } else {
      if (typeof options.dir !== 'string' || options.dir.length === 0) fail('ERR_INVALID_ARG', `expected a directory path for dir, got ${describe(options.dir)}`);
      dir = path.resolve(options.dir);
    }
    try {
      mkdirSync(dir, { recursive: true, mode: 0o700 });
      chmodSync(dir, 0o700);
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      const k = new KvflowError(`cannot create the store directory ${dir}: ${err.message}`, err.code === 'ENOSPC' ? 'ERR_NO_SPACE' : 'ERR_IO');
      if (typeof err.errno === 'number') k.errno = -err.errno;
      throw k;
    }
    const slotsPerFile = Math.max(1, Math.floor(slabFileBytes / recordBytes));
    const wanted: StoreGeometry = {
      version: STORE_FORMAT_VERSION,
      slotBytes: recordBytes,
      slotCount: Math.floor(nvmeBytes / recordBytes),
      slotsPerFile,
      layers: layers.count,
      extentBytes,
    };
    const catalog = Catalog.open(dir, wanted);
    const g = catalog.geometry;
    const files: KvFile[] = [];
    try {
      const count = Math.ceil(g.slotCount / g.slotsPerFile);
      for (let i = 0; i < count; i++) {
        const slots = Math.min(g.slotsPerFile, g.slotCount - i * g.slotsPerFile);
        files.push(await device.openFile(path.join(dir, `slab-${String(i).padStart(4, '0')}.kv`), {
          create: true, size: slots * g.slotBytes, ...options.file,
        }));
      }
    } catch (e) {
      await Promise.all(files.map((f) => f.dispose()));
      await catalog.close();
      throw e;
    }
    const dram = new DramTier(recordBytes, dramBytes, (bytes) => device.allocPinned(bytes), rank);
    return new KvStore({ device, layout, dir, temporary, chunkTokens, layers, fingerprint, catalog, files, dram, admit, backlog, engine });
  }

  get closed(): boolean {
    return this.#closed;
  }

  #live(): void {
    if (this.#closed) fail('ERR_DISPOSED', 'the store is closed');
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
    this.#live();
    const keys = this.keys(tokens);
    const refs: RefState[] = [];
    const pinned: DramChunk[] = [];
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i]!;
      const d = this.#dram.ready(key);
      if (d) {
        this.#dram.pin(d);
        pinned.push(d);
        refs.push({ key, index: i, tier: 'dram', entry: undefined, hit: undefined as unknown as StoreHit });
        continue;
      }
      const e = this.#catalog.get(key);
      if (e === undefined || e.fp !== this.fingerprint || e.crc.length !== this.layers.count) break;
      refs.push({ key, index: i, tier: 'nvme', entry: e, hit: undefined as unknown as StoreHit });
    }
    this.#local.lookups!++;
    this.#local.hitChunks! += refs.length;
    this.#local.missChunks! += keys.length - refs.length;
    this.#catalog.count('lookups');
    this.#catalog.count('hitChunks', refs.length);
    this.#catalog.count('missChunks', keys.length - refs.length);
    const hit = new StoreHit(this, refs, this.chunkTokens, (h) => this.#releaseHit(h));
    hit.pinned.push(...pinned);
    for (const r of refs) {
      if (r.entry) {
        hit.slots.push(r.entry.slot);
        this.#hitSlots.set(r.entry.slot, (this.#hitSlots.get(r.entry.slot) ?? 0) + 1);
      }
    }
    return hit;
  }

  #releaseHit(hit: StoreHit): void {
    for (const slot of hit.slots) {
      const n = (this.#hitSlots.get(slot) ?? 1) - 1;
      if (n <= 0) this.#hitSlots.delete(slot);
      else this.#hitSlots.set(slot, n);
    }
    hit.slots.length = 0;
    for (const c of hit.pinned) {
      // A promotion that did not receive every layer is dropped with its hit
      // (once the reads in flight into it have landed).
      if (c.state === 'filling' && !c.dead) {
        if (this.#inflight.get(c)?.size) this.#abandoned.add(c);
        else this.#dram.discard(c);
      }
      this.#dram.unpin(c);
    }
    hit.pinned.length = 0;
  }

  #checkCache(kvCache: KvCache): void {
    if (!(kvCache instanceof KvCache)) fail('ERR_INVALID_ARG', `expected a KvCache for kvCache, got ${describe(kvCache)}`);
    const l = kvCache.layout;
    if (l.kvHeads !== this.layout.kvHeads || l.headDim !== this.layout.headDim || l.dtype !== this.layout.dtype ||
      l.layers < this.layers.first + this.layers.count || this.chunkTokens % l.blockTokens !== 0) {
      fail('ERR_INVALID_ARG', `expected a KvCache of ${this.layout.kvHeads} KV heads x ${this.layout.headDim} ${this.layout.dtype} ` +
        `covering layers ${this.layers.first}..${this.layers.first + this.layers.count - 1}, got ${l.kvHeads} x ${l.headDim} ${l.dtype}, ${l.layers} layers`);
    }
  }

  #extentIndex(layer: number): number {
    if (!Number.isSafeInteger(layer) || layer < this.layers.first || layer >= this.layers.first + this.layers.count) {
      fail(Number.isSafeInteger(layer) ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG',
        `expected a layer in [${this.layers.first}, ${this.layers.first + this.layers.count}) for layer, got ${describe(layer)}`);
    }
    return layer - this.layers.first;
  }

  #blocksOf(blockTable: ArrayLike<number>, chunks: number, kvCache: KvCache, unique: boolean): number {
    const bpc = this.chunkTokens / kvCache.layout.blockTokens;
    if (blockTable === null || typeof blockTable !== 'object' || typeof blockTable.length !== 'number') {
      fail('ERR_INVALID_ARG', `expected an array of block ids for blockTable, got ${describe(blockTable)}`);
    }
    if (blockTable.length !== chunks * bpc) {
      fail('ERR_INVALID_ARG', `expected ${chunks * bpc} block ids in blockTable (${chunks} chunks x ${bpc} blocks), got ${blockTable.length}`);
    }
    checkBlocks(kvCache.layout, blockTable, unique);
    return bpc;
  }

  #slotPlace(slot: number): { file: KvFile; fileIndex: number; offset: number } {
    const g = this.geometry;
    const fileIndex = Math.floor(slot / g.slotsPerFile);
    return { file: this.#files[fileIndex]!, fileIndex, offset: (slot % g.slotsPerFile) * g.slotBytes };
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
    this.#live();
    const li = this.#extentIndex(layer);
    const engine = this.#engineOf(options);
    const fromDram = this.#dramLoad(chunks, li, layer, kvCache, blockTable, stream, engine);
    if (fromDram) return fromDram;
    this.#checkCache(kvCache);
    if (!Array.isArray(chunks)) fail('ERR_INVALID_ARG', `expected an array of chunks (hit.chunks), got ${describe(chunks)}`);
    const bpc = this.#blocksOf(blockTable, chunks.length, kvCache, true);
    const refs = chunks as readonly RefState[];
    refs.forEach((r, i) => {
      if (typeof r !== 'object' || r === null || !(r.hit instanceof StoreHit) || r.hit.owner !== this) {
        fail('ERR_INVALID_ARG', `expected chunks from this store's lookup() at chunks[${i}], got ${describe(r)}`);
      }
      if (r.hit.released) fail('ERR_INVALID_ARG', `expected chunks of a hit not yet released at chunks[${i}]`);
    });
    if (chunks.length === 0) return stream.record();

    const extent = this.extentBytes;
    const records: StagingRecord[] = [];
    const pins: DramChunk[] = [];
    const waits: Event[] = [];
    const temps: PinnedBuffer[] = [];
    // Reads grouped by (file, destination buffer): one checked read each.
    const groups = new Map<string, { file: KvFile; buffer: PinnedBuffer; pieces: { dstOffset: number; fileOffset: number; bytes: number; seed: number; crc: number }[]; owners: ReadOwner[] }>();
    // A chunk named twice in one call (prompts sharing a prefix) is staged once.
    const staged = new Map<string, { buffer: PinnedBuffer; offset: number; owner?: ReadOwner }>();
    try {
      for (let i = 0; i < refs.length; i++) {
        const ref = refs[i]!;
        const blocks = Array.prototype.slice.call(blockTable, i * bpc, (i + 1) * bpc) as number[];
        const twice = staged.get(ref.key);
        if (twice) {
          twice.owner?.also.push(ref);
          records.push({ blocks, staging: twice.buffer, stagingOffset: twice.offset });
          continue;
        }
        let c = this.#dram.chunks.get(ref.key);
        const present = c !== undefined && !c.dead &&
          (c.state === 'ready' || (c.kind === 'promotion' && (c.layers[li] === 1 || this.#inflight.get(c)?.has(li) === true)));
        if (c && present) {
          const pending = this.#inflight.get(c)?.get(li);
          if (pending) waits.push(pending);
          this.#dramHit(c, ref, li);
          pins.push(c);
          const offset = c.slot.offset + li * extent;
          records.push({ blocks, staging: c.slot.buffer, stagingOffset: offset });
          staged.set(ref.key, { buffer: c.slot.buffer, offset });
          continue;
        }
        // From NVMe: the index entry as it is now (another process may have rewritten or evicted it).
        const entry = this.#catalog.get(ref.key);
        if (entry === undefined || entry.fp !== this.fingerprint || entry.crc.length !== this.layers.count) {
          fail('ERR_INVALID_ARG', `chunk ${ref.index} (${ref.key.slice(0, 12)}...) is no longer cached; look the prompt up again`);
        }
        if (c && (c.dead || c.kind !== 'promotion')) c = undefined; // a prefill's own slot is never read into
        else if (!c) {
          c = this.#dram.begin(ref.key, this.layers.count, 'promotion', ref.index);
          if (c) {
            c.onNvme = true;
            ref.hit.pinned.push(c); // the promotion's pin, released with the hit
          }
        }
        let buffer: PinnedBuffer;
        let offset: number;
        if (c) {
          this.#dram.pin(c);
          pins.push(c);
          buffer = c.slot.buffer;
          offset = c.slot.offset + li * extent;
        } else {
          buffer = this.device.allocPinned(extent);
          temps.push(buffer);
          offset = 0;
        }
        const owner: ReadOwner = { ref, chunk: c, slot: entry.slot, also: [] };
        staged.set(ref.key, { buffer, offset, owner });
        const place = this.#slotPlace(entry.slot);
        const id = `${place.fileIndex}:${c ? c.slot.segment : `t${temps.length}`}`;
        let g = groups.get(id);
        if (!g) {
          g = { file: place.file, buffer, pieces: [], owners: [] };
          groups.set(id, g);
        }
        g.pieces.push({ dstOffset: offset, fileOffset: place.offset + li * extent, bytes: extent, seed: extentSeed(ref.key, li), crc: entry.crc[li]! });
        g.owners.push(owner);
        records.push({ blocks, staging: buffer, stagingOffset: offset });
        this.#local.nvmeLoads!++;
      }
      // Everything is checked: from here work is enqueued.
      for (const g of groups.values()) {
        const read = g.file.readChecked(g.buffer, g.pieces);
        for (const o of g.owners) {
          this.#reading.set(o.slot, (this.#reading.get(o.slot) ?? 0) + 1);
          if (o.chunk) {
            let m = this.#inflight.get(o.chunk);
            if (!m) this.#inflight.set(o.chunk, (m = new Map()));
            m.set(li, read.event);
          }
        }
        stream.waitEvent(read.event);
        this.#track(read.verified.then(
          (failed) => this.#afterRead(g.owners, li, read.event, new Set(failed)),
          () => this.#afterRead(g.owners, li, read.event, undefined),
        ));
      }
      for (const w of waits) stream.waitEvent(w);
      kvCache.moveRecords(stream, 'scatter', records, layer, engine);
    } catch (e) {
      for (const c of pins) this.#dram.unpin(c);
      for (const t of temps) void t.dispose();
      throw e;
    }
    const event = stream.record();
    this.#track(settle(event).then(() => {
      for (const c of pins) this.#dram.unpin(c);
      for (const t of temps) void t.dispose();
    }));
    return event;
  }

  /** A load of a chunk in DRAM: pinned until the load's event settles, used, and counted. */
  #dramHit(c: DramChunk, ref: RefState, li: number, pin = true): void {
    if (pin) this.#dram.pin(c);
    this.#dram.use(c);
    this.#local.dramLoads!++;
    if (li === 0 && c.state === 'ready') {
      c.hits++;
      if (c.onNvme) {
        // Another process may have evicted it from NVMe: then it is a candidate again.
        if (this.#catalog.has(c.key)) this.#catalog.touch(c.key, false, ref.index);
        else c.onNvme = false;
      }
      this.#consider(c);
    }
  }

  /**
   * loadLayer() when every chunk is ready in DRAM, each named once: the
   * transfer of all the store's layers is planned once per (DRAM chunks,
   * cache, block table), whichever lookup found the chunks, at the call for
   * the first layer, and each layer is then one native call. Returns
   * undefined when the general path must run (it also reports bad input).
   */
  /** The engine of one call: its option, else the store's. */
  #engineOf(options: LayerMoveOptions): PagedEngine {
    if (options === null || typeof options !== 'object') fail('ERR_INVALID_ARG', `expected an options object, got ${describe(options)}`);
    const engine = options.engine ?? this.#engine;
    if (engine !== 'auto' && engine !== 'dma' && engine !== 'kernel') {
      fail('ERR_INVALID_ARG', `expected 'auto', 'dma' or 'kernel' for engine, got ${describe(engine)}`);
    }
    return engine;
  }

  #dramLoad(chunks: readonly ChunkRef[], li: number, layer: number, kvCache: KvCache, blockTable: ArrayLike<number>,
    stream: Stream, engine: PagedEngine): Event | undefined {
    if (!Array.isArray(chunks) || chunks.length === 0 || chunks.length > PREPARED_MAX_CHUNKS) return undefined;
    if (blockTable === null || typeof blockTable !== 'object' || typeof blockTable.length !== 'number') return undefined;
    const refs = chunks as readonly RefState[];
    const dram: DramChunk[] = [];
    const keys = new Set<string>();
    for (const r of refs) {
      if (typeof r !== 'object' || r === null || !(r.hit instanceof StoreHit) || r.hit.owner !== this || r.hit.released) return undefined;
      const c = this.#dram.chunks.get(r.key);
      if (c === undefined || c.dead || c.state !== 'ready' || this.#inflight.get(c)?.has(li) === true || keys.has(r.key)) return undefined;
      keys.add(r.key);
      dram.push(c);
    }
    const at = this.#prepared.findIndex((e) => e.cache === kvCache && e.engine === engine && e.dram.length === dram.length && e.dram.every((c, i) => c === dram[i]) &&
      sameBlocks(e.blocks, blockTable));
    let entry = at < 0 ? undefined : this.#prepared[at]!;
    if (entry !== undefined) {
      if (at !== this.#prepared.length - 1) this.#prepared.push(...this.#prepared.splice(at, 1)); // most recently used last
    } else if (li !== 0) {
      // Planning every layer pays off over a layer-by-layer load, which starts at the first
      // layer; a load that starts elsewhere (or whose plan was dropped) takes the general path.
      return undefined;
    } else {
      this.#checkCache(kvCache);
      const bpc = this.#blocksOf(blockTable, chunks.length, kvCache, true);
      const records = dram.map((c, i) => ({
        blocks: Array.prototype.slice.call(blockTable, i * bpc, (i + 1) * bpc) as number[],
        staging: c.slot.buffer,
        stagingOffset: c.slot.offset,
      }));
      const transfer = kvCache.prepare('scatter', records, this.layers, engine);
      entry = { cache: kvCache, blocks: Array.from(blockTable), dram, transfer, engine };
      this.#prepared.push(entry);
      if (this.#prepared.length > PREPARED_LOADS) this.#prepared.shift()!.transfer.dispose();
      this.#local.dramPlans!++;
    }
    const transfer = entry.transfer;
    for (const c of dram) this.#dram.pin(c);
    let event: Event;
    try {
      transfer.move(stream, layer);
      event = stream.record();
    } catch (e) {
      for (const c of dram) this.#dram.unpin(c);
      throw e;
    }
    // The rest of the hits' bookkeeping after the enqueue, so the copy starts
    // sooner (at a load's first layer it reads and touches the index).
    refs.forEach((r, i) => this.#dramHit(dram[i]!, r, li, false));
    this.#local.dramPlannedLayers!++;
    this.#track(settle(event).then(() => {
      for (const c of dram) this.#dram.unpin(c);
    }));
    return event;
  }

  /** After a checked read: promote what verified, drop what did not (failed: undefined for an IO error). */
  #afterRead(owners: ReadOwner[], li: number, event: Event, failed: Set<number> | undefined): void {
    owners.forEach((o, i) => {
      const n = (this.#reading.get(o.slot) ?? 1) - 1;
      if (n <= 0) this.#reading.delete(o.slot);
      else this.#reading.set(o.slot, n);
      const m = o.chunk ? this.#inflight.get(o.chunk) : undefined;
      if (m && m.get(li) === event) m.delete(li);
      if (m && m.size === 0) this.#inflight.delete(o.chunk!);
      const bad = failed === undefined || failed.has(i);
      if (failed !== undefined && failed.has(i)) {
        for (const r of [o.ref, ...o.also]) r.hit.markFailed(r.index);
        this.#local.checksumFailures!++;
        this.#catalog.count('checksumFailures');
        if (!this.#closed) this.#track(this.#catalog.drop(o.ref.key, o.slot));
      }
      if (!bad && li === 0 && !this.#closed) this.#catalog.touch(o.ref.key, true, o.ref.index);
      if (!o.chunk) return;
      if (bad) {
        this.#dram.discard(o.chunk);
        return;
      }
      if (o.chunk.state === 'filling' && this.#dram.fill(o.chunk, li)) {
        o.chunk.state = 'ready';
        this.#abandoned.delete(o.chunk);
      }
    });
    for (const c of this.#abandoned) {
      if (c.dead || c.state === 'ready') this.#abandoned.delete(c);
      else if (!this.#inflight.get(c)?.size) {
        this.#abandoned.delete(c);
        this.#dram.discard(c);
      }
    }
  }

  #track(p: Promise<unknown>): void {
    const q = p.catch(() => undefined).finally(() => this.#loads.delete(q));
    this.#loads.add(q);
  }

  /**
   * Starts the put of a prompt's new chunks: its full chunks not cached yet
   * get a DRAM slot each (chunks for which none is free are skipped: the
   * tier never blocks a prefill). Fill it with putLayer, then commit().
   */
  beginPut(tokens: ArrayLike<number>): PendingPut {
    this.#live();
    const keys = this.keys(tokens);
    const parts: PendingChunk[] = [];
    keys.forEach((key, index) => {
      if (this.#dram.chunks.has(key)) return;
      const e = this.#catalog.get(key);
      if (e !== undefined && e.fp === this.fingerprint) return;
      const dram = this.#dram.begin(key, this.layers.count, 'put', index);
      if (!dram) {
        this.#local.putSkipped!++;
        return;
      }
      parts.push({ index, key, dram });
    });
    return new PendingPut(this, parts, keys.length, this.layers.count);
  }

  #checkPending(pending: PendingPut): void {
    if (!(pending instanceof PendingPut) || pending.owner !== this) {
      fail('ERR_INVALID_ARG', `expected a PendingPut from this store's beginPut(), got ${describe(pending)}`);
    }
    if (pending.state !== 'open') fail('ERR_INVALID_ARG', 'expected an open put, got one already committed or aborted');
  }

  /**
   * Enqueues on `stream` the copy of layer `layer` of the pending chunks
   * from the blocks of `blockTable` (the prompt's block table: chunkCount x
   * blocksPerChunk ids) into their DRAM slots. Several puts may go in one
   * call (arrays of puts and block tables): one batch moves them all.
   */
  putLayer(pending: PendingPut | readonly PendingPut[], layer: number, kvCache: KvCache,
    blockTable: ArrayLike<number> | readonly ArrayLike<number>[], stream: Stream, options: LayerMoveOptions = {}): Event {
    this.#live();
    const li = this.#extentIndex(layer);
    const engine = this.#engineOf(options);
    this.#checkCache(kvCache);
    const puts = Array.isArray(pending) ? (pending as readonly PendingPut[]) : [pending as PendingPut];
    const tables = Array.isArray(pending) ? (blockTable as readonly ArrayLike<number>[]) : [blockTable as ArrayLike<number>];
    if (!Array.isArray(tables) || tables.length !== puts.length) {
      fail('ERR_INVALID_ARG', `expected one block table per put (${puts.length}), got ${describe(blockTable)}`);
    }
    const records: StagingRecord[] = [];
    puts.forEach((p, i) => {
      this.#checkPending(p);
      const bpc = this.#blocksOf(tables[i]!, p.chunkCount, kvCache, false);
      for (const part of p.parts) {
        if (!part.dram) continue;
        const blocks = Array.prototype.slice.call(tables[i]!, part.index * bpc, (part.index + 1) * bpc) as number[];
        records.push({ blocks, staging: part.dram.slot.buffer, stagingOffset: part.dram.slot.offset + li * this.extentBytes });
      }
    });
    kvCache.moveRecords(stream, 'gather', records, layer, engine);
    const event = stream.record();
    for (const p of puts) {
      p.events.push(event);
      p.layersPut[li] = 1;
    }
    return event;
  }

  /**
   * Enqueues the copy of every layer of the pending chunks (a whole-chunk
   * put), then commits once the copies completed. With `durable`, resolves
   * only after the chunks are written to NVMe and entered in the index
   * (admission is bypassed); otherwise admission decides in the background.
   */
  async put(tokens: ArrayLike<number>, kvCache: KvCache, blockTable: ArrayLike<number>, stream: Stream,
    options: { durable?: boolean } = {}): Promise<{ added: number; keys: string[] }> {
    this.#live();
    this.#checkCache(kvCache);
    const pending = this.beginPut(tokens);
    try {
      const bpc = this.#blocksOf(blockTable, pending.chunkCount, kvCache, false);
      const records: StagingRecord[] = pending.parts.filter((p) => p.dram).map((p) => ({
        blocks: Array.prototype.slice.call(blockTable, p.index * bpc, (p.index + 1) * bpc) as number[],
        staging: p.dram!.slot.buffer,
        stagingOffset: p.dram!.slot.offset,
      }));
      kvCache.moveRecords(stream, 'gather', records, this.layers, this.#engine);
    } catch (e) {
      await this.abort(pending);
      throw e;
    }
    pending.events.push(stream.record());
    pending.layersPut.fill(1);
    const result = await this.commit(pending, options);
    if (options.durable) {
      // Chunks of the prompt that were in DRAM already become durable too.
      const more: Promise<void>[] = [];
      for (const key of this.keys(tokens)) {
        const d = this.#dram.ready(key);
        if (d && !d.onNvme) more.push(this.#demote(d, true));
      }
      await settleAll(more);
    }
    return result;
  }

  /**
   * Makes a put's chunks visible, once every layer was put and the copies
   * completed. A failed copy or a missing layer aborts the put (nothing
   * becomes visible) and rejects. With `durable`, also writes them to NVMe
   * before resolving.
   */
  async commit(pending: PendingPut, options: { durable?: boolean } = {}): Promise<{ added: number; keys: string[] }> {
    this.#live();
    this.#checkPending(pending);
    pending.state = 'committing';
    const done = this.#commit(pending, options);
    pending.committing = done.catch(() => undefined);
    return done;
  }

  async #commit(pending: PendingPut, options: { durable?: boolean }): Promise<{ added: number; keys: string[] }> {
    const results = await Promise.allSettled(pending.events.map((e) => e.done()));
    const failed = results.find((r) => r.status === 'rejected');
    const missing = [...pending.layersPut].findIndex((v) => v === 0);
    if (failed || missing >= 0 || this.#closed) {
      this.#discardParts(pending);
      pending.state = 'done';
      if (this.#closed) fail('ERR_DISPOSED', 'the store was closed before the put committed');
      if (failed) throw (failed as PromiseRejectedResult).reason;
      fail('ERR_INVALID_ARG', `expected every layer to be put before commit, layer ${this.layers.first + missing} was not`);
    }
    pending.state = 'done';
    const keys: string[] = [];
    const durable: Promise<void>[] = [];
    for (const part of pending.parts) {
      const c = part.dram;
      if (!c || c.dead) continue;
      c.state = 'ready';
      c.layers.fill(1);
      c.present = c.layers.length;
      this.#dram.unpin(c);
      keys.push(part.key);
      this.#local.puts!++;
      this.#seen.set(part.key, (this.#seen.get(part.key) ?? 0) + 1);
      if (this.#seen.size > 65536) this.#seen.delete(this.#seen.keys().next().value!);
      if (options.durable) durable.push(this.#demote(c, true));
      else this.#consider(c);
    }
    await settleAll(durable);
    return { added: keys.length, keys };
  }

  /**
   * Drops a put: nothing becomes visible; slots return once the copies in
   * flight completed. Too late once commit() was called: it then waits for
   * the commit to end and leaves its outcome alone.
   */
  async abort(pending: PendingPut): Promise<void> {
    if (!(pending instanceof PendingPut) || pending.owner !== this) {
      fail('ERR_INVALID_ARG', `expected a PendingPut from this store's beginPut(), got ${describe(pending)}`);
    }
    if (pending.state === 'committing') {
      await pending.committing;
      return;
    }
    if (pending.state === 'done') return;
    pending.state = 'done';
    await Promise.all(pending.events.map(settle));
    this.#discardParts(pending);
  }

  #discardParts(pending: PendingPut): void {
    for (const part of pending.parts) {
      if (!part.dram) continue;
      this.#dram.unpin(part.dram);
      this.#dram.discard(part.dram);
    }
  }

  /** Applies the admission policy to a ready DRAM chunk not yet on NVMe. */
  #consider(c: DramChunk): void {
    if (c.onNvme || c.demoting || c.state !== 'ready') return;
    const info: AdmissionInfo = { key: c.key, hits: c.hits, seen: this.#seen.get(c.key) ?? 0 };
    const a = this.#admit;
    let admitted: boolean;
    try {
      admitted = a === 'always' || (a === 'hit-or-twice' && (info.hits > 0 || info.seen >= 2)) || (typeof a === 'function' && a(info) === true);
    } catch {
      this.#local.admitErrors!++;
      admitted = false; // a failing policy admits nothing
    }
    if (admitted) void this.#demote(c, false).catch(() => undefined);
  }

  /**
   * Queues a chunk for NVMe. Resolves once it is entered in the index; a
   * forced (durable) demotion that could not be written rejects, an
   * admitted one that could not is only counted.
   */
  #demote(c: DramChunk, force: boolean): Promise<void> {
    if (c.onNvme) return Promise.resolve();
    const existing = this.#queue.find((d) => d.chunk === c);
    if (existing) {
      existing.force ||= force;
      return new Promise<void>((resolve, reject) => existing.waiters.push({ resolve, reject }));
    }
    if (this.#queue.length >= this.#backlog && !force) {
      this.#local.demoteDropped!++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      this.#dram.pin(c);
      c.demoting = true;
      this.#queue.push({ chunk: c, force, waiters: [{ resolve, reject }] });
      // Started a microtask later, so that the chunks of one commit go in one batch.
      this.#writer ??= Promise.resolve().then(() => this.#drain()).finally(() => {
        this.#writer = undefined;
      });
    });
  }

  async #drain(): Promise<void> {
    while (this.#queue.length > 0 && !this.#closed) {
      // One batch is one fsync and one index commit: up to 512 MiB of records,
      // so a large durable put is not cut into batches that leave the disk idle
      // while each one syncs.
      const batch = this.#queue.splice(0, Math.max(1, Math.min(64, Math.floor(512 * MiB / this.recordBytes))));
      let failures: Map<DramChunk, unknown>;
      try {
        failures = await this.#writeBatch(batch.map((d) => d.chunk));
      } catch (e) {
        failures = new Map(batch.map((d) => [d.chunk, e]));
      }
      for (const d of batch) {
        d.chunk.demoting = false;
        this.#dram.unpin(d.chunk);
        const failure = failures.get(d.chunk);
        if (failure !== undefined) {
          if (d.force) this.#local.writeErrors!++;
          else this.#local.demoteDropped!++;
        }
        for (const w of d.waiters) {
          if (failure === undefined || !d.force) w.resolve();
          else w.reject(failure);
        }
      }
    }
    for (const d of this.#queue.splice(0)) {
      d.chunk.demoting = false;
      this.#dram.unpin(d.chunk);
      const closed = new KvflowError('the store was closed before the chunk was written', 'ERR_ABORTED');
      for (const w of d.waiters) (d.force ? w.reject(closed) : w.resolve());
    }
  }

  /**
   * Writes chunks to NVMe slots and enters them: reserve, write with
   * checksums, fsync, commit. Every write is settled before any slot is
   * released or entered. Returns the chunks not entered, with why.
   */
  async #writeBatch(chunks: DramChunk[]): Promise<Map<DramChunk, unknown>> {
    const failures = new Map<DramChunk, unknown>();
    const todo = chunks.filter((c) => {
      if (c.onNvme) return false;
      const e = this.#catalog.get(c.key);
      if (e !== undefined && e.fp === this.fingerprint) {
        c.onNvme = true;
        return false;
      }
      return true;
    });
    if (todo.length === 0) return failures;
    const busy = new Set([...this.#reading.keys(), ...this.#hitSlots.keys()]);
    const { slots, evicted } = await this.#catalog.reserve(todo.length, busy);
    for (const key of evicted) {
      const d = this.#dram.chunks.get(key);
      if (d) d.onNvme = false;
    }
    const placed = todo.slice(0, slots.length);
    for (const c of todo.slice(slots.length)) {
      failures.set(c, new KvflowError('no NVMe slot could be taken: every slot is being read or written', 'ERR_NO_SPACE'));
    }
    const results = await Promise.allSettled(placed.map(async (c, i) => {
      const place = this.#slotPlace(slots[i]!);
      const pieces = [];
      for (let li = 0; li < this.layers.count; li++) {
        pieces.push({ srcOffset: c.slot.offset + li * this.extentBytes, fileOffset: place.offset + li * this.extentBytes, bytes: this.extentBytes, seed: extentSeed(c.key, li) });
      }
      return { place, sums: await place.file.writeSummed(c.slot.buffer, pieces) };
    }));
    const written: { key: string; slot: number; fp: string; crc: number[]; index: number }[] = [];
    const unused: number[] = [];
    const files = new Set<KvFile>();
    results.forEach((r, i) => {
      const c = placed[i]!;
      if (r.status === 'fulfilled') {
        files.add(r.value.place.file);
        written.push({ key: c.key, slot: slots[i]!, fp: this.fingerprint, crc: [...r.value.sums], index: c.index });
      } else {
        failures.set(c, r.reason);
        unused.push(slots[i]!);
      }
    });
    const synced = await Promise.allSettled([...files].map((f) => f.sync()));
    const syncError = synced.find((r) => r.status === 'rejected');
    if (syncError) {
      for (const w of written) {
        failures.set(placed.find((c) => c.key === w.key)!, (syncError as PromiseRejectedResult).reason);
        unused.push(w.slot);
      }
      written.length = 0;
    }
    const entered = new Set(await this.#catalog.commit(written, unused));
    for (const c of placed) {
      if (entered.has(c.key)) c.onNvme = true;
      else if (!failures.has(c)) failures.set(c, new KvflowError('the chunk\'s NVMe slot was taken back before it was entered', 'ERR_IO'));
    }
    this.#local.demoted! += entered.size;
    return failures;
  }

  /** Resolves once every chunk queued for NVMe was written (or failed) and uses are recorded. */
  async flush(): Promise<void> {
    this.#live();
    while (this.#writer) await this.#writer;
    await Promise.all([...this.#loads]);
    await this.#catalog.flushTouches();
  }

  stats(): KvStoreStats {
    this.#live();
    const g = this.geometry;
    const summary = this.#catalog.summary();
    return {
      dram: {
        capacityBytes: this.#dram.capacitySlots * this.recordBytes,
        usedBytes: this.#dram.usedSlots * this.recordBytes,
        chunks: [...this.#dram.chunks.values()].filter((c) => c.state === 'ready').length,
        evictions: this.#dram.evictions,
      },
      nvme: { capacityBytes: g.slotCount * g.slotBytes, slotBytes: g.slotBytes, slots: g.slotCount, chunks: summary.chunks },
      local: { ...this.#local },
      shared: this.#catalog.counters(),
    };
  }

  /**
   * Closes the store: waits for loads in flight, writes queued chunks
   * (unless `abandon`), records uses, closes files and the index, frees the
   * DRAM tier, and removes a temporary directory. Idempotent.
   */
  async close(options: { abandon?: boolean } = {}): Promise<void> {
    if (this.#closed) return;
    if (!options.abandon) {
      while (this.#writer) await this.#writer;
    }
    this.#closed = true;
    clearInterval(this.#timer);
    while (this.#writer) await this.#writer;
    await Promise.all([...this.#loads]);
    for (const e of this.#prepared.splice(0)) e.transfer.dispose();
    try {
      await this.#catalog.close();
    } finally {
      await Promise.all(this.#files.map((f) => f.dispose()));
      this.#dram.clear();
      await Promise.all(this.#dram.segments.map((s) => s.dispose()));
      if (this.#temporary) rmSync(this.dir, { recursive: true, force: true });
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** @internal Test hook: the slab files. */
  get files(): readonly KvFile[] {
    return this.#files;
  }

  /** @internal Test hook: where a chunk lives on NVMe. */
  nvmeLocation(key: string): { file: KvFile; offset: number; slot: number } | undefined {
    const e = this.#catalog.get(key);
    if (!e) return undefined;
    const p = this.#slotPlace(e.slot);
    return { file: p.file, offset: p.offset, slot: e.slot };
  }

  /** @internal Test hook: slot accounting problems of the index ([] when consistent). */
  indexProblems(): string[] {
    return this.#catalog.check();
  }

  /** @internal Test hook: drops the DRAM tier's chunks (as a restart would). */
  dropDram(): void {
    for (const c of [...this.#dram.chunks.values()]) if (c.pins === 0 && !c.demoting) this.#dram.discard(c);
  }
}

