/**
 * The DRAM tier's slot map: a per-process arena of pinned memory cut into
 * chunk slots, grown segment by segment up to its capacity, with an eviction
 * order given by the store's rank function (LRU by default). Slots in use
 * (pinned by a hit, a load or a write in flight, or still filling) are never
 * evicted.
 */
import type { PinnedBuffer } from '../device/buffer.js';
import { channels } from '../util/diagnostics.js';
import { pickVictim, type EvictionRank } from './eviction.js';

/** A slot of the arena: `bytes` at `offset` of `buffer`. */
export interface DramSlot {
  segment: number;
  buffer: PinnedBuffer;
  offset: number;
}

export interface DramChunk {
  key: string;
  /** Position of the chunk in the prompt that made it (later chunks are evicted first among equals). */
  index: number;
  /** `put`: filled by a prefill (only its put writes it); `promotion`: filled from NVMe by loads. */
  kind: 'put' | 'promotion';
  slot: DramSlot;
  /** `filling`: layers still arriving (a put, or a promotion from NVMe); not visible to lookups. */
  state: 'filling' | 'ready';
  /** Layers present, by extent index (used while filling). */
  layers: Uint8Array;
  present: number;
  pins: number;
  hits: number;
  lastUse: number;
  created: number;
  /** Known to be held by the tier chunks are demoted to (NVMe): writing it there again is needless. */
  stored: boolean;
  /**
   * CRC32C of each layer extent (seeded by key and layer) where known: from
   * the index entry a promotion's layer was read and checked against, or
   * computed when this process wrote the chunk to NVMe. What `verify`
   * checks the DRAM copy against.
   */
  sums: (number | undefined)[] | undefined;
  /** Queued for or being written to the demotion tier. */
  demoting: boolean;
  /** Discarded: its slot returns once the last pin goes. */
  dead: boolean;
  /** Its slot went back to the free list (exactly once). */
  freed: boolean;
}

export class DramArena {
  readonly slotBytes: number;
  readonly capacitySlots: number;
  readonly slotsPerSegment: number;
  readonly #alloc: (bytes: number) => PinnedBuffer;
  readonly #rank: EvictionRank;
  readonly segments: PinnedBuffer[] = [];
  readonly #free: DramSlot[] = [];
  readonly chunks = new Map<string, DramChunk>();
  #slots = 0;
  evictions = 0;

  constructor(slotBytes: number, capacityBytes: number, alloc: (bytes: number) => PinnedBuffer, rank: EvictionRank) {
    this.slotBytes = slotBytes;
    this.capacitySlots = Math.floor(capacityBytes / slotBytes);
    // Segments of up to 256 MiB (at least one slot): pinning is slow, so the
    // arena grows in steps, and one file read can fill many slots of a segment.
    this.slotsPerSegment = Math.max(1, Math.min(this.capacitySlots, Math.floor((256 << 20) / slotBytes)));
    this.#alloc = alloc;
    this.#rank = rank;
  }

  /** Pins every segment now (the whole capacity), so no later slot waits for pinning. */
  preallocate(): void {
    let slots = this.segments.length * this.slotsPerSegment;
    while (slots < this.capacitySlots) {
      const n = Math.min(this.slotsPerSegment, this.capacitySlots - slots);
      this.segments.push(this.#alloc(n * this.slotBytes));
      slots += n;
    }
  }

  get usedSlots(): number {
    return this.chunks.size;
  }

  /** Ready chunk for `key`, or undefined. */
  ready(key: string): DramChunk | undefined {
    const c = this.chunks.get(key);
    return c?.state === 'ready' ? c : undefined;
  }

  #slot(): DramSlot | undefined {
    const free = this.#free.pop();
    if (free) return free;
    if (this.#slots < this.capacitySlots) {
      const segment = Math.floor(this.#slots / this.slotsPerSegment);
      if (segment === this.segments.length) {
        const slots = Math.min(this.slotsPerSegment, this.capacitySlots - this.#slots);
        this.segments.push(this.#alloc(slots * this.slotBytes));
      }
      const index = this.#slots % this.slotsPerSegment;
      this.#slots++;
      return { segment, buffer: this.segments[segment]!, offset: index * this.slotBytes };
    }
    return this.#evictOne();
  }

  #evictOne(): DramSlot | undefined {
    const victim = pickVictim(this.chunks.values(), (c) => c.state === 'ready' && c.pins === 0 && !c.demoting,
      (c) => ({ lastUse: c.lastUse - c.index, hits: c.hits, created: c.created }), this.#rank);
    if (!victim) return undefined;
    this.chunks.delete(victim.key);
    victim.dead = true;
    victim.freed = true; // handed straight to its next owner
    this.evictions++;
    if (channels.evict.hasSubscribers) channels.evict.publish({ tier: 'dram', keys: [victim.key] });
    return victim.slot;
  }

  /**
   * A new filling chunk for `key` with one pin, or undefined when every slot
   * is in use (the caller goes without: the tier never blocks).
   */
  begin(key: string, layers: number, kind: 'put' | 'promotion', index: number): DramChunk | undefined {
    if (this.chunks.has(key)) return undefined;
    const slot = this.#slot();
    if (!slot) return undefined;
    const now = Date.now();
    const c: DramChunk = {
      key, index, kind, slot, state: 'filling', layers: new Uint8Array(layers), present: 0, pins: 1, hits: 0,
      lastUse: now, created: now, stored: false, sums: undefined, demoting: false, dead: false, freed: false,
    };
    this.chunks.set(key, c);
    return c;
  }

  /** Marks extent `li` of a filling chunk present; true once every layer is. */
  fill(c: DramChunk, li: number): boolean {
    if (c.layers[li] === 0) {
      c.layers[li] = 1;
      c.present++;
    }
    return c.present === c.layers.length;
  }

  /**
   * Drops a chunk (a failed fill or an aborted put): lookups stop seeing it
   * at once; its slot is reused once no pin (work in flight) holds it.
   */
  discard(c: DramChunk): void {
    if (c.dead) return;
    c.dead = true;
    if (this.chunks.get(c.key) === c) this.chunks.delete(c.key);
    this.#release(c);
  }

  #release(c: DramChunk): void {
    if (c.dead && c.pins === 0 && !c.freed) {
      c.freed = true;
      this.#free.push(c.slot);
    }
  }

  pin(c: DramChunk): void {
    if (c.freed) throw new Error('kvflow internal error: pinning a DRAM chunk whose slot was freed');
    c.pins++;
  }

  unpin(c: DramChunk): void {
    if (c.pins === 0) throw new Error('kvflow internal error: unpinning a DRAM chunk that holds no pin');
    c.pins--;
    this.#release(c);
  }

  use(c: DramChunk): void {
    c.lastUse = Date.now();
  }

  /** Frees every slot (the buffers stay for reuse). */
  clear(): void {
    for (const c of this.chunks.values()) {
      c.dead = true;
      if (!c.freed) {
        c.freed = true;
        this.#free.push(c.slot);
      }
    }
    this.chunks.clear();
  }
}
