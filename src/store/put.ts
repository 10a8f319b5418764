/**
 * Puts: a prefill's new chunks get DRAM slots (never blocking: a chunk with
 * no free slot is skipped), are filled layer by layer from the KV cache, and
 * become visible only at commit, once every layer's copy completed. Admission
 * (or a durable put) then sends them to the demotion tier.
 *
 * A layer may be put again (after a failed load, once the runtime computed
 * it again): the later copy supersedes the earlier one, and commit judges
 * each layer by its latest copy only. A load failure of one of the prompt's
 * chunks, known after the put began (its event settled), makes every layer
 * put before it stale: commit then rejects with that failure's code unless
 * those layers were put again. So a put never saves blocks that held a
 * failed chunk's zeros, nor KV computed over them, when the runtime
 * follows the order: beginPut, loads, compute and putLayer per layer; on a
 * failure (hit.settled()), compute again from validTokens and put those
 * layers again; then commit.
 *
 * Whose load failures count: by default every load's, of any request, of
 * the prompt's chunks (a runtime may have shared blocks between requests:
 * another request's failed load may have left zeros in blocks this put
 * read). A put begun with `{ hit }` declares that its KV was computed from
 * that hit's loads and the runtime's own compute only: then only that
 * hit's failures count, so another request's failure of a shared chunk
 * (which this hit loaded fine) no longer refuses it.
 */
import type { Event } from '../device/event.js';
import { Stream } from '../device/stream.js';
import { KvflowError, describe, fail } from '../errors.js';
import type { KvCache, PreparedTransfer, StagingRecord } from '../layout/kvcache.js';
import type { DramChunk } from './arena.js';
import { engineOf, putOptions, type LayerMoveOptions } from './config.js';
import { settle, type StoreCore } from './core.js';
import { settleAll } from './demoter.js';
import { StoreHit, hitState } from './hit.js';

interface PendingChunk {
  index: number;
  key: string;
  dram: DramChunk | undefined;
}

/** What a put or commit did. */
export interface PutResult {
  /** Chunks it added to the store. */
  added: number;
  /** Their keys. */
  keys: string[];
  /**
   * With `durable`: keys of the prompt's chunks it wrote to NVMe, those it
   * added and those that were in DRAM only (durable now too); chunks on
   * NVMe already are not listed. Empty without `durable`.
   */
  durable: string[];
}

/** What the store keeps of a put beside its public face. */
interface PutState {
  readonly owner: StoreCore;
  readonly parts: PendingChunk[];
  /** Keys of the prompt's full chunks. */
  readonly keys: readonly string[];
  /** core.seq when the put began: load failures known before belong to earlier work. */
  readonly begun: number;
  /** The hit whose loads alone the put's KV was computed from, when the runtime said so. */
  readonly hit: StoreHit | undefined;
  /** Every copy's event (commit and abort wait for all). */
  readonly events: Event[];
  /** Per layer: its latest copy's event and core.seq when it was enqueued. */
  readonly latest: ({ event: Event; seq: number } | undefined)[];
  state: 'open' | 'committing' | 'done';
  /**
   * The gather of every layer of the put's chunks, planned at its first
   * putLayer (a put alone in its call): later layers with the same blocks
   * cost one native call each. Disposed when the put ends.
   */
  plan: { cache: KvCache; blocks: readonly (readonly number[])[]; transfer: PreparedTransfer } | undefined;
  /** Settles when a commit in progress ends. */
  committing: Promise<unknown> | undefined;
}

let stateOf: (put: PendingPut) => PutState;
let makePut: (state: PutState, chunkCount: number) => PendingPut;

/** A prefill's new chunks, filled layer by layer, visible only after commit(). */
export class PendingPut {
  /** Chunks this put will add (the prompt's full chunks not cached yet). */
  readonly chunks: readonly { index: number; key: string }[];
  /** Full chunks of the prompt (the block table covers these). */
  readonly chunkCount: number;
  readonly #state: PutState;

  static {
    stateOf = (put) => put.#state;
    makePut = (state, chunkCount) => new PendingPut(state, chunkCount);
  }

  private constructor(state: PutState, chunkCount: number) {
    this.#state = state;
    this.chunks = Object.freeze(state.parts.map(({ index, key }) => ({ index, key })));
    this.chunkCount = chunkCount;
  }
}

function stateOfOwn(core: StoreCore, pending: PendingPut): PutState {
  if (!(pending instanceof PendingPut) || stateOf(pending).owner !== core) {
    fail('ERR_INVALID_ARG', `expected a PendingPut from this store's beginPut(), got ${describe(pending)}`);
  }
  return stateOf(pending);
}

function openState(core: StoreCore, pending: PendingPut): PutState {
  const s = stateOfOwn(core, pending);
  if (s.state !== 'open') fail('ERR_INVALID_ARG', 'expected an open put, got one already committed or aborted');
  return s;
}

/** `hit` as the hit of a put of `keys`: one of this store's, of the same prompt; ERR_INVALID_ARG otherwise. */
export function checkPutHit(core: StoreCore, keys: readonly string[], hit: unknown): StoreHit | undefined {
  if (hit === undefined) return undefined;
  if (!(hit instanceof StoreHit) || hitState(hit).owner !== core) fail('ERR_INVALID_ARG', `expected a StoreHit of this store's lookup() for hit, got ${describe(hit)}`);
  if (!hit.chunks.every((c) => keys[c.index] === c.key)) {
    fail('ERR_INVALID_ARG', 'expected the hit of the same prompt (and tenant) as the put for hit');
  }
  return hit;
}

/** KvStore.beginPut (see there). */
export function beginPut(core: StoreCore, keys: readonly string[], hit?: StoreHit): PendingPut {
  const parts: PendingChunk[] = [];
  const layers = core.config.layers.count;
  keys.forEach((key, index) => {
    if (core.dram.arena.chunks.has(key)) return;
    if (core.lower.some((t) => t.contains(key) !== undefined)) return;
    const dram = core.dram.arena.begin(key, layers, 'put', index);
    if (!dram) {
      core.local.putSkipped!++;
      return;
    }
    parts.push({ index, key, dram });
  });
  return makePut({
    owner: core, parts, keys, begun: core.seq, hit, events: [], latest: new Array(layers).fill(undefined),
    state: 'open', plan: undefined, committing: undefined,
  }, keys.length);
}

/** KvStore.putLayer (see there). */
export function putLayer(core: StoreCore, pending: PendingPut | readonly PendingPut[], layer: number, kvCache: KvCache,
  blockTable: ArrayLike<number> | readonly ArrayLike<number>[], stream: Stream, options: LayerMoveOptions): Event {
  core.live();
  if (!(stream instanceof Stream)) fail('ERR_INVALID_ARG', `expected a Stream for stream, got ${describe(stream)}`);
  const li = core.extentIndex(layer);
  const engine = engineOf(options, core.config.engine);
  core.checkCache(kvCache);
  const puts = Array.isArray(pending) ? (pending as readonly PendingPut[]) : [pending as PendingPut];
  const tables = Array.isArray(pending) ? (blockTable as readonly ArrayLike<number>[]) : [blockTable as ArrayLike<number>];
  if (!Array.isArray(tables) || tables.length !== puts.length) {
    fail('ERR_INVALID_ARG', `expected one block table per put (${puts.length}), got ${describe(blockTable)}`);
  }
  const extent = core.config.extentBytes;
  const records: StagingRecord[] = [];
  const states = puts.map((p, i) => {
    const s = openState(core, p);
    const earlier = s.latest[li]?.event;
    if (earlier && earlier.stream !== stream && earlier.status() === 'pending') {
      fail('ERR_INVALID_ARG', `expected layer ${layer} to be put again on the stream of its earlier copy, or once that copy completed`);
    }
    const bpc = core.blocksOf(tables[i]!, p.chunkCount, kvCache, false);
    for (const part of s.parts) {
      if (!part.dram) continue;
      const blocks = Array.prototype.slice.call(tables[i]!, part.index * bpc, (part.index + 1) * bpc) as number[];
      records.push({ blocks, staging: part.dram.slot.buffer, stagingOffset: part.dram.slot.offset + li * extent });
    }
    return s;
  });
  const plan = states.length === 1 ? planOf(core, states[0]!, kvCache, records.map((r) => r.blocks as number[])) : undefined;
  if (plan) {
    try {
      plan.transfer.move(stream, layer, engine);
    } catch (e) {
      // A rejected call changes nothing: a plan made for it goes with it.
      if (plan.made) dropPlan(states[0]!);
      throw e;
    }
    if (plan.made) core.local.putPlans!++;
    core.local.putPlannedLayers!++;
  } else {
    kvCache.moveRecords(stream, 'gather', records, layer, engine);
  }
  const event = stream.record();
  const seq = ++core.seq;
  for (const s of states) {
    s.events.push(event);
    s.latest[li] = { event, seq };
  }
  return event;
}

/**
 * The put's prepared gather when `blocks` (this layer's, per chunk with a
 * DRAM slot) are those it was planned with, planning it at the put's first
 * call (`made`: by this call); undefined when the general path must move
 * this layer (the block table changed, another cache, more chunks than
 * `preparedMaxChunks`, a store of one layer, a first call that was batched).
 */
function planOf(core: StoreCore, s: PutState, kvCache: KvCache, blocks: readonly (readonly number[])[]): { transfer: PreparedTransfer; made: boolean } | undefined {
  if (blocks.length === 0 || blocks.length > core.config.preparedMaxChunks || core.config.layers.count === 1) return undefined;
  const plan = s.plan;
  if (plan) {
    const same = plan.cache === kvCache && plan.blocks.length === blocks.length && plan.blocks.every((b, i) => sameIds(b, blocks[i]!));
    return same ? { transfer: plan.transfer, made: false } : undefined;
  }
  if (s.events.length > 0) return undefined; // planned at the first call only
  const slots = s.parts.filter((p) => p.dram).map((p) => p.dram!.slot);
  const transfer = kvCache.prepare('gather', slots.map((slot, i) => ({ blocks: blocks[i]!, staging: slot.buffer, stagingOffset: slot.offset })),
    core.config.layers);
  s.plan = { cache: kvCache, blocks, transfer };
  return { transfer, made: true };
}

function sameIds(a: readonly number[], b: readonly number[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Frees the put's plan (its moves in flight are unaffected). */
function dropPlan(s: PutState): void {
  void s.plan?.transfer.dispose();
  s.plan = undefined;
}

/** KvStore.put (see there). */
export async function put(core: StoreCore, keys: readonly string[], kvCache: KvCache, blockTable: ArrayLike<number>, stream: Stream,
  options: { durable?: boolean } | null): Promise<PutResult> {
  // Every argument is checked before a slot is taken: a rejected put changes nothing.
  const opts = putOptions(options);
  core.blocksOf(blockTable, keys.length, kvCache, false);
  if (!(stream instanceof Stream)) fail('ERR_INVALID_ARG', `expected a Stream for stream, got ${describe(stream)}`);
  if (stream.disposed) fail('ERR_DISPOSED', 'the stream is disposed');
  options = opts;
  const pending = beginPut(core, keys);
  const s = stateOf(pending);
  try {
    const bpc = core.blocksOf(blockTable, pending.chunkCount, kvCache, false);
    const records: StagingRecord[] = s.parts.filter((p) => p.dram).map((p) => ({
      blocks: Array.prototype.slice.call(blockTable, p.index * bpc, (p.index + 1) * bpc) as number[],
      staging: p.dram!.slot.buffer,
      stagingOffset: p.dram!.slot.offset,
    }));
    kvCache.moveRecords(stream, 'gather', records, core.config.layers, core.config.engine);
  } catch (e) {
    await abort(core, pending);
    throw e;
  }
  const event = stream.record();
  const seq = ++core.seq;
  s.events.push(event);
  s.latest.fill({ event, seq });
  const result = await commit(core, pending, options);
  if (options.durable) {
    // Chunks of the prompt that were in DRAM only become durable too.
    const more: Promise<void>[] = [];
    const added = new Set(result.keys);
    for (const key of keys) {
      const d = core.dram.arena.ready(key);
      if (!d || d.stored || added.has(key)) continue;
      more.push(core.demoter.demote(d, true).then(() => {
        if (d.stored) {
          result.durable.push(key);
          core.local.madeDurable!++;
        }
      }));
    }
    await settleAll(more);
  }
  return result;
}

/** KvStore.commit (see there). */
export function commit(core: StoreCore, pending: PendingPut, options: { durable?: boolean } | null): Promise<PutResult> {
  const opts = putOptions(options);
  const s = openState(core, pending);
  s.state = 'committing';
  const done = commitParts(core, s, opts);
  s.committing = done.catch(() => undefined);
  return done;
}

/** Why a put cannot be committed now (after its copies settled), or undefined. */
async function refusal(core: StoreCore, s: PutState): Promise<unknown> {
  await Promise.allSettled(s.events.map((e) => e.untilDone()));
  if (core.closed) return new KvflowError('the store was closed before the put committed', 'ERR_DISPOSED');
  const first = core.config.layers.first;
  const missing = s.latest.findIndex((l) => l === undefined);
  if (missing >= 0) return new KvflowError(`expected every layer to be put before commit, layer ${first + missing} was not`, 'ERR_INVALID_ARG');
  // Each layer by its latest copy: an earlier one was overwritten in stream order.
  for (const l of s.latest) {
    const error = await l!.event.untilDone().then(() => undefined, (e: unknown) => e);
    if (error !== undefined) return error;
  }
  if (s.parts.length === 0) return undefined;
  const last = Math.max(...s.parts.map((p) => p.index));
  const own = s.hit === undefined ? undefined : hitState(s.hit);
  for (let i = 0; i <= last; i++) {
    let failure = core.loadFailures.get(s.keys[i]!);
    if (own) {
      const seq = own.known.get(i);
      failure = seq === undefined ? undefined : { seq, code: own.codes.get(i)! };
    }
    if (failure === undefined || failure.seq <= s.begun) continue;
    const stale = s.latest.findIndex((l) => l!.seq < failure.seq);
    if (stale < 0) continue;
    return new KvflowError(`layer ${first + stale} was put before the load of chunk ${i} failed (${failure.code}): ` +
      'compute the layers again from the hit\'s validTokens and put them again before commit', failure.code);
  }
  return undefined;
}

async function commitParts(core: StoreCore, s: PutState, options: { durable?: boolean }): Promise<PutResult> {
  const refused = await refusal(core, s);
  dropPlan(s);
  if (refused !== undefined) {
    discardParts(core, s);
    s.state = 'done';
    throw refused;
  }
  s.state = 'done';
  const keys: string[] = [];
  const durable: Promise<void>[] = [];
  for (const part of s.parts) {
    const c = part.dram;
    if (!c || c.dead) continue;
    c.state = 'ready';
    c.layers.fill(1);
    c.present = c.layers.length;
    core.dram.unpin(c);
    keys.push(part.key);
    core.local.puts!++;
    core.demoter.committed(part.key);
    if (options.durable) durable.push(core.demoter.demote(c, true));
    else core.demoter.consider(c);
  }
  await settleAll(durable);
  return { added: keys.length, keys, durable: options.durable ? [...keys] : [] };
}

/** KvStore.abort (see there). */
export async function abort(core: StoreCore, pending: PendingPut): Promise<void> {
  const s = stateOfOwn(core, pending);
  if (s.state === 'committing') {
    await s.committing;
    return;
  }
  if (s.state === 'done') return;
  s.state = 'done';
  dropPlan(s);
  await Promise.all(s.events.map(settle));
  discardParts(core, s);
}

function discardParts(core: StoreCore, s: PutState): void {
  for (const part of s.parts) {
    if (!part.dram) continue;
    core.dram.unpin(part.dram);
    core.dram.arena.discard(part.dram);
  }
}
