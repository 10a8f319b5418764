// The chunks the crash and multi-process tests write and check: prompt j is
// one chunk of tokens derived from j, and its KV bytes are derived from j, so
// any process can tell whether a loaded chunk holds what it must.
export const SPEC = { layers: 3, kvHeads: 2, headDim: 8, dtype: 'f16', blockTokens: 4, numBlocks: 64 };
export const CHUNK = 8;
export const BPC = CHUNK / SPEC.blockTokens;
export const FINGERPRINT = { model: 'test/crash' };
export const NVME_BYTES = 4096 * 12288;

/** The tokens of prompt j (one chunk). */
export function tokensOf(j) {
  return Array.from({ length: CHUNK }, (_, t) => (j * 7919 + t * 104729) % 128000);
}

/** Bytes of K (kv 0) or V (kv 1) of block b (0 .. BPC-1) in layer l of chunk j. */
export function pieceBytes(j, l, kv, b, n) {
  const out = new Uint8Array(n);
  let x = ((j + 1) * 2654435761 + l * 40503 + kv * 7 + b * 131) >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}
