/**
 * KvLayout: the shape of a paged KV cache (no memory), and the staging format
 * a layer's KV takes on its way to the store (DESIGN.md section 3).
 */
import { describe, fail } from '../errors.js';
import { checkChoice, checkPositiveInteger } from '../util/validate.js';

/** Element types of the KV cache; fp8 variants are one byte each. */
export type KvDtype = 'f32' | 'f16' | 'bf16' | 'fp8_e4m3' | 'fp8_e5m2';

/**
 * Where blocks live:
 * - `layer-major`: one buffer per layer, `[K|V][block][token][head][dim]` (vLLM's).
 * - `block-major`: one buffer, `[block][layer][K|V][token][head][dim]`.
 */
export type KvArrangement = 'layer-major' | 'block-major';

/** What a layout is made from. */
export interface KvLayoutSpec {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: KvDtype;
  /** Tokens per paged block (16 in vLLM by default). */
  blockTokens: number;
  /** Blocks in the cache. */
  numBlocks: number;
  /** Default `layer-major`. */
  arrangement?: KvArrangement;
}

const DTYPE_BYTES: Record<KvDtype, number> = { f32: 4, f16: 2, bf16: 2, fp8_e4m3: 1, fp8_e5m2: 1 };

/** Staging and on-disk extents are aligned to this (O_DIRECT's unit). */
export const EXTENT_ALIGN = 4096;

/** Where one piece (K or V of one block of one layer) lives. */
export interface PieceLocation {
  /** Index of the cache buffer holding it. */
  buffer: number;
  /** Byte offset in that buffer. */
  offset: number;
}

function positiveInt(value: unknown, name: string, max = 2 ** 31): number {
  return checkPositiveInteger(value, name, max);
}

/** Rounds `n` up to a multiple of {@link EXTENT_ALIGN}. */
export function alignExtent(n: number): number {
  return Math.ceil(n / EXTENT_ALIGN) * EXTENT_ALIGN;
}

/** A validated, immutable cache layout with its derived sizes. */
export class KvLayout {
  readonly layers: number;
  readonly kvHeads: number;
  readonly headDim: number;
  readonly dtype: KvDtype;
  readonly blockTokens: number;
  readonly numBlocks: number;
  readonly arrangement: KvArrangement;
  /** Bytes of one element. */
  readonly elementBytes: number;
  /** Bytes of K (or V) of one token in one layer: kvHeads * headDim * elementBytes. */
  readonly tokenBytes: number;
  /** Bytes of K (or V) of one block in one layer: the unit that moves. */
  readonly pieceBytes: number;
  /** Bytes of K and V of one token in one layer. */
  readonly bytesPerTokenPerLayer: number;
  /** Bytes of K and V of one token across all layers. */
  readonly bytesPerToken: number;
  /** Buffers the cache is made of (layers for layer-major, 1 for block-major). */
  readonly bufferCount: number;
  /** Bytes of each cache buffer. */
  readonly bufferBytes: number;

  constructor(spec: KvLayoutSpec) {
    if (typeof spec !== 'object' || spec === null) fail('ERR_INVALID_ARG', `expected a layout spec, got ${describe(spec)}`);
    this.layers = positiveInt(spec.layers, 'layers', 4096);
    this.kvHeads = positiveInt(spec.kvHeads, 'kvHeads', 4096);
    this.headDim = positiveInt(spec.headDim, 'headDim', 65536);
    if (!(spec.dtype in DTYPE_BYTES)) {
      fail('ERR_INVALID_ARG', `expected one of ${Object.keys(DTYPE_BYTES).join(', ')} for dtype, got ${describe(spec.dtype)}`);
    }
    this.dtype = spec.dtype;
    this.blockTokens = positiveInt(spec.blockTokens, 'blockTokens', 65536);
    this.numBlocks = positiveInt(spec.numBlocks, 'numBlocks');
    this.arrangement = checkChoice(spec.arrangement ?? 'layer-major', 'arrangement', ['layer-major', 'block-major'] as const);
    this.elementBytes = DTYPE_BYTES[this.dtype];
    this.tokenBytes = this.kvHeads * this.headDim * this.elementBytes;
    this.pieceBytes = this.tokenBytes * this.blockTokens;
    this.bytesPerTokenPerLayer = 2 * this.tokenBytes;
    this.bytesPerToken = this.bytesPerTokenPerLayer * this.layers;
    this.bufferCount = this.arrangement === 'layer-major' ? this.layers : 1;
    const perLayer = 2 * this.pieceBytes * this.numBlocks;
    this.bufferBytes = this.arrangement === 'layer-major' ? perLayer : perLayer * this.layers;
    if (!Number.isSafeInteger(this.bufferBytes) || this.bufferBytes * this.bufferCount > 2 ** 52) {
      fail('ERR_INVALID_ARG', `layout of ${this.layers} layers x ${this.numBlocks} blocks is larger than any device`);
    }
    Object.freeze(this);
  }

  /** Total bytes of the cache. */
  get totalBytes(): number {
    return this.bufferBytes * this.bufferCount;
  }

  /** Where K (kv = 0) or V (kv = 1) of `block` in `layer` lives. */
  piece(layer: number, kv: 0 | 1, block: number): PieceLocation {
    this.checkLayer(layer);
    this.checkBlock(block);
    if (this.arrangement === 'layer-major') return { buffer: layer, offset: (kv * this.numBlocks + block) * this.pieceBytes };
    return { buffer: 0, offset: ((block * this.layers + layer) * 2 + kv) * this.pieceBytes };
  }

  /** Throws ERR_OUT_OF_RANGE unless 0 <= layer < layers. */
  checkLayer(layer: number, name = 'layer'): void {
    if (!Number.isSafeInteger(layer) || layer < 0 || layer >= this.layers) {
      fail(Number.isSafeInteger(layer) ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG',
        `expected ${name} in [0, ${this.layers}), got ${describe(layer)}`);
    }
  }

  /** Throws ERR_OUT_OF_RANGE unless 0 <= block < numBlocks. */
  checkBlock(block: number, name = 'block'): void {
    if (!Number.isSafeInteger(block) || block < 0 || block >= this.numBlocks) {
      fail(Number.isSafeInteger(block) ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG',
        `expected ${name} id in [0, ${this.numBlocks}), got ${describe(block)}`);
    }
  }

  /**
   * Bytes of one layer's extent in the staging format for `tokens` tokens:
   * K of every token, then V, rounded up to 4 KiB.
   */
  extentBytes(tokens: number): number {
    return alignExtent(2 * tokens * this.tokenBytes);
  }

  /** Bytes of a staging record of `tokens` tokens over `layerCount` layers (layer-major extents). */
  stagingBytes(tokens: number, layerCount = this.layers): number {
    return this.extentBytes(tokens) * layerCount;
  }

  /** True when `other` describes the same shape. */
  equals(other: KvLayout): boolean {
    return (
      this.layers === other.layers && this.kvHeads === other.kvHeads && this.headDim === other.headDim &&
      this.dtype === other.dtype && this.blockTokens === other.blockTokens && this.numBlocks === other.numBlocks &&
      this.arrangement === other.arrangement
    );
  }

  /** The spec it was made from. */
  toJSON(): Required<KvLayoutSpec> {
    const { layers, kvHeads, headDim, dtype, blockTokens, numBlocks, arrangement } = this;
    return { layers, kvHeads, headDim, dtype, blockTokens, numBlocks, arrangement };
  }
}
