/**
 * A runtime's compute for pipeline and connector tests: each computed token's
 * K and V are a hash of token, position and layer (never zeros), written into
 * the cache with stream copies, so a cache can be checked byte for byte
 * whatever was loaded and whatever was computed.
 */
import type { Device, KvCache, LayerCompute, PinnedBuffer, Stream } from '../../src/index.js';
import { readCache } from './cache.js';

/** The K (kv 0) or V (kv 1) bytes a layer's compute writes for the token at `pos` of `tokens`: a hash, never zeros. */
export function expected(tokens: readonly number[], pos: number, layer: number, kv: number, tokenBytes: number): Uint8Array {
  const out = new Uint8Array(tokenBytes);
  let h = (tokens[pos]! * 2654435761) ^ (pos * 40503) ^ (layer * 97 + kv * 13);
  for (let i = 0; i < tokenBytes; i++) {
    h = Math.imul(h ^ (h >>> 15), 2246822507) ^ i;
    out[i] = (h & 0xff) | 1;
  }
  return out;
}

/**
 * A runtime's compute, for tests: writes each computed token's K and V (a
 * function of token, position and layer) into the cache with stream copies,
 * and logs the call order.
 */
export class PatternCompute {
  readonly log: string[] = [];
  readonly calls: { layer: number; computeFrom: number; attempt: number }[] = [];
  #host = new Map<string, PinnedBuffer>();
  constructor(readonly dev: Device, readonly cache: KvCache) {}

  fn(): LayerCompute {
    return (layer, work) => {
      this.log.push(`compute ${layer}`);
      this.calls.push({ layer, computeFrom: work.computeFrom, attempt: work.attempt });
      const layout = this.cache.layout;
      const tb = layout.tokenBytes;
      const tokens = Array.from(work.tokens);
      const key = `${tokens.length}:${tokens[0]}:${tokens[tokens.length - 1]}:${layer}`;
      let host = this.#host.get(key);
      if (!host) {
        host = this.dev.allocPinned(2 * tokens.length * tb);
        for (let kv = 0; kv < 2; kv++) {
          for (let p = 0; p < tokens.length; p++) host.array.set(expected(tokens, p, layer, kv, tb), (kv * tokens.length + p) * tb);
        }
        this.#host.set(key, host);
      }
      for (let p = work.computeFrom; p < tokens.length; p++) {
        const block = work.blocks[Math.floor(p / layout.blockTokens)]!;
        for (let kv = 0 as 0 | 1; kv < 2; kv++) {
          const at = layout.piece(layer, kv as 0 | 1, block);
          work.stream.copy(this.cache.buffers[at.buffer]!, at.offset + (p % layout.blockTokens) * tb, host, (kv * tokens.length + p) * tb, tb);
        }
      }
    };
  }

  async dispose(): Promise<void> {
    for (const h of this.#host.values()) await h.dispose();
  }
}


/** Throws unless every token of the prompt holds, in every layer, what PatternCompute writes for it. */
export async function expectPattern(dev: Device, stream: Stream, cache: KvCache, tokens: readonly number[], blocks: readonly number[]): Promise<void> {
  const layout = cache.layout;
  const data = await readCache(dev, stream, cache);
  for (let layer = 0; layer < layout.layers; layer++) {
    for (let p = 0; p < tokens.length; p++) {
      for (let kv = 0; kv < 2; kv++) {
        const at = layout.piece(layer, kv as 0 | 1, blocks[Math.floor(p / layout.blockTokens)]!);
        const off = at.offset + (p % layout.blockTokens) * layout.tokenBytes;
        const have = data[at.buffer]!.subarray(off, off + layout.tokenBytes);
        if (Buffer.compare(have, expected(tokens, p, layer, kv, layout.tokenBytes)) !== 0) {
          throw new Error(`layer ${layer} token ${p} ${kv ? 'V' : 'K'} differs`);
        }
      }
    }
  }
}
