/**
 * Multi-turn replay (issue 16): chats of `--turns` turns whose first prompt
 * is ~2,200 tokens and each later turn appends a ~170-token answer (given
 * tokens, no decoding) and a ~100-token user message, prefilled through
 * LayerPipeline with the reference model as compute. For each count of chats
 * at once (`--chats`, default 1,4,16), all sharing one store (DRAM and NVMe)
 * and one KV cache:
 * - without kvflow: every turn of every chat recomputed from scratch (policy
 *   `recompute`, nothing saved), the same reference compute;
 * - with kvflow: the same turns, the cached prefix loaded as the pipeline
 *   plans (`--policy`, default adaptive), new chunks saved;
 * - with `--restart`: the store is flushed, closed and reopened on the same
 *   directory (the DRAM tier starts empty, NVMe persists), and the same
 *   chats run again through a new pipeline: their first turns hit too.
 * Reported: TTFT per turn p50 / p90 / p99 with kvflow (value) against
 * recompute (baseline), hit and load rates, and per turn index the medians.
 * Each pass starts with a short warm-up prefill (recomputed, not saved) that
 * also gives the pipeline its first compute measurement.
 *
 *   node dist/bench/replay.js [--model tiny|llama-3-8b] [--backend auto|cuda|cpu] [--chats 1,4,16]
 *     [--turns 15] [--first 2200] [--answer 170] [--user 100] [--policy adaptive|load-all|recompute] [--engine auto|dma|kernel]
 *     [--restart] [--dir DIR] [--dram-gib G] [--nvme-gib G] [--json out.json]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { KvStore, LayerPipeline, openDevice, type Device, type HostTerms, type KvCache, type PagedEngine, type PrefillPolicy, type Stream } from '../src/index.js';
import {
  chatPrompts, createModel, longestPrompt, percentile, Prefiller, type ChatModel, type ChatShape,
} from '../src/cli/demo-chat.js';
import type { ReferenceModel } from '../src/reference/index.js';
import { ratioOf, printTable, writeResult, type Result } from './lib/results.js';

interface TurnSample {
  chat: number;
  turn: number;
  promptTokens: number;
  ms: number;
  hitTokens: number;
  loadTokens: number;
  nvmeTokens: number;
  /** The plan's predicted TTFT, its host time per layer, and whether the host's floor decided it. */
  predictedMs: number;
  hostMsPerLayer: number;
  hostBound: boolean;
}

interface Pass {
  name: 'recompute' | 'kvflow' | 'kvflow-restart';
  samples: TurnSample[];
  wallMs: number;
  /** The pipeline's host model at the end of the pass (the planner's host floor per chunk loaded). */
  hostModel?: Readonly<HostTerms>;
}

const GiB = 2 ** 30;

function fail(message: string): never {
  process.stderr.write(`bench/replay: ${message}\n`);
  process.exit(2);
}

function int(value: string, flag: string, min: number): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min) fail(`expected an integer >= ${min} for ${flag}, got '${value}'`);
  return n;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    strict: true,
    options: {
      model: { type: 'string' },
      backend: { type: 'string', default: 'auto' },
      chats: { type: 'string', default: '1,4,16' },
      turns: { type: 'string', default: '15' },
      first: { type: 'string', default: '2200' },
      answer: { type: 'string', default: '170' },
      user: { type: 'string', default: '100' },
      policy: { type: 'string', default: 'adaptive' },
      engine: { type: 'string', default: 'auto' },
      restart: { type: 'boolean', default: false },
      dir: { type: 'string' },
      'dram-gib': { type: 'string' },
      'nvme-gib': { type: 'string' },
      json: { type: 'string' },
    },
  });
  const backend = values.backend;
  if (backend !== 'auto' && backend !== 'cuda' && backend !== 'cpu') fail(`expected auto, cuda or cpu for --backend, got '${backend}'`);
  const policy = values.policy as PrefillPolicy;
  if (!['adaptive', 'load-all', 'recompute'].includes(policy)) fail(`expected adaptive, load-all or recompute for --policy, got '${policy}'`);
  const engine = values.engine as PagedEngine;
  if (!['auto', 'dma', 'kernel'].includes(engine)) fail(`expected auto, dma or kernel for --engine, got '${engine}'`);
  const chatCounts = values.chats.split(',').map((c) => int(c.trim(), '--chats', 1));
  const shape: ChatShape = {
    turns: int(values.turns, '--turns', 1), firstTokens: int(values.first, '--first', 1),
    answerTokens: int(values.answer, '--answer', 0), userTokens: int(values.user, '--user', 1),
  };
  const dev = openDevice({ backend });
  const info = dev.info();
  const preset = (values.model ?? (dev.backend === 'cuda' ? 'llama-3-8b' : 'tiny')) as ChatModel;
  if (preset !== 'tiny' && preset !== 'llama-3-8b') fail(`expected tiny or llama-3-8b for --model, got '${preset}'`);
  const longest = longestPrompt(shape);
  const model = createModel(dev, preset, longest);
  const chunkTokens = preset === 'tiny' ? 64 : 256;
  const blockTokens = 16;
  const results: Result[] = [];
  const runs: Record<string, unknown>[] = [];
  try {
    for (const chats of chatCounts) {
      const passes = await replay(dev, model, { shape, chats, chunkTokens, blockTokens, policy, engine, restart: values.restart, dir: values.dir,
        dramGiB: values['dram-gib'] === undefined ? undefined : Number(values['dram-gib']),
        nvmeGiB: values['nvme-gib'] === undefined ? undefined : Number(values['nvme-gib']) });
      const { rows, summary } = summarize(chats, shape.turns, passes);
      results.push(...rows);
      runs.push(summary);
    }
  } finally {
    await model.dispose();
    await dev.dispose();
  }
  const config = {
    model: preset, layers: model.config.layers, dtype: model.dtype, backend: info.backend, chats: chatCounts, ...shape,
    longestPrompt: longest, chunkTokens, blockTokens, policy, engine, restart: values.restart, runs,
  };
  if (values.json) writeResult(values.json, { bench: 'replay', device: info.name, config, results });
  for (const run of runs) printTurns(run);
  printTable(results);
}

interface ReplayOptions {
  shape: ChatShape;
  chats: number;
  chunkTokens: number;
  blockTokens: number;
  policy: PrefillPolicy;
  engine: PagedEngine;
  restart: boolean;
  dir: string | undefined;
  dramGiB: number | undefined;
  nvmeGiB: number | undefined;
}

/** One chat count: the recompute pass, the kvflow pass, and the pass after a restart when asked. */
async function replay(dev: Device, model: ReferenceModel, o: ReplayOptions): Promise<Pass[]> {
  const longest = longestPrompt(o.shape);
  const perPrompt = Math.ceil(longest / o.blockTokens);
  const layout = model.kvLayout({ blockTokens: o.blockTokens, numBlocks: o.chats * perPrompt + 16 });
  const cache = dev.allocKvCache(layout);
  const stream = dev.createStream();
  const parent = o.dir ?? os.tmpdir();
  const dir = mkdtempSync(path.join(parent, `kvflow-replay-${o.chats}-`));
  const kvBytes = o.chats * (longest + o.chunkTokens) * layout.bytesPerToken;
  const storeOptions = {
    device: dev, layout, dir, chunkTokens: o.chunkTokens,
    dramBytes: o.dramGiB !== undefined ? Math.round(o.dramGiB * GiB) : Math.ceil(1.25 * kvBytes),
    nvmeBytes: o.nvmeGiB !== undefined ? Math.round(o.nvmeGiB * GiB) : 2 * kvBytes + 16 * layout.stagingBytes(o.chunkTokens),
    demoteBacklog: 1 << 16, preallocateDram: true,
    fingerprint: { model: `bench/replay-${model.config.layers}x${model.config.hidden}`, revision: 'seed-1' },
  };
  const prompts = Array.from({ length: o.chats }, (_, c) => chatPrompts(o.shape, 100 + c, model.config.vocab));
  const blocks = Array.from({ length: o.chats }, (_, c) => Array.from({ length: perPrompt }, (_, i) => c * perPrompt + i));
  const passes: Pass[] = [];
  let store = await KvStore.open(storeOptions);
  try {
    passes.push(await runPass('recompute', dev, model, store, cache, stream, prompts, blocks, 'recompute', false));
    passes.push(await runPass('kvflow', dev, model, store, cache, stream, prompts, blocks, o.policy, true, o.engine));
    if (o.restart) {
      await store.flush();
      await store.close();
      store = await KvStore.open(storeOptions);
      passes.push(await runPass('kvflow-restart', dev, model, store, cache, stream, prompts, blocks, o.policy, true, o.engine));
    }
  } finally {
    await store.close();
    await stream.dispose();
    await cache.dispose();
    rmSync(dir, { recursive: true, force: true });
  }
  return passes;
}

/** Every chat's turns in order, the chats at once, through one new pipeline over the store. */
async function runPass(
  name: Pass['name'], dev: Device, model: ReferenceModel, store: KvStore, cache: KvCache, stream: Stream,
  prompts: number[][][], blocks: number[][], policy: PrefillPolicy, save: boolean, engine: PagedEngine = 'auto',
): Promise<Pass> {
  const pipeline = new LayerPipeline({ store, cache, computeStream: stream });
  const prefillers = prompts.map(() => new Prefiller(dev, model, cache, pipeline, stream));
  const samples: TurnSample[] = [];
  try {
    const warm = chatPrompts({ turns: 1, firstTokens: Math.min(256, model.maxTokens), answerTokens: 0, userTokens: 1 }, 7, model.config.vocab)[0]!;
    await prefillers[0]!.run(warm, blocks[0]!, { policy: 'recompute', save: false, read: false });
    const t0 = performance.now();
    await Promise.all(prompts.map(async (turns, chat) => {
      for (let turn = 0; turn < turns.length; turn++) {
        const tokens = turns[turn]!;
        const { result } = await prefillers[chat]!.run(tokens, blocks[chat]!, { policy, engine, save, read: false });
        samples.push({
          chat, turn: turn + 1, promptTokens: tokens.length, ms: result.ttftMs, hitTokens: result.hitTokens, loadTokens: result.plan.loadTokens,
          nvmeTokens: result.plan.loaded.filter((x) => x.tier === 'nvme').reduce((a, x) => a + x.tokens, 0),
          predictedMs: result.plan.ms, hostMsPerLayer: result.plan.hostMsPerLayer, hostBound: result.plan.reason.includes('host-bound'),
        });
      }
    }));
    return { name, samples, wallMs: performance.now() - t0, hostModel: { ...pipeline.hostModel.terms } };
  } finally {
    await Promise.all(prefillers.map((p) => p.dispose()));
    await pipeline.dispose();
  }
}

const sum = (xs: number[]): number => xs.reduce((a, x) => a + x, 0);

/** Result rows (DESIGN.md section 5) of one chat count, and a summary with per-turn medians for the config. */
function summarize(chats: number, turns: number, passes: Pass[]): { rows: Result[]; summary: Record<string, unknown> } {
  const base = passes.find((p) => p.name === 'recompute')!;
  const rows: Result[] = [];
  const summary: Record<string, unknown> = { chats };
  const baseMs = base.samples.map((s) => s.ms);
  for (const pass of passes.filter((p) => p.name !== 'recompute')) {
    const tag = pass.name === 'kvflow' ? '' : '_restart';
    const ms = pass.samples.map((s) => s.ms);
    for (const p of [50, 90, 99]) {
      const value = percentile(ms, p);
      const baseline = percentile(baseMs, p);
      rows.push({ metric: `ttft_p${p}${tag}_chats${chats}`, value, unit: 'ms', baseline, ratio: ratioOf(value, baseline), speedup: baseline / value, samples: ms.length });
    }
    // The goal reads turns 2-15 (a chat's later turns, whose prefix is its own earlier turns).
    const later = pass.samples.filter((s) => s.turn > 1).map((s) => s.ms);
    const laterBase = base.samples.filter((s) => s.turn > 1).map((s) => s.ms);
    if (later.length > 0) {
      const value = percentile(later, 50);
      const baseline = percentile(laterBase, 50);
      rows.push({ metric: `ttft_p50_later_turns${tag}_chats${chats}`, value, unit: 'ms', baseline, ratio: ratioOf(value, baseline), speedup: baseline / value, samples: later.length });
    }
    const prompt = sum(pass.samples.map((s) => s.promptTokens));
    const firsts = pass.samples.filter((s) => s.turn === 1);
    rows.push({ metric: `hit_rate${tag}_chats${chats}`, value: sum(pass.samples.map((s) => s.hitTokens)) / prompt, unit: 'cached tokens / prompt tokens', baseline: null, ratio: null });
    rows.push({ metric: `load_rate${tag}_chats${chats}`, value: sum(pass.samples.map((s) => s.loadTokens)) / prompt, unit: 'loaded tokens / prompt tokens', baseline: null, ratio: null,
      fromNvme: sum(pass.samples.map((s) => s.nvmeTokens)) / prompt });
    rows.push({ metric: `first_turn_hit_rate${tag}_chats${chats}`, value: sum(firsts.map((s) => s.hitTokens)) / sum(firsts.map((s) => s.promptTokens)), unit: 'cached tokens / prompt tokens', baseline: null, ratio: null });
    rows.push({ metric: `turns_hit${tag}_chats${chats}`, value: pass.samples.filter((s) => s.hitTokens > 0).length / pass.samples.length, unit: 'share of turns', baseline: null, ratio: null });
    summary[pass.name] = {
      wallMs: pass.wallMs,
      hostModel: pass.hostModel,
      perTurn: Array.from({ length: turns }, (_, i) => {
        const at = pass.samples.filter((s) => s.turn === i + 1);
        const ref = base.samples.filter((s) => s.turn === i + 1);
        return {
          turn: i + 1, promptTokens: at[0]?.promptTokens, ttftMs: percentile(at.map((s) => s.ms), 50), recomputeMs: percentile(ref.map((s) => s.ms), 50),
          hitRate: sum(at.map((s) => s.hitTokens)) / sum(at.map((s) => s.promptTokens)), loadRate: sum(at.map((s) => s.loadTokens)) / sum(at.map((s) => s.promptTokens)),
          // The plans behind those TTFTs: medians over the chats, and how many the host's floor decided.
          predictedMs: percentile(at.map((s) => s.predictedMs), 50), hostMsPerLayer: percentile(at.map((s) => s.hostMsPerLayer), 50),
          hostBound: at.filter((s) => s.hostBound).length,
        };
      }),
    };
  }
  summary.recompute = { wallMs: base.wallMs };
  return { rows, summary };
}

function printTurns(run: Record<string, unknown>): void {
  for (const name of ['kvflow', 'kvflow-restart']) {
    const pass = run[name] as { perTurn: { turn: number; promptTokens: number; ttftMs: number; recomputeMs: number; hitRate: number; loadRate: number }[] } | undefined;
    if (!pass) continue;
    console.log(`${run.chats} chat(s), ${name}: median per turn`);
    console.log('turn  prompt  TTFT kvflow  recompute  speedup  hit   loaded');
    for (const t of pass.perTurn) {
      console.log(`${String(t.turn).padStart(4)}  ${String(t.promptTokens).padStart(6)}  ${t.ttftMs.toFixed(2).padStart(8)} ms  ${t.recomputeMs.toFixed(2).padStart(6)} ms  ${
        (t.recomputeMs / t.ttftMs).toFixed(2).padStart(6)}x  ${(t.hitRate * 100).toFixed(0).padStart(3)}%  ${(t.loadRate * 100).toFixed(0).padStart(3)}%`);
    }
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
