/**
 * `kvflow demo`: the job kvflow exists for, end to end on this host. A short
 * multi-turn chat runs on a temporary store through LayerPipeline with the
 * reference model as compute (Llama-3-8B shapes on a GPU, the tiny model on
 * the CPU backend). Every turn is prefilled twice: recomputed from scratch
 * (what a runtime without kvflow does) and through kvflow (the cached prefix
 * loaded, the rest computed); the final hidden states of both must agree.
 * `--store-check` runs the store-and-load byte check instead.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import type { Device } from '../device/device.js';
import { openDevice } from '../index.js';
import { KvflowError } from '../errors.js';
import type { PrefillPolicy } from '../model/plan.js';
import { LayerPipeline } from '../pipeline/pipeline.js';
import type { ReferenceModel } from '../reference/model.js';
import { KvStore } from '../store/store.js';
import {
  chatPrompts, checkTolerance, createModel, longestPrompt, maxRelDiff, Prefiller, type ChatModel, type ChatShape, type TurnRun,
} from './demo-chat.js';
import { runStoreCheck } from './demo-store-check.js';

export const DEMO_USAGE = `usage: kvflow demo [options]

A multi-turn chat on a temporary store, through LayerPipeline with the
reference model as compute (Llama-3-8B shapes on a GPU, the tiny model on the
CPU backend). Per turn: time to first token with kvflow and recomputed from
scratch, the store hit, the plan (tokens loaded / computed), the next token
the model predicts, and the check that the final hidden states equal a full
recompute.

options:
  --turns N          turns of the chat (default 4; 1 to 15)
  --model M          tiny | llama-3-8b (default: llama-3-8b on CUDA, tiny on CPU)
  --backend B        auto | cuda | cpu (default auto)
  --policy P         adaptive | load-all | recompute, kvflow's prefills (default adaptive)
  --dir DIR          store directory, kept afterwards (default: a temporary one, removed)
  --json             the same as one JSON object on stdout
  --store-check      instead: store a prompt's KV (Llama-3-8B-shaped), reopen the
                     store, load it back layer by layer from NVMe and DRAM, check every byte
  --tokens N         prompt tokens of --store-check (default 2048; 256 to 32768)
  -h, --help         this text
`;

/** A usage error: the message names the flag, the command exits 2. */
class UsageError extends Error {}

interface DemoFlags {
  turns: number;
  model: ChatModel | undefined;
  backend: 'auto' | 'cuda' | 'cpu' | undefined;
  policy: PrefillPolicy;
  dir: string | undefined;
  json: boolean;
  storeCheck: boolean;
  tokens: number;
  help: boolean;
}

function oneOf<T extends string>(value: string | undefined, flag: string, allowed: readonly T[]): T | undefined {
  if (value === undefined) return undefined;
  if (!(allowed as readonly string[]).includes(value)) throw new UsageError(`expected ${allowed.join(', ')} for ${flag}, got '${value}'`);
  return value as T;
}

function intFlag(value: string | undefined, flag: string, min: number, max: number, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) throw new UsageError(`expected an integer from ${min} to ${max} for ${flag}, got '${value}'`);
  return n;
}

function parseFlags(args: string[]): DemoFlags {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        turns: { type: 'string' },
        model: { type: 'string' },
        backend: { type: 'string' },
        policy: { type: 'string' },
        dir: { type: 'string' },
        json: { type: 'boolean' },
        'store-check': { type: 'boolean' },
        tokens: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const storeCheck = values['store-check'] ?? false;
  if (values.tokens !== undefined && !storeCheck) throw new UsageError('--tokens applies to --store-check only');
  if (storeCheck) {
    for (const f of ['turns', 'model', 'policy', 'json'] as const) {
      if (values[f] !== undefined) throw new UsageError(`--${f} does not apply to --store-check`);
    }
  }
  return {
    turns: intFlag(values.turns, '--turns', 1, 15, 4),
    model: oneOf(values.model, '--model', ['tiny', 'llama-3-8b'] as const),
    backend: oneOf(values.backend, '--backend', ['auto', 'cuda', 'cpu'] as const),
    policy: oneOf(values.policy, '--policy', ['adaptive', 'load-all', 'recompute'] as const) ?? 'adaptive',
    dir: values.dir,
    json: values.json ?? false,
    storeCheck,
    tokens: intFlag(values.tokens, '--tokens', 256, 32768, 2048),
    help: values.help ?? false,
  };
}

/** One turn of the demo, as `--json` reports it. */
export interface DemoTurn {
  turn: number;
  promptTokens: number;
  /** Cached tokens the store held for this prompt (whole chunks of its start), and their share of it. */
  hit: { tokens: number; rate: number };
  /** What kvflow's prefill did: tokens loaded per tier, tokens computed, and why. */
  plan: { policy: PrefillPolicy; loadTokens: number; loaded: { tier: string; tokens: number }[]; computeFrom: number; computeTokens: number; predictedMs: number; reason: string };
  /** Time to first token in ms (the whole prefill: embedding, every layer, final norm; saves to DRAM included). */
  ttftMs: { kvflow: number; recompute: number };
  /** recompute / kvflow. */
  speedup: number;
  /** The next token each prefill's last hidden state predicts. */
  predicted: { kvflow: number; recompute: number };
  /** Final hidden states of the computed tokens against the full recompute's. */
  check: { maxRelDiff: number; tolerance: number; ok: boolean };
  restarts: number;
  /** Chunks the turn added to the store. */
  saved: number;
}

/** What `kvflow demo --json` prints. */
export interface DemoReport {
  ok: boolean;
  device: { backend: string; name: string; reason: string };
  model: { preset: ChatModel; layers: number; hidden: number; heads: number; kvHeads: number; dtype: string };
  chat: ChatShape;
  store: { dir: string; temporary: boolean; chunkTokens: number; blockTokens: number };
  turns: DemoTurn[];
  wallMs: number;
}

/** A progress line on stderr for steps over a second, when stderr is a terminal. */
class Progress {
  readonly #tty = process.stderr.isTTY === true;
  #timer: NodeJS.Timeout | undefined;
  #shown = false;

  step(label: string, now = false): void {
    this.done();
    if (!this.#tty) return;
    const t0 = performance.now();
    const draw = (): void => {
      this.#shown = true;
      process.stderr.write(`\r\x1b[K${label} (${((performance.now() - t0) / 1000).toFixed(0)} s)`);
    };
    if (now) draw();
    this.#timer = setTimeout(() => {
      draw();
      this.#timer = setInterval(draw, 500);
      this.#timer.unref();
    }, 1000);
    this.#timer.unref();
  }

  done(): void {
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = undefined;
    if (this.#shown) process.stderr.write('\r\x1b[K');
    this.#shown = false;
  }
}

class Interrupted extends Error {}

/** The chat's shape per model: a first prompt like a system prompt plus a question, then answers and follow-ups. */
function chatShape(turns: number): ChatShape {
  return { turns, firstTokens: 2200, answerTokens: 170, userTokens: 100 };
}

const fmtMs = (ms: number): string => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));

/** The human-readable report. */
export function formatDemo(r: DemoReport): string {
  const lines: string[] = [];
  const m = r.model;
  lines.push(`device     ${r.device.backend}: ${r.device.name} (${r.device.reason})`);
  lines.push(`model      reference ${m.preset}: ${m.layers} layers, width ${m.hidden}, ${m.heads} heads / ${m.kvHeads} KV heads, ${m.dtype}, random weights`);
  lines.push(`chat       ${r.chat.turns} turns: a ${r.chat.firstTokens}-token first prompt, then each turn appends a ${r.chat.answerTokens}-token answer and a ${r.chat.userTokens}-token message`);
  lines.push(`store      ${r.store.temporary ? 'temporary ' : ''}${r.store.dir}: ${r.store.chunkTokens}-token chunks in DRAM and on NVMe`);
  lines.push('');
  const head = ['turn', 'prompt', 'hit', 'loaded', 'computed', 'TTFT kvflow', 'recompute', 'speedup', 'next token', 'max|diff|/max|ref|'];
  const rows = r.turns.map((t) => [
    String(t.turn), String(t.promptTokens), `${t.hit.tokens} (${(t.hit.rate * 100).toFixed(0)}%)`,
    String(t.plan.loadTokens), String(t.plan.computeTokens),
    `${fmtMs(t.ttftMs.kvflow)} ms`, `${fmtMs(t.ttftMs.recompute)} ms`, `${t.speedup.toFixed(2)}x`,
    t.predicted.kvflow === t.predicted.recompute ? `${t.predicted.kvflow} (both)` : `${t.predicted.kvflow} vs ${t.predicted.recompute}`,
    `${t.check.maxRelDiff.toExponential(1)} ${t.check.ok ? 'ok' : 'FAIL'}`,
  ]);
  const widths = head.map((h, c) => Math.max(h.length, ...rows.map((row) => row[c]!.length)));
  for (const row of [head, ...rows]) lines.push(row.map((cell, c) => (c === 8 || c === 9 ? cell.padEnd(widths[c]!) : cell.padStart(widths[c]!))).join('  ').trimEnd());
  lines.push('');
  for (const t of r.turns) lines.push(`turn ${t.turn}    ${t.plan.reason}`);
  lines.push('');
  const tol = r.turns[0]?.check.tolerance ?? 0;
  const bad = r.turns.filter((t) => !t.check.ok).map((t) => t.turn);
  lines.push(bad.length === 0
    ? `verified   every turn's final hidden states equal a full recompute (max|diff|/max|ref| <= ${tol.toExponential(0)}), with the same next token`
    : `FAILED     turns ${bad.join(', ')}: final hidden states differ from a full recompute by more than ${tol.toExponential(0)}`);
  lines.push(`wall time  ${(r.wallMs / 1000).toFixed(1)} s`);
  return `${lines.join('\n')}\n`;
}

interface ChatSession {
  dev: Device;
  model: ReferenceModel;
  store: KvStore;
  pipeline: LayerPipeline;
  prefiller: Prefiller;
}

async function chat(f: DemoFlags, dev: Device, dir: string, temporary: boolean, signal: AbortSignal, progress: Progress, note: string): Promise<DemoReport> {
  const t0 = performance.now();
  const preset: ChatModel = f.model ?? (dev.backend === 'cuda' ? 'llama-3-8b' : 'tiny');
  const shape = chatShape(f.turns);
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
    fingerprint: { model: `kvflow/reference-${preset}`, revision: 'seed-1' },
  });
  const pipeline = new LayerPipeline({ store, cache, computeStream });
  const prefiller = new Prefiller(dev, model, cache, pipeline, computeStream);
  const s: ChatSession = { dev, model, store, pipeline, prefiller };
  const info = dev.info();
  const report: DemoReport = {
    ok: false,
    device: { backend: dev.backend, name: info.name, reason: `${dev.selection.reason}${note}` },
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
      const kv = await prefiller.run(tokens, kvflowBlocks, { policy: f.policy, save: true, read: true, signal });
      check();
      progress.step(`turn ${t + 1}/${prompts.length}: checking`);
      report.turns.push(await turnReport(s, t + 1, tokens, kv, ref, tol));
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

async function turnReport(s: ChatSession, turn: number, tokens: number[], kv: TurnRun, ref: TurnRun, tol: number): Promise<DemoTurn> {
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
      policy: p.policy, loadTokens: p.loadTokens, loaded: p.loaded.map((x) => ({ tier: x.tier, tokens: x.tokens })),
      computeFrom: p.computeFrom, computeTokens: p.computeTokens, predictedMs: p.ms, reason: p.reason,
    },
    ttftMs: { kvflow: kv.result.ttftMs, recompute: ref.result.ttftMs },
    speedup: ref.result.ttftMs / kv.result.ttftMs,
    predicted,
    check: { maxRelDiff: diff, tolerance: tol, ok: diff <= tol },
    restarts: kv.result.restarts.length,
    saved: kv.result.saved,
  };
}

/** `kvflow demo [options]`: exit 0 when every check passed, 1 when one failed, 2 on a usage error, 130 when interrupted. */
export async function runDemo(args: string[]): Promise<number> {
  let f: DemoFlags;
  try {
    f = parseFlags(args);
  } catch (e) {
    if (!(e instanceof UsageError)) throw e;
    process.stderr.write(`kvflow demo: ${e.message}\n(kvflow demo --help lists the options)\n`);
    return 2;
  }
  if (f.help) {
    process.stdout.write(DEMO_USAGE);
    return 0;
  }
  if (f.storeCheck) return runStoreCheck({ tokens: f.tokens, dir: f.dir, backend: f.backend });

  const temporary = f.dir === undefined;
  const dir = f.dir ?? mkdtempSync(path.join(os.tmpdir(), 'kvflow-demo-'));
  const controller = new AbortController();
  let force: NodeJS.Timeout | undefined;
  const onSignal = (sig: NodeJS.Signals): void => {
    if (controller.signal.aborted) return;
    process.stderr.write(`${process.stderr.isTTY ? '\r\x1b[K' : ''}${sig === 'SIGINT' ? 'interrupted' : sig}: stopping${temporary ? ' and removing the temporary store' : ''}\n`);
    controller.abort();
    // Should the prefill in flight not end promptly, remove the store anyway.
    force = setTimeout(() => {
      if (temporary) rmSync(dir, { recursive: true, force: true });
      process.exit(130);
    }, 5000);
    force.unref();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const progress = new Progress();
  let dev: Device | undefined;
  try {
    progress.step('opening the device');
    dev = openDevice(f.backend ? { backend: f.backend } : {});
    let report: DemoReport;
    try {
      report = await chat(f, dev, dir, temporary, controller.signal, progress, '');
    } catch (e) {
      // A build whose CUDA backend has no reference model: the chat runs on
      // the CPU backend, unless CUDA was asked for.
      if (!(e instanceof KvflowError && e.code === 'ERR_UNSUPPORTED' && dev.backend === 'cuda' && f.backend !== 'cuda')) throw e;
      await dev.dispose();
      dev = openDevice({ backend: 'cpu' });
      report = await chat({ ...f, model: 'tiny' }, dev, dir, temporary, controller.signal, progress,
        `; the CUDA backend of this build has no reference model (${e.message}), so the CPU backend runs the chat`);
    }
    process.stdout.write(f.json ? `${JSON.stringify(report, null, 2)}\n` : formatDemo(report));
    return report.ok ? 0 : 1;
  } catch (e) {
    if (controller.signal.aborted) return 130;
    throw e;
  } finally {
    progress.done();
    await dev?.dispose();
    if (temporary) rmSync(dir, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    if (force) clearTimeout(force);
  }
}
