/**
 * End-to-end prefill benchmark (issue #16): time to first token of a whole
 * prefill of the reference model (src/reference) run as the `compute` of a
 * LayerPipeline, against the hit rate, with the cached prefix in the store's
 * DRAM tier or on NVMe (cold: the DRAM tier emptied as a restart would, and
 * the page cache dropped when running as root), for the policies
 * `recompute`, `load-all` and `adaptive`.
 *
 * Per prompt size, the pipeline's compute model is first calibrated with
 * recomputes of an uncached prompt. Per hit rate, a first prefill (policy
 * recompute, saving) puts the prompt's prefix into the store (and, for the
 * NVMe tier, the store writes it to its slab files: `admit: 'always'`, then
 * `flush()`). Then, per tier and policy, `--samples` timed prefills that do
 * not save (every sample sees the same hit), and beside each plan that loads:
 * - its load alone (the plan's loaded tokens, a compute that enqueues nothing)
 *   and its compute alone (the plan's computed tokens over a held prefix,
 *   nothing loaded), from which the per-layer model of DESIGN.md section 5
 *   predicts the prefill (`model_ms`; `ratio` = measured / model) and the
 *   overlap efficiency follows;
 * - for the DRAM tier, the same compute alone beside a bare copy of the
 *   plan's loaded bytes (pinned host memory to HBM, one contiguous
 *   `stream.copy` per layer on a stream of its own, all enqueued as the
 *   prefill starts): what the GPU gives a perfectly overlapped load at the
 *   copy engine's rate. `bareCopyFloorMs` = that time plus one layer's copy
 *   (the first, which nothing can hide), or the copies' own time plus one
 *   layer's compute where they take longer, is the TTFT a scheduler reaches with
 *   loads as fast as a bare copy, and `bareCopyOverlap` the overlap
 *   efficiency at that floor (compute slows down beside copies, so 100% is
 *   out of reach for any scheduler);
 * - stall per layer (the compute stream's wait on each layer's load), host
 *   time per layer (the pipeline's enqueue, store and compute calls included);
 * - speedups against recompute (same run) and, with `--peer`, against the
 *   PyTorch peer's figures for the same point (bench/peers/torch_prefill.py,
 *   run in the same call: its recompute and its per-layer overlap with the
 *   prefix in pinned DRAM).
 * Per tier and prompt size: e = T / R from the measured compute time per
 * token (recompute) and the measured load time per token (load-all's load
 * alone), and the crossover a* = e / (1 + e). Figures are medians of the
 * samples with min and max; `--svg DIR` writes TTFT and speedup against the
 * cached fraction, measured and predicted, a* marked, per tier and size.
 *
 * The layer compute: layer 0's callback embeds the tokens computed first,
 * every layer runs `model.layer` over tokens [computeFrom, n) reading the
 * paged cache in place, the last one adds the final norm.
 *
 *   node dist/bench/prefill.js [--model llama-3-8b|qwen3-14b|llama-3-70b|tiny] [--tokens 4096,16384]
 *     [--hits 0.5,0.9,0.95] [--tiers dram,nvme] [--samples 5] [--json out.json] [--svg DIR]
 *     [--peer torch_prefill.json] [--backend auto|cuda|cpu] [--dir STORE_DIR] [--chunk-tokens N] [--lookahead N] [--engine auto|dma|kernel] [--seed N]
 *
 * CPU smoke: `node dist/bench/prefill.js --backend cpu --model tiny --tokens 512 --hits 0.5,0.9 --samples 2`.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';

import {
  BandwidthMeter, ComputeModel, KvStore, LayerPipeline, openDevice,
  type DeviceBuffer, type KvCache, type LayerCompute, type PrefillPolicy, type PrefillRequest, type PrefillResult,
} from '../src/index.js';
import { ReferenceModel, presets, type PresetName } from '../src/reference/index.js';
import { dropDram } from '../src/store/testing.js';
import { medianBreakdown, medianHostEnds, medianLoadDeviceMs, PARTS, type Breakdown } from './lib/breakdown.js';
import { median } from './lib/measure.js';
import { ratioOf, writeResult, type Result } from './lib/results.js';
import { linePlot, type Series } from './lib/svg.js';

type Tier = 'dram' | 'nvme';
const POLICIES: readonly PrefillPolicy[] = ['recompute', 'load-all', 'adaptive'];

/** Median with min and max of a list of figures. */
interface Fig {
  median: number;
  min: number;
  max: number;
  samples: number[];
}

function fig(xs: number[]): Fig {
  return { median: median(xs), min: Math.min(...xs), max: Math.max(...xs), samples: xs };
}

/** One point of the PyTorch peer (bench/peers/torch_prefill.py's `points`). */
interface PeerPoint {
  tokens: number;
  hit: number;
  prefixTokens: number;
  recomputeMs: number;
  loadMs: number;
  loadGBps: number;
  suffixMs: number;
  loadThenComputeMs: number;
  overlapMs: number;
}

interface Peer {
  device?: string;
  error?: string;
  config?: Record<string, unknown>;
  points: PeerPoint[];
}

function readPeer(file: string | undefined): Peer | undefined {
  if (file === undefined) return undefined;
  try {
    const raw = JSON.parse(readFileSync(file, 'utf8')) as Partial<Peer>;
    return { device: raw.device, error: raw.error, config: raw.config, points: Array.isArray(raw.points) ? raw.points : [] };
  } catch (e) {
    return { error: `cannot read ${file}: ${(e as Error).message}`, points: [] };
  }
}

/** `sync; echo 3 > /proc/sys/vm/drop_caches` where allowed (root). */
class CacheDrop {
  attempts = 0;
  failures = 0;
  error: string | null = null;

  run(): void {
    this.attempts++;
    spawnSync('sync');
    try {
      writeFileSync('/proc/sys/vm/drop_caches', '3');
    } catch (e) {
      this.failures++;
      this.error ??= (e as Error).message;
    }
  }
}

/** A part of a prefill's wall time and, in parentheses, the same part of its suffix computed alone. */
const partCell = (p: Breakdown, alone: Breakdown, k: keyof Breakdown): string => `${p[k].toFixed(2)} (${alone[k].toFixed(2)})`;
const pct = (h: number): string => `${Math.round(h * 100)}pct`;
const f2 = (v: number | null | undefined): string => (v === null || v === undefined || !Number.isFinite(v) ? '-' : v.toFixed(2));

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      model: { type: 'string', default: 'llama-3-8b' },
      tokens: { type: 'string', default: '4096,16384' },
      hits: { type: 'string', default: '0.5,0.9,0.95' },
      tiers: { type: 'string', default: 'dram,nvme' },
      samples: { type: 'string', default: '5' },
      json: { type: 'string' },
      svg: { type: 'string' },
      peer: { type: 'string' },
      backend: { type: 'string', default: 'auto' },
      dir: { type: 'string', default: 'bench-out/prefill-store' },
      'chunk-tokens': { type: 'string' },
      lookahead: { type: 'string', default: '4' },
      engine: { type: 'string', default: 'auto' },
      seed: { type: 'string', default: '1' },
    },
  });
  const modelName = values.model as PresetName;
  if (!(modelName in presets)) throw new Error(`--model: expected one of ${Object.keys(presets).join(', ')}, got ${values.model}`);
  const sizes = values.tokens!.split(',').map(Number);
  const hits = values.hits!.split(',').map(Number);
  const tiers = values.tiers!.split(',') as Tier[];
  const samples = Number(values.samples);
  const lookahead = Number(values.lookahead);
  const engine = values.engine as 'auto' | 'dma' | 'kernel';
  if (!['auto', 'dma', 'kernel'].includes(engine)) throw new Error(`--engine: expected auto, dma or kernel, got ${values.engine}`);
  const chunkTokens = Number(values['chunk-tokens'] ?? (modelName === 'tiny' ? 32 : 256));
  const blockTokens = 16;
  if (sizes.some((n) => !Number.isSafeInteger(n) || n < 2 * chunkTokens)) throw new Error(`--tokens: expected integers of at least two chunks (${2 * chunkTokens})`);
  if (hits.some((h) => !(h > 0 && h < 1))) throw new Error('--hits: expected fractions in (0, 1)');
  if (tiers.some((t) => t !== 'dram' && t !== 'nvme')) throw new Error('--tiers: expected dram and/or nvme');
  if (!Number.isSafeInteger(samples) || samples < 1) throw new Error('--samples: expected a positive integer');
  if (samples < 5) console.error(`prefill: ${samples} samples per point (figures to report need at least 5)`);
  const peer = readPeer(values.peer);
  if (peer?.error) console.error(`prefill: the peer's figures are not used: ${peer.error}`);

  const dev = openDevice({ backend: values.backend as 'auto' | 'cuda' | 'cpu' });
  const info = dev.info();
  const maxN = Math.max(...sizes);
  const model = ReferenceModel.create(dev, { ...presets[modelName], seed: Number(values.seed), maxTokens: maxN });
  const L = model.config.layers;
  const vocab = model.config.vocab;
  const computeStream = dev.createStream();
  const hidden = model.allocHidden(maxN);
  const out: DeviceBuffer = dev.allocDevice(maxN * model.config.hidden * 4);
  // Calibration shared by every pipeline of the run (one model, one device).
  const computeModel = new ComputeModel();
  const bandwidth = new BandwidthMeter();
  const drop = new CacheDrop();
  const useNvme = tiers.includes('nvme');
  const storeDir = path.resolve(values.dir!);

  // The reference model's layer as the pipeline's compute, over a prompt size's cache.
  const referenceOver = (cache: KvCache): LayerCompute => (l, w) => {
    const count = w.tokens.length - w.computeFrom;
    if (l === 0) model.embed(w.stream, hidden, Array.prototype.slice.call(w.tokens, w.computeFrom) as number[]);
    model.layer(w.stream, l, { hidden, cache, blocks: w.blocks, start: w.computeFrom, count });
    if (l === L - 1) model.finalNorm(w.stream, out, hidden, count);
  };
  const nothing: LayerCompute = () => undefined;

  const results: Result[] = [];
  const rows: string[][] = [];
  const partRows: string[][] = [];
  const plots: { name: string; svg: string }[] = [];
  const promptOf = (n: number, seed: number): number[] =>
    Array.from({ length: n }, (_, i) => Number((BigInt(i + 1) * 2654435761n + BigInt(seed) * 40503n) % BigInt(vocab)));

  for (const n of sizes) {
    const layout = model.kvLayout({ blockTokens, numBlocks: Math.ceil(n / blockTokens) });
    const cache = dev.allocKvCache(layout);
    const reference = referenceOver(cache);
    const blocks = Array.from({ length: layout.numBlocks }, (_, i) => i);
    // The bare copy beside compute (DRAM tier): the largest plan's bytes, one contiguous piece per layer.
    const layerBytes = layout.bytesPerToken / L;
    const bareMax = tiers.includes('dram') ? Math.floor((Math.max(...hits) * n) / chunkTokens) * chunkTokens * layout.bytesPerToken : 0;
    const bareSrc = bareMax > 0 ? dev.allocPinned(bareMax) : undefined;
    const bareDst = bareMax > 0 ? dev.allocDevice(bareMax) : undefined;
    const bareStream = dev.createStream();
    let bareDone: Promise<void> = Promise.resolve();
    let bareTimes: number[] = []; // each bare copy's device time, ms
    const bareCopy = (tokens: number) => async (): Promise<void> => {
      await bareDone;
      const bytes = tokens * layerBytes;
      const start = bareStream.record({ timing: true });
      for (let l = 0; l < L; l++) bareStream.copy(bareDst!, l * bytes, bareSrc!, l * bytes, bytes);
      const end = bareStream.record({ timing: true });
      bareDone = end.done().then(() => {
        bareTimes.push(end.elapsedSince(start));
      });
    };
    const prefixBytes = layout.bytesPerToken * n * (hits.length + 1);
    if (useNvme) rmSync(storeDir, { recursive: true, force: true });
    if (useNvme) mkdirSync(path.dirname(storeDir), { recursive: true });
    const store = await KvStore.open({
      device: dev, layout, fingerprint: { model: `bench/prefill/${modelName}` }, chunkTokens,
      dir: useNvme ? storeDir : undefined,
      dramBytes: prefixBytes,
      nvmeBytes: useNvme ? prefixBytes : layout.stagingBytes(chunkTokens) * 8,
      admit: useNvme ? 'always' : 'never',
      demoteBacklog: Math.ceil(n / chunkTokens) * (hits.length + 1),
    });
    const pipe = new LayerPipeline({ store, cache, computeStream, lookahead, computeModel, bandwidth });
    // Load-alone runs compute nothing: their own compute model, so that they do not teach the main one.
    const probe = new LayerPipeline({ store, cache, computeStream, lookahead, computeModel: new ComputeModel(), bandwidth });
    // Runs beside the copies teach nothing: their own compute model and meter (the main ones plan adaptive).
    const besidePipe = new LayerPipeline({ store, cache, computeStream, lookahead, computeModel: new ComputeModel(), bandwidth: new BandwidthMeter() });

    /** `samples` prefills that do not save; `before` runs untimed ahead of each. */
    const timed = async (p: LayerPipeline, req: PrefillRequest, before?: () => Promise<void>): Promise<{ ms: Fig; runs: PrefillResult[] }> => {
      const runs: PrefillResult[] = [];
      for (let i = 0; i < samples; i++) {
        await before?.();
        runs.push(await p.prefill({ ...req, save: false }));
      }
      return { ms: fig(runs.map((r) => r.ms)), runs };
    };

    // Calibration: recomputes of an uncached prompt, whole and over held prefixes.
    const cold = promptOf(n, 999);
    for (const held of [0, Math.floor(n / 2), Math.floor((n * 7) / 8)]) {
      for (let i = 0; i < 2; i++) await pipe.prefill({ tokens: cold, blocks, compute: reference, policy: 'recompute', heldTokens: held, save: false });
    }

    // Per tier: load time per token of load-all (for e), per hit.
    const loadPerToken = new Map<Tier, number[]>(tiers.map((t) => [t, []]));
    const points: { tier: Tier; hit: number; frac: number; policy: PrefillPolicy; ms: Fig; modelMs: number }[] = [];
    const recomputeByHit = new Map<number, Fig>();

    for (const hit of hits) {
      const tokens = promptOf(n, Math.round(hit * 1000) + 7 * n);
      const hitTokens = Math.floor((hit * n) / chunkTokens) * chunkTokens;
      const frac = hitTokens / n;
      await pipe.prefill({ tokens: tokens.slice(0, hitTokens + 1), blocks, compute: reference, policy: 'recompute' });
      if (useNvme) await store.flush();
      const base = { tokens, blocks, compute: reference, engine };
      const loadAlones = new Map<string, Awaited<ReturnType<typeof timed>>>();
      const computeAlones = new Map<number, Awaited<ReturnType<typeof timed>>>();
      const besideCopies = new Map<string, { run: Awaited<ReturnType<typeof timed>>; copyMs: number; copyAloneMs: number }>();

      const recompute = await timed(pipe, { ...base, policy: 'recompute' });
      recomputeByHit.set(hit, recompute.ms);
      const peerPt = peer?.points.find((p) => p.tokens === n && Math.abs(p.hit - hit) < 1e-9);
      const peerFields = peerPt
        ? { peerRecomputeMs: peerPt.recomputeMs, peerOverlapMs: peerPt.overlapMs, peerLoadThenComputeMs: peerPt.loadThenComputeMs,
          peerSuffixMs: peerPt.suffixMs, peerLoadMs: peerPt.loadMs, peerPrefixTokens: peerPt.prefixTokens }
        : {};
      results.push({
        metric: `ttft_${n}_${pct(hit)}_recompute`, value: recompute.ms.median, unit: 'ms',
        baseline: peerPt?.recomputeMs ?? null, ratio: ratioOf(recompute.ms.median, peerPt?.recomputeMs ?? null),
        min: recompute.ms.min, max: recompute.ms.max, samples: recompute.ms.samples, tokens: n, hit, hitTokens,
        hostUsPerLayer: median(recompute.runs.map((r) => r.hostMsPerLayer)) * 1e3, ...peerFields,
      });
      rows.push([`${n} ${pct(hit)} recompute`, `${f2(recompute.ms.median)} (${f2(recompute.ms.min)}-${f2(recompute.ms.max)})`, '-', '-', '-', '-', '-',
        (median(recompute.runs.map((r) => r.hostMsPerLayer)) * 1e3).toFixed(0), '1.00', peerPt ? f2(peerPt.recomputeMs / recompute.ms.median) : '-', `0/${hitTokens}`]);
      points.push(...tiers.map((tier) => ({ tier, hit, frac, policy: 'recompute' as PrefillPolicy, ms: recompute.ms, modelMs: recompute.ms.median })));

      for (const tier of tiers) {
        // Cold NVMe: loads in flight (and the promotions they make) finished, the DRAM tier emptied, the page cache dropped.
        const cold = tier === 'nvme'
          ? async (): Promise<void> => {
            await store.flush();
            dropDram(store);
            drop.run();
          }
          : undefined;
        if (tier === 'dram') {
          // The prefix is in DRAM after its put (or its promotion by a cold load).
          const h = store.lookup(tokens);
          const inDram = h.dram * chunkTokens;
          h.release();
          if (inDram < hitTokens) console.error(`prefill: ${n} ${pct(hit)}: ${inDram} of the ${hitTokens} cached tokens are in DRAM`);
        }
        for (const policy of ['load-all', 'adaptive'] as PrefillPolicy[]) {
          const r = await timed(pipe, { ...base, policy }, cold);
          const last = r.runs[r.runs.length - 1]!;
          const plan = last.plan;
          const tiersLoaded = [...new Set(r.runs.flatMap((x) => x.plan.loaded.map((s) => s.tier)))];
          // The halves alone, once per split (adaptive often plans what load-all did; compute alone is the same for every tier).
          const loadKey = `${tier}:${plan.loadFrom}:${plan.loadTokens}`;
          if (plan.loadTokens > 0 && !loadAlones.has(loadKey)) {
            loadAlones.set(loadKey, await timed(probe, { tokens: tokens.slice(0, plan.loadFrom + plan.loadTokens + 1), blocks, compute: nothing, policy: 'load-all' }, cold));
          }
          const loadAlone = plan.loadTokens > 0 ? loadAlones.get(loadKey) : undefined;
          if (plan.computeFrom > 0 && !computeAlones.has(plan.computeFrom)) {
            computeAlones.set(plan.computeFrom, await timed(pipe, { ...base, policy: 'recompute', heldTokens: plan.computeFrom }));
          }
          const computeAlone = plan.computeFrom > 0 ? computeAlones.get(plan.computeFrom)! : recompute;
          const copyKey = `${plan.loadTokens}:${plan.computeFrom}`;
          if (tier === 'dram' && bareSrc && plan.loadTokens > 0 && plan.computeFrom > 0 && !besideCopies.has(copyKey)) {
            // The copy alone (its per-layer time is what the first layer's load would take), then beside the compute.
            bareTimes = [];
            for (let i = 0; i < samples; i++) {
              await bareCopy(plan.loadTokens)();
              await bareDone;
            }
            const copyAloneMs = median(bareTimes);
            bareTimes = [];
            const run = await timed(besidePipe, { ...base, policy: 'recompute', heldTokens: plan.computeFrom }, bareCopy(plan.loadTokens));
            await bareDone;
            besideCopies.set(copyKey, { run, copyMs: median(bareTimes), copyAloneMs });
          }
          const beside = tier === 'dram' ? besideCopies.get(copyKey) : undefined;
          const besideCopy = beside?.run;
          const load = loadAlone ? loadAlone.ms.median / L : 0;
          const comp = computeAlone.ms.median / L;
          const modelMs = L * Math.max(load, comp) + Math.min(load, comp);
          const overlap = loadAlone ? (loadAlone.ms.median + computeAlone.ms.median - r.ms.median) / Math.min(loadAlone.ms.median, computeAlone.ms.median) : null;
          if (policy === 'load-all' && loadAlone && plan.loadTokens > 0) loadPerToken.get(tier)!.push(loadAlone.ms.median / plan.loadTokens);
          // The floor: the compute beside the copies plus the first layer's copy, or the copies plus the last layer's compute.
          const bareFloor = beside && loadAlone
            ? Math.max(beside.run.ms.median + beside.copyAloneMs / L, beside.copyMs + computeAlone.ms.median / L) : null;
          // The store's loads beside the compute against the bare copy of the same bytes beside the same compute.
          const loadBesideMs = tier === 'dram' && plan.loadTokens > 0 ? medianLoadDeviceMs(r.runs) ?? null : null;
          const loadVsBareCopy = beside && loadBesideMs ? beside.copyMs / loadBesideMs : null;
          const bareOverlap = bareFloor !== null && loadAlone
            ? (loadAlone.ms.median + computeAlone.ms.median - bareFloor) / Math.min(loadAlone.ms.median, computeAlone.ms.median) : null;
          const stallUs = median(r.runs.map((x) => x.layers.reduce((s, l) => s + l.stallMs, 0) / x.layers.length)) * 1e3;
          const stallMaxUs = median(r.runs.map((x) => Math.max(...x.layers.map((l) => l.stallMs)))) * 1e3;
          const hostUs = median(r.runs.map((x) => x.hostMsPerLayer)) * 1e3;
          const vsRecompute = recompute.ms.median / r.ms.median;
          const vsPeerOverlap = peerPt ? peerPt.overlapMs / r.ms.median : null;
          const vsPeerRecompute = peerPt ? peerPt.recomputeMs / r.ms.median : null;
          const vsPeerLoadThenCompute = peerPt ? peerPt.loadThenComputeMs / r.ms.median : null;
          const gbps = loadAlone ? (plan.loadTokens * layout.bytesPerToken) / (loadAlone.ms.median / 1e3) / 1e9 : null;
          // Where the time went, against the same suffix computed alone (medians of each part).
          const parts = medianBreakdown(r.runs);
          const aloneParts = medianBreakdown(computeAlone.runs);
          if (parts && aloneParts) partRows.push([`${n} ${pct(hit)} ${tier} ${policy}`, ...PARTS.map((k) => partCell(parts, aloneParts, k))]);
          results.push({
            metric: `ttft_${n}_${pct(hit)}_${tier}_${policy}`, value: r.ms.median, unit: 'ms', baseline: modelMs, ratio: ratioOf(r.ms.median, modelMs),
            min: r.ms.min, max: r.ms.max, samples: r.ms.samples, tokens: n, hit, hitTokens, tier, policy,
            plan: { loadTokens: plan.loadTokens, computeFrom: plan.computeFrom, loaded: plan.loaded, predictedMs: plan.ms, reason: plan.reason },
            tiersLoaded, restarts: r.runs.reduce((s, x) => s + x.restarts.length, 0),
            loadAloneMs: loadAlone?.ms.median ?? 0, loadAloneRange: loadAlone ? [loadAlone.ms.min, loadAlone.ms.max] : null, loadGBps: gbps,
            computeAloneMs: computeAlone.ms.median, computeAloneRange: [computeAlone.ms.min, computeAlone.ms.max],
            modelMs, overlap, computeBesideCopyMs: besideCopy?.ms.median ?? null,
            computeBesideCopyRange: besideCopy ? [besideCopy.ms.min, besideCopy.ms.max] : null,
            bareCopyMs: beside?.copyMs ?? null, bareCopyAloneMs: beside?.copyAloneMs ?? null,
            bareCopyFloorMs: bareFloor, bareCopyOverlap: bareOverlap, loadBesideMs, loadVsBareCopy, stallUsPerLayer: stallUs, stallMaxUsPerLayer: stallMaxUs, hostUsPerLayer: hostUs,
            breakdown: parts ?? null, computeAloneBreakdown: aloneParts ?? null,
            hostEnds: medianHostEnds(r.runs) ?? null, computeAloneHostEnds: medianHostEnds(computeAlone.runs) ?? null,
            speedupVsRecompute: vsRecompute, speedupVsPeerOverlap: vsPeerOverlap, speedupVsPeerRecompute: vsPeerRecompute,
            speedupVsPeerLoadThenCompute: vsPeerLoadThenCompute, ...peerFields,
          });
          points.push({ tier, hit, frac, policy, ms: r.ms, modelMs });
          rows.push([`${n} ${pct(hit)} ${tier} ${policy}`, `${f2(r.ms.median)} (${f2(r.ms.min)}-${f2(r.ms.max)})`, f2(modelMs), f2(r.ms.median / modelMs),
            overlap === null ? '-' : (overlap * 100).toFixed(1), bareOverlap === null ? '-' : (bareOverlap * 100).toFixed(1), stallUs.toFixed(0), hostUs.toFixed(0), f2(vsRecompute), f2(vsPeerOverlap),
            `${plan.loadTokens}/${hitTokens}${tiersLoaded.length ? ` ${tiersLoaded.join('+')}` : ''}`]);
        }
      }
    }

    // Per tier: e = T / R and the crossover a* = e / (1 + e).
    const recomputeMs = median([...recomputeByHit.values()].map((f) => f.median));
    const tPerToken = recomputeMs / n;
    const crossover = new Map<Tier, { e: number; aStar: number }>();
    for (const tier of tiers) {
      const per = loadPerToken.get(tier)!;
      if (per.length === 0) continue;
      const e = tPerToken / median(per);
      crossover.set(tier, { e, aStar: e / (1 + e) });
      results.push({ metric: `crossover_${n}_${tier}`, value: e / (1 + e), unit: 'fraction', baseline: null, ratio: null, e,
        computeUsPerToken: tPerToken * 1e3, loadUsPerToken: median(per) * 1e3, tokens: n, tier });
    }

    if (values.svg) {
      for (const tier of tiers) {
        const pts = points.filter((p) => p.tier === tier);
        const cx = crossover.get(tier);
        const markers = cx ? [{ x: cx.aStar, label: `a* = ${cx.aStar.toFixed(2)} (e = ${cx.e.toFixed(2)})` }] : [];
        const peerPts = (peer?.points ?? []).filter((p) => p.tokens === n).sort((a, b) => a.hit - b.hit);
        const ttft: Series[] = [];
        const speed: Series[] = [];
        for (const policy of POLICIES) {
          const ps = pts.filter((p) => p.policy === policy).sort((a, b) => a.frac - b.frac);
          ttft.push({ name: `${policy}, measured`, points: ps.map((p) => [p.frac, p.ms.median]), ranges: ps.map((p) => [p.ms.min, p.ms.max]) });
          speed.push({ name: `${policy}, measured`, points: ps.map((p) => [p.frac, recomputeByHit.get(p.hit)!.median / p.ms.median]) });
          if (policy !== 'recompute') {
            ttft.push({ name: `${policy}, model`, points: ps.map((p) => [p.frac, p.modelMs]), dashed: true });
            speed.push({ name: `${policy}, model`, points: ps.map((p) => [p.frac, recomputeByHit.get(p.hit)!.median / p.modelMs]), dashed: true });
          }
        }
        if (peerPts.length > 0) {
          ttft.push({ name: 'PyTorch recompute', points: peerPts.map((p) => [p.prefixTokens / n, p.recomputeMs]), color: '#7f7f7f' });
          ttft.push({ name: 'PyTorch overlap (DRAM)', points: peerPts.map((p) => [p.prefixTokens / n, p.overlapMs]), color: '#000000' });
          speed.push({ name: 'PyTorch overlap (DRAM)', points: peerPts.map((p) => [p.prefixTokens / n, p.recomputeMs / p.overlapMs]), color: '#000000' });
        }
        const where = `${modelName}, ${n} tokens, prefix in ${tier === 'dram' ? 'DRAM' : 'NVMe (cold)'}, ${info.name}`;
        plots.push({ name: `prefill-${modelName}-${n}-${tier}-ttft.svg`, svg: linePlot({ title: `TTFT: ${where}`, xLabel: 'cached fraction of the prompt', yLabel: 'TTFT (ms)', series: ttft, markers, xRange: [0, 1] }) });
        plots.push({ name: `prefill-${modelName}-${n}-${tier}-speedup.svg`, svg: linePlot({ title: `Speedup over recompute: ${where}`, xLabel: 'cached fraction of the prompt', yLabel: 'speedup (x)', series: speed, markers, xRange: [0, 1] }) });
      }
    }

    await bareDone;
    await besidePipe.dispose();
    await bareStream.dispose();
    await bareSrc?.dispose();
    await bareDst?.dispose();
    await probe.dispose();
    await pipe.dispose();
    await store.close();
    await cache.dispose();
    if (useNvme) rmSync(storeDir, { recursive: true, force: true });
  }

  await out.dispose();
  await hidden.dispose();
  await model.dispose();
  await computeStream.dispose();
  await dev.dispose();

  const config = {
    model: modelName, shapes: model.config, dtype: model.dtype, tokens: sizes, hits, tiers, samples, chunkTokens, blockTokens, lookahead, engine,
    backend: info.backend, policies: POLICIES,
    nvmeCold: useNvme ? { dramTierDropped: true, pageCacheDrops: { attempts: drop.attempts, failures: drop.failures, error: drop.error } } : null,
    peer: peer ? { file: values.peer, device: peer.device ?? null, error: peer.error ?? null, config: peer.config ?? null } : null,
    notes: [
      'ttft: the prefill\'s wall time on the host clock (call to last layer computed), median of samples with min and max; timed prefills do not save',
      'baseline/ratio of load-all and adaptive: the per-layer model (DESIGN.md section 5) from the same run\'s load alone and compute alone',
      'recompute does not depend on the tier: measured once per (tokens, hit), its baseline is the PyTorch peer\'s recompute',
      'speedupVsPeerOverlap: the peer\'s per-layer overlap (prefix in pinned DRAM) over this TTFT, for the NVMe tier too',
      'computeBesideCopyMs: the suffix computed alone beside a bare copy of the loaded bytes (pinned to HBM, one piece per layer, its own stream); bareCopyMs / bareCopyAloneMs: the copies\' device time beside the compute and alone; bareCopyFloorMs = max(that compute + one layer\'s copy alone, the copies beside + one layer\'s compute alone); bareCopyOverlap: the overlap efficiency at that floor (DRAM tier)',
      'loadBesideMs: the device time of the prefill\'s loads (each layer\'s, start to landed, summed; median of samples); loadVsBareCopy = bareCopyMs / loadBesideMs: the store\'s loads\' rate beside the compute as a fraction of a bare contiguous copy\'s beside the same compute (DRAM tier)',
      'hostEnds / computeAloneHostEnds: host clock medians (ms) from the prefill start to the first compute enqueued, from the last compute enqueued to seen finished, and from then to the result\'s ms taken (bench/lib/breakdown.ts)',
      'breakdown / computeAloneBreakdown: medians of the parts of the wall time (bench/lib/breakdown.ts: outside the device timeline, lead, stall, compute, gaps) of this point and of its suffix computed alone',
    ],
  };
  if (values.json) writeResult(values.json, { bench: 'prefill', device: info.name, config, results });
  if (values.svg) {
    mkdirSync(values.svg, { recursive: true });
    for (const p of plots) writeFileSync(path.join(values.svg, p.name), p.svg);
  }
  if (useNvme && drop.failures > 0) console.error(`prefill: page cache not dropped (${drop.error}); NVMe loads may have read cached pages unless the store reads with O_DIRECT`);
  const head = ['point', 'ttft ms (min-max)', 'model ms', 'ratio', 'overlap %', 'bare-copy overlap %', 'stall us/layer', 'host us/layer', 'x recompute', 'x torch overlap', 'loaded/hit'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  console.log(`prefill: ${modelName} on ${info.name} (${info.backend}), ${samples} samples per point`);
  for (const r of [head, ...rows]) console.log(r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '));
  if (partRows.length > 0) {
    // What each part of the wall time took, with the compute-alone run's in parentheses (ms, medians).
    const ph = ['where (ms): point', 'outside', 'lead', 'stall', 'compute', 'gap'];
    const pw = ph.map((h, i) => Math.max(h.length, ...partRows.map((r) => r[i]!.length)));
    for (const r of [ph, ...partRows]) console.log(r.map((c, i) => (i === 0 ? c.padEnd(pw[i]!) : c.padStart(pw[i]!))).join('  '));
  }
  for (const r of results.filter((x) => x.metric.startsWith('crossover_'))) {
    console.log(`${r.metric}: e = ${(r.e as number).toFixed(3)}, a* = ${r.value.toFixed(3)} (compute ${(r.computeUsPerToken as number).toFixed(2)} us/token, load ${(r.loadUsPerToken as number).toFixed(2)} us/token)`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
