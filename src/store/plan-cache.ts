/**
 * The DRAM plan cache: a load whose chunks are all ready in DRAM is planned
 * once for every layer of the store (a prepared transfer per DRAM chunks,
 * cache and block table, whichever lookup found the chunks), and each layer
 * is then one native call, with the engine that layer's call asks for.
 * Plans are kept least recently used last and dropped oldest first.
 */
import type { Event } from '../device/event.js';
import type { Stream } from '../device/stream.js';
import type { KvCache, PagedEngine, PreparedTransfer } from '../layout/kvcache.js';
import type { DramChunk } from './arena.js';
import { settle, type StoreCore } from './core.js';
import { failureOf, finishLoad, isLiveRef, type ChunkRef, type RefState } from './hit.js';


/** A DRAM load planned for all layers (for either engine: the engine is chosen per move). */
interface PreparedLoad {
  cache: KvCache;
  blocks: number[];
  dram: DramChunk[];
  transfer: PreparedTransfer;
}

/** Whether `a` is the first a.length ids of `b`. */
function sameBlocks(a: readonly number[], b: ArrayLike<number>): boolean {
  if (a.length > b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

export class PlanCache {
  /** Oldest first. */
  readonly #plans: PreparedLoad[] = [];

  /** The plan of this load, made most recently used; undefined when there is none. */
  find(cache: KvCache, dram: readonly DramChunk[], blocks: ArrayLike<number>, used: number): PreparedLoad | undefined {
    const plans = this.#plans;
    const at = plans.findIndex((e) => e.cache === cache && e.dram.length === dram.length &&
      e.dram.every((c, i) => c === dram[i]) && e.blocks.length === used && sameBlocks(e.blocks, blocks));
    if (at < 0) return undefined;
    const entry = plans[at]!;
    if (at !== plans.length - 1) plans.push(...plans.splice(at, 1));
    return entry;
  }

  /** Keeps `entry`, dropping the least recently used beyond `keep`. */
  add(entry: PreparedLoad, keep: number): void {
    this.#plans.push(entry);
    if (this.#plans.length > keep) this.#plans.shift()!.transfer.dispose();
  }

  clear(): void {
    for (const e of this.#plans.splice(0)) e.transfer.dispose();
  }
}

/**
 * loadLayer() when every chunk is ready in DRAM, each named once (see the
 * module comment). Returns undefined when the general path must run (which
 * also reports bad input).
 */
export function dramLoad(core: StoreCore, plans: PlanCache, chunks: readonly ChunkRef[], li: number, layer: number, kvCache: KvCache,
  blockTable: ArrayLike<number>, stream: Stream, engine: PagedEngine): Event | undefined {
  if (!Array.isArray(chunks) || chunks.length === 0 || chunks.length > core.config.preparedMaxChunks) return undefined;
  if (blockTable === null || typeof blockTable !== 'object' || typeof blockTable.length !== 'number') return undefined;
  if (!(kvCache?.layout?.blockTokens > 0)) return undefined;
  const used = chunks.length * (core.config.chunkTokens / kvCache.layout.blockTokens);
  if (blockTable.length < used) return undefined;
  const refs = chunks as readonly RefState[];
  const tier = core.dram;
  const dram: DramChunk[] = [];
  const keys = new Set<string>();
  for (const r of refs) {
    // A chunk that failed for its hit stays failed (zeros, a rejected event): the general path's job.
    if (!isLiveRef(core, r) || failureOf(r.hit, r.index) !== undefined) return undefined;
    const c = tier.arena.chunks.get(r.key);
    if (c === undefined || c.dead || c.state !== 'ready' || tier.filling(c, li) || keys.has(r.key)) return undefined;
    keys.add(r.key);
    dram.push(c);
  }
  let entry = plans.find(kvCache, dram, blockTable, used);
  if (entry === undefined) {
    // Planning every layer pays off over a layer-by-layer load, which starts at the first
    // layer; a load that starts elsewhere (or whose plan was dropped) takes the general path.
    if (li !== 0) return undefined;
    core.checkCache(kvCache);
    const bpc = core.blocksOf(blockTable, chunks.length, kvCache, true);
    const records = dram.map((c, i) => ({
      blocks: Array.prototype.slice.call(blockTable, i * bpc, (i + 1) * bpc) as number[],
      staging: c.slot.buffer,
      stagingOffset: c.slot.offset,
    }));
    const transfer = kvCache.prepare('scatter', records, core.config.layers, engine);
    entry = { cache: kvCache, blocks: Array.prototype.slice.call(blockTable, 0, used) as number[], dram, transfer };
    plans.add(entry, core.config.preparedLoads);
    core.local.dramPlans!++;
  }
  const transfer = entry.transfer;
  for (const c of dram) tier.pin(c);
  let event: Event;
  try {
    transfer.move(stream, layer, engine);
    event = stream.record();
  } catch (e) {
    for (const c of dram) tier.unpin(c);
    throw e;
  }
  // The rest of the hits' bookkeeping after the enqueue, so the copy starts
  // sooner (at a load's first layer it reads and touches the index).
  refs.forEach((r, i) => core.dramHit(dram[i]!, r.index, li, false));
  core.local.dramPlannedLayers!++;
  core.track(settle(event).then(() => {
    for (const c of dram) tier.unpin(c);
  }));
  finishLoad(event, refs, [], { attributed: false });
  return event;
}
