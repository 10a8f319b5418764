/**
 * One attempt of a prefill: every layer's load, compute and save, enqueued
 * with device-side waits; the host waits only to pace loads `lookahead`
 * layers ahead of finished compute. An attempt ends `ok` (committed), or
 * `failed-load` (nothing committed, the caller plans again), or throws the
 * compute's own error or ERR_ABORTED (nothing committed).
 */
import type { Event } from '../device/event.js';
import type { Stream } from '../device/stream.js';
import { KvflowError, type KvflowErrorCode } from '../errors.js';
import type { KvCache } from '../layout/kvcache.js';
import type { PrefillPlan } from '../model/plan.js';
import type { PendingPut, StoreHit, KvStore } from '../store/store.js';
import type { IssuedLoad, LayerBatcher, LoadSink, SaveSink } from './batcher.js';
import { hostCost, Window, type HostCost } from './hostcost.js';
import type { ComputeRuns } from './runs.js';
import { timeline, type LayerRecord, type LayerTiming } from './timeline.js';
import { LayerFlags, Pending, watch, watchLayer, type Watched } from './waits.js';
import type { LayerCompute, PrefillWork } from './work.js';

export type { LayerTiming } from './timeline.js';

export type AttemptOutcome =
  | { kind: 'ok'; layers: LayerTiming[]; timeSource: 'device' | 'host'; saved: number; computedMs: number }
  | { kind: 'failed-load'; layer: number; code: KvflowErrorCode | 'ERR_UNKNOWN'; message: string; validTokens: number };

export interface AttemptArgs {
  store: KvStore;
  cache: KvCache;
  hit: StoreHit;
  plan: PrefillPlan;
  attempt: number;
  t0: number;
  tokens: Uint32Array;
  blocks: number[];
  compute: LayerCompute;
  save: boolean;
  /** Whose prompt it is (the store's `{ tenant }`). */
  tenant: string | undefined;
  /** Tokens the runtime held in its cache (blocks another request may have loaded). */
  heldTokens: number;
  signal: AbortSignal | undefined;
  lookahead: number;
  /** No other prefill is in flight: loads issued before this one's first compute have the device to themselves. */
  alone: boolean;
  /** The load engine: `auto` picks per load (kernel before the first compute when alone, dma beside compute). */
  engine: 'auto' | 'kernel' | 'dma';
  /** Record timed events (device times for the timeline); untimed ones otherwise. */
  timed: boolean;
  computeStream: Stream;
  /** The pipeline's loads and saves, batched with other prefills'. */
  io: LayerBatcher;
  /** The pipeline's runs of compute steps (shared by its prefills: they share the compute stream). */
  runs: ComputeRuns;
}

/** Codes of a refused call: thrown to the caller, never taken for a failed load. */
const FATAL: ReadonlySet<KvflowErrorCode> = new Set(['ERR_INVALID_ARG', 'ERR_OUT_OF_RANGE', 'ERR_DISPOSED']);

function aborted(signal: AbortSignal | undefined): KvflowError {
  return new KvflowError('the prefill was aborted', 'ERR_ABORTED', { cause: signal?.reason });
}

function codeOf(e: unknown): KvflowErrorCode | 'ERR_UNKNOWN' {
  return e instanceof KvflowError ? e.code : 'ERR_UNKNOWN';
}

const TIMED = { timing: true } as const;

export async function runAttempt(a: AttemptArgs): Promise<AttemptOutcome> {
  const { store, cache, plan, t0, timed } = a;
  const layers = cache.layout.layers;
  const bpc = store.blocksPerChunk;
  const ct = store.chunkTokens;
  const first = plan.loadFrom / ct;
  const last = (plan.loadFrom + plan.loadTokens) / ct;
  const loadChunks = plan.loadTokens > 0 ? a.hit.chunks.slice(first, last) : [];
  const loadBlocks = a.blocks.slice(first * bpc, last * bpc);
  // Saving per layer: the put is begun before any load (it must not count
  // chunks the loads are about to bring as new). With nothing held, its KV
  // comes from this hit's loads and this prefill's compute only: linked to
  // the hit, it is not refused for another request's failed load of a chunk
  // this hit loaded fine.
  let put: PendingPut | undefined = a.save ? store.beginPut(a.tokens, { tenant: a.tenant, hit: a.heldTokens === 0 ? a.hit : undefined }) : undefined;
  if (put && put.chunks.length === 0) {
    await store.abort(put);
    put = undefined;
  }
  const putBlocks = put ? a.blocks.slice(0, put.chunkCount * bpc) : [];
  // The device's clock for this attempt starts where its compute stream is now.
  const origin = timed ? a.computeStream.record(TIMED) : undefined;

  const loads: (Watched | undefined)[] = new Array(layers).fill(undefined);
  // The issued loads (the pipeline's prefills share the compute stream, and a
  // wait holds for all work enqueued after it: prefills whose loads went to
  // the store in one batched call wait on its event once).
  const issuedLoads: (IssuedLoad | undefined)[] = new Array(layers).fill(undefined);
  const loadBefore: (Event | undefined)[] = new Array(layers).fill(undefined);
  const issued: number[] = new Array(layers).fill(Number.NaN);
  const computed: Watched[] = [];
  const computeStart: Event[] = [];
  const enqueued: number[] = [];
  const saves: Watched[] = [];
  // Host time per layer, by who spent it (see hostcost.ts): every stretch of
  // this attempt's code for a layer runs inside `win`.
  const costs: HostCost[] = Array.from({ length: layers }, hostCost);
  const win = new Window(a.io);
  let loadFailed = false;
  let syncFailure: { layer: number; error: unknown } | undefined;
  let computeError: unknown;
  let fatal: unknown;
  // Loads run ahead of compute on their own task: the load of layer j is
  // issued once compute of layer j - lookahead finished (so at most
  // `lookahead` layers of loads are in flight beyond finished compute), and
  // compute of layer l is enqueued as soon as its load went to the store, so
  // the compute stream always has the layers whose loads are in flight queued.
  const computeSettled = new LayerFlags<true>(layers);
  const loadIssued = new LayerFlags<boolean>(layers);
  const calls = new Pending(); // loads and saves handed to the batcher, not yet issued or refused
  const watching = new Pending(); // events watched (loads, computes, saves, the origin), not settled yet
  if (origin) {
    watching.add();
    origin.whenDone(() => watching.done());
  }
  let stop = false;
  const refused = (e: unknown, layer: number): void => {
    // A call the store refused (a bad argument, a closed store) is the
    // caller's error, not a failed load to restart from.
    if (e instanceof KvflowError && FATAL.has(e.code)) fatal ??= e;
    else syncFailure ??= { layer, error: e };
  };
  // What became of the calls (from inside the batcher's flush: at once while
  // this prefill is alone in flight).
  const sink: LoadSink & SaveSink = {
    loadIssued(j, l) {
      issuedLoads[j] = l;
      loadBefore[j] = l.before;
      loads[j] = { event: l.after, at: Number.NaN, error: undefined };
      watching.add();
      calls.done();
      loadIssued.set(j, true);
    },
    loadSettled(j, error) {
      const w = loads[j]!;
      w.at = performance.now() - t0;
      w.error = error;
      if (error !== undefined) loadFailed = true;
      watching.done();
    },
    loadRefused(j, e) {
      refused(e, j);
      calls.done();
      loadIssued.set(j, false);
    },
    saveIssued(_l, event) {
      saves.push(watch(event, t0, watching));
      calls.done();
    },
    saveRefused(_l, e) {
      fatal ??= e;
      calls.done();
    },
  };
  const issue = (j: number): void => {
    // Before any compute, with no other prefill in flight, the device is idle:
    // the kernel engine moves fastest there; beside compute, DMA costs compute nothing.
    const engine = a.engine !== 'auto' ? a.engine : a.alone && computed.length === 0 ? 'kernel' : 'dma';
    issued[j] = performance.now() - t0;
    calls.add();
    try {
      a.io.load({ hit: a.hit, chunks: loadChunks, blocks: loadBlocks, layer: j, engine, cost: costs[j]!, sink });
    } catch (e) {
      // Unless the sink already told of this layer's load (that settled the call).
      if (loadIssued.get(j) === undefined) calls.done();
      throw e;
    }
  };
  // The issuer: layers' loads in order, each once compute of the layer
  // `lookahead` before it settled (that settle wakes it on a microtask, with
  // no promise per layer); it ends once every layer was issued or set as not
  // issued (a failure, an abort, the attempt's end).
  let nextLoad = 0;
  let endIssuer!: () => void;
  const issuerEnded = loadChunks.length === 0 ? undefined : new Promise<void>((resolve) => (endIssuer = resolve));
  const issueMore = (): void => {
    try {
      for (; nextLoad < layers; nextLoad++) {
        const j = nextLoad;
        if (j >= a.lookahead && computeSettled.get(j - a.lookahead) === undefined) {
          computeSettled.when(j - a.lookahead, wakeIssuer);
          return;
        }
        win.open();
        const ok = !stop && !a.signal?.aborted && (j < a.lookahead || computed[j - a.lookahead]?.error === undefined) &&
          !loadFailed && syncFailure === undefined && fatal === undefined;
        if (!ok) {
          for (let k = j; k < layers; k++) loadIssued.set(k, false);
          win.close(costs[j]!);
          break;
        }
        issue(j);
        win.close(costs[j]!);
      }
    } catch (e) {
      // Not a failed load: the attempt throws it once compute stopped.
      fatal ??= e;
      for (let k = nextLoad; k < layers; k++) loadIssued.set(k, false);
    }
    endIssuer();
  };
  const wakeIssuer = (): void => queueMicrotask(issueMore);
  if (issuerEnded) issueMore();

  // What every layer's compute is told (the same for all layers of the attempt: one object).
  const work: PrefillWork = Object.freeze({ stream: a.computeStream, tokens: a.tokens, blocks: a.blocks, computeFrom: plan.computeFrom, plan, attempt: a.attempt });
  // One layer's compute: false when the prefill stops there.
  const step = (l: number): boolean => {
    win.open();
    const cost = costs[l]!;
    const load = issuedLoads[l];
    // The end record of the step just before in this run, when nothing came
    // after it on the stream (see runs.ts): it marks this compute's start
    // unless a wait goes in between.
    const shared = a.runs.take();
    try {
      let waits = false;
      if (load && !load.waited) {
        a.computeStream.waitEvent(load.after);
        load.waited = true;
        waits = true;
      }
      if (timed) computeStart[l] = shared !== undefined && !waits ? shared : a.computeStream.record(TIMED);
    } catch (e) {
      fatal ??= e;
      win.close(cost);
      return false;
    }
    const c = performance.now();
    try {
      a.compute(l, work);
    } catch (e) {
      computeError = e;
      const dc = performance.now() - c;
      cost.computeMs += dc;
      win.close(cost, dc);
      return false;
    }
    const end = performance.now();
    const dc = end - c;
    cost.computeMs += dc;
    enqueued[l] = end - t0;
    try {
      const done = timed ? a.computeStream.record(TIMED) : a.computeStream.record();
      if (timed) a.runs.set(done);
      computed.push(watchLayer(done, t0, watching, computeSettled, l));
      if (put) {
        calls.add();
        a.io.save({ put, layer: l, blocks: putBlocks, computed: done, cost, sink });
      }
    } catch (e) {
      fatal ??= e;
      win.close(cost, dc);
      return false;
    }
    win.close(cost, dc);
    return true;
  };
  // Compute runs layer by layer as loads go to the store: each layer right
  // once its load was issued (a step resumed by the flush that issued it),
  // without a promise per layer.
  let next = 0;
  let endCompute!: () => void;
  const computeEnded = new Promise<void>((resolve) => (endCompute = resolve));
  const advance = (): void => {
    try {
      for (; next < layers; next++) {
        if (loadChunks.length > 0) {
          const issuedOk = loadIssued.get(next);
          if (issuedOk === undefined) {
            loadIssued.when(next, resume);
            return;
          }
          if (!issuedOk) break; // failure or abort
        }
        if (a.signal?.aborted || fatal !== undefined) break;
        if (!step(next)) break;
      }
    } catch (e) {
      fatal ??= e;
    }
    endCompute();
  };
  const resume = (): void => a.runs.resume(advance);

  try {
    a.runs.run(advance);
    await computeEnded;
  } finally {
    // Whatever happened, the issuer ends and nothing enqueued is left behind unobserved.
    stop = true;
    for (let l = computed.length; l < layers; l++) computeSettled.set(l, true);
    if (issuerEnded) await issuerEnded;
    // Every load and save handed to the batcher was issued or refused (the issuer set the rest as not issued).
    const drained = calls.drained();
    if (drained) await drained;
    const settled = watching.drained();
    if (settled) await settled;
  }

  const failedLoad = loads.findIndex((w) => w?.error !== undefined);
  const discard = async (): Promise<void> => {
    if (put) await store.abort(put).catch(() => undefined);
  };
  if (fatal !== undefined) {
    await discard();
    throw fatal;
  }
  if (failedLoad >= 0 || syncFailure) {
    await discard();
    const layer = failedLoad >= 0 ? failedLoad : syncFailure!.layer;
    const error = failedLoad >= 0 ? loads[failedLoad]!.error : syncFailure!.error;
    // The hit says which of its chunks failed (a checksum, an eviction, an
    // IO error), once its loads were handled; without one, nothing loaded is trusted.
    const outcome = await a.hit.settled();
    const failedAt = outcome.failed.length > 0 ? Math.min(outcome.validTokens, plan.loadFrom + plan.loadTokens) : plan.loadFrom;
    return { kind: 'failed-load', layer, code: codeOf(error), message: error instanceof Error ? error.message : String(error), validTokens: failedAt };
  }
  if (computeError !== undefined) {
    await discard();
    throw computeError;
  }
  const failedCompute = computed.find((w) => w.error !== undefined);
  if (failedCompute) {
    await discard();
    throw failedCompute.error;
  }
  if (a.signal?.aborted || computed.length < layers) {
    await discard();
    throw aborted(a.signal);
  }
  // The first token's time: the last layer computed (its save, behind it, is not waited for by the runtime).
  const computedMs = computed[layers - 1]!.at;
  let saved = 0;
  if (put) {
    try {
      saved = (await store.commit(put)).added;
    } catch {
      saved = 0; // the prefill's result stands; only its saving failed (the store counts it)
    }
  }
  const records: LayerRecord[] = [];
  for (let l = 0; l < layers; l++) {
    const load = loads[l];
    records.push({
      loadIssuedMs: load ? issued[l]! : null, loadSeenMs: load ? load.at : null, loadBefore: loadBefore[l], loadAfter: load?.event,
      computeEnqueuedMs: enqueued[l]!, computeSeenMs: computed[l]!.at, computeStart: computeStart[l], computeEnd: computed[l]!.event,
      host: costs[l]!,
    });
  }
  const t = timeline(origin, records);
  return { kind: 'ok', layers: t.layers, timeSource: t.source, saved, computedMs };
}
