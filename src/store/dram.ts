/**
 * The DRAM tier: chunk records in this process's pinned arena. It is the
 * store's first tier and its staging: the cache's scatter reads DRAM chunks
 * where they sit, and a chunk read from a lower tier lands in a DRAM slot
 * (a promotion, ready once every layer arrived) when one is free.
 */
import type { PinnedBuffer } from '../device/buffer.js';
import type { Event } from '../device/event.js';
import { DramArena, type DramChunk } from './arena.js';
import type { EvictionRank } from './eviction.js';
import type { ReadBatch, ReadOutcome, Staging, Tier, TierRead } from './tier.js';

// The package entry point exports the eviction rank from here.
export { lruRank, type ChunkUse, type EvictionRank } from './eviction.js';
export type { DramChunk } from './arena.js';

/**
 * A DRAM chunk a load can scatter from: its extent, and the read still
 * filling it (a promotion), if any, with that read's outcome (known once the
 * read was handled: a failed one left zeros there).
 */
export interface DramSource {
  chunk: DramChunk;
  staging: Staging;
  pending: Event | undefined;
  landed: Promise<ReadOutcome> | undefined;
}

interface Inflight {
  event: Event;
  outcome: Promise<ReadOutcome>;
}

export class DramTier implements Tier<DramChunk> {
  readonly name = 'dram';
  readonly arena: DramArena;
  readonly #extentBytes: number;
  /** Reads in flight into promotions, by chunk and layer extent. */
  readonly #inflight = new Map<DramChunk, Map<number, Inflight>>();
  /** Promotions whose hit was released while reads into them were in flight. */
  readonly #abandoned = new Set<DramChunk>();

  constructor(extentBytes: number, layers: number, capacityBytes: number, alloc: (bytes: number) => PinnedBuffer, rank: EvictionRank) {
    this.#extentBytes = extentBytes;
    this.arena = new DramArena(extentBytes * layers, capacityBytes, alloc, rank);
  }

  contains(key: string): DramChunk | undefined {
    return this.arena.ready(key);
  }

  pin(chunk: DramChunk): void {
    this.arena.pin(chunk);
  }

  unpin(chunk: DramChunk): void {
    this.arena.unpin(chunk);
  }

  /** Host copies from the chunks' slots (the store scatters from DRAM directly; this serves a DRAM tier placed lower). */
  readLayer(reads: readonly TierRead<DramChunk>[], li: number): ReadBatch[] {
    const bytes = this.#extentBytes;
    for (const r of reads) {
      const from = r.chunk.slot.offset + li * bytes;
      r.dst.buffer.array.set(r.chunk.slot.buffer.array.subarray(from, from + bytes), r.dst.offset);
    }
    return [{ event: undefined, reads: reads.map((_, i) => i), outcome: Promise.resolve(reads.map(() => 'ok' as const)) }];
  }

  touch(key: string): boolean {
    const c = this.arena.ready(key);
    if (c) this.arena.use(c);
    return c !== undefined;
  }

  async remove(key: string, chunk: DramChunk): Promise<boolean> {
    if (this.arena.chunks.get(key) !== chunk) return false;
    this.arena.discard(chunk);
    return true;
  }

  stats(): { capacityBytes: number; usedBytes: number; chunks: number; evictions: number } {
    const a = this.arena;
    let chunks = 0;
    for (const c of a.chunks.values()) if (c.state === 'ready') chunks++;
    return { capacityBytes: a.capacitySlots * a.slotBytes, usedBytes: a.usedSlots * a.slotBytes, chunks, evictions: a.evictions };
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    this.arena.clear();
    await Promise.all(this.arena.segments.map((s) => s.dispose()));
  }

  /**
   * Where a load finds extent `li` of `key` in DRAM: a ready chunk, or a
   * promotion whose extent arrived or is on its way (`pending`: the read to
   * wait for). Undefined when DRAM cannot serve it.
   */
  source(key: string, li: number): DramSource | undefined {
    const c = this.arena.chunks.get(key);
    if (c === undefined || c.dead) return undefined;
    const inflight = this.#inflight.get(c)?.get(li);
    if (c.state !== 'ready' && !(c.kind === 'promotion' && (c.layers[li] === 1 || inflight !== undefined))) return undefined;
    return { chunk: c, staging: { buffer: c.slot.buffer, offset: c.slot.offset + li * this.#extentBytes }, pending: inflight?.event, landed: inflight?.outcome };
  }

  /** True when a read into extent `li` of `c` is in flight. */
  filling(c: DramChunk, li: number): boolean {
    return this.#inflight.get(c)?.has(li) === true;
  }

  /**
   * The promotion a read of `key` from a lower tier lands in, pinned for the
   * read; undefined when none can be had (every slot in use, or the key's
   * slot is a prefill's own, which only its put writes). `fresh` promotions
   * carry a second pin: the lease of the hit that caused them.
   */
  promotion(key: string, index: number, layers: number): { chunk: DramChunk; fresh: boolean } | undefined {
    let c = this.arena.chunks.get(key);
    let fresh = false;
    if (c && (c.dead || c.kind !== 'promotion')) return undefined;
    if (!c) {
      c = this.arena.begin(key, layers, 'promotion', index);
      if (!c) return undefined;
      fresh = true;
    }
    this.arena.pin(c);
    return { chunk: c, fresh };
  }

  /** A read into extent `li` of promotion `c` was posted; `outcome` resolves once it was handled (landed() ran). */
  reading(c: DramChunk, li: number, event: Event | undefined, outcome: Promise<ReadOutcome>): void {
    if (event === undefined) return;
    let m = this.#inflight.get(c);
    if (!m) this.#inflight.set(c, (m = new Map()));
    m.set(li, { event, outcome });
  }

  /**
   * A read into extent `li` of promotion `c` landed: a good one fills it
   * (ready at the last layer; `crc`: the checksum it was checked against,
   * when the tier has one), a bad one drops it.
   */
  landed(c: DramChunk, li: number, event: Event | undefined, ok: boolean, crc?: number): void {
    const m = this.#inflight.get(c);
    if (m && m.get(li)?.event === event) m.delete(li);
    if (m && m.size === 0) this.#inflight.delete(c);
    if (!ok) {
      this.arena.discard(c);
      return;
    }
    if (c.state === 'filling') {
      c.sums ??= new Array<number | undefined>(c.layers.length).fill(undefined);
      c.sums[li] = crc;
    }
    if (c.state === 'filling' && this.arena.fill(c, li)) {
      c.state = 'ready';
      this.#abandoned.delete(c);
    }
  }

  /** Drops abandoned promotions whose reads have all landed. */
  sweep(): void {
    for (const c of this.#abandoned) {
      if (c.dead || c.state === 'ready') this.#abandoned.delete(c);
      else if (!this.#inflight.get(c)?.size) {
        this.#abandoned.delete(c);
        this.arena.discard(c);
      }
    }
  }

  /**
   * Ends a hit's lease on `c`. A promotion that did not receive every layer
   * is dropped with its hit (once the reads in flight into it have landed).
   */
  release(c: DramChunk): void {
    if (c.state === 'filling' && !c.dead) {
      if (this.#inflight.get(c)?.size) this.#abandoned.add(c);
      else this.arena.discard(c);
    }
    this.arena.unpin(c);
  }

  /** Drops every chunk no one holds (as a restart would). */
  dropIdle(): void {
    for (const c of [...this.arena.chunks.values()]) if (c.pins === 0 && !c.demoting) this.arena.discard(c);
  }
}
