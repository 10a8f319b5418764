/**
 * The loads of a KvConnector's startLoads: layer by layer, one store call
 * carries every request of the call that has chunks to load (one call per
 * engine asked for), as LayerPipeline's batcher does for prefills in flight.
 *
 * Each request keeps its own outcome: a batched call's event fails when any
 * of its chunks failed, and a request sees its load of the layer fail only
 * when its own chunks failed (its hit's `settled()` codes say which). Streams
 * never wait on a batched event: a device-side failure would carry into the
 * waiting stream's next event for every request of the batch; they wait on
 * a clean event recorded right after it on the load stream. A call of one
 * request is waited on directly, its failure carried as before.
 */
import type { Event } from '../device/event.js';
import type { Stream } from '../device/stream.js';
import type { KvCache, PagedEngine } from '../layout/kvcache.js';
import type { ChunkRef, KvStore, StoreHit } from '../store/store.js';
import { loadParts, ownFailure } from './batcher.js';

/** Counts of the connector's store calls for loads and the requests they carried. */
export interface ConnectorStats {
  loadCalls: number;
  loadRequests: number;
}

/** One request's loads in a startLoads call. */
export interface LoadItem {
  hit: StoreHit;
  chunks: readonly ChunkRef[];
  blocks: readonly number[];
  engine: PagedEngine | undefined;
  /** Per layer issued: the event streams wait on for it. */
  waits: Event[];
  /** Per layer issued: settles when the load completed; rejects only when this request's chunks failed (or its call did). */
  dones: Promise<void>[];
  /** Set when the store refused a call of this request: later layers were not issued. */
  refused?: { error: unknown };
}

/** Issues every layer of `items` on `stream`: per layer, one store call per engine. */
export function issueLoads(store: KvStore, cache: KvCache, stream: Stream, items: readonly LoadItem[], stats: ConnectorStats): void {
  const engines = [...new Set(items.map((q) => q.engine))];
  for (let layer = 0; layer < cache.layout.layers; layer++) {
    for (const engine of engines) {
      const group = items.filter((q) => q.engine === engine && q.refused === undefined);
      if (group.length > 0) issue(store, cache, stream, group, layer, stats);
    }
  }
}

function issue(store: KvStore, cache: KvCache, stream: Stream, group: LoadItem[], layer: number, stats: ConnectorStats): void {
  const engine = group[0]!.engine;
  let event: Event;
  try {
    event = loadParts(store, group, layer, cache, stream, engine);
  } catch (error) {
    // Refused before anything was enqueued: one at a time, so that only the request it refuses sees it.
    if (group.length === 1) group[0]!.refused = { error };
    else for (const q of group) issue(store, cache, stream, [q], layer, stats);
    return;
  }
  if (group.length === 1) {
    stats.loadCalls++;
    stats.loadRequests++;
    group[0]!.waits.push(event);
    group[0]!.dones.push(event.untilDone());
    return;
  }
  let after: Event;
  try {
    after = stream.record();
  } catch (error) {
    // The stream was closed under the call (the load itself is tracked by the store).
    event.untilDone().catch(() => undefined);
    for (const q of group) q.refused = { error };
    return;
  }
  stats.loadCalls++;
  stats.loadRequests += group.length;
  const failure = event.untilDone().then(() => undefined, (e: unknown) => e ?? new Error('load failed'));
  for (const q of group) {
    q.waits.push(after);
    q.dones.push(ownFailure(failure, q.hit, q.chunks, layer));
  }
}
