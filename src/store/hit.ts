/**
 * Hits: a lookup walks the tiers in order for each chunk of a prompt and
 * stops at the first chunk no tier holds; the hit leases what it counted
 * (DRAM chunks pinned, lower tiers' copies kept from this process's
 * eviction) until it is released.
 */
import type { Event } from '../device/event.js';
import { KvflowError, describe, fail, type KvflowErrorCode } from '../errors.js';
import type { DramChunk } from './arena.js';
import type { StoreCore } from './core.js';
import type { ChunkRef } from './tier.js';

export type { ChunkRef } from './tier.js';
import type { Tier } from './tier.js';

/** A chunk of a hit as the store keeps it: the hit, and the tier and handle lookup found. */
export interface RefState extends ChunkRef {
  hit: StoreHit;
  /** The lower tier that held the chunk at lookup (undefined for DRAM). */
  source: Tier | undefined;
  /** That tier's handle of the chunk. */
  entry: unknown;
}

/** What the store keeps of a hit beside its public face. */
export interface HitState {
  readonly owner: StoreCore;
  /** DRAM chunks the hit holds a pin on (its own and the promotions its loads began). */
  readonly pinned: DramChunk[];
  /** Lower tiers' chunks the hit holds (kept from eviction by this process until release). */
  readonly leases: { tier: Tier; chunk: unknown }[];
  /** Loads of the hit still in flight (their event and bookkeeping): `settled()` waits for them. */
  readonly pending: Set<Promise<void>>;
  /** Why each failed chunk failed, by ChunkRef.index. */
  readonly codes: Map<number, KvflowErrorCode>;
  /** When the lookup ran (Date.now()): the use time of every chunk the hit loads. */
  readonly at: number;
  /** When (core.seq) a load of each failed chunk last settled, by ChunkRef.index: what a put linked to the hit is judged by (put.ts). */
  readonly known: Map<number, number>;
}

/** What became of a hit's loads (StoreHit.settled). */
export interface HitOutcome {
  /** True when no chunk of the hit failed. */
  ok: boolean;
  /** Positions (ChunkRef.index) of the chunks that failed, ascending (as `hit.failed`). */
  failed: number[];
  /** Tokens of the prefix before the first failed chunk: recompute from there. */
  validTokens: number;
  /** Why each failed chunk failed: ERR_CHECKSUM, ERR_EVICTED, ERR_IO, or the load's own failure. */
  codes: Record<number, KvflowErrorCode>;
}

let stateOf: (hit: StoreHit) => HitState;
let makeHit: (state: HitState, chunks: RefState[], chunkTokens: number, release: (hit: StoreHit) => void) => StoreHit;

/** The longest cached prefix of a prompt. Chunks stay pinned in DRAM until release(). */
export class StoreHit {
  /** The cached chunks, in prompt order. */
  readonly chunks: readonly ChunkRef[];
  /** Tokens the chunks cover. */
  readonly tokens: number;
  /** Chunks found in DRAM and on NVMe. */
  readonly dram: number;
  readonly nvme: number;
  /**
   * Positions (ChunkRef.index) of this hit's chunks that failed in a load,
   * ascending: bytes that failed their checksum (ERR_CHECKSUM), a chunk gone
   * from every tier since lookup (ERR_EVICTED: its lease expired), a read
   * that failed (ERR_IO), or a load whose event failed for a reason no chunk
   * explains. When a batched load's event rejects, each request learns here
   * whether it was hit, and how much of its prefix is still good
   * (`validTokens`). Complete for the loads enqueued so far once
   * `settled()` resolves.
   */
  readonly failed: number[] = [];
  readonly #state: HitState;
  readonly #release: (hit: StoreHit) => void;
  #released = false;

  static {
    stateOf = (hit) => hit.#state;
    makeHit = (state, chunks, chunkTokens, release) => new StoreHit(state, chunks, chunkTokens, release);
  }

  private constructor(state: HitState, chunks: RefState[], chunkTokens: number, release: (hit: StoreHit) => void) {
    this.#state = state;
    for (const c of chunks) c.hit = this;
    this.chunks = Object.freeze(chunks);
    this.tokens = chunks.length * chunkTokens;
    this.dram = chunks.filter((c) => c.tier === 'dram').length;
    this.nvme = chunks.filter((c) => c.tier === 'nvme').length;
    this.#release = release;
  }

  get released(): boolean {
    return this.#released;
  }

  /** Tokens of the prefix before the first chunk that failed its checksum. */
  get validTokens(): number {
    if (this.failed.length === 0) return this.tokens;
    const first = this.chunks.findIndex((c) => c.index === this.failed[0]);
    return first * (this.tokens / this.chunks.length);
  }

  /**
   * Resolves once every load of this hit enqueued so far has finished and
   * its failures are recorded: the request's own outcome, without waiting
   * for other requests' work or `store.flush()`. Never rejects.
   */
  async settled(): Promise<HitOutcome> {
    const pending = this.#state.pending;
    while (pending.size > 0) await Promise.all([...pending]);
    const codes: Record<number, KvflowErrorCode> = {};
    for (const [index, code] of this.#state.codes) codes[index] = code;
    return { ok: this.failed.length === 0, failed: [...this.failed], validTokens: this.validTokens, codes };
  }

  /** Unpins the chunks (loads already enqueued keep theirs until they complete). Idempotent. */
  release(): void {
    if (this.#released) return;
    this.#released = true;
    this.#release(this);
  }

  [Symbol.dispose](): void {
    this.release();
  }
}

/** The store's side of `hit`. */
export function hitState(hit: StoreHit): HitState {
  return stateOf(hit);
}

/** Records that chunk `index` of `hit` failed in a load, with why (the first reason stays). */
export function markFailed(hit: StoreHit, index: number, code: KvflowErrorCode): void {
  if (hit.failed.includes(index)) return;
  hit.failed.push(index);
  hit.failed.sort((a, b) => a - b);
  const state = stateOf(hit);
  state.codes.set(index, code);
  state.owner.local.failedTokens! += state.owner.config.chunkTokens;
}

/** What one load call learnt of its chunks' failures. */
export interface CallFailures {
  /** A failure was put down to a chunk (so the event's failure, if any, is explained). */
  attributed: boolean;
}

/**
 * Ties a load's event and bookkeeping to its hits (`hit.settled()`). A
 * failed event that no chunk's failure explains (a failed copy, or a
 * failure the stream inherited from a wait) fails every chunk of the call
 * for its hit: its blocks may not hold what the chunk does.
 */
export function finishLoad(event: Event, refs: readonly RefState[], after: readonly Promise<void>[], failures: CallFailures): void {
  const hits = new Set<StoreHit>(refs.map((r) => r.hit));
  if (hits.size === 0) return;
  const outcome = event.untilDone().then(() => undefined, (e: unknown) => e);
  const work = Promise.all([outcome, ...after]).then(([error]) => {
    if (error !== undefined && !failures.attributed) {
      const code = error instanceof KvflowError ? error.code : 'ERR_IO';
      for (const r of refs) markFailed(r.hit, r.index, code);
    }
    // Known to the runtime from here on: what it put before is stale (put.ts).
    for (const r of refs) {
      const code = stateOf(r.hit).codes.get(r.index);
      if (code !== undefined) stateOf(r.hit).known.set(r.index, stateOf(r.hit).owner.noteLoadFailure(r.key, code));
    }
  });
  stateOf(refs[0]!.hit).owner.track(work); // store.flush() waits for it too
  trackLoad(hits, work);
}

/** Why chunk `index` of `hit` failed in an earlier load, or undefined. */
export function failureOf(hit: StoreHit, index: number): KvflowErrorCode | undefined {
  return stateOf(hit).codes.get(index);
}

/** Makes each of `hits` wait, in `settled()`, for `work` (a load's event and bookkeeping). */
export function trackLoad(hits: Iterable<StoreHit>, work: Promise<unknown>): void {
  for (const hit of hits) {
    const pending = stateOf(hit).pending;
    const p: Promise<void> = work.then(() => undefined, () => undefined).finally(() => pending.delete(p));
    pending.add(p);
  }
}

/** `chunks` as refs of an unreleased hit of this store, or ERR_INVALID_ARG. */
export function checkRefs(core: StoreCore, chunks: readonly ChunkRef[]): readonly RefState[] {
  const refs = chunks as readonly RefState[];
  refs.forEach((r, i) => {
    if (typeof r !== 'object' || r === null || !(r.hit instanceof StoreHit) || stateOf(r.hit).owner !== core) {
      fail('ERR_INVALID_ARG', `expected chunks from this store's lookup() at chunks[${i}], got ${describe(r)}`);
    }
    if (r.hit.released) fail('ERR_INVALID_ARG', `expected chunks of a hit not yet released at chunks[${i}]`);
  });
  return refs;
}

/** True when `r` is a ref of an unreleased hit of this store (the DRAM fast path's check, which never throws). */
export function isLiveRef(core: StoreCore, r: unknown): r is RefState {
  if (typeof r !== 'object' || r === null) return false;
  const hit = (r as RefState).hit;
  return hit instanceof StoreHit && stateOf(hit).owner === core && !hit.released;
}

/** The longest cached prefix of the chunks under `keys` (see KvStore.lookup). */
export function lookup(core: StoreCore, keys: readonly string[]): StoreHit {
  let refs: RefState[] = [];
  const state: HitState = { owner: core, pinned: [], leases: [], pending: new Set(), codes: new Map(), at: Date.now(), known: new Map() };
  for (let i = 0; i < keys.length; i++) {
    const key = keys[i]!;
    if (core.dram.contains(key)) {
      refs.push({ key, index: i, tier: 'dram', source: undefined, entry: undefined, hit: undefined as unknown as StoreHit });
      continue;
    }
    let found = false;
    for (const tier of core.lower) {
      const entry = tier.contains(key);
      if (entry === undefined) continue;
      refs.push({ key, index: i, tier: tier.name as ChunkRef['tier'], source: tier, entry, hit: undefined as unknown as StoreHit });
      found = true;
      break;
    }
    if (!found) break;
  }
  // Lease what lower tiers hold; the hit counts only what stays loadable.
  let cut = refs.length;
  const leased = new Map<Tier, RefState[]>();
  for (const tier of core.lower) {
    const mine = refs.filter((r) => r.source === tier);
    if (mine.length === 0) continue;
    let held = mine.length;
    if (tier.lease) held = tier.lease(mine.map((r) => ({ key: r.key, chunk: r.entry })));
    else for (const r of mine) tier.pin(r.entry);
    leased.set(tier, mine.slice(0, held));
    if (held < mine.length) cut = Math.min(cut, refs.indexOf(mine[held]!));
  }
  if (cut < refs.length) core.local.leaseMisses!++;
  for (const [tier, mine] of leased) {
    for (const r of mine) {
      if (r.index < cut) state.leases.push({ tier, chunk: r.entry });
      else tier.unpin(r.entry);
    }
  }
  refs = refs.slice(0, cut);
  for (const r of refs) {
    if (r.source) continue;
    const d = core.dram.contains(r.key)!;
    core.dram.pin(d);
    state.pinned.push(d);
  }
  const local = core.local;
  local.lookups!++;
  local.hitChunks! += refs.length;
  local.missChunks! += keys.length - refs.length;
  const ct = core.config.chunkTokens;
  for (const r of refs) local[`${r.tier}HitTokens`] = (local[`${r.tier}HitTokens`] ?? 0) + ct;
  local.missTokens! += (keys.length - refs.length) * ct;
  core.countShared('lookups');
  core.countShared('hitChunks', refs.length);
  core.countShared('missChunks', keys.length - refs.length);
  return makeHit(state, refs, core.config.chunkTokens, releaseHit);
}

function releaseHit(hit: StoreHit): void {
  const state = stateOf(hit);
  for (const { tier, chunk } of state.leases) tier.unpin(chunk);
  state.leases.length = 0;
  for (const c of state.pinned) state.owner.dram.release(c);
  state.pinned.length = 0;
}
