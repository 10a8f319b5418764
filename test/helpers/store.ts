/**
 * What the store suites share: a small layout, random prompts and block
 * tables, and a reference of what a chunk's blocks must hold.
 */
import type { KvCache, KvflowErrorCode, KvLayoutSpec, KvStore } from '../../src/index.js';
import { injectFailure } from '../../src/device/testing.js';

export { fillCache, readCache } from './cache.js';

/** 3 layers x 2 heads x 8 dims x f16, 4-token blocks: 32 bytes per token and layer, 12 KiB records of 8 tokens. */
export const SPEC: KvLayoutSpec = { layers: 3, kvHeads: 2, headDim: 8, dtype: 'f16', blockTokens: 4, numBlocks: 64 };
export const CHUNK = 8;
export const FP = { model: 'test/llama-tiny', revision: 'r1' };

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

/** Counts the store's `loadLayer` calls: one entry per call, the number of requests it carried. */
export function spyLoads(store: KvStore): number[] {
  const calls: number[] = [];
  const load = store.loadLayer.bind(store);
  store.loadLayer = (chunks, ...rest) => {
    calls.push(Array.isArray(chunks[0]) ? chunks.length : 1);
    return load(chunks, ...rest);
  };
  return calls;
}

/**
 * The store's next `loadLayer` call (of `layer`, when given) fails on its
 * stream with `code`, as an IO error would; later calls load as usual.
 */
export function failNextLoad(store: KvStore, o: { layer?: number; code?: KvflowErrorCode } = {}): void {
  const load = store.loadLayer.bind(store);
  let armed = true;
  store.loadLayer = (chunks, layer, cache, blocks, stream, opts) => {
    if (armed && (o.layer === undefined || layer === o.layer)) {
      armed = false;
      injectFailure(stream, o.code ?? 'ERR_IO', 'injected read failure');
    }
    return load(chunks, layer, cache, blocks, stream, opts);
  };
}
