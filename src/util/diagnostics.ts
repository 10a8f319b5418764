/**
 * kvflow's `node:diagnostics_channel` channels: the fallbacks it takes on a
 * user's behalf and the store's losses (evictions, checksum failures,
 * dropped demotions), published for whoever subscribes. Call sites check
 * `hasSubscribers` before building a message, so nothing is built when no
 * one listens:
 *
 *   if (channels.fallback.hasSubscribers) channels.fallback.publish({ ... });
 *
 * The channel names and message shapes are part of the public API (README,
 * "Observability").
 */
import diagnostics from 'node:diagnostics_channel';

import type { Choice } from './choice.js';

/** A fallback: what was `requested`, what kvflow `chosen` instead, and the `reason`. */
export type FallbackMessage =
  | { what: 'backend'; requested: 'auto'; chosen: 'cpu'; reason: string }
  | { what: 'io-engine'; requested: 'auto'; chosen: 'posix'; reason: string; path: string }
  | { what: 'direct'; requested: 'auto'; chosen: 'buffered'; reason: string; path: string }
  | { what: 'gds'; requested: 'auto'; chosen: 'bounce'; reason: string; path: string };

/** Chunks a tier evicted to make room (`keys`: the chunks' hex keys). */
export interface EvictMessage {
  tier: 'dram' | 'nvme';
  keys: readonly string[];
}

/** A chunk whose bytes failed their checksum when read: it is dropped from `tier`, and its hit reports ERR_CHECKSUM. */
export interface ChecksumMessage {
  tier: string;
  key: string;
  /** The chunk's position in its prompt (0 = the first chunk). */
  index: number;
  layer: number;
}

/** A chunk that was not written to the tier below DRAM: the queue was full (`backlog`), or the write failed (`error`). */
export interface DemoteDroppedMessage {
  key: string;
  reason: 'backlog' | 'error';
  error?: unknown;
}

/** A channel of one message shape. */
export interface KvflowChannel<T> {
  readonly name: string;
  /** False when no one subscribed: then build no message. */
  readonly hasSubscribers: boolean;
  publish(message: T): void;
}

const make = <T>(name: string): KvflowChannel<T> => diagnostics.channel(name) as unknown as KvflowChannel<T>;

/** The channel names, for `diagnostics_channel.subscribe(name, listener)`. */
export const CHANNEL_NAMES = Object.freeze({
  /** CUDA -> CPU, io_uring -> posix, O_DIRECT -> buffered, GPUDirect Storage -> bounce buffers. */
  fallback: 'kvflow:fallback',
  /** Chunks evicted from a store's DRAM or NVMe tier. */
  evict: 'kvflow:store:evict',
  /** A chunk read back with a bad checksum. */
  checksum: 'kvflow:store:checksum',
  /** A chunk that stayed in DRAM only. */
  demoteDropped: 'kvflow:store:demote-dropped',
} as const);

/** Every channel kvflow publishes on, by its role. */
export const channels = Object.freeze({
  fallback: make<FallbackMessage>(CHANNEL_NAMES.fallback),
  evict: make<EvictMessage>(CHANNEL_NAMES.evict),
  checksum: make<ChecksumMessage>(CHANNEL_NAMES.checksum),
  demoteDropped: make<DemoteDroppedMessage>(CHANNEL_NAMES.demoteDropped),
});

/**
 * Publishes on `kvflow:fallback` what an `auto` request of a file opened at
 * `path` did not get: io_uring, O_DIRECT, GPUDirect Storage (`gds` is given
 * on the CUDA backend only: the CPU backend has no GPU memory to move).
 */
export function publishFileFallbacks(path: string, engine: Choice<string, string>, direct: Choice<boolean, string>, gds: Choice<boolean, string> | undefined): void {
  const fallback = channels.fallback;
  if (engine.requested === 'auto' && engine.chosen === 'posix') fallback.publish({ what: 'io-engine', requested: 'auto', chosen: 'posix', reason: engine.reason, path });
  if (direct.requested === 'auto' && !direct.chosen) fallback.publish({ what: 'direct', requested: 'auto', chosen: 'buffered', reason: direct.reason, path });
  if (gds?.requested === 'auto' && !gds.chosen) fallback.publish({ what: 'gds', requested: 'auto', chosen: 'bounce', reason: gds.reason, path });
}
