/**
 * The copy plan of a paged transfer: which bytes of which cache buffer go
 * where in the staging record, with adjacent pieces merged.
 */
import { describe, fail } from '../errors.js';
import { checkPositiveInteger } from '../util/validate.js';
import type { KvLayout } from './layout.js';

/** A contiguous run of layers. */
export interface LayerRange {
  first: number;
  count: number;
}

/** Pieces as [cacheBuffer, cacheOffset, stagingOffset, bytes] quadruples. */
export interface PiecePlan {
  /** 4 numbers per piece. */
  table: Float64Array;
  count: number;
  /** Staging bytes the record spans (extents of every layer, 4 KiB aligned). */
  stagingBytes: number;
}

/** Normalises `layers` (a layer, a range, or all layers when undefined) and checks it. */
export function layerRange(layout: KvLayout, layers: number | LayerRange | undefined): LayerRange {
  if (layers === undefined) return { first: 0, count: layout.layers };
  if (typeof layers === 'number') {
    layout.checkLayer(layers);
    return { first: layers, count: 1 };
  }
  if (typeof layers !== 'object' || layers === null) {
    fail('ERR_INVALID_ARG', `expected a layer or { first, count } for layers, got ${describe(layers)}`);
  }
  layout.checkLayer(layers.first, 'layers.first');
  checkPositiveInteger(layers.count, 'layers.count');
  if (layers.first + layers.count > layout.layers) {
    fail('ERR_OUT_OF_RANGE', `expected layers within [0, ${layout.layers}), got ${layers.first}..${layers.first + layers.count - 1}`);
  }
  return { first: layers.first, count: layers.count };
}

/**
 * Checks block ids (and, for scatters, that none repeats: two writes to one
 * block would race). `seen` carries the ids of earlier records of one
 * transfer, so that the check spans them all.
 */
export function checkBlocks(layout: KvLayout, blocks: ArrayLike<number>, unique: boolean,
  seen: Set<number> | undefined = unique ? new Set<number>() : undefined): void {
  if (blocks === null || typeof blocks !== 'object' || typeof blocks.length !== 'number') {
    fail('ERR_INVALID_ARG', `expected an array of block ids for blocks, got ${describe(blocks)}`);
  }
  const limit = layout.numBlocks;
  for (let i = 0; i < blocks.length; i++) {
    const b = blocks[i] as number;
    // The common case without building a name; checkBlock says what is wrong.
    if (!Number.isSafeInteger(b) || b < 0 || b >= limit) layout.checkBlock(b, `blocks[${i}]`);
    if (seen) {
      if (seen.has(b)) fail('ERR_INVALID_ARG', `expected distinct block ids in a scatter, got block ${b} twice`);
      seen.add(b);
    }
  }
}

/**
 * Plans the pieces of one transfer: for each layer of the range, K of every
 * block in order, then V, into consecutive extents of the staging record.
 * A piece that continues the previous one on both sides is merged into it.
 */
export function planPieces(layout: KvLayout, blocks: ArrayLike<number>, range: LayerRange): PiecePlan {
  checkBlocks(layout, blocks, false);
  return planCheckedPieces(layout, blocks, layerRange(layout, range));
}

/** planPieces() of blocks and a range already checked (by checkBlocks and layerRange). */
export function planCheckedPieces(layout: KvLayout, blocks: ArrayLike<number>, range: LayerRange): PiecePlan {
  const n = blocks.length;
  const piece = layout.pieceBytes;
  const extent = layout.extentBytes(n * layout.blockTokens);
  const table = new Float64Array(range.count * 2 * n * 4);
  // Where (layer, kv, block) lives, as KvLayout.piece() defines it, without
  // its checks (done by the caller) and its object per piece.
  const layerMajor = layout.arrangement === 'layer-major';
  const numBlocks = layout.numBlocks;
  const layers = layout.layers;
  let count = 0;
  let lastBuffer = -1;
  let lastCacheEnd = -1;
  let lastStagingEnd = -1;
  for (let li = 0; li < range.count; li++) {
    const layer = range.first + li;
    for (let kv = 0; kv < 2; kv++) {
      let staging = li * extent + kv * n * piece;
      for (let i = 0; i < n; i++, staging += piece) {
        const block = blocks[i] as number;
        const buffer = layerMajor ? layer : 0;
        const offset = layerMajor ? (kv * numBlocks + block) * piece : ((block * layers + layer) * 2 + kv) * piece;
        if (buffer === lastBuffer && offset === lastCacheEnd && staging === lastStagingEnd) {
          table[(count - 1) * 4 + 3]! += piece;
        } else {
          const o = count * 4;
          table[o] = buffer;
          table[o + 1] = offset;
          table[o + 2] = staging;
          table[o + 3] = piece;
          count++;
        }
        lastBuffer = buffer;
        lastCacheEnd = offset + piece;
        lastStagingEnd = staging + piece;
      }
    }
  }
  return { table: table.subarray(0, count * 4), count, stagingBytes: extent * range.count };
}
