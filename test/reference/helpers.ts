/**
 * What the reference model suites share: the weights and one decoder layer
 * written out plainly in f64 from the documented formulas (reference.hpp),
 * element codecs for f32 and bf16, and host copies of device buffers.
 */
import type { Device, DeviceBuffer, KvCache, Stream } from '../../src/index.js';
import type { ModelConfig } from '../../src/reference/index.js';

/** Tolerance of max|diff| / max|ref| per backend: f32 on CPU, bf16 on CUDA. */
export function tolerance(backend: string): number {
  return backend === 'cpu' ? 1e-5 : 2e-2;
}

const M64 = (1n << 64n) - 1n;
const GOLDEN = 0x9e3779b97f4a7c15n;

/** reference_weight(seed, tensor, index) of reference.hpp. */
export function refWeight(seed: number, tensor: number, index: number): number {
  let z = ((BigInt(seed) * GOLDEN) & M64) ^ (BigInt(tensor) << 40n) ^ BigInt(index);
  z = (z + GOLDEN) & M64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & M64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & M64;
  z ^= z >> 31n;
  return Number(z >> 40n) * (2 / 16777216) - 1; // exact in f32 too
}

/** Tensor ids of reference.hpp (reference_tensor). */
export const T = { embed: 0, finalNorm: 1, attnNorm: 0, wq: 1, wk: 2, wv: 3, wo: 4, qNorm: 5, kNorm: 6, mlpNorm: 7, gate: 8, up: 9, down: 10 };
export const layerTensor = (set: number, offset: number): number => 16 + set * 16 + offset;

function matrix(seed: number, tensor: number, out: number, inp: number): Float64Array {
  const w = new Float64Array(out * inp);
  const s = Math.fround(Math.sqrt(inp));
  for (let i = 0; i < w.length; i++) w[i] = Math.fround(refWeight(seed, tensor, i) / s);
  return w;
}

function norm(seed: number, tensor: number, n: number): Float64Array {
  const w = new Float64Array(n);
  for (let i = 0; i < n; i++) w[i] = Math.fround(1 + Math.fround(Math.fround(0.1) * refWeight(seed, tensor, i)));
  return w;
}

export type Shape = Required<ModelConfig> & { seed: number };

export interface SetWeights {
  attnNorm: Float64Array; wq: Float64Array; wk: Float64Array; wv: Float64Array; wo: Float64Array;
  qNorm: Float64Array; kNorm: Float64Array; mlpNorm: Float64Array; gate: Float64Array; up: Float64Array; down: Float64Array;
}

/** The weights of weight set `set`. */
export function setWeights(s: Shape, set: number): SetWeights {
  const id = (o: number): number => layerTensor(set, o);
  const q = s.heads * s.headDim;
  const kv = s.kvHeads * s.headDim;
  return {
    attnNorm: norm(s.seed, id(T.attnNorm), s.hidden),
    wq: matrix(s.seed, id(T.wq), q, s.hidden),
    wk: matrix(s.seed, id(T.wk), kv, s.hidden),
    wv: matrix(s.seed, id(T.wv), kv, s.hidden),
    wo: matrix(s.seed, id(T.wo), s.hidden, q),
    qNorm: norm(s.seed, id(T.qNorm), s.headDim),
    kNorm: norm(s.seed, id(T.kNorm), s.headDim),
    mlpNorm: norm(s.seed, id(T.mlpNorm), s.hidden),
    gate: matrix(s.seed, id(T.gate), s.intermediate, s.hidden),
    up: matrix(s.seed, id(T.up), s.intermediate, s.hidden),
    down: matrix(s.seed, id(T.down), s.hidden, s.intermediate),
  };
}

export function embedRow(s: Shape, token: number): Float64Array {
  const row = new Float64Array(s.hidden);
  for (let i = 0; i < s.hidden; i++) row[i] = refWeight(s.seed, T.embed, token * s.hidden + i);
  return row;
}

export function finalNormRow(s: Shape, x: Float64Array): Float64Array {
  return rmsNorm(x, norm(s.seed, T.finalNorm, s.hidden), s.normEps);
}

function rmsNorm(x: Float64Array, w: Float64Array, eps: number): Float64Array {
  let ss = 0;
  for (const v of x) ss += v * v;
  const r = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * r * w[i]!);
}

function linear(x: Float64Array, w: Float64Array, out: number): Float64Array {
  const inp = x.length;
  const y = new Float64Array(out);
  for (let o = 0; o < out; o++) {
    let acc = 0;
    for (let i = 0; i < inp; i++) acc += w[o * inp + i]! * x[i]!;
    y[o] = acc;
  }
  return y;
}

function rope(x: Float64Array, pos: number, theta: number): void {
  const d = x.length;
  const half = d / 2;
  for (let i = 0; i < half; i++) {
    const a = pos * Math.pow(theta, (-2 * i) / d);
    const x1 = x[i]!;
    const x2 = x[i + half]!;
    x[i] = x1 * Math.cos(a) - x2 * Math.sin(a);
    x[i + half] = x2 * Math.cos(a) + x1 * Math.sin(a);
  }
}

/**
 * One decoder layer over new tokens at positions [start, start + x.length):
 * `keys`/`values` hold the cached K and V of positions [0, start) (kvHeads x
 * headDim each, post-RoPE); returns the new residual rows and the new K and V.
 */
export function refLayer(s: Shape, w: SetWeights, x: Float64Array[], keys: Float64Array[], values: Float64Array[], start: number) {
  const d = s.headDim;
  const group = s.heads / s.kvHeads;
  const K = [...keys];
  const V = [...values];
  const qs: Float64Array[] = [];
  for (let t = 0; t < x.length; t++) {
    const xn = rmsNorm(x[t]!, w.attnNorm, s.normEps);
    const q = linear(xn, w.wq, s.heads * d);
    const k = linear(xn, w.wk, s.kvHeads * d);
    const v = linear(xn, w.wv, s.kvHeads * d);
    for (let h = 0; h < s.heads; h++) {
      const head = q.subarray(h * d, (h + 1) * d);
      if (s.qkNorm) head.set(rmsNorm(head, w.qNorm, s.normEps));
      rope(head, start + t, s.ropeTheta);
    }
    for (let g = 0; g < s.kvHeads; g++) {
      const head = k.subarray(g * d, (g + 1) * d);
      if (s.qkNorm) head.set(rmsNorm(head, w.kNorm, s.normEps));
      rope(head, start + t, s.ropeTheta);
    }
    qs.push(q);
    K.push(k);
    V.push(v);
  }
  const out: Float64Array[] = [];
  for (let t = 0; t < x.length; t++) {
    const ctx = start + t + 1;
    const attn = new Float64Array(s.heads * d);
    for (let h = 0; h < s.heads; h++) {
      const g = Math.floor(h / group);
      const q = qs[t]!.subarray(h * d, (h + 1) * d);
      const scores = new Float64Array(ctx);
      for (let j = 0; j < ctx; j++) {
        let dot = 0;
        for (let i = 0; i < d; i++) dot += q[i]! * K[j]![g * d + i]!;
        scores[j] = dot / Math.sqrt(d);
      }
      const top = Math.max(...scores);
      let sum = 0;
      for (let j = 0; j < ctx; j++) {
        const p = Math.exp(scores[j]! - top);
        sum += p;
        for (let i = 0; i < d; i++) attn[h * d + i]! += p * V[j]![g * d + i]!;
      }
      for (let i = 0; i < d; i++) attn[h * d + i]! /= sum;
    }
    const o = linear(attn, w.wo, s.hidden);
    const h1 = x[t]!.map((v, i) => v + o[i]!);
    const xn = rmsNorm(h1, w.mlpNorm, s.normEps);
    const gate = linear(xn, w.gate, s.intermediate);
    const up = linear(xn, w.up, s.intermediate);
    const act = gate.map((g, i) => (g / (1 + Math.exp(-g))) * up[i]!);
    const down = linear(act, w.down, s.hidden);
    out.push(h1.map((v, i) => v + down[i]!));
  }
  return { out, keys: K.slice(start), values: V.slice(start) };
}

/** max|a - b| / max|b| over rows. */
export function relErr(a: ArrayLike<number>[], b: ArrayLike<number>[]): number {
  let diff = 0;
  let ref = 0;
  b.forEach((row, r) => {
    for (let i = 0; i < row.length; i++) {
      diff = Math.max(diff, Math.abs(a[r]![i]! - row[i]!));
      ref = Math.max(ref, Math.abs(row[i]!));
    }
  });
  return diff / ref;
}

/** Elements of `dtype` ('f32' or 'bf16', round to nearest even) as bytes. */
export function encode(values: ArrayLike<number>, dtype: 'f32' | 'bf16'): Uint8Array {
  const f = Float32Array.from(values);
  if (dtype === 'f32') return new Uint8Array(f.buffer);
  const u = new Uint32Array(f.buffer);
  const out = new Uint16Array(f.length);
  for (let i = 0; i < u.length; i++) out[i] = (u[i]! + 0x7fff + ((u[i]! >>> 16) & 1)) >>> 16;
  return new Uint8Array(out.buffer);
}

export function decode(bytes: Uint8Array, dtype: 'f32' | 'bf16'): Float64Array {
  const copy = bytes.slice();
  if (dtype === 'f32') return Float64Array.from(new Float32Array(copy.buffer));
  const h = new Uint16Array(copy.buffer);
  const u = new Uint32Array(h.length);
  for (let i = 0; i < h.length; i++) u[i] = h[i]! << 16;
  return Float64Array.from(new Float32Array(u.buffer));
}

/** Values that survive a round trip through `dtype`. */
export function rounded(values: ArrayLike<number>, dtype: 'f32' | 'bf16'): Float64Array {
  return decode(encode(values, dtype), dtype);
}

export function randomValues(n: number, scale = 1): Float64Array {
  return Float64Array.from({ length: n }, () => (Math.random() * 2 - 1) * scale);
}

/** A host copy of a device buffer's first `bytes` bytes (all when omitted). */
export async function readBuffer(dev: Device, stream: Stream, buffer: DeviceBuffer, bytes = buffer.byteLength): Promise<Uint8Array> {
  const host = dev.allocPinned(bytes);
  stream.copy(host, 0, buffer, 0, bytes);
  await stream.synchronize();
  const out = host.array.slice(0, bytes);
  await host.dispose();
  return out;
}

export async function writeBuffer(dev: Device, stream: Stream, buffer: DeviceBuffer, data: Uint8Array, offset = 0): Promise<void> {
  const host = dev.allocPinned(data.byteLength);
  host.array.set(data);
  stream.copy(buffer, offset, host, 0, data.byteLength);
  await stream.synchronize();
  await host.dispose();
}

/** Rows of `width` f32 values of a device buffer. */
export async function readRows(dev: Device, stream: Stream, buffer: DeviceBuffer, rows: number, width: number, dtype: 'f32' | 'bf16' = 'f32') {
  const bytes = await readBuffer(dev, stream, buffer, rows * width * (dtype === 'f32' ? 4 : 2));
  const all = decode(bytes, dtype);
  return Array.from({ length: rows }, (_, r) => all.subarray(r * width, (r + 1) * width));
}

/** The bytes of K (kv 0) or V (kv 1) of `token` in `layer`, from host copies of the cache. */
export function tokenKv(cache: KvCache, data: Uint8Array[], blocks: ArrayLike<number>, layer: number, kv: 0 | 1, token: number): Uint8Array {
  const l = cache.layout;
  const at = l.piece(layer, kv, blocks[Math.floor(token / l.blockTokens)]!);
  const off = at.offset + (token % l.blockTokens) * l.tokenBytes;
  return data[at.buffer]!.subarray(off, off + l.tokenBytes);
}

/** Writes K or V of `token` in `layer` into host copies of the cache. */
export function setTokenKv(cache: KvCache, data: Uint8Array[], blocks: ArrayLike<number>, layer: number, kv: 0 | 1, token: number, bytes: Uint8Array): void {
  tokenKv(cache, data, blocks, layer, kv, token).set(bytes);
}

/** Random distinct block ids, shuffled. */
export function shuffledBlocks(count: number, numBlocks: number): number[] {
  const all = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, count);
}

export function randomTokens(n: number, vocab: number): number[] {
  return Array.from({ length: n }, () => Math.floor(Math.random() * vocab));
}
