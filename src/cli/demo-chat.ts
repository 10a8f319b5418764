/**
 * The chat engine `kvflow demo` and the multi-turn replay benchmark share: a
 * reference model, a paged KV cache, a store and a LayerPipeline whose
 * `compute` runs the model, and multi-turn chats whose every turn is one
 * prefill through that pipeline.
 */
import type { DeviceBuffer } from '../device/buffer.js';
import type { Device } from '../device/device.js';
import type { Stream } from '../device/stream.js';
import type { KvCache, PagedEngine } from '../layout/kvcache.js';
import type { PrefillPolicy } from '../model/plan.js';
import type { LayerCompute, LayerPipeline, PrefillResult } from '../pipeline/pipeline.js';
import { ReferenceModel } from '../reference/model.js';
import { presets, type PresetName } from '../reference/config.js';

/** The presets a chat runs: 8B shapes on a GPU, the tiny model on the CPU backend. */
export type ChatModel = Extract<PresetName, 'tiny' | 'llama-3-8b'>;

/** Builds the reference model of a preset (seed 1) for prompts up to `maxTokens`. */
export function createModel(device: Device, preset: ChatModel, maxTokens: number): ReferenceModel {
  return ReferenceModel.create(device, { ...presets[preset], seed: 1, maxTokens });
}

/** A deterministic token stream (xorshift32), so every run replays the same chats. */
export function tokenSource(seed: number, vocab: number): (n: number) => number[] {
  let x = (seed * 2654435761 + 0x9e3779b9) >>> 0 || 1;
  return (n) => {
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      out[i] = x % vocab;
    }
    return out;
  };
}

/** The shape of a chat: its first prompt, then per later turn an answer and a user message appended. */
export interface ChatShape {
  turns: number;
  firstTokens: number;
  answerTokens: number;
  userTokens: number;
}

/** The prompts of a chat's turns: each one the previous prompt plus an answer and a user message. */
export function chatPrompts(shape: ChatShape, seed: number, vocab: number): number[][] {
  const next = tokenSource(seed, vocab);
  const prompts: number[][] = [next(shape.firstTokens)];
  for (let t = 1; t < shape.turns; t++) prompts.push([...prompts[t - 1]!, ...next(shape.answerTokens), ...next(shape.userTokens)]);
  return prompts;
}

/** Tokens of a chat's longest prompt. */
export function longestPrompt(shape: ChatShape): number {
  return shape.firstTokens + (shape.turns - 1) * (shape.answerTokens + shape.userTokens);
}

/** One prefill's outcome: the pipeline's result, and the f32 final hidden states of the computed tokens when asked for. */
export interface TurnRun {
  result: PrefillResult;
  /** Tokens computed (`tokens.length - computeFrom`). */
  computed: number;
  /** `computed` rows of `hidden` f32 values (when `read` was set). */
  out: Float32Array | undefined;
}

/**
 * Runs prefills of one conversation at a time through a pipeline with the
 * reference model as compute: the computed tokens are embedded inside layer
 * 0's compute (so a restart embeds again), each layer runs over
 * `[computeFrom, tokens.length)` with `start = computeFrom`, and the final
 * norm follows the last layer. Holds its own residual and output buffers, so
 * several prefillers may run on one pipeline at once.
 */
export class Prefiller {
  readonly #model: ReferenceModel;
  readonly #device: Device;
  readonly #cache: KvCache;
  readonly #pipeline: LayerPipeline;
  readonly #stream: Stream;
  readonly #hidden: DeviceBuffer;
  readonly #out: DeviceBuffer;

  constructor(device: Device, model: ReferenceModel, cache: KvCache, pipeline: LayerPipeline, computeStream: Stream) {
    this.#device = device;
    this.#model = model;
    this.#cache = cache;
    this.#pipeline = pipeline;
    this.#stream = computeStream;
    this.#hidden = model.allocHidden(model.maxTokens);
    this.#out = device.allocDevice(model.maxTokens * model.config.hidden * 4);
  }

  /** One prefill of `tokens` into `blocks`; `read` copies the final hidden states back. */
  async run(tokens: number[], blocks: number[], opts: { policy: PrefillPolicy; engine?: PagedEngine; save: boolean; read: boolean; signal?: AbortSignal }): Promise<TurnRun> {
    const model = this.#model;
    const last = model.config.layers - 1;
    const compute: LayerCompute = (layer, work) => {
      const count = tokens.length - work.computeFrom;
      if (layer === 0) model.embed(work.stream, this.#hidden, tokens.slice(work.computeFrom));
      model.layer(work.stream, layer, { hidden: this.#hidden, cache: this.#cache, blocks: work.blocks, start: work.computeFrom, count });
      if (layer === last) model.finalNorm(work.stream, this.#out, this.#hidden, count);
    };
    const result = await this.#pipeline.prefill({ tokens, blocks, compute, policy: opts.policy, engine: opts.engine, save: opts.save, signal: opts.signal });
    const computed = tokens.length - result.plan.computeFrom;
    let out: Float32Array | undefined;
    if (opts.read) out = await this.read(this.#out, computed * model.config.hidden * 4);
    return { result, computed, out };
  }

  /** A host copy of the first `bytes` bytes of a device buffer, as f32 values. */
  async read(buffer: DeviceBuffer, bytes: number): Promise<Float32Array> {
    const host = this.#device.allocPinned(bytes);
    try {
      this.#stream.copy(host, 0, buffer, 0, bytes);
      await this.#stream.record().done();
      return new Float32Array(host.array.slice(0, bytes).buffer);
    } finally {
      await host.dispose();
    }
  }

  /**
   * The next token the model predicts from each final hidden state of
   * `rows`: the argmax of its dot product with every row of the embedding
   * table (a tied output head; the reference model has no separate one). The
   * table is embedded on the device in slices of at most `maxTokens` rows.
   */
  async nextTokens(rows: Float32Array[]): Promise<number[]> {
    const model = this.#model;
    const { vocab, hidden } = model.config;
    const best = rows.map(() => -1);
    const bestScore = rows.map(() => Number.NEGATIVE_INFINITY);
    const slice = Math.min(model.maxTokens, vocab);
    const ids: number[] = [];
    for (let v0 = 0; v0 < vocab; v0 += slice) {
      const n = Math.min(slice, vocab - v0);
      ids.length = n;
      for (let i = 0; i < n; i++) ids[i] = v0 + i;
      model.embed(this.#stream, this.#hidden, ids);
      const bytes = n * model.hiddenBytesPerToken;
      const host = this.#device.allocPinned(bytes);
      try {
        this.#stream.copy(host, 0, this.#hidden, 0, bytes);
        await this.#stream.record().done();
        const table = decodeRows(host.array.subarray(0, bytes), model.dtype);
        rows.forEach((row, r) => {
          for (let i = 0; i < n; i++) {
            let s = 0;
            const o = i * hidden;
            for (let k = 0; k < hidden; k++) s += table[o + k]! * row[k]!;
            if (s > bestScore[r]!) {
              bestScore[r] = s;
              best[r] = v0 + i;
            }
          }
        });
      } finally {
        await host.dispose();
      }
    }
    return best;
  }

  async dispose(): Promise<void> {
    await this.#stream.record().done();
    await Promise.all([this.#hidden.dispose(), this.#out.dispose()]);
  }
}

function decodeRows(bytes: Uint8Array, dtype: 'f32' | 'bf16'): Float32Array {
  const copy = bytes.slice();
  if (dtype === 'f32') return new Float32Array(copy.buffer);
  const h = new Uint16Array(copy.buffer);
  const u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i]! << 16;
  return new Float32Array(u.buffer);
}

/** max|a - b| / max|b| over equally long arrays. */
export function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let diff = 0;
  let ref = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    ref = Math.max(ref, Math.abs(b[i]!));
  }
  return ref === 0 ? (diff === 0 ? 0 : Number.POSITIVE_INFINITY) : diff / ref;
}

/** Tolerance of the check against a full recompute: f32 on CPU, bf16 on CUDA. */
export function checkTolerance(dtype: 'f32' | 'bf16'): number {
  return dtype === 'f32' ? 1e-5 : 2e-2;
}

/** p-th percentile (0-100, nearest rank) of values. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * s.length);
  return s[Math.min(s.length - 1, Math.max(0, rank - 1))]!;
}
