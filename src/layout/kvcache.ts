/**
 * A paged KV cache in device memory (allocated by kvflow or wrapped from a
 * runtime) and its per-layer transfers to and from a staging record.
 */
import { BUILT_IN_DEFAULTS } from '../defaults.js';
import { describe, fail } from '../errors.js';
import { DeviceBuffer, KvBuffer, PinnedBuffer } from '../device/buffer.js';
import { Stream } from '../device/stream.js';
import { Disposable, DisposeOrder } from '../util/disposable.js';
import { checkChoice, checkKnownOptions, checkInstance, checkRange, checkSize } from '../util/validate.js';
import { KvLayout } from './layout.js';
import { loadBinding } from '../binding/load.js';
import type { NativeBatch, NativeBuffer } from '../binding/types.js';
import { checkBlocks, layerRange, planCheckedPieces, type LayerRange, type PiecePlan } from './pieces.js';

/**
 * How paged pieces move on CUDA. `dma`: one cudaMemcpyBatchAsync of the
 * pieces (copy engines only; disturbs concurrent compute least). `kernel`: a
 * gather/scatter kernel through device scratch plus one contiguous DMA (run
 * it on a high-priority stream). `auto`: the measured default
 * (`KVFLOW_PAGED_ENGINE`, `dma` unless set). The CPU backend moves bytes the
 * same way for every engine.
 */
export type PagedEngine = 'auto' | 'dma' | 'kernel';

/** One gather or scatter. */
export interface PagedTransfer {
  /** Block ids in prompt order (the block table of the tokens moved). */
  blocks: ArrayLike<number>;
  /** Pinned memory (the normal case) or device memory holding the staging record. */
  staging: PinnedBuffer | DeviceBuffer;
  /** Where the record starts in `staging` (default 0). */
  stagingOffset?: number;
  /** One layer, a range, or every layer (default). */
  layers?: number | LayerRange;
  engine?: PagedEngine;
}

/** One record of a multi-record transfer (see {@link KvCache.moveRecords}). */
export interface StagingRecord {
  blocks: ArrayLike<number>;
  staging: PinnedBuffer | DeviceBuffer;
  stagingOffset?: number;
}

/** What a KvCache needs from the device that made it. */
export interface KvCacheOwner {
  allocDevice(bytes: number): DeviceBuffer;
}

const PAGED_ENGINES: readonly PagedEngine[] = ['auto', 'dma', 'kernel'];

/**
 * A layout plus the device buffers that hold it. Every block access is
 * checked against the layout and the buffers' sizes.
 *
 * Staging format (one record): for each layer of the range, an extent of K of
 * every block in order then V of every block, padded to 4 KiB; see
 * {@link KvLayout.stagingBytes}.
 */
export class KvCache extends Disposable {
  readonly layout: KvLayout;
  readonly buffers: readonly DeviceBuffer[];
  /** False when the buffers were wrapped (the runtime owns them). */
  readonly owned: boolean;
  /** The engine `auto` means for this cache (its device's config `pagedEngine`). */
  readonly #autoEngine: 'dma' | 'kernel';
  protected readonly resourceName = 'KV cache';

  /** @internal Use `device.allocKvCache` or `device.wrapKvCache`. */
  constructor(layout: KvLayout, buffers: DeviceBuffer[], owned: boolean, autoEngine: 'dma' | 'kernel' = BUILT_IN_DEFAULTS.pagedEngine) {
    super();
    this.#autoEngine = autoEngine;
    if (!(layout instanceof KvLayout)) fail('ERR_INVALID_ARG', `expected a KvLayout for layout, got ${describe(layout)}`);
    if (!Array.isArray(buffers) || buffers.length !== layout.bufferCount) {
      fail('ERR_INVALID_ARG', `expected ${layout.bufferCount} device buffers for a ${layout.arrangement} layout, got ${
        Array.isArray(buffers) ? buffers.length : describe(buffers)}`);
    }
    buffers.forEach((b, i) => {
      checkInstance(b, `buffers[${i}]`, 'a DeviceBuffer', DeviceBuffer);
      if (b.byteLength < layout.bufferBytes) {
        fail('ERR_INVALID_ARG', `expected at least ${layout.bufferBytes} bytes in buffers[${i}] for this layout, got ${b.byteLength}`);
      }
    });
    this.layout = layout;
    this.buffers = Object.freeze([...buffers]);
    this.owned = owned;
  }

  /** HBM -> staging: enqueues the copy of `blocks` of the layers on `stream`. */
  gather(stream: Stream, transfer: PagedTransfer): void {
    this.#move(stream, transfer, 'gather');
  }

  /** staging -> HBM: enqueues the copy of a record into `blocks` (distinct ids) on `stream`. */
  scatter(stream: Stream, transfer: PagedTransfer): void {
    this.#move(stream, transfer, 'scatter');
  }

  #move(stream: Stream, t: PagedTransfer, direction: 'gather' | 'scatter'): void {
    checkInstance(stream, 'stream', 'a Stream', Stream);
    if (typeof t !== 'object' || t === null) fail('ERR_INVALID_ARG', `expected a transfer description, got ${describe(t)}`);
    checkKnownOptions(t, 'transfer', ['blocks', 'staging', 'stagingOffset', 'layers', 'engine']);
    this.moveRecords(stream, direction, [{ blocks: t.blocks, staging: t.staging, stagingOffset: t.stagingOffset }], t.layers, t.engine);
  }

  /**
   * Gathers or scatters several records in one batch: record `i` holds the
   * layers of `records[i].blocks` at `records[i].stagingOffset` of its
   * staging buffer. One native call moves every piece, so many chunks of
   * many requests cost one submission. Every record is checked before
   * anything is enqueued; in a scatter no block may appear twice.
   */
  moveRecords(
    stream: Stream,
    direction: 'gather' | 'scatter',
    records: readonly StagingRecord[],
    layers?: number | LayerRange,
    engine: PagedEngine = 'auto',
  ): void {
    checkInstance(stream, 'stream', 'a Stream', Stream);
    const native = stream.native;
    const range = layerRange(this.layout, layers);
    const checked = this.#checkRecords(direction, records, range, engine);
    if (checked.records.length === 0) return;
    // One native call moves every record: the kernel engine DMAs each run of
    // touching staging bytes (never the bytes between two records of a gather,
    // another chunk's in a store's arena) and moves all pieces with one kernel.
    const plans = checked.records.map((r) => planCheckedPieces(this.layout, r.blocks, range));
    const table = new Float64Array(plans.reduce((n, p) => n + p.count, 0) * 5);
    let o = 0;
    checked.records.forEach((r, i) => {
      o = fillTable(table, o, direction, plans[i]!, r.staging, r.offset);
    });
    const [dsts, srcs] = this.#sides(direction, checked.stagings);
    native.copyBatch(dsts, srcs, table, checked.engine);
  }

  /**
   * Plans a multi-record transfer once, to move it many times: a layer at a
   * time as a prefill goes, or again for the next request with the same
   * block table. Everything {@link moveRecords} checks is checked here; each
   * {@link PreparedTransfer.move} then costs one native call that hands the
   * planned pieces of its layers to the stream. The plan does not keep the
   * cache or staging buffers alive: moving after one of them was disposed
   * fails with ERR_DISPOSED. The bytes are read and written when moved, not
   * when prepared.
   */
  prepare(
    direction: 'gather' | 'scatter',
    records: readonly StagingRecord[],
    layers?: number | LayerRange,
    engine: PagedEngine = 'auto',
  ): PreparedTransfer {
    const range = layerRange(this.layout, layers);
    const checked = this.#checkRecords(direction, records, range, engine);
    // Pieces grouped by layer (records in order within a layer), so that a
    // move of a layer range hands the stream one run of the table. The first
    // layer is planned; the native side makes every later one from it, the
    // same pieces moved by the layer's place: the next cache buffer
    // (layer-major) or two pieces further in a block's run (block-major),
    // and the record's next extent of staging.
    const first = { first: range.first, count: 1 };
    const rows = checked.records.map((r) => planCheckedPieces(this.layout, r.blocks, first));
    const perLayer = rows.reduce((n, p) => n + p.count, 0);
    const table = new Float64Array(perLayer * 5);
    const steps = new Float64Array(perLayer * 5);
    const layerMajor = this.layout.arrangement === 'layer-major';
    const cacheCol = (direction === 'gather' ? 2 : 0) + (layerMajor ? 0 : 1);
    const stagingCol = direction === 'gather' ? 1 : 3;
    const cacheStep = layerMajor ? 1 : 2 * this.layout.pieceBytes;
    let o = 0;
    checked.records.forEach((r, i) => {
      const from = o;
      o = fillTable(table, o, direction, rows[i]!, r.staging, r.offset);
      for (let at = from; at < o; at += 5) {
        steps[at + cacheCol] = cacheStep;
        steps[at + stagingCol] = r.extent;
      }
    });
    const groups = new Uint32Array(range.count + 1);
    for (let li = 1; li <= range.count; li++) groups[li] = li * perLayer;
    const [dsts, srcs] = this.#sides(direction, checked.stagings);
    // Nothing to move (no record names a block): a plan whose moves do nothing.
    const native = perLayer === 0 ? null : loadBinding().binding.prepareBatch(dsts, srcs, table, groups, steps, range.count);
    const transfer = new PreparedTransfer(this, direction, range, { code: checked.engine, auto: this.#autoEngine, mixed: checked.mixed }, native);
    // Disposed before the buffers it names; held weakly, so plans made and
    // dropped without dispose() do not pile up under the cache.
    this.ownWeakly(transfer, DisposeOrder.caches);
    return transfer;
  }

  /** The native destination and source buffer lists of a transfer. */
  #sides(direction: 'gather' | 'scatter', stagings: readonly (PinnedBuffer | DeviceBuffer)[]): [NativeBuffer[], NativeBuffer[]] {
    const cache = this.buffers.map((b) => b.native);
    const staging = stagings.map((b) => b.native);
    return direction === 'gather' ? [staging, cache] : [cache, staging];
  }

  /** The checks of moveRecords and prepare: records, staging kinds and sizes, the engine. */
  #checkRecords(direction: 'gather' | 'scatter', records: readonly StagingRecord[], range: LayerRange, engine: PagedEngine): {
    records: { blocks: ArrayLike<number>; staging: number; offset: number; extent: number }[];
    stagings: (PinnedBuffer | DeviceBuffer)[];
    engine: number;
    mixed: boolean;
  } {
    const { layout } = this;
    if (!Array.isArray(records)) fail('ERR_INVALID_ARG', `expected an array of records, got ${describe(records)}`);
    checkChoice(engine, 'engine', PAGED_ENGINES);
    const stagings: (PinnedBuffer | DeviceBuffer)[] = [];
    const out: { blocks: ArrayLike<number>; staging: number; offset: number; extent: number }[] = [];
    // A scatter writes each block once across all its records: two writes to one block would race.
    const seen = direction === 'scatter' ? new Set<number>() : undefined;
    for (const r of records) {
      if (typeof r !== 'object' || r === null) fail('ERR_INVALID_ARG', `expected a staging record, got ${describe(r)}`);
      checkBlocks(layout, r.blocks, seen !== undefined, seen);
      checkInstance(r.staging, 'staging', 'a PinnedBuffer or DeviceBuffer', PinnedBuffer, DeviceBuffer);
      const offset = checkSize(r.stagingOffset ?? 0, 'stagingOffset');
      if (r.blocks.length === 0) continue;
      const extent = layout.extentBytes(r.blocks.length * layout.blockTokens);
      checkRange(offset, extent * range.count, r.staging.byteLength, 'staging');
      let index = stagings.indexOf(r.staging);
      if (index < 0) index = stagings.push(r.staging) - 1;
      out.push({ blocks: r.blocks, staging: index, offset, extent });
    }
    const mixed = stagings.some((b) => b instanceof DeviceBuffer) && stagings.some((b) => b instanceof PinnedBuffer);
    return { records: out, stagings, engine: engineCode(engine, this.#autoEngine, mixed), mixed };
  }

  /**
   * Disposes its prepared transfers, then its buffers (after work in flight):
   * memory kvflow allocated is freed, wrapped memory stays the runtime's.
   */
  protected async disposeSelf(): Promise<void> {
    await Promise.all(this.buffers.map((b) => b.dispose()));
  }
}

/**
 * The native engine number of `engine` ('auto': the cache's default); the
 * kernel engine refuses staging of both kinds in one batch.
 */
function engineCode(engine: PagedEngine, auto: 'dma' | 'kernel', mixed: boolean): number {
  const chosen = engine === 'auto' ? auto : engine;
  if (chosen === 'kernel' && mixed) {
    fail('ERR_INVALID_ARG', "expected staging of one kind (pinned or device) in a kernel-engine batch, got both; use engine 'dma' or separate calls");
  }
  return chosen === 'kernel' ? 1 : 0;
}

/** Writes a record's planned pieces as copyBatch rows (dst, dstOffset, src, srcOffset, bytes); returns the next row's index. */
function fillTable(table: Float64Array, o: number, direction: 'gather' | 'scatter', plan: PiecePlan, staging: number, offset: number): number {
  for (let i = 0; i < plan.count; i++, o += 5) {
    const cacheBuffer = plan.table[i * 4]!;
    const cacheOffset = plan.table[i * 4 + 1]!;
    const stagingAt = offset + plan.table[i * 4 + 2]!;
    if (direction === 'gather') {
      table[o] = staging;
      table[o + 1] = stagingAt;
      table[o + 2] = cacheBuffer;
      table[o + 3] = cacheOffset;
    } else {
      table[o] = cacheBuffer;
      table[o + 1] = cacheOffset;
      table[o + 2] = staging;
      table[o + 3] = stagingAt;
    }
    table[o + 4] = plan.table[i * 4 + 3]!;
  }
  return o;
}

/**
 * A paged transfer planned by {@link KvCache.prepare}: move it whole or a
 * layer range at a time, as often as needed, on any stream of the cache's
 * device.
 */
export class PreparedTransfer extends Disposable {
  readonly cache: KvCache;
  readonly direction: 'gather' | 'scatter';
  /** The layers it was prepared for. */
  readonly layers: Readonly<LayerRange>;
  /** The engine chosen at prepare (native number), the cache's 'auto', and whether staging is of both kinds (no kernel engine then). */
  readonly #engine: { code: number; auto: 'dma' | 'kernel'; mixed: boolean };
  // null: nothing to move; undefined: disposed.
  #native: NativeBatch | null | undefined;
  protected readonly resourceName = 'prepared transfer';

  /** @internal Use `kvCache.prepare`. */
  constructor(cache: KvCache, direction: 'gather' | 'scatter', layers: LayerRange, engine: { code: number; auto: 'dma' | 'kernel'; mixed: boolean },
    native: NativeBatch | null) {
    super();
    this.cache = cache;
    this.direction = direction;
    this.layers = Object.freeze({ ...layers });
    this.#engine = engine;
    this.#native = native;
  }

  /**
   * Enqueues on `stream` the move of `layers` (a layer or range within the
   * prepared ones; default: all of them), with the engine chosen at prepare
   * unless `engine` names another: a plan serves either engine, so a prefill
   * can move its first layers with the kernel engine while nothing computes
   * and the rest on the copy engines, from one plan.
   */
  move(stream: Stream, layers?: number | LayerRange, engine?: PagedEngine): void {
    checkInstance(stream, 'stream', 'a Stream', Stream);
    let code = this.#engine.code;
    if (engine !== undefined) {
      checkChoice(engine, 'engine', PAGED_ENGINES);
      code = engineCode(engine, this.#engine.auto, this.#engine.mixed);
    }
    const native = this.#native;
    if (native === undefined) fail('ERR_DISPOSED', 'prepared transfer is disposed');
    const all = this.layers;
    let first = all.first;
    let count = all.count;
    if (typeof layers === 'number' && Number.isSafeInteger(layers) && layers >= all.first && layers < all.first + all.count) {
      first = layers; // the per-layer call of a prefill, without an object
      count = 1;
    } else if (layers !== undefined) {
      const r = layerRange(this.cache.layout, layers);
      if (r.first < all.first || r.first + r.count > all.first + all.count) {
        fail('ERR_OUT_OF_RANGE', `expected layers within the prepared ${all.first}..${all.first + all.count - 1}, got ${r.first}..${r.first + r.count - 1}`);
      }
      first = r.first;
      count = r.count;
    }
    const s = stream.native;
    if (native !== null) s.copyPrepared(native, first - all.first, count, code);
  }

  /** Frees the plan (transfers in flight are unaffected). */
  protected disposeSelf(): void {
    this.#native?.release();
    this.#native = undefined;
  }
}

/** Allocates a cache for `layout` on a device. */
export function allocKvCache(owner: KvCacheOwner, layout: KvLayout, autoEngine?: 'dma' | 'kernel'): KvCache {
  if (!(layout instanceof KvLayout)) fail('ERR_INVALID_ARG', `expected a KvLayout for layout, got ${describe(layout)}`);
  const buffers: DeviceBuffer[] = [];
  try {
    for (let i = 0; i < layout.bufferCount; i++) buffers.push(owner.allocDevice(layout.bufferBytes));
  } catch (e) {
    for (const b of buffers) void b.dispose();
    throw e;
  }
  return new KvCache(layout, buffers, true, autoEngine);
}

/** Wraps a runtime's cache buffers (from `device.wrapUnsafe`) with a layout; kvflow never frees them. */
export function wrapKvCache(layout: KvLayout, buffers: KvBuffer[], autoEngine?: 'dma' | 'kernel'): KvCache {
  return new KvCache(layout, buffers as DeviceBuffer[], false, autoEngine);
}
