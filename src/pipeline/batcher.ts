/**
 * The IO of the prefills in flight on one pipeline, coalesced per layer:
 * loads of one layer that several prefills want issued within one window go
 * to the store as one batched `loadLayer` call (multi-get), their saves as
 * one batched `putLayer` (multi-put). The window is the current turn of the
 * event loop (flushed by `setImmediate`) while several prefills are in
 * flight; with one, every call goes to the store at once. At a flush, loads
 * are issued before saves (reads before writes).
 *
 * Each prefill keeps its own outcome: a batched load's event fails for the
 * chunks that failed, and only the prefills those chunks belong to see their
 * load fail (their hit says which chunks failed); the others' loads stand.
 * Streams never wait on the batched event itself: a device-side failure
 * (a checksum, an IO error) would fail the waiting stream's next event for
 * every prefill of the batch; they wait on a clean event recorded right
 * after it on the load stream (the load's failure is known on the host).
 *
 * Saves in flight are bounded (`saveDepth` store calls): past it, saves wait
 * in the queue (a few references each, no buffers: a put's DRAM slots are
 * reserved when it begins) until earlier ones completed.
 *
 * The prefills told in a deferred flush that their loads went to the store
 * compute those layers together right after it, in one synchronous run
 * (runs.ts: consecutive computes there share timed records).
 *
 * Host time: each call's store-side time (the store call and the events
 * recorded around it) is charged to the prefills it carries, 1/N each; a
 * flush that runs outside any prefill's host window (the batching window's,
 * or one a completed save let go) charges its own scheduling the same way.
 */
import type { Event } from '../device/event.js';
import type { Stream } from '../device/stream.js';
import { KvflowError } from '../errors.js';
import type { KvCache, PagedEngine } from '../layout/kvcache.js';
import type { ChunkRef, PendingPut, StoreHit, KvStore } from '../store/store.js';
import type { HostCost, StoreClock } from './hostcost.js';
import type { ComputeRuns } from './runs.js';

/**
 * Where a prefill learns what became of its loads: called once per call,
 * from inside the flush that made (or refused) its store call. Must not throw.
 */
export interface LoadSink {
  loadIssued(layer: number, load: IssuedLoad): void;
  /**
   * Once per issued load, when it completed (after its `loadIssued`): an
   * error only when chunks of this prefill failed (or the whole call did),
   * undefined otherwise.
   */
  loadSettled(layer: number, error: unknown): void;
  loadRefused(layer: number, error: unknown): void;
}

/** Likewise for saves. */
export interface SaveSink {
  saveIssued(layer: number, event: Event): void;
  saveRefused(layer: number, error: unknown): void;
}

/** One prefill's load of one layer. */
export interface LoadCall {
  hit: StoreHit;
  chunks: readonly ChunkRef[];
  blocks: readonly number[];
  layer: number;
  engine: 'kernel' | 'dma';
  /** The layer's host cost: the call's store time is charged here. */
  cost: HostCost;
  sink: LoadSink;
}

/** What a prefill gets for its load once it went to the store. */
export interface IssuedLoad {
  /** Recorded (timed) on the load stream just before the store call: when the load began on the device. Undefined with untimed events. */
  before: Event | undefined;
  /** Recorded on the load stream after the (batched) load: streams wait on this one. Timed when the device can. */
  after: Event;
  /** Prefills in the store call. */
  batch: number;
  /**
   * The pipeline's compute stream waits on `after` already (set by the first
   * prefill of the call to compute the layer: a wait holds for everything
   * enqueued after it, so the others of the call need none).
   */
  waited: boolean;
}

/** One prefill's save of one layer: behind `computed` on the save stream. */
export interface SaveCall {
  put: PendingPut;
  blocks: readonly number[];
  layer: number;
  computed: Event;
  /** The layer's host cost: the call's store time is charged here. */
  cost: HostCost;
  sink: SaveSink;
}

/** Counts of store calls and the prefill requests they carried. */
export interface BatchStats {
  loadCalls: number;
  loadRequests: number;
  saveCalls: number;
  saveRequests: number;
  /** Saves that waited for the bound on saves in flight. */
  savesDeferred: number;
}

interface QueuedSave {
  call: SaveCall;
  deferred: boolean;
}

export interface BatcherOptions {
  store: KvStore;
  cache: KvCache;
  load: Stream;
  save: Stream;
  /** Store calls of saves in flight at most. */
  saveDepth: number;
  /** True while calls should wait for the window (several prefills in flight). */
  batching: () => boolean;
  /** Record timed events around loads (device times for the timeline); untimed ones otherwise. */
  timed: boolean;
  /**
   * The prefills' compute steps: those a deferred flush resumes (their loads
   * went to the store) run together once it is over, in one synchronous run.
   */
  runs: ComputeRuns;
}

const TIMED = { timing: true } as const;
/** Saves copy on the copy engines: they run beside compute. */
const SAVE = { engine: 'dma' } as const;

/**
 * One request's share of a batched load's outcome (`outcome` resolves with
 * the call's error, or undefined): it rejects only when a chunk of this
 * request failed (its hit says which, once the call's bookkeeping ran),
 * with that chunk's code.
 */
export function ownFailure(outcome: Promise<unknown>, hit: StoreHit, chunks: readonly ChunkRef[], layer: number): Promise<void> {
  return outcome.then(async (error) => {
    if (error === undefined) return;
    const settled = await hit.settled();
    const mine = chunks.find((c) => settled.codes[c.index] !== undefined);
    if (mine === undefined) return;
    const code = settled.codes[mine.index]!;
    throw error instanceof KvflowError && error.code === code
      ? error
      : new KvflowError(`chunk ${mine.index} failed in a batched load of layer ${layer} (${code})`, code);
  });
}

/** One request's part of a load call: its chunks and the blocks they load into. */
export interface LoadPart {
  readonly chunks: readonly ChunkRef[];
  readonly blocks: readonly number[];
}

/**
 * Loads `layer` of every part in one store call: the single-request form for
 * one part (its event carries its own failure), the batched form otherwise.
 */
export function loadParts(store: KvStore, parts: readonly LoadPart[], layer: number, cache: KvCache, stream: Stream, engine: PagedEngine | undefined): Event {
  return parts.length === 1
    ? store.loadLayer(parts[0]!.chunks, layer, cache, parts[0]!.blocks, stream, { engine })
    : store.loadLayer(parts.map((q) => q.chunks), layer, cache, parts.map((q) => q.blocks), stream, { engine });
}

export class LayerBatcher implements StoreClock {
  readonly stats: BatchStats = { loadCalls: 0, loadRequests: 0, saveCalls: 0, saveRequests: 0, savesDeferred: 0 };
  readonly #o: BatcherOptions;
  #loads: LoadCall[] = [];
  #saves: QueuedSave[] = [];
  #savesInFlight = 0;
  #scheduled = false;
  #storeMs = 0;
  /** The costs of the calls a deferred flush issued, each once (undefined outside one). */
  #flushed: Set<HostCost> | undefined;

  constructor(options: BatcherOptions) {
    this.#o = options;
  }

  /** Host time spent in store calls so far, for every prefill (ms). */
  get storeMs(): number {
    return this.#storeMs;
  }

  /** Saves queued behind the bound, not yet given to the store. */
  get savesWaiting(): number {
    return this.#saves.length;
  }

  /**
   * Queues a load: `call.sink` hears once it went to the store (at once while
   * one prefill is in flight), or that the store refused it.
   */
  load(call: LoadCall): void {
    if (this.#loads.length === 0 && !this.#o.batching()) {
      // Nothing queued and no window: the flush of this one call, without its bookkeeping.
      this.#issueLoads([call]);
      if (this.#saves.length > 0) this.#issueSaves();
      return;
    }
    this.#loads.push(call);
    this.#kick();
  }

  /** Queues a save: `call.sink` hears the event of the store call that carries it, or that the store refused it. */
  save(call: SaveCall): void {
    const { store, cache, save: stream, saveDepth } = this.#o;
    if (this.#loads.length === 0 && this.#saves.length === 0 && this.#savesInFlight < saveDepth && !this.#o.batching()) {
      this.#issueSaveGroup(store, cache, stream, [{ call, deferred: false }]);
      return;
    }
    this.#saves.push({ call, deferred: false });
    this.#kick();
  }

  #kick(): void {
    if (!this.#o.batching()) {
      this.#flush();
      return;
    }
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      this.#o.runs.gather(() => this.#deferred(() => this.#flush()));
    });
  }

  /**
   * Runs a flush outside any prefill's host window: its scheduling time (its
   * length less the store time inside it) is charged to the calls it issued.
   */
  #deferred(flush: () => void): void {
    const t = performance.now();
    const s = this.#storeMs;
    const costs = new Set<HostCost>();
    this.#flushed = costs;
    try {
      flush();
    } finally {
      this.#flushed = undefined;
      if (costs.size > 0) {
        const share = Math.max(0, performance.now() - t - (this.#storeMs - s)) / costs.size;
        for (const c of costs) c.ownMs += share;
      }
    }
  }

  /** Charges the store-side time since `t` to the calls of `group`, 1/N each. */
  #charge(group: readonly (LoadCall | QueuedSave)[], t: number): void {
    const dt = performance.now() - t;
    this.#storeMs += dt;
    const share = dt / group.length;
    for (const q of group) {
      const cost = 'call' in q ? q.call.cost : q.cost;
      cost.storeMs += share;
      this.#flushed?.add(cost);
    }
  }

  #flush(): void {
    const loads = this.#loads;
    this.#loads = [];
    // Reads first: a prefill waits on its loads, a save only delays a commit.
    // One store call per layer and engine, in the order their first load came.
    const groups: LoadCall[][] = [];
    for (const q of loads) {
      const g = groups.find((x) => x[0]!.layer === q.layer && x[0]!.engine === q.engine);
      if (g) g.push(q);
      else groups.push([q]);
    }
    for (const g of groups) this.#issueLoads(g);
    if (this.#saves.length > 0) this.#issueSaves();
  }

  #issueLoads(group: LoadCall[]): void {
    const { store, cache, load: stream, timed } = this.#o;
    const { layer, engine } = group[0]!;
    const t = performance.now();
    let before: Event | undefined;
    try {
      if (timed) before = stream.record(TIMED);
    } catch (e) {
      this.#charge(group, t);
      for (const q of group) q.sink.loadRefused(layer, e);
      return;
    }
    let event: Event;
    try {
      event = loadParts(store, group, layer, cache, stream, engine);
    } catch (e) {
      this.#charge(group, t);
      // The store refused the call before enqueuing anything: one at a time,
      // so only the prefill whose request it refuses sees the refusal.
      if (group.length === 1) group[0]!.sink.loadRefused(layer, e);
      else for (const q of group) this.#issueLoads([q]);
      return;
    }
    let after: Event;
    try {
      after = timed ? stream.record(TIMED) : stream.record();
    } catch (e) {
      this.#charge(group, t);
      // The stream was closed under the call (the load itself is tracked by the store).
      event.untilDone().catch(() => undefined);
      for (const q of group) q.sink.loadRefused(layer, e);
      return;
    }
    this.#charge(group, t);
    this.stats.loadCalls++;
    this.stats.loadRequests += group.length;
    const issued: IssuedLoad = { before, after, batch: group.length, waited: false };
    for (const q of group) q.sink.loadIssued(layer, issued);
    // The outcome without a promise per prefill: one sink for the call.
    if (group.length === 1) {
      const sink = group[0]!.sink;
      event.whenDone((error) => sink.loadSettled(layer, error));
      return;
    }
    event.whenDone((error) => {
      if (error === undefined) {
        for (const q of group) q.sink.loadSettled(layer, undefined);
        return;
      }
      const outcome = Promise.resolve(error);
      for (const q of group) {
        ownFailure(outcome, q.hit, q.chunks, layer).then(() => q.sink.loadSettled(layer, undefined), (e: unknown) => q.sink.loadSettled(layer, e ?? new Error('failed')));
      }
    });
  }

  #issueSaves(): void {
    const { store, cache, save: stream, saveDepth } = this.#o;
    while (this.#saves.length > 0 && this.#savesInFlight < saveDepth) {
      // One store call per layer among the saves queued (they are in the order they came).
      const layer = this.#saves[0]!.call.layer;
      const group = this.#saves.filter((q) => q.call.layer === layer);
      this.#saves = this.#saves.filter((q) => q.call.layer !== layer);
      this.#issueSaveGroup(store, cache, stream, group);
    }
    for (const q of this.#saves) {
      if (!q.deferred) {
        q.deferred = true;
        this.stats.savesDeferred++;
      }
    }
  }

  #issueSaveGroup(store: KvStore, cache: KvCache, stream: Stream, group: QueuedSave[]): void {
    let event: Event;
    const t = performance.now();
    try {
      for (const q of group) stream.waitEvent(q.call.computed);
      event = group.length === 1
        ? store.putLayer(group[0]!.call.put, group[0]!.call.layer, cache, group[0]!.call.blocks, stream, SAVE)
        : store.putLayer(group.map((q) => q.call.put), group[0]!.call.layer, cache, group.map((q) => q.call.blocks), stream, SAVE);
    } catch (e) {
      this.#charge(group, t);
      if (group.length === 1) group[0]!.call.sink.saveRefused(group[0]!.call.layer, e);
      else for (const q of group) this.#issueSaveGroup(store, cache, stream, [q]);
      return;
    }
    this.#charge(group, t);
    this.stats.saveCalls++;
    this.stats.saveRequests += group.length;
    this.#savesInFlight++;
    const free = (): void => {
      this.#savesInFlight--;
      if (this.#saves.length > 0) this.#deferred(() => this.#issueSaves());
    };
    event.untilDone().then(free, free);
    for (const q of group) q.call.sink.saveIssued(q.call.layer, event);
  }
}
