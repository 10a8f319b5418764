/**
 * The chat `kvflow demo` runs: a reference model, a paged KV cache, a store
 * and a LayerPipeline on one device; every turn prefilled twice (recomputed
 * from scratch, and through kvflow) and compared.
 */
import type { Device } from '../device/device.js';
import type { PagedEngine } from '../layout/kvcache.js';
import type { PrefillPolicy } from '../model/plan.js';
import { LayerPipeline, type PrefillResult } from '../pipeline/pipeline.js';
import type { ReferenceModel } from '../reference/model.js';
import { KvStore } from '../store/store.js';
import {
  chatPrompts, checkTolerance, createModel, longestPrompt, maxRelDiff, Prefiller, type ChatModel, type ChatShape, type TurnRun,
} from './demo-chat.js';
import type { DemoReport, DemoTimeline, DemoTurn } from './demo-report.js';
import type { Progress } from './progress.js';

/** The run was stopped by a signal. */
export class Interrupted extends Error {}

/** The chat's shape: a first prompt like a system prompt plus a question, then per turn an answer and a follow-up. */
export function chatShape(turns: number, firstTokens: number): ChatShape {
  return { turns, firstTokens, answerTokens: 170, userTokens: 100 };
}

interface ChatSession {
  dev: Device;
  model: ReferenceModel;
  store: KvStore;
  pipeline: LayerPipeline;
  prefiller: Prefiller;
}

/** What a chat run takes: the demo's flags that shape it, and where it runs. */
export interface ChatRun {
  turns: number;
  firstTokens: number;
  model: ChatModel | undefined;
  policy: PrefillPolicy;
  /** The engine of kvflow's loads (`auto`: the pipeline's rule). */
  engine?: PagedEngine;
  dir: string;
  temporary: boolean;
  signal: AbortSignal;
  progress: Progress;
  /** Why the backend was chosen, when it is not the device's own reason. */
  reason?: string;
}

/** Runs the chat on `dev`; rejects with Interrupted once `signal` aborts. */
export async function chat(f: ChatRun, dev: Device): Promise<DemoReport> {
  const { dir, temporary, signal, progress } = f;
  const t0 = performance.now();
  const preset: ChatModel = f.model ?? (dev.backend === 'cuda' ? 'llama-3-8b' : 'tiny');
  const shape = chatShape(f.turns, f.firstTokens);
  const longest = longestPrompt(shape);
  progress.step(`building the ${preset} reference model's weights`, preset !== 'tiny');
  const model = createModel(dev, preset, longest);
  const blockTokens = 16;
  const chunkTokens = preset === 'tiny' ? 64 : 256;
  const perPrompt = Math.ceil(longest / blockTokens);
  const layout = model.kvLayout({ blockTokens, numBlocks: 2 * perPrompt + 16 });
  const cache = dev.allocKvCache(layout);
  const computeStream = dev.createStream();
  const kvBytes = layout.bytesPerToken * (longest + chunkTokens);
  const store = await KvStore.open({
    device: dev, layout, dir, chunkTokens, dramBytes: 2 * kvBytes, nvmeBytes: 2 * kvBytes + 8 * layout.stagingBytes(chunkTokens),
    // Pinned once here, not 256 MiB at a time inside the first turns' puts (about 90 ms a step on an H100).
    preallocateDram: true,
    fingerprint: { model: `kvflow/reference-${preset}`, revision: 'seed-1' },
  });
  const pipeline = new LayerPipeline({ store, cache, computeStream });
  const prefiller = new Prefiller(dev, model, cache, pipeline, computeStream);
  const s: ChatSession = { dev, model, store, pipeline, prefiller };
  const info = dev.info();
  const report: DemoReport = {
    ok: false,
    device: { backend: dev.backend, name: info.name, reason: f.reason ?? dev.selection.reason },
    model: { preset, layers: model.config.layers, hidden: model.config.hidden, heads: model.config.heads, kvHeads: model.config.kvHeads, dtype: model.dtype },
    chat: shape,
    store: { dir, temporary, chunkTokens, blockTokens },
    turns: [],
    wallMs: 0,
  };
  try {
    const check = (): void => {
      if (signal.aborted) throw new Interrupted('interrupted');
    };
    const shuffled = (): number[] => {
      const all = Array.from({ length: layout.numBlocks }, (_, i) => i);
      for (let i = all.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [all[i], all[j]] = [all[j]!, all[i]!];
      }
      return all;
    };
    // Warm-up: a short prefill, recomputed and not saved, so the first turn's
    // timings do not include the backend's first-use costs; it also gives the
    // pipeline its first compute measurement.
    progress.step('warming up');
    const warm = chatPrompts({ ...shape, turns: 1, firstTokens: Math.min(256, longest) }, 999, model.config.vocab)[0]!;
    await prefiller.run(warm, shuffled().slice(0, perPrompt), { policy: 'recompute', save: false, read: false, signal });
    check();

    const prompts = chatPrompts(shape, 1, model.config.vocab);
    const tol = checkTolerance(model.dtype);
    for (let t = 0; t < prompts.length; t++) {
      const tokens = prompts[t]!;
      // Fresh blocks for both prefills of every turn: what kvflow's prefill
      // reads of the prefix it must have loaded, not found left over.
      const perm = shuffled();
      const recomputeBlocks = perm.slice(0, perPrompt);
      const kvflowBlocks = perm.slice(perPrompt, 2 * perPrompt);
      progress.step(`turn ${t + 1}/${prompts.length}: recomputing ${tokens.length} tokens from scratch`);
      const ref = await prefiller.run(tokens, recomputeBlocks, { policy: 'recompute', save: false, read: true, signal });
      check();
      progress.step(`turn ${t + 1}/${prompts.length}: prefill through kvflow`);
      const kv = await prefiller.run(tokens, kvflowBlocks, { policy: f.policy, engine: f.engine, save: true, read: true, signal });
      check();
      progress.step(`turn ${t + 1}/${prompts.length}: checking`);
      report.turns.push(await turnReport(s, t + 1, tokens, kv, ref, tol, f.engine ?? 'auto'));
      check();
    }
    report.ok = report.turns.every((t) => t.check.ok && t.predicted.kvflow === t.predicted.recompute);
    return report;
  } finally {
    progress.done();
    report.wallMs = performance.now() - t0;
    await prefiller.dispose().catch(() => undefined);
    await pipeline.dispose();
    await store.flush().catch(() => undefined);
    await store.close();
    await computeStream.dispose();
    await cache.dispose();
    await model.dispose();
  }
}

async function turnReport(s: ChatSession, turn: number, tokens: number[], kv: TurnRun, ref: TurnRun, tol: number, engine: PagedEngine): Promise<DemoTurn> {
  const hidden = s.model.config.hidden;
  const from = kv.result.plan.computeFrom;
  // The recompute computed every token; kvflow the tokens from `from` on.
  const want = ref.out!.subarray(from * hidden, tokens.length * hidden);
  const have = kv.out!.subarray(0, kv.computed * hidden);
  const diff = maxRelDiff(have, want);
  const lastRow = (a: Float32Array): Float32Array => a.subarray(a.length - hidden);
  const [a, b] = await s.prefiller.nextTokens([lastRow(have), lastRow(ref.out!.subarray(0, tokens.length * hidden))]);
  const predicted = { kvflow: a!, recompute: b! };
  const p = kv.result.plan;
  return {
    turn,
    promptTokens: tokens.length,
    hit: { tokens: kv.result.hitTokens, rate: kv.result.hitTokens / tokens.length },
    plan: {
      policy: p.policy, engine, loadTokens: p.loadTokens, loaded: p.loaded.map((x) => ({ tier: x.tier, tokens: x.tokens })),
      computeFrom: p.computeFrom, computeTokens: p.computeTokens, predictedMs: p.ms, reason: p.reason,
    },
    ttftMs: { kvflow: kv.result.ttftMs, recompute: ref.result.ttftMs },
    speedup: ref.result.ttftMs / kv.result.ttftMs,
    predicted,
    check: { maxRelDiff: diff, tolerance: tol, ok: diff <= tol },
    restarts: kv.result.restarts.length,
    saved: kv.result.saved,
    timeline: { kvflow: timelineOf(kv.result), recompute: timelineOf(ref.result) },
  };
}

function medianOf(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? 0 : s[Math.floor(s.length / 2)]!;
}

function timelineOf(r: PrefillResult): DemoTimeline {
  return {
    timeSource: r.timeSource,
    computeMsMedian: medianOf(r.layers.map((l) => l.computeMs)),
    loadMsMedian: medianOf(r.layers.map((l) => l.loadMs)),
    stallMs: r.layers.reduce((a, l) => a + l.stallMs, 0),
    hostUs: { own: r.host.ownMsPerLayer * 1e3, store: r.host.storeMsPerLayer * 1e3, compute: r.host.computeMsPerLayer * 1e3 },
  };
}

