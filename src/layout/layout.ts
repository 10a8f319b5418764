/**
 * KvLayout: the shape of a paged KV cache (no memory), and the staging format
 * a layer's KV takes on its way to the store (DESIGN.md section 3).
 */
import { KvflowError, describe, fail } from '../errors.js';
import { checkChoice, checkKnownOptions, checkPositiveInteger, checkRange, invalidParameterError } from '../util/validate.js';

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

/** An index from 0 to count - 1: ERR_INVALID_ARG when not an integer, ERR_OUT_OF_RANGE when outside. */
function checkIndex(value: unknown, name: string, count: number): number {
  const expected = `an integer from 0 to ${count - 1}`;
  if (typeof value !== 'number' || !Number.isSafeInteger(value)) throw invalidParameterError(name, expected, value);
  if (value < 0 || value >= count) throw invalidParameterError(name, expected, value, 'ERR_OUT_OF_RANGE');
  return value;
}

function checkKv(value: unknown): 0 | 1 {
  if (value !== 0 && value !== 1) throw invalidParameterError('kv', '0 (K) or 1 (V)', value);
  return value;
}

function checkBytes(value: unknown, name: string): Uint8Array {
  if (!(value instanceof Uint8Array)) throw invalidParameterError(name, 'a Uint8Array', value);
  return value;
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
    checkKnownOptions(spec, 'layout', ['layers', 'kvHeads', 'headDim', 'dtype', 'blockTokens', 'numBlocks', 'arrangement']);
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

  /**
   * Byte offset of K (kv = 0) or V (kv = 1) of `token` in `layerIndex` of a
   * staging record of `tokens` tokens (the format the store writes to NVMe):
   * layer `layerIndex` (counted from the record's first layer) starts at
   * `layerIndex * extentBytes(tokens)`; K of token t at `t * tokenBytes`
   * within it, V of token t at `(tokens + t) * tokenBytes`. Each token's
   * bytes are `[head][dim]`, `tokenBytes` long.
   */
  recordOffset(tokens: number, layerIndex: number, kv: 0 | 1, token: number): number {
    checkPositiveInteger(tokens, 'tokens');
    checkIndex(layerIndex, 'layerIndex', this.layers);
    checkKv(kv);
    checkIndex(token, 'token', tokens);
    const offset = layerIndex * this.extentBytes(tokens) + (kv * tokens + token) * this.tokenBytes;
    if (!Number.isSafeInteger(offset + this.tokenBytes)) throw invalidParameterError('tokens', 'a record smaller than 2^53 bytes', tokens, 'ERR_OUT_OF_RANGE');
    return offset;
  }

  /**
   * K or V of one token in a staging record held in host memory (a
   * PinnedBuffer's or HostBuffer's `.array`, a slab's bytes, any
   * Uint8Array): a view of `tokenBytes` bytes, no copy. ERR_OUT_OF_RANGE when
   * the record is too short to hold it.
   */
  readRecordToken(record: Uint8Array, tokens: number, layerIndex: number, kv: 0 | 1, token: number): Uint8Array {
    checkBytes(record, 'record');
    const offset = this.recordOffset(tokens, layerIndex, kv, token);
    checkRange(offset, this.tokenBytes, record.byteLength, 'record token');
    return record.subarray(offset, offset + this.tokenBytes);
  }

  /** Writes K or V of one token into a staging record in host memory (`bytes` must be `tokenBytes` long). */
  writeRecordToken(record: Uint8Array, tokens: number, layerIndex: number, kv: 0 | 1, token: number, bytes: Uint8Array): void {
    checkBytes(record, 'record');
    const offset = this.recordOffset(tokens, layerIndex, kv, token);
    this.checkTokenBytes(bytes);
    checkRange(offset, this.tokenBytes, record.byteLength, 'record token');
    record.set(bytes, offset);
  }

  /** Where K or V of token `slot` of `block` in `layer` lives in the paged cache (buffer index and byte offset). */
  cacheTokenOffset(layer: number, kv: 0 | 1, block: number, slot: number): PieceLocation {
    checkKv(kv);
    checkIndex(slot, 'slot', this.blockTokens);
    const at = this.piece(layer, kv, block);
    return { buffer: at.buffer, offset: at.offset + slot * this.tokenBytes };
  }

  /**
   * K or V of one token of the paged cache, from host-visible arrays of its
   * buffers (`buffers[i]` is cache buffer i, `bufferBytes` long: a runtime's
   * cache in host memory or host copies of a KvCache's buffers): a view, no copy.
   */
  readCacheToken(buffers: readonly Uint8Array[], layer: number, kv: 0 | 1, block: number, slot: number): Uint8Array {
    const at = this.cacheTokenOffset(layer, kv, block, slot);
    const buf = this.cacheBuffer(buffers, at.buffer);
    return buf.subarray(at.offset, at.offset + this.tokenBytes);
  }

  /** Writes K or V of one token into host-visible arrays of the paged cache's buffers (`bytes` must be `tokenBytes` long). */
  writeCacheToken(buffers: readonly Uint8Array[], layer: number, kv: 0 | 1, block: number, slot: number, bytes: Uint8Array): void {
    const at = this.cacheTokenOffset(layer, kv, block, slot);
    const buf = this.cacheBuffer(buffers, at.buffer);
    this.checkTokenBytes(bytes);
    buf.set(bytes, at.offset);
  }

  private checkTokenBytes(bytes: unknown): void {
    checkBytes(bytes, 'bytes');
    const n = (bytes as Uint8Array).byteLength;
    if (n !== this.tokenBytes) {
      throw new KvflowError(`expected ${this.tokenBytes} bytes (tokenBytes) for bytes, got ${n} bytes`, 'ERR_INVALID_ARG');
    }
  }

  private cacheBuffer(buffers: readonly Uint8Array[], index: number): Uint8Array {
    if (!Array.isArray(buffers) || buffers.length !== this.bufferCount) {
      throw invalidParameterError('buffers', `an array of ${this.bufferCount} Uint8Arrays (bufferCount)`, buffers);
    }
    const buf = checkBytes(buffers[index], `buffers[${index}]`);
    if (buf.byteLength !== this.bufferBytes) {
      throw new KvflowError(`expected ${this.bufferBytes} bytes (bufferBytes) for buffers[${index}], got ${buf.byteLength} bytes`, 'ERR_OUT_OF_RANGE');
    }
    return buf;
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
