/**
 * LayerPipeline: one prefill's loads, compute and saves, layer by layer
 * (DESIGN.md section 4). It looks the prompt up, plans how much of the hit to
 * load (src/model), then per layer issues the load up to `lookahead` layers
 * ahead of compute, makes the compute stream wait for it on the device (no
 * host wait), calls the runtime's `compute`, and saves the layer's new chunks
 * behind it. The new chunks are committed only when every layer finished
 * cleanly. A failed load restarts the prefill from layer 0 with the hit cut
 * before the failed chunk; the runtime never computes on missing or wrong KV
 * without being called again.
 */
import type { Stream } from '../device/stream.js';
import { describe, fail, KvflowError, type KvflowErrorCode } from '../errors.js';
import type { KvCache, PagedEngine } from '../layout/kvcache.js';
import { BandwidthMeter } from '../model/bandwidth.js';
import { ComputeModel } from '../model/compute.js';
import { HostModel } from '../model/host.js';
import { POLICIES, planPrefill, type PrefillPlan, type PrefillPolicy } from '../model/plan.js';
import { abortError, throwIfAborted } from '../util/abort.js';
import { checkChoice, checkInstance, checkInteger, checkKnownOptions } from '../util/validate.js';
import { toTokenIds } from '../store/keys.js';
import type { KvStore } from '../store/store.js';
import { runAttempt, type AttemptOutcome, type LayerTiming } from './attempt.js';
import { LayerBatcher, type BatchStats } from './batcher.js';
import { ComputeRuns } from './runs.js';
import type { LayerCompute } from './work.js';

export type { LayerCompute, PrefillWork } from './work.js';

export type { LayerTiming } from './attempt.js';
export type { HostCost } from './hostcost.js';
export type { BatchStats } from './batcher.js';

/** One prefill. */
export interface PrefillRequest {
  tokens: ArrayLike<number>;
  /** Block table of the whole prompt: token t lives in block `blocks[t / blockTokens]`. */
  blocks: ArrayLike<number>;
  compute: LayerCompute;
  /** Tokens at the start already in the cache (the runtime's own prefix cache): neither loaded nor computed. */
  heldTokens?: number;
  /** Default `adaptive`. */
  policy?: PrefillPolicy;
  /** Save the prompt's new chunks into the store (default true). */
  save?: boolean;
  /** Whose prompt it is (the store's `{ tenant }`): a tenant never hits another's prefixes. Default: none. */
  tenant?: string;
  /**
   * The engine of the prefill's loads: `auto` (default) takes `kernel` for
   * loads issued before the first compute while no other prefill is in
   * flight (the device is idle), `dma` beside compute; `kernel` or `dma`
   * forces one for every load.
   */
  engine?: PagedEngine;
  signal?: AbortSignal;
}

const ENGINES: readonly PagedEngine[] = ['auto', 'dma', 'kernel'];
const TIMINGS: readonly ('device' | 'host')[] = ['device', 'host'];

/** A restart after a failed load. */
export interface PrefillRestart {
  /** Layer whose load failed first. */
  layer: number;
  code: KvflowErrorCode | 'ERR_UNKNOWN';
  message: string;
  /** Cached tokens still trusted after the failure (the next attempt's hit). */
  validTokens: number;
}

/** What a prefill did. */
export interface PrefillResult {
  /** The plan of the attempt that finished. */
  plan: PrefillPlan;
  /** Tokens looked up as cached (before any failure). */
  hitTokens: number;
  restarts: PrefillRestart[];
  /** Per layer of the attempt that finished (host times from the prefill's start; device times when the device gave them). */
  layers: LayerTiming[];
  /** Where the layers' load, compute and stall durations come from: `device` (timed events) or `host` (when the host saw events complete). */
  timeSource: 'device' | 'host';
  /** Chunks the prefill added to the store. */
  saved: number;
  /**
   * Time to first token: from the call to the last layer computed (what the
   * runtime waits for; saving runs behind it on its own stream).
   */
  ttftMs: number;
  /** Wall time of the whole prefill, from the call to the last layer computed and its new chunks committed. */
  ms: number;
  /** Host time spent per layer (mean over the layers), store and compute calls included: the sum of `host`'s three. */
  hostMsPerLayer: number;
  /** That host time by who spent it (means over the layers; see `LayerTiming.host`). */
  host: { ownMsPerLayer: number; storeMsPerLayer: number; computeMsPerLayer: number };
}

type CheckedRequest = Required<Omit<PrefillRequest, 'signal' | 'tokens' | 'blocks' | 'tenant'>> & {
  tenant: string | undefined;
  tokens: Uint32Array;
  blocks: number[];
  signal: AbortSignal | undefined;
};

/** Options of a pipeline. */
export interface LayerPipelineOptions {
  store: KvStore;
  cache: KvCache;
  /** Stream for the runtime's compute; default: one the pipeline creates. */
  computeStream?: Stream;
  /** Layers whose loads may be in flight ahead of compute (default 4). */
  lookahead?: number;
  /** Restarts after failed loads before the prefill recomputes everything (default 2). */
  maxRestarts?: number;
  /** Shared calibration; default: a new one per pipeline. */
  computeModel?: ComputeModel;
  bandwidth?: BandwidthMeter;
  /** Host time per layer (a floor under a prefill's time), calibrated from this pipeline's prefills; default: a new one. */
  hostModel?: HostModel;
  /**
   * Store calls of saves in flight at most (default 16): past it, saves wait
   * in the pipeline's queue (references only: a put's slots are reserved
   * when it begins) until earlier saves completed.
   */
  saveDepth?: number;
  /**
   * `device` (default): timed events (`stream.record({ timing: true })`)
   * around loads and compute give the timeline device times. `host`: only
   * the untimed events the pipeline needs (cheaper); the timeline's
   * durations come from when the host saw events complete (`timeSource: 'host'`).
   */
  timing?: 'device' | 'host';
}

function intOption(value: unknown, name: string, min: number, fallback: number): number {
  return value === undefined ? fallback : checkInteger(value, name, min, Number.MAX_SAFE_INTEGER);
}

/** Schedules prefills over one store and KV cache. */
export class LayerPipeline {
  readonly store: KvStore;
  readonly cache: KvCache;
  readonly computeModel: ComputeModel;
  readonly bandwidth: BandwidthMeter;
  readonly hostModel: HostModel;
  readonly lookahead: number;
  readonly maxRestarts: number;
  readonly timing: 'device' | 'host';
  readonly #computeStream: Stream;
  readonly #loadStream: Stream;
  readonly #saveStream: Stream;
  readonly #ownsCompute: boolean;
  readonly #io: LayerBatcher;
  readonly #runs = new ComputeRuns();
  #inFlight = 0;
  #disposed = false;
  readonly #running = new Set<Promise<unknown>>();
  readonly #detach: () => void;

  constructor(options: LayerPipelineOptions) {
    if (typeof options !== 'object' || options === null) fail('ERR_INVALID_ARG', `expected pipeline options, got ${describe(options)}`);
    checkKnownOptions(options, 'options', ['store', 'cache', 'computeStream', 'lookahead', 'maxRestarts', 'computeModel', 'bandwidth', 'hostModel', 'saveDepth', 'timing']);
    const { store, cache } = options;
    if (typeof store?.lookup !== 'function') fail('ERR_INVALID_ARG', `expected a KvStore for store, got ${describe(store)}`);
    if (typeof cache?.layout !== 'object') fail('ERR_INVALID_ARG', `expected a KvCache for cache, got ${describe(cache)}`);
    if (!cache.layout.equals(store.layout)) fail('ERR_INVALID_ARG', 'expected a cache with the store\'s layout');
    if (store.layers.first !== 0 || store.layers.count !== cache.layout.layers) {
      fail('ERR_INVALID_ARG', `expected a store of every layer (0-${cache.layout.layers - 1}) for a pipeline, got layers ${store.layers.first}-${store.layers.first + store.layers.count - 1}`);
    }
    this.lookahead = intOption(options.lookahead, 'lookahead', 1, 4);
    this.maxRestarts = intOption(options.maxRestarts, 'maxRestarts', 0, 2);
    this.timing = options.timing === undefined ? 'device' : checkChoice(options.timing, 'timing', TIMINGS);
    this.store = store;
    this.cache = cache;
    this.computeModel = options.computeModel ?? new ComputeModel();
    this.bandwidth = options.bandwidth ?? new BandwidthMeter();
    if (options.hostModel !== undefined) checkInstance(options.hostModel, 'hostModel', 'a HostModel', HostModel);
    this.hostModel = options.hostModel ?? new HostModel();
    this.#ownsCompute = options.computeStream === undefined;
    this.#computeStream = options.computeStream ?? store.device.createStream();
    this.#loadStream = store.device.createStream({ priority: 'high' });
    this.#saveStream = store.device.createStream();
    this.#io = new LayerBatcher({
      store, cache, load: this.#loadStream, save: this.#saveStream, saveDepth: intOption(options.saveDepth, 'saveDepth', 1, 16),
      batching: () => this.#inFlight > 1, timed: this.timing === 'device', runs: this.#runs,
    });
    this.#detach = store.device.adopt(this);
  }

  /** Prefills in progress. */
  get inFlight(): number {
    return this.#inFlight;
  }

  /** Store calls the pipeline made for its prefills' loads and saves, and the prefill requests they carried (a copy). */
  stats(): BatchStats {
    return { ...this.#io.stats };
  }

  /**
   * Runs one prefill: resolves when every layer was computed and the new
   * chunks committed; rejects with the compute's own error, or ERR_ABORTED
   * when `signal` aborted it (nothing of it is committed then).
   */
  prefill(request: PrefillRequest): Promise<PrefillResult> {
    if (this.#disposed) fail('ERR_DISPOSED', 'the pipeline was disposed');
    const req = this.#check(request);
    if (req.signal?.aborted) return Promise.reject(abortError(req.signal, 'the prefill'));
    const run = this.#prefill(req);
    this.#running.add(run);
    const forget = (): void => void this.#running.delete(run);
    run.then(forget, forget);
    return run;
  }

  #check(r: PrefillRequest): CheckedRequest {
    if (typeof r !== 'object' || r === null) fail('ERR_INVALID_ARG', `expected a prefill request, got ${describe(r)}`);
    checkKnownOptions(r, 'request', ['tokens', 'blocks', 'compute', 'heldTokens', 'policy', 'save', 'tenant', 'engine', 'signal']);
    // A copy of the caller's ids, checked (toTokenIds copies all but a Uint32Array).
    const tokens = r.tokens instanceof Uint32Array ? r.tokens.slice() : toTokenIds(r.tokens);
    const n = tokens.length;
    if (n < 1) fail('ERR_INVALID_ARG', `expected at least one token for tokens, got ${describe(r.tokens)}`);
    const layout = this.cache.layout;
    const needBlocks = Math.ceil(n / layout.blockTokens);
    if (typeof r.blocks?.length !== 'number' || r.blocks.length < needBlocks) {
      fail('ERR_INVALID_ARG', `expected a block table of at least ${needBlocks} blocks for ${n} tokens, got ${r.blocks?.length ?? describe(r.blocks)}`);
    }
    for (let i = 0; i < needBlocks; i++) layout.checkBlock(r.blocks[i]!, `blocks[${i}]`);
    if (typeof r.compute !== 'function') fail('ERR_INVALID_ARG', `expected a function for compute, got ${describe(r.compute)}`);
    const held = intOption(r.heldTokens, 'heldTokens', 0, 0);
    if (held >= n) fail('ERR_OUT_OF_RANGE', `expected heldTokens below the ${n} tokens of the prompt, got ${held}`);
    const policy = r.policy ?? 'adaptive';
    checkChoice(policy, 'policy', POLICIES);
    const engine = r.engine === undefined ? 'auto' : checkChoice(r.engine, 'engine', ENGINES);
    if (r.signal !== undefined && !(r.signal instanceof AbortSignal)) fail('ERR_INVALID_ARG', `expected an AbortSignal for signal, got ${describe(r.signal)}`);
    if (r.save !== undefined && typeof r.save !== 'boolean') fail('ERR_INVALID_ARG', `expected a boolean for save, got ${describe(r.save)}`);
    if (r.tenant !== undefined && typeof r.tenant !== 'string') fail('ERR_INVALID_ARG', `expected a string for tenant, got ${describe(r.tenant)}`);
    return {
      tokens, blocks: Array.prototype.slice.call(r.blocks, 0, needBlocks) as number[], compute: r.compute, heldTokens: held, policy,
      save: r.save ?? true, tenant: r.tenant, engine, signal: r.signal,
    };
  }

  async #prefill(req: CheckedRequest): Promise<PrefillResult> {
    const t0 = performance.now();
    this.#inFlight++;
    try {
      const restarts: PrefillRestart[] = [];
      let cut = Number.POSITIVE_INFINITY; // cached tokens still trusted
      // One lookup per prefill: a restart plans again over the same hit (its
      // leases and pins held throughout, the chunks that failed marked in it),
      // so the store counts the prompt's lookup once.
      throwIfAborted(req.signal, 'the prefill');
      const hit = this.store.lookup(req.tokens, { tenant: req.tenant });
      try {
        for (let attempt = 0; ; attempt++) {
          throwIfAborted(req.signal, 'the prefill');
          const usable = attempt > this.maxRestarts ? 0 : Math.min(hit.tokens, cut);
          const plan = this.#plan(req, hit.chunks.slice(0, usable / this.store.chunkTokens), attempt);
          const outcome: AttemptOutcome = await runAttempt({
            store: this.store, cache: this.cache, hit, plan, attempt, t0,
            tokens: req.tokens, blocks: req.blocks, compute: req.compute, save: req.save, tenant: req.tenant, heldTokens: req.heldTokens, signal: req.signal,
            lookahead: this.lookahead, alone: this.#inFlight === 1, engine: req.engine, timed: this.timing === 'device',
            computeStream: this.#computeStream, io: this.#io, runs: this.#runs,
          });
          if (outcome.kind === 'failed-load') {
            cut = Math.min(cut, outcome.validTokens);
            restarts.push({ layer: outcome.layer, code: outcome.code, message: outcome.message, validTokens: cut });
            continue;
          }
          this.#learn(plan, outcome.layers);
          const n = Math.max(1, outcome.layers.length);
          const host = { ownMsPerLayer: 0, storeMsPerLayer: 0, computeMsPerLayer: 0 };
          for (const l of outcome.layers) {
            host.ownMsPerLayer += l.host.ownMs / n;
            host.storeMsPerLayer += l.host.storeMs / n;
            host.computeMsPerLayer += l.host.computeMs / n;
          }
          const hostMs = host.ownMsPerLayer + host.storeMsPerLayer + host.computeMsPerLayer;
          if (outcome.layers.length > 0 && Number.isFinite(hostMs) && hostMs >= 0) {
            this.hostModel.observe({ chunks: Math.ceil(plan.loadTokens / this.store.chunkTokens), ms: hostMs });
          }
          return {
            plan, hitTokens: hit.tokens, restarts, layers: outcome.layers, timeSource: outcome.timeSource, saved: outcome.saved,
            ttftMs: outcome.computedMs, ms: performance.now() - t0,
            hostMsPerLayer: hostMs, host,
          };
        }
      } finally {
        hit.release();
      }
    } finally {
      this.#inFlight--;
    }
  }

  #plan(req: CheckedRequest, chunks: readonly { tier: 'dram' | 'nvme' }[], attempt: number): PrefillPlan {
    const hit: { tier: string; tokens: number }[] = [];
    for (const c of chunks) {
      const last = hit[hit.length - 1];
      if (last?.tier === c.tier) last.tokens += this.store.chunkTokens;
      else hit.push({ tier: c.tier, tokens: this.store.chunkTokens });
    }
    return planPrefill({
      policy: attempt > this.maxRestarts ? 'recompute' : req.policy,
      layers: this.cache.layout.layers,
      bytesPerTokenPerLayer: this.cache.layout.bytesPerTokenPerLayer,
      promptTokens: req.tokens.length,
      heldTokens: req.heldTokens,
      chunkTokens: this.store.chunkTokens,
      hit,
      compute: this.computeModel,
      bandwidth: this.bandwidth,
      host: this.hostModel,
      sharing: this.#inFlight,
    });
  }

  /** Calibrates compute and bandwidth from the layers of a finished attempt (medians: robust to a slow first layer). */
  #learn(plan: PrefillPlan, layers: LayerTiming[]): void {
    const median = (xs: number[]): number => {
      const s = xs.filter((x) => Number.isFinite(x) && x > 0).sort((a, b) => a - b);
      return s.length === 0 ? Number.NaN : s[Math.floor(s.length / 2)]!;
    };
    const c = median(layers.map((l) => l.computeMs));
    if (plan.computeTokens > 0 && Number.isFinite(c)) this.computeModel.observe({ newTokens: plan.computeTokens, start: plan.computeFrom, ms: c });
    if (plan.loadTokens > 0 && plan.loaded.length === 1) {
      const l = median(layers.map((x) => x.loadMs));
      const bytes = plan.loadTokens * this.cache.layout.bytesPerTokenPerLayer;
      if (Number.isFinite(l)) this.bandwidth.observe(plan.loaded[0]!.tier, bytes, l, Math.max(1, this.#inFlight));
    }
  }

  /** Waits for prefills in progress, then frees the pipeline's streams. Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await Promise.allSettled([...this.#running]);
    await this.#loadStream.dispose();
    await this.#saveStream.dispose();
    if (this.#ownsCompute) await this.#computeStream.dispose();
    this.#detach();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
