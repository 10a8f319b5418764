/**
 * KvConnector: the verbs of vLLM's KV connector in a Node shape, for runtimes
 * that drive layers themselves. A lookup returns the loadable tokens with a
 * lease (its chunks stay loadable until the request finishes); loads are
 * issued for every layer at once on the connector's load stream (those of
 * the requests of one startLoads call as one store call per layer, see
 * connector-loads.ts), and the
 * runtime's compute stream waits for a layer on the device; saves go behind
 * the runtime's compute on the save stream and are committed by
 * `waitForSave`. A failed load is reported per request with the tokens still
 * good, so the runtime recomputes exactly the rest. The put of a request
 * begins with its loads, so a save computed over a failed chunk before its
 * failure was known is refused at commit. Requests whose layers share one
 * stream share its waited-on failures (a failure fails the stream's next
 * event): give a request whose loads failed a stream of its own, or skip
 * its waits once its outcome is known (waitForLayerLoad does). Requests
 * loaded together wait on a clean event after their batched call, so one's
 * failure never carries into another's stream.
 */
import type { Event } from '../device/event.js';
import { Stream } from '../device/stream.js';
import { describe, fail, KvflowError, type KvflowErrorCode } from '../errors.js';
import type { KvCache, PagedEngine } from '../layout/kvcache.js';
import { toTokenIds } from '../store/keys.js';
import type { KvStore, PendingPut, StoreHit } from '../store/store.js';
import { checkChoice, checkInstance, checkKnownOptions } from '../util/validate.js';
import { issueLoads, type ConnectorStats, type LoadItem } from './connector-loads.js';

export type { ConnectorStats } from './connector-loads.js';

/** The outcome of a request's loads. */
export interface LoadOutcome {
  ok: boolean;
  /** Tokens loaded and good (from the first loaded token): recompute from here when !ok. */
  validTokens: number;
  code?: KvflowErrorCode | 'ERR_UNKNOWN';
  message?: string;
}

/** Options of startLoad (and of each item of startLoads). */
export interface StartLoadOptions {
  /** Loadable tokens to load, a multiple of the chunk size (default all). */
  tokens?: number;
  engine?: PagedEngine;
}

function codeOf(error: unknown): { code: KvflowErrorCode | 'ERR_UNKNOWN'; message: string } {
  return {
    code: error instanceof KvflowError ? error.code : 'ERR_UNKNOWN',
    message: error instanceof Error ? error.message : String(error),
  };
}

/** One request known to the connector, from lookup to requestFinished. */
export class ConnectorRequest {
  readonly id: number;
  readonly tokens: readonly number[];
  /** Whose prompt it is (the store's `{ tenant }`), as given to lookup. */
  readonly tenant: string | undefined;
  /** Cached tokens that can be loaded (whole chunks, at most all but the last token). */
  readonly loadableTokens: number;
  /** @internal */ hit: StoreHit;
  /** @internal */ loads: Event[] = [];
  /** @internal */ loadTokens = 0;
  /** @internal */ put: PendingPut | undefined;
  /** @internal */ putBlocks: number[] = [];
  /** @internal */ saves: Event[] = [];
  /** @internal */ loadDone: Promise<LoadOutcome> | undefined;
  /** @internal Known once the loads finished. */ outcome: LoadOutcome | undefined;
  #finished = false;

  /** @internal */
  constructor(id: number, tokens: number[], tenant: string | undefined, hit: StoreHit, loadable: number) {
    this.id = id;
    this.tokens = Object.freeze(tokens);
    this.tenant = tenant;
    this.hit = hit;
    this.loadableTokens = loadable;
  }

  get finished(): boolean {
    return this.#finished;
  }

  /** @internal */
  finish(): boolean {
    if (this.#finished) return false;
    this.#finished = true;
    return true;
  }
}

/** Options of a connector. */
export interface KvConnectorOptions {
  store: KvStore;
  cache: KvCache;
  /** Stream the loads run on (default: a high-priority one the connector creates). */
  loadStream?: Stream;
  /** Stream the saves run on (default: one the connector creates). */
  saveStream?: Stream;
}

/** vLLM-style connector verbs over a KvStore and a KvCache. */
export class KvConnector {
  readonly store: KvStore;
  readonly cache: KvCache;
  readonly #load: Stream;
  readonly #save: Stream;
  readonly #owned: Stream[] = [];
  readonly #requests = new Set<ConnectorRequest>();
  readonly #finishedLoads: { request: ConnectorRequest; outcome: LoadOutcome }[] = [];
  readonly #stats: ConnectorStats = { loadCalls: 0, loadRequests: 0 };
  #nextId = 1;
  readonly #detach: () => void;
  #disposed = false;

  constructor(options: KvConnectorOptions) {
    if (typeof options !== 'object' || options === null) fail('ERR_INVALID_ARG', `expected connector options, got ${describe(options)}`);
    checkKnownOptions(options, 'options', ['store', 'cache', 'loadStream', 'saveStream']);
    const { store, cache } = options;
    if (typeof store?.lookup !== 'function') fail('ERR_INVALID_ARG', `expected a KvStore for store, got ${describe(store)}`);
    if (typeof cache?.layout !== 'object' || !cache.layout.equals(store.layout)) fail('ERR_INVALID_ARG', 'expected a KvCache with the store\'s layout for cache');
    this.store = store;
    this.cache = cache;
    this.#load = options.loadStream ?? this.#own(store.device.createStream({ priority: 'high' }));
    this.#save = options.saveStream ?? this.#own(store.device.createStream());
    this.#detach = store.device.adopt(this);
  }

  #own(s: Stream): Stream {
    this.#owned.push(s);
    return s;
  }

  #live(): void {
    if (this.#disposed) fail('ERR_DISPOSED', 'the connector was disposed');
  }

  #check(request: ConnectorRequest): void {
    if (!(request instanceof ConnectorRequest) || !this.#requests.has(request)) {
      fail('ERR_INVALID_ARG', `expected a request of this connector's lookup(), got ${describe(request)}`);
    }
    if (request.finished) fail('ERR_INVALID_ARG', `request ${request.id} is finished`);
  }

  /**
   * How many tokens of `tokens` can be loaded, with a lease that keeps them
   * loadable until requestFinished(). Changes nothing in the store beyond the
   * lease. `options.tenant`: whose prompt it is (its saves go under the
   * same tenant; a tenant never hits another's prefixes).
   */
  lookup(tokens: ArrayLike<number>, options: { tenant?: string } = {}): ConnectorRequest {
    this.#live();
    if (typeof tokens?.length !== 'number' || tokens.length < 1) fail('ERR_INVALID_ARG', `expected at least one token, got ${describe(tokens)}`);
    const tenant = checkKnownOptions(options, 'options', ['tenant']).tenant;
    if (tenant !== undefined && typeof tenant !== 'string') fail('ERR_INVALID_ARG', `expected a string for tenant, got ${describe(tenant)}`);
    const list = Array.from(toTokenIds(tokens));
    const hit = this.store.lookup(list, { tenant });
    // The last token is always computed (its output is the first token's logits).
    const ct = this.store.chunkTokens;
    const loadable = Math.min(hit.tokens, Math.floor((list.length - 1) / ct) * ct);
    const r = new ConnectorRequest(this.#nextId++, list, tenant, hit, loadable);
    this.#requests.add(r);
    return r;
  }

  /**
   * Issues the loads of the first `tokens` loadable tokens (default all) of
   * every layer into `blocks` (the request's block table from token 0). The
   * outcome arrives through finished() and loadResult().
   */
  startLoad(request: ConnectorRequest, blocks: ArrayLike<number>, options: StartLoadOptions = {}): void {
    this.startLoads([{ request, blocks, options }]);
  }

  /**
   * startLoad for several requests at once: per layer, one store call loads
   * them all (one per engine asked for). Each request keeps its own waits
   * and outcome: chunks of one request that fail fail only its outcome.
   * Every item is checked first: a refused call issues nothing.
   */
  startLoads(items: readonly { request: ConnectorRequest; blocks: ArrayLike<number>; options?: StartLoadOptions }[]): void {
    this.#live();
    if (!Array.isArray(items)) fail('ERR_INVALID_ARG', `expected an array of { request, blocks, options? }, got ${describe(items)}`);
    const seen = new Set<ConnectorRequest>();
    const plans = items.map((item, i) => {
      const plan = this.#plan(item, `items[${i}]`);
      if (seen.has(plan.request)) fail('ERR_INVALID_ARG', `request ${plan.request.id} is named twice (items[${i}])`);
      seen.add(plan.request);
      return plan;
    });
    // The puts begin before any load, so that a load failure they must not
    // save over is known to them (the store refuses layers put before one).
    const begun: ConnectorRequest[] = [];
    try {
      for (const { request } of plans) {
        if (request.put) continue;
        request.put = this.store.beginPut(request.tokens, { tenant: request.tenant });
        begun.push(request);
      }
    } catch (e) {
      for (const r of begun) {
        void this.store.abort(r.put!).catch(() => undefined);
        r.put = undefined;
      }
      throw e;
    }
    const loads = plans.map((p): LoadItem => ({
      hit: p.request.hit, chunks: p.request.hit.chunks.slice(0, p.chunks), blocks: p.table, engine: p.engine, waits: [], dones: [],
    }));
    issueLoads(this.store, this.cache, this.#load, loads.filter((q) => q.chunks.length > 0), this.#stats);
    plans.forEach(({ request, tokens }, i) => {
      const { waits, dones, refused } = loads[i]!;
      request.loads = waits;
      request.loadTokens = tokens;
      if (refused) {
        // Layers past the refusal have no load to wait for: the outcome is known now.
        request.outcome = { ok: false, validTokens: 0, ...codeOf(refused.error) };
      }
      request.loadDone = this.#outcome(request, dones, refused);
    });
  }

  /** Checks one item of startLoads; changes nothing. */
  #plan(item: unknown, name: string): { request: ConnectorRequest; tokens: number; chunks: number; table: number[]; engine: PagedEngine | undefined } {
    if (typeof item !== 'object' || item === null) fail('ERR_INVALID_ARG', `expected { request, blocks, options? } for ${name}, got ${describe(item)}`);
    const { request, blocks, options } = checkKnownOptions(item, name, ['request', 'blocks', 'options']) as
      { request: ConnectorRequest; blocks: ArrayLike<number>; options?: StartLoadOptions };
    this.#check(request);
    if (request.loadDone) fail('ERR_INVALID_ARG', `request ${request.id}'s loads were started already`);
    const o = checkKnownOptions(options ?? {}, `${name}.options`, ['tokens', 'engine']) as StartLoadOptions;
    const tokens = o.tokens ?? request.loadableTokens;
    const ct = this.store.chunkTokens;
    if (!Number.isSafeInteger(tokens) || tokens < 0 || tokens > request.loadableTokens || tokens % ct !== 0) {
      fail('ERR_INVALID_ARG', `expected a multiple of ${ct} in [0, ${request.loadableTokens}] for tokens, got ${describe(tokens)}`);
    }
    const chunks = tokens / ct;
    const need = chunks * this.store.blocksPerChunk;
    if (typeof blocks?.length !== 'number' || blocks.length < need) {
      fail('ERR_INVALID_ARG', `expected a block table of at least ${need} blocks, got ${blocks?.length ?? describe(blocks)}`);
    }
    const table = Array.prototype.slice.call(blocks, 0, need) as number[];
    for (let i = 0; i < table.length; i++) this.cache.layout.checkBlock(table[i]!, `blocks[${i}]`); // before the put begins
    if (o.engine !== undefined) checkChoice(o.engine, 'engine', ['auto', 'dma', 'kernel']);
    return { request, tokens, chunks, table, engine: o.engine };
  }

  /** The connector's store calls for loads so far, and the requests they carried. */
  stats(): ConnectorStats {
    return { ...this.#stats };
  }

  async #outcome(request: ConnectorRequest, dones: Promise<void>[], refused: { error: unknown } | undefined): Promise<LoadOutcome> {
    const results = await Promise.allSettled(dones);
    const bad = results.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
    const failure = bad ? { error: bad.reason as unknown } : refused;
    let outcome: LoadOutcome;
    if (failure === undefined) outcome = { ok: true, validTokens: request.loadTokens };
    else {
      const settled = await request.hit.settled();
      const valid = settled.failed.length > 0 ? Math.min(settled.validTokens, request.loadTokens) : 0;
      outcome = { ok: false, validTokens: valid, ...codeOf(failure.error) };
    }
    request.outcome = outcome;
    this.#finishedLoads.push({ request, outcome });
    return outcome;
  }

  /** Resolves once the request's loads finished (never rejects: a failure is in the outcome). */
  loadResult(request: ConnectorRequest): Promise<LoadOutcome> {
    this.#check(request);
    return request.loadDone ?? Promise.resolve({ ok: true, validTokens: 0 });
  }

  /**
   * Makes `stream` wait, on the device, for layer `layer` of the request's
   * loads. A failed load still releases the wait, and its failure carries
   * into `stream`'s next event (the layer holds zeros for failed chunks).
   * Once the outcome is known (finished() or loadResult()), a failed
   * request's layers are not waited for: the runtime recomputes them from
   * `validTokens` on a clean stream.
   */
  waitForLayerLoad(request: ConnectorRequest, layer: number, stream: Stream): void {
    this.#live();
    this.#check(request);
    this.cache.layout.checkLayer(layer);
    checkInstance(stream, 'stream', 'a Stream', Stream);
    if (request.outcome?.ok === false) return;
    const ev = request.loads[layer];
    if (ev) stream.waitEvent(ev);
  }

  /**
   * Saves layer `layer` of the request's new chunks behind the work enqueued
   * on `stream` so far. `blocks` is the request's whole block table. Call for
   * every layer, then waitForSave().
   */
  saveLayer(request: ConnectorRequest, layer: number, stream: Stream, blocks: ArrayLike<number>): void {
    this.#live();
    this.#check(request);
    this.cache.layout.checkLayer(layer);
    checkInstance(stream, 'stream', 'a Stream', Stream);
    if (stream.disposed) fail('ERR_DISPOSED', 'the stream is disposed');
    // Everything checked before the put begins: a refused call reserves nothing.
    let table: number[] | undefined;
    if (request.putBlocks.length === 0) {
      const need = Math.floor(request.tokens.length / this.store.chunkTokens) * this.store.blocksPerChunk;
      if (typeof blocks?.length !== 'number' || blocks.length < need) {
        fail('ERR_INVALID_ARG', `expected a block table of at least ${need} blocks, got ${blocks?.length ?? describe(blocks)}`);
      }
      table = Array.prototype.slice.call(blocks, 0, need) as number[];
      for (let i = 0; i < need; i++) this.cache.layout.checkBlock(table[i]!, `blocks[${i}]`); // holes too
    }
    // The save stream waits for the work on `stream` first: a stream it cannot
    // wait on (another device's) is refused before the put begins.
    this.#save.waitEvent(stream.record());
    request.put ??= this.store.beginPut(request.tokens, { tenant: request.tenant });
    if (table) request.putBlocks = table;
    if (request.put.chunks.length === 0) return;
    request.saves.push(this.store.putLayer(request.put, layer, this.cache, request.putBlocks, this.#save, { engine: 'dma' }));
  }

  /**
   * Commits the request's saved chunks once every layer was saved and the
   * copies finished; resolves with the chunks added. A load that failed in
   * this request means its saves hold recomputed data only if the runtime
   * recomputed before saving: commit only what was computed on good KV.
   */
  async waitForSave(request: ConnectorRequest): Promise<{ saved: number }> {
    this.#check(request);
    const put = request.put;
    if (!put) return { saved: 0 };
    if (put.chunks.length === 0 || request.putBlocks.length === 0) {
      // Nothing new, or nothing saved: the put begun with the loads is dropped.
      await this.store.abort(put);
      return { saved: 0 };
    }
    const { added } = await this.store.commit(put);
    return { saved: added };
  }

  /** Loads that finished since the last call, with their outcomes (vLLM's get_finished). */
  finished(): { request: ConnectorRequest; outcome: LoadOutcome }[] {
    return this.#finishedLoads.splice(0);
  }

  /**
   * The request is done: its lease is released and a put not committed is
   * dropped. Resolves once its loads and saves in flight completed (its
   * blocks may be reused then). Idempotent.
   */
  async requestFinished(request: ConnectorRequest): Promise<void> {
    if (request instanceof ConnectorRequest && request.finished) return;
    this.#check(request);
    request.finish();
    await Promise.allSettled([...request.loads, ...request.saves].map((e) => e.untilDone()));
    if (request.loadDone) await request.loadDone;
    if (request.put) await this.store.abort(request.put);
    request.hit.release();
    this.#requests.delete(request);
  }

  /** Finishes every request still open, then frees the connector's streams. Idempotent. */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await Promise.all([...this.#requests].map((r) => this.requestFinished(r)));
    for (const s of this.#owned) await s.dispose();
    this.#detach();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose();
  }
}
