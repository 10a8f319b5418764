/**
 * What the store suites share: a small layout, caches filled with random or
 * seeded bytes, and a reference of what a chunk's blocks must hold.
 */
import type { Device, KvCache, KvLayoutSpec, Stream } from '../../src/index.js';

/** 3 layers x 2 heads x 8 dims x f16, 4-token blocks: 32 bytes per token and layer, 12 KiB records of 8 tokens. */
export const SPEC: KvLayoutSpec = { layers: 3, kvHeads: 2, headDim: 8, dtype: 'f16', blockTokens: 4, numBlocks: 64 };
export const CHUNK = 8;
export const FP = { model: 'test/llama-tiny', revision: 'r1' };

/** Deterministic bytes (xorshift32), never a run of zeros. */
export function seeded(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = (seed * 2654435761) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** Writes `data[i]` into cache buffer i. */
export async function fillCache(dev: Device, stream: Stream, cache: KvCache, data: Uint8Array[]): Promise<void> {
  for (let i = 0; i < cache.buffers.length; i++) {
    const b = cache.buffers[i]!;
    const host = dev.allocPinned(b.byteLength);
    host.array.set(data[i]!);
    stream.copy(b, 0, host, 0, b.byteLength);
    await stream.synchronize();
    await host.dispose();
  }
}

/** A host copy of every cache buffer. */
export async function readCache(dev: Device, stream: Stream, cache: KvCache): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (const b of cache.buffers) {
    const host = dev.allocPinned(b.byteLength);
    stream.copy(host, 0, b, 0, b.byteLength);
    await stream.synchronize();
    out.push(host.array.slice());
    await host.dispose();
  }
  return out;
}

/** The bytes of K (kv 0) or V (kv 1) of `block` in `layer`, from host copies of the cache. */
export function pieceOf(cache: KvCache, data: Uint8Array[], layer: number, kv: 0 | 1, block: number): Uint8Array {
  const at = cache.layout.piece(layer, kv, block);
  return data[at.buffer]!.subarray(at.offset, at.offset + cache.layout.pieceBytes);
}

/** Random distinct block ids. */
export function randomBlocks(count: number, numBlocks: number): number[] {
  const all = Array.from({ length: numBlocks }, (_, i) => i);
  for (let i = all.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, count);
}

/** Random token ids. */
export function randomTokens(n: number): number[] {
  return Array.from({ length: n }, () => Math.floor(Math.random() * 128000));
}
