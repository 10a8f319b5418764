/**
 * Eviction order: the rank function users may give (lowest rank evicted
 * first, LRU by default), and the choice of a victim among a tier's chunks.
 */

/** Facts an eviction rank is computed from. */
export interface ChunkUse {
  /** Last use, ms since the epoch. */
  lastUse: number;
  /** Loads served. */
  hits: number;
  /** When the chunk entered the tier, ms since the epoch. */
  created: number;
}

/** Lower ranks are evicted first. The default, LRU, is `(u) => u.lastUse`. */
export type EvictionRank = (use: ChunkUse) => number;

export const lruRank: EvictionRank = (u) => u.lastUse;

/** A rank that cannot throw or return a non-number: a failing policy evicts nothing first. */
export function safeRank(rank: EvictionRank, use: ChunkUse): number {
  try {
    const r = rank(use);
    return typeof r === 'number' && !Number.isNaN(r) ? r : Infinity;
  } catch {
    return Infinity;
  }
}

/** The evictable candidate of lowest rank, or undefined when none is evictable. */
export function pickVictim<T>(candidates: Iterable<T>, evictable: (c: T) => boolean, use: (c: T) => ChunkUse, rank: EvictionRank): T | undefined {
  let victim: T | undefined;
  let best = Infinity;
  for (const c of candidates) {
    if (!evictable(c)) continue;
    const r = safeRank(rank, use(c));
    if (r < best) {
      best = r;
      victim = c;
    }
  }
  return victim;
}
