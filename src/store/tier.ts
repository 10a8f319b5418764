/**
 * The interface every tier of a KvStore implements (DESIGN.md section 4b):
 * the pinned DRAM tier, the NVMe tier, and any tier added later (a remote
 * one). The store walks its tiers in order: a lookup asks each whether it
 * holds a chunk, a load reads a layer of a batch of chunks from the tier that
 * holds them into pinned staging (a DRAM slot the chunk is promoted into, or
 * a temporary buffer), and the cache's scatter takes the bytes from there.
 * Chunks leave DRAM for the demotion tier (the first tier after DRAM that can
 * write) in the background.
 *
 * The shape follows LMCache's storage backends (contains / pin / get / put /
 * remove) with nixl's split of a transfer into posting and checking: a read
 * is enqueued at once and reports its outcome later, so a whole layer of a
 * prefix is one batch per tier, never one request per chunk.
 */
import type { PinnedBuffer } from '../device/buffer.js';
import type { Event } from '../device/event.js';

/** Where bytes sit, or must land, in pinned host memory. */
export interface Staging {
  buffer: PinnedBuffer;
  offset: number;
}

/** One chunk of a layer read: its key, the tier's handle (from `contains`) and where its extent must land. */
export interface TierRead<C> {
  key: string;
  chunk: C;
  dst: Staging;
}

/** What became of one read once its bytes landed: `checksum`: they failed their check; `error`: the read failed. */
export type ReadOutcome = 'ok' | 'checksum' | 'error';

/**
 * Reads the tier posted as one request. The store makes the scatter wait for
 * `event` (absent when the bytes were in place before readLayer returned);
 * `outcome` gives each read's fate, in the order of `reads` (indices into the
 * readLayer call's reads), and never rejects. A read that failed must leave
 * no bytes another chunk's could be mistaken for: its event fails, or its
 * destination holds zeros.
 */
export interface ReadBatch {
  event: Event | undefined;
  reads: number[];
  outcome: Promise<ReadOutcome[]>;
}

/** A whole chunk record to write (a demotion): every layer extent, in layer order, at `src`. */
export interface TierWrite {
  key: string;
  /** Position of the chunk in the prompt that made it. */
  index: number;
  src: Staging;
}

/**
 * The chunks of a write (by position in the call) that the tier does not
 * hold afterwards, with why; how many it wrote (chunks it held already count
 * as neither); keys it evicted to make room; the checksums of what it wrote.
 */
export interface WriteResult {
  failed: Map<number, unknown>;
  written: number;
  evicted: string[];
  /** Optional: CRC32C per layer extent (seeded by key and layer) of the chunks it wrote, by position. */
  sums?: Map<number, number[]>;
}

/**
 * A tier. `C` is the tier's handle of a chunk it holds, as `contains`
 * returns it; the store passes it back to pin, read and remove, and never
 * looks inside. Record format: per layer extent of the store's range, K of
 * the chunk's tokens then V, each extent `extentBytes` (4 KiB aligned).
 */
export interface Tier<C = unknown> {
  /** Names the tier in `ChunkRef.tier` and stats ('dram', 'nvme', ...). */
  readonly name: string;
  /** The chunk under `key` as the tier holds it now, or undefined. No side effects: a lookup asks per chunk. */
  contains(key: string): C | undefined;
  /** Keeps a chunk from eviction by this process until `unpin` (a hit's lease). */
  pin(chunk: C): void;
  unpin(chunk: C): void;
  /**
   * A tier shared with other processes: leases a hit's chunks (in prompt
   * order) against eviction by any of them, each released by `unpin`.
   * Returns how many leading chunks are held; the rest are not (they left
   * the tier since `contains`), and the hit stops before them. A tier
   * without it is leased through `pin`.
   */
  lease?(chunks: readonly { key: string; chunk: C }[]): number;
  /**
   * Posts the reads of layer extent `li` (0-based within the store's range)
   * of `reads`' chunks into their destinations, batched as the tier can
   * (NVMe: one checked read per slab file and destination buffer). Throws
   * (a KvflowError) when a read cannot be posted.
   */
  readLayer(reads: readonly TierRead<C>[], li: number): ReadBatch[];
  /**
   * A use of `key` served from a copy in an upper tier (`served` false) or
   * a load from this tier that verified (`served` true, at the first layer):
   * keeps it warm in this tier's eviction order. False when the tier no
   * longer holds it. `at` is when the use began (a hit's lookup): chunks
   * of one hit count as used at one time, whenever their loads landed.
   */
  touch(key: string, index: number, served: boolean, at?: number): boolean;
  /** Writes whole chunk records; absent on a tier that cannot be written (then it is never a demotion target). */
  write?(chunks: readonly TierWrite[]): Promise<WriteResult>;
  /** Drops a chunk (a failed check), only while `key` still maps to what `chunk` names. */
  remove(key: string, chunk: C): Promise<boolean>;
  /** The tier's counters. */
  stats(): Record<string, number>;
  /** Resolves once the tier's background work (batched index updates) is done. */
  flush(): Promise<void>;
  /** Frees what the tier holds; reads and writes have settled before the store calls it. */
  close(): Promise<void>;
}

/** A chunk of a hit. */
export interface ChunkRef {
  readonly key: string;
  /** Position of the chunk in the prompt. */
  readonly index: number;
  /** Where it was found by lookup (a tier arranged through store/testing.ts gives its own name). */
  readonly tier: 'dram' | 'nvme';
}
