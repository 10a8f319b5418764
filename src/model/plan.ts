/**
 * Load or recompute: how much of a cached prefix a prefill loads (DESIGN.md
 * sections 1 and 5). The per-layer model of a prefill that loads the first
 * `b` tokens and computes the rest is
 * `L * max(load, compute) + min(load, compute)`, with `load` the time to
 * bring one layer of the loaded tokens in (tier by tier) and `compute` the
 * calibrated `C(n_new, start)` of one layer; the first layer's shorter side
 * cannot hide. `adaptive` tries every chunk boundary of the hit and keeps the
 * fastest prediction (a split between the ends only when it beats both by
 * `margin`), so it is never predicted slower than `recompute` (no load) or
 * `load-all` (the whole hit).
 */
import { describe, fail } from '../errors.js';
import { checkChoice, checkInteger } from '../util/validate.js';
import type { BandwidthMeter } from './bandwidth.js';
import type { ComputeModel } from './compute.js';
import type { HostModel } from './host.js';

/** `adaptive` balances IO and compute; `load-all` loads every cached token; `recompute` loads nothing. */
export type PrefillPolicy = 'adaptive' | 'load-all' | 'recompute';

/** A run of cached tokens in one tier, in prompt order. */
export interface HitSpan {
  tier: string;
  tokens: number;
}

/** What the planner needs to know of one prefill. */
export interface PlanRequest {
  policy: PrefillPolicy;
  /** Layers of the model. */
  layers: number;
  /** KV bytes of one token in one layer (K and V). */
  bytesPerTokenPerLayer: number;
  /** Tokens in the prompt. */
  promptTokens: number;
  /** Tokens at the start of the prompt already in HBM: neither loaded nor computed. */
  heldTokens?: number;
  /** Chunk size of the store: loads start and end on its multiples. */
  chunkTokens: number;
  /** Cached tokens from token 0, tier by tier in prompt order (the lookup's hit). */
  hit: readonly HitSpan[];
  /** `C(n, start)` of one layer. */
  compute: ComputeModel | ((newTokens: number, start: number) => number);
  /** Read bandwidth of a tier in bytes per millisecond. */
  bandwidth: BandwidthMeter | ((tier: string) => number);
  /**
   * Host time of one layer of this prefill alone (ms), loading `chunks`
   * chunks per layer: a layer takes at least that long (scaled by
   * `computeSharing`: prefills in flight share one JS thread). Default: none.
   */
  host?: HostModel | ((chunks: number) => number);
  /** Prefills loading at once, which share each tier's bandwidth (default 1). */
  sharing?: number;
  /**
   * Prefills computing at once on the same GPU, which share its compute
   * (default `sharing`: prefills of one pipeline share its compute stream as
   * they share its loads, so a prefill's compute takes that many times
   * longer too, and the split that balances one prefill balances them all).
   */
  computeSharing?: number;
  /**
   * `adaptive` picks a split between recomputing and loading the whole hit
   * only when it is predicted faster than both by more than this fraction
   * (default 0.03).
   */
  margin?: number;
}

const MAX = Number.MAX_SAFE_INTEGER;

/** The policies, for checks. */
export const POLICIES: readonly PrefillPolicy[] = ['adaptive', 'load-all', 'recompute'];

/** A prediction of one candidate split, per layer and whole. */
export interface SplitPrediction {
  /** Tokens loaded (from the first chunk not wholly held). */
  loadTokens: number;
  /** First token computed. */
  computeFrom: number;
  loadMsPerLayer: number;
  computeMsPerLayer: number;
  /** Host time per layer (with the prefills sharing the host); 0 without a host model. */
  hostMsPerLayer: number;
  /** Predicted prefill time: the per-layer model, or the host's floor `layers x hostMsPerLayer` when that is longer. */
  ms: number;
}

/** The chosen split and what it was weighed against. */
export interface PrefillPlan extends SplitPrediction {
  policy: PrefillPolicy;
  /** First token loaded (a chunk boundary at or below the held tokens). */
  loadFrom: number;
  /** Tokens loaded per tier, in prompt order (tiers with none left out). */
  loaded: HitSpan[];
  /** Tokens computed: `promptTokens - computeFrom`. */
  computeTokens: number;
  /** Predicted time of computing everything not held. */
  recomputeMs: number;
  /** Predicted time of loading the whole hit. */
  loadAllMs: number;
  /** Whether the figures rest on measurements or priors, and what was chosen why. */
  reason: string;
}


/** The per-layer model of DESIGN.md section 5 for uniform layers. */
export function layerModelMs(layers: number, loadMs: number, computeMs: number): number {
  return layers * Math.max(loadMs, computeMs) + Math.min(loadMs, computeMs);
}

/** Plans one prefill: how many cached tokens to load, from which tiers, and where compute starts. */
export function planPrefill(req: PlanRequest): PrefillPlan {
  if (typeof req !== 'object' || req === null) fail('ERR_INVALID_ARG', `expected a plan request, got ${describe(req)}`);
  const policy = req.policy;
  checkChoice(policy, 'policy', POLICIES);
  const layers = checkInteger(req.layers, 'layers', 1, MAX);
  const n = checkInteger(req.promptTokens, 'promptTokens', 1, MAX);
  const held = Math.min(checkInteger(req.heldTokens ?? 0, 'heldTokens', 0, MAX), n - 1);
  const chunk = checkInteger(req.chunkTokens, 'chunkTokens', 1, MAX);
  if (!(req.bytesPerTokenPerLayer > 0) || !Number.isFinite(req.bytesPerTokenPerLayer)) fail('ERR_INVALID_ARG', `expected a positive number for bytesPerTokenPerLayer, got ${describe(req.bytesPerTokenPerLayer)}`);
  if (!Array.isArray(req.hit)) fail('ERR_INVALID_ARG', `expected an array for hit, got ${describe(req.hit)}`);
  const spans: HitSpan[] = [];
  let hitTokens = 0;
  req.hit.forEach((s, i) => {
    if (typeof s?.tier !== 'string') fail('ERR_INVALID_ARG', `expected a tier name for hit[${i}].tier, got ${describe(s?.tier)}`);
    const t = checkInteger(s.tokens, `hit[${i}].tokens`, 0, MAX);
    if (t % chunk !== 0) fail('ERR_INVALID_ARG', `expected a multiple of ${chunk} for hit[${i}].tokens, got ${t}`);
    if (t > 0) spans.push({ tier: s.tier, tokens: t });
    hitTokens += t;
  });
  // Only what lies in the prompt counts; at least one token is computed.
  hitTokens = Math.min(hitTokens, Math.ceil(n / chunk) * chunk);
  if (req.sharing !== undefined && !(req.sharing >= 1 && Number.isFinite(req.sharing))) fail('ERR_INVALID_ARG', `expected a number >= 1 for sharing, got ${describe(req.sharing)}`);
  const sharing = Math.max(1, req.sharing ?? 1);
  if (req.computeSharing !== undefined && !(req.computeSharing >= 1 && Number.isFinite(req.computeSharing))) fail('ERR_INVALID_ARG', `expected a number >= 1 for computeSharing, got ${describe(req.computeSharing)}`);
  const computeSharing = Math.max(1, req.computeSharing ?? sharing);
  if (req.margin !== undefined && !(req.margin >= 0 && req.margin < 1)) fail('ERR_INVALID_ARG', `expected a number in [0, 1) for margin, got ${describe(req.margin)}`);
  const own = typeof req.compute === 'function' ? req.compute : req.compute.predict.bind(req.compute);
  const compute = (newTokens: number, start: number): number => own(newTokens, start) * computeSharing;
  const meter = req.bandwidth;
  const bw = typeof meter === 'function' ? (t: string) => meter(t) / sharing : (t: string) => meter.share(t, sharing);
  const loadFrom = Math.floor(held / chunk) * chunk;
  const hostOf = req.host === undefined ? () => 0
    : typeof req.host === 'function' ? req.host : req.host.predict.bind(req.host);
  const hostMs = (loadTokens: number): number => {
    const h = hostOf(Math.ceil(loadTokens / chunk)) * computeSharing;
    return Number.isFinite(h) && h > 0 ? h : 0;
  };
  const total = (loadMs: number, c: number, h: number): number => Math.max(layerModelMs(layers, loadMs, c), layers * h);

  // Tokens of [loadFrom, end) per tier.
  const perTier = (end: number): HitSpan[] => {
    const out: HitSpan[] = [];
    let at = 0;
    for (const s of spans) {
      const lo = Math.max(at, loadFrom);
      const hi = Math.min(at + s.tokens, end);
      if (hi > lo) {
        const last = out[out.length - 1];
        if (last?.tier === s.tier) last.tokens += hi - lo;
        else out.push({ tier: s.tier, tokens: hi - lo });
      }
      at += s.tokens;
    }
    return out;
  };
  const predict = (end: number): SplitPrediction => {
    if (end <= held) {
      const c = compute(n - held, held);
      const h = hostMs(0);
      return { loadTokens: 0, computeFrom: held, loadMsPerLayer: 0, computeMsPerLayer: c, hostMsPerLayer: h, ms: total(0, c, h) };
    }
    const computeFrom = Math.min(end, n - 1);
    const loadMs = perTier(end).reduce((a, s) => a + (s.tokens * req.bytesPerTokenPerLayer) / bw(s.tier), 0);
    const c = compute(n - computeFrom, computeFrom);
    const h = hostMs(end - loadFrom);
    return { loadTokens: end - loadFrom, computeFrom, loadMsPerLayer: loadMs, computeMsPerLayer: c, hostMsPerLayer: h, ms: total(loadMs, c, h) };
  };

  const recompute = predict(held);
  const loadAll = predict(hitTokens);
  let chosen: SplitPrediction;
  if (policy === 'recompute' || hitTokens <= held) chosen = recompute;
  else if (policy === 'load-all') chosen = loadAll;
  else {
    // The better of the two ends, then a split between them only when it is
    // predicted faster by more than `margin`: a split rests on both the
    // compute curve and the bandwidth estimate, so a small predicted gain is
    // within their error and not worth the risk of being wrong.
    chosen = loadAll.ms < recompute.ms * (1 - 1e-9) ? loadAll : recompute;
    const margin = req.margin ?? 0.03;
    let best: SplitPrediction | undefined;
    for (let end = loadFrom + chunk; end < hitTokens; end += chunk) {
      if (end <= held) continue;
      const p = predict(end);
      if (p.ms < (best?.ms ?? Number.POSITIVE_INFINITY) * (1 - 1e-9)) best = p;
    }
    if (best && best.ms < chosen.ms * (1 - margin)) chosen = best;
  }
  const basis = describeBasis(req);
  const hostBound = chosen.ms > layerModelMs(layers, chosen.loadMsPerLayer, chosen.computeMsPerLayer) * (1 + 1e-9)
    ? `; host-bound (${chosen.hostMsPerLayer.toFixed(3)} ms per layer)` : '';
  const why = policy !== 'adaptive' ? `policy ${policy}`
    : chosen.loadTokens === 0 ? (hitTokens <= held ? 'nothing cached beyond what is held' : 'recomputing is predicted fastest')
    : chosen.computeFrom >= Math.min(hitTokens, n - 1) ? 'loading the whole hit is predicted fastest'
    : `loading ${chosen.loadTokens} of ${hitTokens - loadFrom} cached tokens balances IO and compute`;
  return {
    ...chosen,
    policy,
    loadFrom,
    loaded: chosen.loadTokens === 0 ? [] : perTier(loadFrom + chosen.loadTokens),
    computeTokens: n - chosen.computeFrom,
    recomputeMs: recompute.ms,
    loadAllMs: loadAll.ms,
    reason: `${why}; ${basis}${hostBound}`,
  };
}

function describeBasis(req: PlanRequest): string {
  const c = req.compute;
  const compute = typeof c === 'function' ? 'compute given' : `compute ${c.terms.basis === 'none' ? 'not measured (no layer timed yet)' : c.terms.basis === 'per-token' ? 'from one prompt shape' : 'calibrated'}`;
  const m = req.bandwidth;
  if (typeof m === 'function') return `${compute}, bandwidth given`;
  const tiers = [...new Set(req.hit.map((s) => s.tier))].map((t) => `${t} ${m.get(t).basis}`);
  return `${compute}, bandwidth ${tiers.length ? tiers.join(', ') : 'unused'}`;
}
