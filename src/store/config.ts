/**
 * A store's options, their defaults and their checks, resolved once when the
 * store opens into a frozen StoreConfig that every other store module reads.
 */
import type { Device } from '../device/device.js';
import { describe, fail } from '../errors.js';
import type { OpenFileOptions } from '../io/file.js';
import type { PagedEngine } from '../layout/kvcache.js';
import { KvLayout, type KvLayoutSpec } from '../layout/layout.js';
import type { LayerRange } from '../layout/pieces.js';
import { lruRank, type EvictionRank } from './eviction.js';
import { fingerprintOf, type FingerprintSpec } from './keys.js';
import { checkSignal } from '../util/abort.js';
import { checkKnownOptions } from '../util/validate.js';

const GiB = 1 << 30;

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
  /**
   * Pin the whole DRAM tier when the store opens instead of growing it in
   * 256 MiB steps on demand. Pinning is slow (tens of ms per step on a CUDA
   * host) and a step taken inside a put or a promotion lands on that
   * prefill's time to first token: a server that knows its budget pays it
   * at open. Default false.
   */
  preallocateDram?: boolean;
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
  /**
   * How long a hit's lease keeps its NVMe chunks from eviction by any
   * process of the directory, in seconds (a hit held longer may lose
   * chunks: its loads report them as ERR_EVICTED). Default 60.
   */
  leaseSeconds?: number;
  /** IO engine and direct IO of the slab files (see `device.openFile`). */
  file?: Pick<OpenFileOptions, 'engine' | 'direct'>;
  /**
   * How loads and puts move between the DRAM tier and the KV cache on CUDA
   * (see `KvCache.gather`). Default `auto` (`KVFLOW_PAGED_ENGINE`, else
   * `dma`: copy engines only, which a busy GPU does not starve); `kernel`
   * moves small blocks faster when the SMs are free.
   */
  pagedEngine?: PagedEngine;
  /**
   * What to do when the directory's index (`index.mdb`) or its `writers`
   * folder is damaged: `fail` (default) rejects with ERR_IO; `reset` sets
   * the damaged index aside (renamed `index.mdb.damaged-<time>`), removes
   * the slab files it described and starts with an empty NVMe tier, saying
   * so in the store's `warning`. Only cached KV is lost, which can be
   * recomputed. A reset is refused (ERR_BUSY) while another store has the
   * directory open.
   */
  onCorruptIndex?: 'fail' | 'reset';
  /**
   * Abandons the open when it aborts: `open` rejects with ERR_ABORTED (its
   * `cause` the signal's reason) between its steps, closing what it opened
   * and removing what a first open created. Already aborted: nothing is
   * touched.
   */
  signal?: AbortSignal;
}

/** Every option of `KvStore.open` (an unknown one is ERR_INVALID_ARG). */
const STORE_OPTIONS = [
  'device', 'layout', 'fingerprint', 'dir', 'chunkTokens', 'layers', 'dramBytes', 'preallocateDram', 'nvmeBytes', 'slabFileBytes', 'admit',
  'evictionRank', 'demoteBacklog', 'leaseSeconds', 'file', 'pagedEngine', 'onCorruptIndex', 'signal',
] as const;

/** Options of one `loadLayer` or `putLayer` call. */
export interface LayerMoveOptions {
  /**
   * The paged engine of this call, over the store's `pagedEngine`: a
   * scheduler that knows the GPU is idle right now (say, loading the first
   * layers before any compute) can take `kernel` there and `dma` elsewhere.
   */
  engine?: PagedEngine;
}

/** The store's defaults, every one in this literal. */
/** What the store adds to the device's store defaults (`device.config.store`, src/defaults.ts): values that are functions or per-store choices. */
const STORE_CHOICES = Object.freeze({
  pagedEngine: 'auto' as PagedEngine,
  evictionRank: lruRank,
});

/** A store's options resolved: defaults applied, everything checked. */
export interface StoreConfig {
  readonly device: Device;
  readonly layout: KvLayout;
  readonly layers: LayerRange;
  readonly chunkTokens: number;
  /** Fingerprint (hex) of the store's keys. */
  readonly fingerprint: string;
  readonly dramBytes: number;
  readonly preallocateDram: boolean;
  readonly nvmeBytes: number;
  readonly slabFileBytes: number;
  readonly backlog: number;
  /** How long a hit's lease holds, in ms. */
  readonly leaseMs: number;
  readonly admit: AdmissionPolicy;
  readonly engine: PagedEngine;
  readonly rank: EvictionRank;
  /** Bytes of one layer extent of a chunk record. */
  readonly extentBytes: number;
  /** Bytes of a chunk record (every layer). */
  readonly recordBytes: number;
  readonly file: Pick<OpenFileOptions, 'engine' | 'direct'> | undefined;
  readonly onCorruptIndex: 'fail' | 'reset';
  /** Planned DRAM loads kept, and the most chunks one plan covers. */
  readonly preparedLoads: number;
  readonly preparedMaxChunks: number;
  /** One NVMe write batch (one fsync, one index commit) at most. */
  readonly writeBatchChunks: number;
  readonly writeBatchBytes: number;
  /** Milliseconds between flushes of chunk uses to the index. */
  readonly touchFlushMs: number;
}

function positive(value: unknown, name: string, fallback: number): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value <= 0) {
    fail('ERR_INVALID_ARG', `expected a positive integer for ${name}, got ${describe(value)}`);
  }
  return value;
}

function checkEngine(engine: unknown, name: string): PagedEngine {
  if (engine !== 'auto' && engine !== 'dma' && engine !== 'kernel') {
    fail('ERR_INVALID_ARG', `expected 'auto', 'dma' or 'kernel' for ${name}, got ${describe(engine)}`);
  }
  return engine;
}

/** Applies the defaults to `options` and checks them (ERR_INVALID_ARG, ERR_OUT_OF_RANGE). */
export function resolveStoreConfig(options: KvStoreOptions): StoreConfig {
  if (typeof options !== 'object' || options === null) fail('ERR_INVALID_ARG', `expected store options, got ${describe(options)}`);
  checkKnownOptions(options, 'options', STORE_OPTIONS);
  checkSignal(options.signal);
  if (options.file !== undefined) checkKnownOptions(options.file, 'options.file', ['engine', 'direct']);
  const { device } = options;
  if (typeof device !== 'object' || device === null || typeof device.allocPinned !== 'function') {
    fail('ERR_INVALID_ARG', `expected a Device for device, got ${describe(device)}`);
  }
  // Every default but the two above sits in the device's configuration (read once when it opened).
  const d = { ...device.config.store, ...STORE_CHOICES };
  const layout = options.layout instanceof KvLayout ? options.layout : new KvLayout(options.layout);
  const chunkTokens = positive(options.chunkTokens, 'chunkTokens', d.chunkTokens);
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
  const dramBytes = positive(options.dramBytes, 'dramBytes', d.dramBytes);
  const preallocateDram = options.preallocateDram ?? d.preallocateDram;
  if (typeof preallocateDram !== 'boolean') fail('ERR_INVALID_ARG', `expected true or false for preallocateDram, got ${describe(preallocateDram)}`);
  const nvmeBytes = positive(options.nvmeBytes, 'nvmeBytes', d.nvmeBytes);
  const slabFileBytes = positive(options.slabFileBytes, 'slabFileBytes', d.slabFileBytes);
  const backlog = positive(options.demoteBacklog, 'demoteBacklog', d.demoteBacklog);
  const leaseSeconds = options.leaseSeconds ?? d.leaseSeconds;
  if (typeof leaseSeconds !== 'number' || !(leaseSeconds > 0) || !Number.isFinite(leaseSeconds)) {
    fail('ERR_INVALID_ARG', `expected a positive number of seconds for leaseSeconds, got ${describe(leaseSeconds)}`);
  }
  const admit = options.admit ?? d.admit;
  if (typeof admit !== 'function' && admit !== 'hit-or-twice' && admit !== 'always' && admit !== 'never') {
    fail('ERR_INVALID_ARG', `expected 'hit-or-twice', 'always', 'never' or a function for admit, got ${describe(admit)}`);
  }
  const engine = checkEngine(options.pagedEngine ?? d.pagedEngine, 'pagedEngine');
  const rank = options.evictionRank ?? d.evictionRank;
  if (typeof rank !== 'function') fail('ERR_INVALID_ARG', `expected a function for evictionRank, got ${describe(rank)}`);
  const onCorruptIndex = options.onCorruptIndex ?? d.onCorruptIndex;
  if (onCorruptIndex !== 'fail' && onCorruptIndex !== 'reset') {
    fail('ERR_INVALID_ARG', `expected 'fail' or 'reset' for onCorruptIndex, got ${describe(onCorruptIndex)}`);
  }
  const extentBytes = layout.extentBytes(chunkTokens);
  const recordBytes = extentBytes * layers.count;
  if (dramBytes < recordBytes) fail('ERR_INVALID_ARG', `expected dramBytes of at least one chunk record (${recordBytes} bytes), got ${dramBytes}`);
  if (nvmeBytes < recordBytes) fail('ERR_INVALID_ARG', `expected nvmeBytes of at least one chunk record (${recordBytes} bytes), got ${nvmeBytes}`);
  return Object.freeze({
    device, layout, layers: Object.freeze({ first: layers.first, count: layers.count }), chunkTokens, fingerprint,
    dramBytes, preallocateDram, nvmeBytes, slabFileBytes, backlog, leaseMs: leaseSeconds * 1000, admit, engine, rank, extentBytes, recordBytes, file: options.file, onCorruptIndex,
    preparedLoads: d.preparedLoads, preparedMaxChunks: d.preparedMaxChunks, writeBatchChunks: d.writeBatchChunks,
    writeBatchBytes: d.writeBatchBytes, touchFlushMs: d.touchFlushMs,
  });
}

/** The engine of one load or put: its option, else the store's. */
export function engineOf(options: LayerMoveOptions, fallback: PagedEngine): PagedEngine {
  if (options === null || typeof options !== 'object') fail('ERR_INVALID_ARG', `expected an options object, got ${describe(options)}`);
  return checkEngine(options.engine ?? fallback, 'engine');
}

/** Options of a put or commit. */
export interface PutOptions {
  /** Write through to NVMe and resolve once the chunks are in the index and on disk. Default false. */
  durable?: boolean;
}

/** Checks a put's or commit's options (undefined and null mean the defaults) before anything changes. */
export function putOptions(options: unknown): { durable: boolean } {
  if (options === undefined || options === null) return { durable: false };
  if (typeof options !== 'object') fail('ERR_INVALID_ARG', `expected an options object for options, got ${describe(options)}`);
  const { durable } = options as PutOptions;
  if (durable !== undefined && typeof durable !== 'boolean') fail('ERR_INVALID_ARG', `expected a boolean for options.durable, got ${describe(durable)}`);
  return { durable: durable ?? false };
}
