/**
 * ReferenceModel: a Llama-architecture decoder whose compute is enqueued on a
 * kvflow Stream, reading and writing the paged KvCache in place.
 */
import { loadBinding } from '../binding/load.js';
import type { NativePagedKv, NativeReferenceModel } from '../binding/types.js';
import { describe, fail } from '../errors.js';
import { DeviceBuffer } from '../device/buffer.js';
import type { Device } from '../device/device.js';
import { Stream } from '../device/stream.js';
import { KvCache } from '../layout/kvcache.js';
import { KvLayout, type KvArrangement } from '../layout/layout.js';
import { MODEL_CONFIG_KEYS, resolveConfig, type ModelConfig } from './config.js';
import { checkKnownOptions } from '../util/validate.js';

/** What {@link ReferenceModel.create} takes: shapes, a weight seed and the most tokens one call computes. */
export type ReferenceModelOptions = ModelConfig & {
  /** Weights are a function of the seed (default 0), the same on every backend. */
  seed?: number;
  /** Most new tokens one call (embed, layer, finalNorm, prefill) computes; sizes scratch memory. */
  maxTokens: number;
};

/** One decoder layer over `count` new tokens at positions `[start, start + count)`. */
export interface LayerCall {
  /** The new tokens' residual stream (`count` x `hiddenBytesPerToken`), updated in place. */
  hidden: DeviceBuffer;
  /** The paged cache: K and V of the new tokens are written; positions `[0, start + count)` are read. */
  cache: KvCache;
  /** The block table: token `t` lives in block `blocks[floor(t / blockTokens)]`; covers `start + count` tokens. */
  blocks: ArrayLike<number>;
  /** Tokens already in the cache (computed or loaded). */
  start: number;
  /** New tokens. */
  count: number;
}

/** A whole prefill: the tokens after `start` through every layer. */
export interface PrefillCall {
  /** The whole prompt; tokens `[0, start)` are already in the cache. */
  tokens: ArrayLike<number>;
  cache: KvCache;
  blocks: ArrayLike<number>;
  /** Default 0. */
  start?: number;
}

const DTYPES: Record<number, 'f32' | 'bf16'> = { 4: 'f32', 2: 'bf16' };

function tokenCount(value: unknown, name: string, max: number): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    fail('ERR_INVALID_ARG', `expected a positive integer for ${name}, got ${describe(value)}`);
  }
  if (value > max) fail('ERR_OUT_OF_RANGE', `expected at most maxTokens (${max}) for ${name}, got ${value}`);
  return value;
}

function arrayLike(value: unknown, name: string): ArrayLike<number> {
  if (typeof value !== 'object' || value === null || typeof (value as ArrayLike<number>).length !== 'number') {
    fail('ERR_INVALID_ARG', `expected an array of integers for ${name}, got ${describe(value)}`);
  }
  return value as ArrayLike<number>;
}

function deviceBuffer(value: unknown, name: string, bytes: number): DeviceBuffer {
  if (!(value instanceof DeviceBuffer)) fail('ERR_INVALID_ARG', `expected a DeviceBuffer for ${name}, got ${describe(value)}`);
  if (value.byteLength < bytes) fail('ERR_OUT_OF_RANGE', `expected at least ${bytes} bytes for ${name}, got ${value.byteLength}`);
  return value;
}

/**
 * The reference transformer: RMSNorm, QKV projection, optional QK-norm,
 * RoPE (rotate-half, absolute positions), causal GQA attention of the new
 * tokens over cached + new tokens read from the paged cache in place,
 * output projection, SwiGLU MLP and residuals, with random weights from a
 * seed. Every call checks its arguments (a rejected call enqueues nothing)
 * and enqueues its compute on the given stream, so it orders with loads by
 * events. A yardstick and a worked example of a runtime's per-layer
 * compute, not an inference engine.
 *
 * The CPU backend computes in f32 (residual stream and KV cache); CUDA in
 * bf16 with f32 accumulation. {@link ReferenceModel.dtype} says which.
 */
export class ReferenceModel {
  #native: NativeReferenceModel | undefined;
  readonly #device: Device;
  /** The shapes in use, defaults filled. */
  readonly config: Readonly<Required<ModelConfig>>;
  /** The weight seed. */
  readonly seed: number;
  /** Most new tokens one call computes. */
  readonly maxTokens: number;
  /** Element type of the residual stream and the KV cache on this device's backend. */
  readonly dtype: 'f32' | 'bf16';
  /** Bytes of one token's residual stream (`hidden` elements of `dtype`). */
  readonly hiddenBytesPerToken: number;
  /** Bytes of weights held (device memory on CUDA, host memory on CPU). */
  readonly weightBytes: number;

  private constructor(device: Device, native: NativeReferenceModel, config: Readonly<Required<ModelConfig>>, seed: number, maxTokens: number) {
    this.#device = device;
    this.#native = native;
    this.config = config;
    this.seed = seed;
    this.maxTokens = maxTokens;
    const dtype = DTYPES[native.hiddenElementBytes];
    if (!dtype) fail('ERR_UNSUPPORTED', `this backend's reference model uses ${native.hiddenElementBytes}-byte elements`);
    this.dtype = dtype;
    this.hiddenBytesPerToken = config.hidden * native.hiddenElementBytes;
    this.weightBytes = native.weightBytes;
  }

  /**
   * Builds the model's weights on `device` from the seed (synchronous).
   * ERR_OUT_OF_MEMORY when they do not fit (the CPU backend keeps f32
   * weights in host memory: use the `tiny` preset there).
   */
  static create(device: Device, options: ReferenceModelOptions): ReferenceModel {
    if (typeof device !== 'object' || device === null || !('native' in device)) {
      fail('ERR_INVALID_ARG', `expected a Device for device, got ${describe(device)}`);
    }
    checkKnownOptions(options, 'options', [...MODEL_CONFIG_KEYS, 'seed', 'maxTokens']);
    const config = resolveConfig(options);
    const seed = options.seed ?? 0;
    if (typeof seed !== 'number' || !Number.isSafeInteger(seed) || seed < 0) {
      fail('ERR_INVALID_ARG', `expected a non-negative safe integer for seed, got ${describe(seed)}`);
    }
    const maxTokens = options.maxTokens;
    if (typeof maxTokens !== 'number' || !Number.isSafeInteger(maxTokens) || maxTokens < 1 || maxTokens > 2 ** 24) {
      fail('ERR_INVALID_ARG', `expected an integer in [1, ${2 ** 24}] for maxTokens, got ${describe(maxTokens)}`);
    }
    const { binding } = loadBinding();
    const native = new binding.ReferenceModel(device.native, { ...config, maxTokens, seed });
    return new ReferenceModel(device, native, config, seed, maxTokens);
  }

  get #live(): NativeReferenceModel {
    if (!this.#native || this.#device.disposed) fail('ERR_DISPOSED', 'reference model is disposed');
    return this.#native;
  }

  /** True once `dispose()` was called (or its device was disposed). */
  get disposed(): boolean {
    return !this.#native || this.#device.disposed;
  }

  /** The cache layout this model reads and writes: its layers, kvHeads, headDim and dtype. */
  kvLayout(opts: { blockTokens: number; numBlocks: number; arrangement?: KvArrangement }): KvLayout {
    if (typeof opts !== 'object' || opts === null) fail('ERR_INVALID_ARG', `expected layout options, got ${describe(opts)}`);
    checkKnownOptions(opts, 'options', ['blockTokens', 'numBlocks', 'arrangement']);
    const { layers, kvHeads, headDim } = this.config;
    return new KvLayout({ layers, kvHeads, headDim, dtype: this.dtype, blockTokens: opts.blockTokens, numBlocks: opts.numBlocks, arrangement: opts.arrangement });
  }

  /** Device memory for the residual stream of `tokens` tokens. */
  allocHidden(tokens: number): DeviceBuffer {
    void this.#live;
    tokenCount(tokens, 'tokens', this.maxTokens);
    return this.#device.allocDevice(tokens * this.hiddenBytesPerToken);
  }

  /** Enqueues the embedding of `tokens` (ids below `vocab`) into the first rows of `hidden`. */
  embed(stream: Stream, hidden: DeviceBuffer, tokens: ArrayLike<number>): void {
    const native = this.#live;
    const ids = this.#tokens(tokens, 'tokens');
    tokenCount(ids.length, 'tokens.length', this.maxTokens);
    const h = deviceBuffer(hidden, 'hidden', ids.length * this.hiddenBytesPerToken);
    native.embed(streamArg(stream), h.native, ids);
  }

  /** Enqueues one decoder layer (see {@link LayerCall}). */
  layer(stream: Stream, layer: number, call: LayerCall): void {
    const native = this.#live;
    const s = streamArg(stream);
    if (typeof layer !== 'number' || !Number.isSafeInteger(layer)) fail('ERR_INVALID_ARG', `expected an integer for layer, got ${describe(layer)}`);
    if (layer < 0 || layer >= this.config.layers) fail('ERR_OUT_OF_RANGE', `expected layer in [0, ${this.config.layers}), got ${layer}`);
    if (typeof call !== 'object' || call === null) fail('ERR_INVALID_ARG', `expected a layer call, got ${describe(call)}`);
    const n = tokenCount(call.count, 'count', this.maxTokens);
    const start = call.start;
    if (typeof start !== 'number' || !Number.isSafeInteger(start) || start < 0 || start > 2 ** 30) {
      fail('ERR_INVALID_ARG', `expected an integer in [0, 2^30] for start, got ${describe(start)}`);
    }
    const h = deviceBuffer(call.hidden, 'hidden', n * this.hiddenBytesPerToken);
    const { cache, blocks } = this.#paged(call.cache, call.blocks, start + n);
    native.layer(s, layer, h.native, cache, blocks, start, n);
  }

  /** Enqueues the final RMSNorm of `count` rows of `hidden` into `out` (f32 on every backend: count x hidden x 4 bytes). */
  finalNorm(stream: Stream, out: DeviceBuffer, hidden: DeviceBuffer, count: number): void {
    const native = this.#live;
    const n = tokenCount(count, 'count', this.maxTokens);
    const o = deviceBuffer(out, 'out', n * this.config.hidden * 4);
    const h = deviceBuffer(hidden, 'hidden', n * this.hiddenBytesPerToken);
    if (o === h) fail('ERR_INVALID_ARG', 'expected different buffers for out and hidden, got the same buffer');
    native.finalNorm(streamArg(stream), o.native, h.native, n);
  }

  /**
   * Embeds `tokens[start..]`, runs every layer and the final norm, all
   * enqueued on `stream`; returns the f32 output (new tokens x hidden),
   * ready once an event recorded after this completes. Everything is checked
   * before anything is enqueued.
   */
  prefill(stream: Stream, p: PrefillCall): DeviceBuffer {
    void this.#live;
    streamArg(stream);
    if (typeof p !== 'object' || p === null) fail('ERR_INVALID_ARG', `expected a prefill call, got ${describe(p)}`);
    const all = this.#tokens(p.tokens, 'tokens');
    const start = p.start ?? 0;
    if (typeof start !== 'number' || !Number.isSafeInteger(start) || start < 0 || start >= all.length) {
      fail(typeof start === 'number' && Number.isSafeInteger(start) ? 'ERR_OUT_OF_RANGE' : 'ERR_INVALID_ARG',
        `expected start in [0, ${all.length}) for a prompt of ${all.length} tokens, got ${describe(start)}`);
    }
    const n = tokenCount(all.length - start, 'new tokens', this.maxTokens);
    this.#paged(p.cache, p.blocks, all.length);
    const hidden = this.allocHidden(n);
    let out: DeviceBuffer | undefined;
    try {
      out = this.#device.allocDevice(n * this.config.hidden * 4);
      this.embed(stream, hidden, all.subarray(start));
      for (let l = 0; l < this.config.layers; l++) this.layer(stream, l, { hidden, cache: p.cache, blocks: p.blocks, start, count: n });
      this.finalNorm(stream, out, hidden, n);
      return out;
    } catch (e) {
      void out?.dispose();
      throw e;
    } finally {
      // Freed once the enqueued work that uses it completed.
      void hidden.dispose();
    }
  }

  /** Frees the weights once enqueued work that uses them completed; later calls throw ERR_DISPOSED. Idempotent. */
  dispose(): Promise<void> {
    const native = this.#native;
    this.#native = undefined;
    native?.close();
    return Promise.resolve();
  }

  /** `await using` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #tokens(value: unknown, name: string): Int32Array {
    const list = arrayLike(value, name);
    const out = new Int32Array(list.length);
    for (let i = 0; i < list.length; i++) {
      const t = list[i];
      if (typeof t !== 'number' || !Number.isSafeInteger(t)) fail('ERR_INVALID_ARG', `expected an integer for ${name}[${i}], got ${describe(t)}`);
      if (t < 0 || t >= this.config.vocab) fail('ERR_OUT_OF_RANGE', `expected a token id in [0, ${this.config.vocab}) for ${name}[${i}], got ${t}`);
      out[i] = t;
    }
    return out;
  }

  /** Checks a cache and block table covering `tokens` tokens; their native forms. */
  #paged(cache: unknown, blocks: unknown, tokens: number): { cache: NativePagedKv; blocks: Int32Array } {
    if (!(cache instanceof KvCache)) fail('ERR_INVALID_ARG', `expected a KvCache for cache, got ${describe(cache)}`);
    const layout = cache.layout;
    const { layers, kvHeads, headDim } = this.config;
    if (layout.layers !== layers || layout.kvHeads !== kvHeads || layout.headDim !== headDim) {
      fail('ERR_INVALID_ARG', `expected a cache of ${layers} layers x ${kvHeads} kv heads x ${headDim} head dim for cache, got ${
        layout.layers} x ${layout.kvHeads} x ${layout.headDim}`);
    }
    if (layout.dtype !== this.dtype) fail('ERR_INVALID_ARG', `expected a ${this.dtype} cache (this backend's dtype) for cache, got ${layout.dtype}`);
    const list = arrayLike(blocks, 'blocks');
    const used = Math.ceil(tokens / layout.blockTokens);
    if (list.length < used) {
      fail('ERR_OUT_OF_RANGE', `expected at least ${used} blocks of ${layout.blockTokens} tokens for ${tokens} tokens in blocks, got ${list.length}`);
    }
    const ids = new Int32Array(list.length);
    const seen = new Set<number>();
    for (let i = 0; i < list.length; i++) {
      const b = list[i] as number;
      layout.checkBlock(b, `blocks[${i}]`);
      if (i < used) {
        if (seen.has(b)) fail('ERR_INVALID_ARG', `expected distinct block ids for blocks, got ${b} twice`);
        seen.add(b);
      }
      ids[i] = b;
    }
    return {
      cache: {
        buffers: cache.buffers.map((b) => b.native),
        blockMajor: layout.arrangement === 'block-major',
        layers: layout.layers,
        kvHeads: layout.kvHeads,
        headDim: layout.headDim,
        blockTokens: layout.blockTokens,
        numBlocks: layout.numBlocks,
        elementBytes: layout.elementBytes,
      },
      blocks: ids,
    };
  }
}

function streamArg(stream: unknown) {
  if (!(stream instanceof Stream)) fail('ERR_INVALID_ARG', `expected a Stream for stream, got ${describe(stream)}`);
  return stream.native;
}
