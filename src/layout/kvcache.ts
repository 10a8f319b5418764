/**
 * A paged KV cache in device memory (allocated by kvflow or wrapped from a
 * runtime) and its per-layer transfers to and from a staging record.
 */
import { defaults } from '../defaults.js';
import { describe, fail } from '../errors.js';
import { DeviceBuffer, KvBuffer, PinnedBuffer } from '../device/buffer.js';
import type { Stream } from '../device/stream.js';
import { checkRange, checkSize } from '../device/validate.js';
import { KvLayout } from './layout.js';
import { checkBlocks, layerRange, planCheckedPieces, type LayerRange } from './pieces.js';

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

/**
 * A layout plus the device buffers that hold it. Every block access is
 * checked against the layout and the buffers' sizes.
 *
 * Staging format (one record): for each layer of the range, an extent of K of
 * every block in order then V of every block, padded to 4 KiB; see
 * {@link KvLayout.stagingBytes}.
 */
export class KvCache {
  readonly layout: KvLayout;
  readonly buffers: readonly DeviceBuffer[];
  /** False when the buffers were wrapped (the runtime owns them). */
  readonly owned: boolean;

  /** @internal Use `device.allocKvCache` or `device.wrapKvCache`. */
  constructor(layout: KvLayout, buffers: DeviceBuffer[], owned: boolean) {
    if (!(layout instanceof KvLayout)) fail('ERR_INVALID_ARG', `expected a KvLayout for layout, got ${describe(layout)}`);
    if (!Array.isArray(buffers) || buffers.length !== layout.bufferCount) {
      fail('ERR_INVALID_ARG', `expected ${layout.bufferCount} device buffers for a ${layout.arrangement} layout, got ${
        Array.isArray(buffers) ? buffers.length : describe(buffers)}`);
    }
    buffers.forEach((b, i) => {
      if (!(b instanceof DeviceBuffer)) fail('ERR_INVALID_ARG', `expected a DeviceBuffer for buffers[${i}], got ${describe(b)}`);
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
    if (typeof t !== 'object' || t === null) fail('ERR_INVALID_ARG', `expected a transfer description, got ${describe(t)}`);
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
    const native = stream.native;
    const { layout } = this;
    if (!Array.isArray(records)) fail('ERR_INVALID_ARG', `expected an array of records, got ${describe(records)}`);
    const range = layerRange(layout, layers);
    if (engine !== 'auto' && engine !== 'dma' && engine !== 'kernel') {
      fail('ERR_INVALID_ARG', `expected 'auto', 'dma' or 'kernel' for engine, got ${describe(engine)}`);
    }
    const stagings: (PinnedBuffer | DeviceBuffer)[] = [];
    const plans: { plan: ReturnType<typeof planCheckedPieces>; staging: number; offset: number }[] = [];
    // A scatter writes each block once across all its records: two writes to one block would race.
    const seen = direction === 'scatter' ? new Set<number>() : undefined;
    for (const r of records) {
      if (typeof r !== 'object' || r === null) fail('ERR_INVALID_ARG', `expected a staging record, got ${describe(r)}`);
      checkBlocks(layout, r.blocks, seen !== undefined, seen);
      if (!(r.staging instanceof PinnedBuffer) && !(r.staging instanceof DeviceBuffer)) {
        fail('ERR_INVALID_ARG', `expected a PinnedBuffer or DeviceBuffer for staging, got ${describe(r.staging)}`);
      }
      const offset = checkSize(r.stagingOffset ?? 0, 'stagingOffset');
      if (r.blocks.length === 0) continue;
      const plan = planCheckedPieces(layout, r.blocks, range);
      checkRange(offset, plan.stagingBytes, r.staging.byteLength, 'staging');
      let index = stagings.indexOf(r.staging);
      if (index < 0) index = stagings.push(r.staging) - 1;
      plans.push({ plan, staging: index, offset });
    }
    if (plans.length === 0) return;
    const cache = this.buffers.map((b) => b.native);
    const chosen = engine === 'auto' ? defaults().pagedEngine : engine;
    if (chosen === 'kernel' && stagings.some((b) => b instanceof DeviceBuffer) && stagings.some((b) => b instanceof PinnedBuffer)) {
      fail('ERR_INVALID_ARG', "expected staging of one kind (pinned or device) in a kernel-engine batch, got both; use engine 'dma' or separate calls");
    }
    // One native call moves every record: the kernel engine DMAs each run of
    // touching staging bytes (never the bytes between two records of a gather,
    // another chunk's in a store's arena) and moves all pieces with one kernel.
    const count = plans.reduce((n, p) => n + p.plan.count, 0);
    const staging = stagings.map((b) => b.native);
    const table = new Float64Array(count * 5);
    let o = 0;
    for (const { plan, staging: sIndex, offset } of plans) {
      for (let i = 0; i < plan.count; i++, o += 5) {
        const cacheBuffer = plan.table[i * 4]!;
        const cacheOffset = plan.table[i * 4 + 1]!;
        const stagingAt = offset + plan.table[i * 4 + 2]!;
        if (direction === 'gather') {
          table[o] = sIndex;
          table[o + 1] = stagingAt;
          table[o + 2] = cacheBuffer;
          table[o + 3] = cacheOffset;
        } else {
          table[o] = cacheBuffer;
          table[o + 1] = cacheOffset;
          table[o + 2] = sIndex;
          table[o + 3] = stagingAt;
        }
        table[o + 4] = plan.table[i * 4 + 3]!;
      }
    }
    const code = chosen === 'kernel' ? 1 : 0;
    if (direction === 'gather') native.copyBatch(staging, cache, table, code);
    else native.copyBatch(cache, staging, table, code);
  }

  /** Frees the buffers kvflow allocated (wrapped ones stay the runtime's), after work in flight. */
  async dispose(): Promise<void> {
    await Promise.all(this.buffers.map((b) => b.dispose()));
  }

  /** `await using` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** Allocates a cache for `layout` on a device. */
export function allocKvCache(owner: KvCacheOwner, layout: KvLayout): KvCache {
  if (!(layout instanceof KvLayout)) fail('ERR_INVALID_ARG', `expected a KvLayout for layout, got ${describe(layout)}`);
  const buffers: DeviceBuffer[] = [];
  try {
    for (let i = 0; i < layout.bufferCount; i++) buffers.push(owner.allocDevice(layout.bufferBytes));
  } catch (e) {
    for (const b of buffers) void b.dispose();
    throw e;
  }
  return new KvCache(layout, buffers, true);
}

/** Wraps a runtime's cache buffers (from `device.wrapUnsafe`) with a layout; kvflow never frees them. */
export function wrapKvCache(layout: KvLayout, buffers: KvBuffer[]): KvCache {
  return new KvCache(layout, buffers as DeviceBuffer[], false);
}
