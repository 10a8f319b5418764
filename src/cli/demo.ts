/**
 * `kvflow demo`: the job kvflow exists for, end to end on this host. A short
 * multi-turn chat runs on a temporary store through LayerPipeline with the
 * reference model as compute (Llama-3-8B shapes on a GPU, the tiny model on
 * the CPU backend). Every turn is prefilled twice: recomputed from scratch
 * (what a runtime without kvflow does) and through kvflow (the cached prefix
 * loaded, the rest computed); the final hidden states of both must agree.
 * `--store-check` runs the store-and-load byte check instead. This module is
 * the command line; demo-run.ts runs the chat, demo-report.ts prints it.
 */
import type { Device } from '../device/device.js';
import { KvflowError } from '../errors.js';
import { openDevice } from '../index.js';
import type { PagedEngine } from '../layout/kvcache.js';
import type { PrefillPolicy } from '../model/plan.js';
import { presets } from '../reference/config.js';
import { backendFlag, choiceFlag, intFlag, parseCommand, UsageError, type Command } from './args.js';
import { longestPrompt, type ChatModel } from './demo-chat.js';
import { formatDemo, type DemoReport } from './demo-report.js';
import { chat, chatShape, Interrupted, type ChatRun } from './demo-run.js';
import { runStoreCheck, STORE_CHECK_BYTES_PER_TOKEN } from './demo-store-check.js';
import { chatBytes, checkTokenMemory, hostMemory, storeCheckBytes } from './memory.js';
import { Progress } from './progress.js';
import { scratchDir } from './scratch.js';

export type { DemoReport, DemoTurn } from './demo-report.js';

/** `--tokens` of each mode: the range, the default, and the step the memory cap is rounded to. */
const TOKENS = {
  chat: { min: 64, max: 32768, fallback: 2200, step: 64 },
  storeCheck: { min: 256, max: 32768, fallback: 2048, step: 256 },
} as const;

export const DEMO_USAGE = `usage: kvflow demo [options]

A multi-turn chat on a temporary store, through LayerPipeline with the
reference model as compute (Llama-3-8B shapes on a GPU, the tiny model on the
CPU backend). Per turn: time to first token with kvflow and recomputed from
scratch, the store hit, the plan (tokens loaded / computed), the next token
the model predicts, and the check that the final hidden states equal a full
recompute.

options:
  --turns N          turns of the chat (default 4; 1 to 15)
  --tokens N         tokens of the first prompt (default ${TOKENS.chat.fallback}; ${TOKENS.chat.min} to ${TOKENS.chat.max}); with
                     --store-check, of the prompt stored (default ${TOKENS.storeCheck.fallback}; ${TOKENS.storeCheck.min} to ${TOKENS.storeCheck.max}).
                     Capped further by this machine's memory: a value above the
                     cap is refused, naming the cap
  --model M          tiny | llama-3-8b (default: llama-3-8b on CUDA, tiny on CPU)
  --backend B        auto | cuda | cpu (default auto; gpu is taken for cuda)
  --policy P         adaptive | load-all | recompute, kvflow's prefills (default adaptive)
  --engine E         auto | dma | kernel: how kvflow's prefills load (default auto: kernel
                     before the first compute, the copy engines beside it)
  --dir DIR          store directory, kept afterwards (default: a temporary one, removed)
  --json             the same as one JSON object on stdout
  --store-check      instead: store a prompt's KV (Llama-3-8B-shaped), reopen the
                     store, load it back layer by layer from NVMe and DRAM, check every byte
  -h, --help         this text

Values go as --flag value or --flag=value. Steps that take over a second show
a progress line on stderr when stderr is a terminal. Ctrl-C stops the run,
removes the temporary store and exits 130.

Exit status: 0 every check passed, 1 one failed, 2 a usage error, 130 interrupted.
`;

interface DemoFlags {
  turns: number;
  model: ChatModel | undefined;
  backend: 'auto' | 'cuda' | 'cpu' | undefined;
  policy: PrefillPolicy;
  engine: PagedEngine;
  dir: string | undefined;
  json: boolean;
  storeCheck: boolean;
  tokens: number;
}

interface RawFlags {
  turns?: string;
  model?: string;
  backend?: string;
  policy?: string;
  engine?: string;
  dir?: string;
  json?: boolean;
  'store-check'?: boolean;
  tokens?: string;
}

/** The flags, checked; undefined when help was asked for. */
function parseFlags(args: string[]): DemoFlags | undefined {
  const { values, help } = parseCommand<RawFlags>(args, {
    turns: { type: 'string' },
    model: { type: 'string' },
    backend: { type: 'string' },
    policy: { type: 'string' },
    engine: { type: 'string' },
    dir: { type: 'string' },
    json: { type: 'boolean' },
    'store-check': { type: 'boolean' },
    tokens: { type: 'string' },
  });
  if (help) return undefined;
  const storeCheck = values['store-check'] ?? false;
  if (storeCheck) {
    for (const f of ['turns', 'model', 'policy', 'engine', 'json'] as const) {
      if (values[f] !== undefined) throw new UsageError(`--${f} does not apply to --store-check`);
    }
  }
  const t = storeCheck ? TOKENS.storeCheck : TOKENS.chat;
  if (values.dir === '') throw new UsageError("expected a directory for --dir, got ''");
  return {
    turns: intFlag(values.turns, '--turns', 1, 15, 4),
    model: choiceFlag(values.model, '--model', ['tiny', 'llama-3-8b'] as const),
    backend: backendFlag(values.backend),
    policy: choiceFlag(values.policy, '--policy', ['adaptive', 'load-all', 'recompute'] as const) ?? 'adaptive',
    engine: choiceFlag(values.engine, '--engine', ['auto', 'dma', 'kernel'] as const) ?? 'auto',
    dir: values.dir,
    json: values.json ?? false,
    storeCheck,
    tokens: intFlag(values.tokens, '--tokens', t.min, t.max, t.fallback),
  };
}

/** Refuses a chat whose prompts would not fit this device's memory (the GPU's on CUDA, the host's on the CPU backend). */
function checkChatMemory(f: DemoFlags, dev: Device, preset: ChatModel): void {
  const cuda = dev.backend === 'cuda';
  const memory = cuda ? dev.info().totalMemory : hostMemory();
  const extra = longestPrompt(chatShape(f.turns, 0));
  const t = TOKENS.chat;
  checkTokenMemory(f.tokens, (n) => chatBytes(presets[preset], cuda ? 2 : 4, n + extra), memory, cuda ? 'GPU memory' : 'memory', t.min, t.max, t.step);
}

async function runChat(f: DemoFlags, run: Omit<ChatRun, 'model' | 'reason'>): Promise<DemoReport> {
  let dev = openDevice(f.backend ? { backend: f.backend } : {});
  try {
    checkChatMemory(f, dev, f.model ?? (dev.backend === 'cuda' ? 'llama-3-8b' : 'tiny'));
    try {
      return await chat({ ...run, model: f.model }, dev);
    } catch (e) {
      // A build whose CUDA backend has no reference model: the chat runs on
      // the CPU backend, unless CUDA was asked for.
      if (!(e instanceof KvflowError && e.code === 'ERR_UNSUPPORTED' && dev.backend === 'cuda' && f.backend !== 'cuda')) throw e;
      await dev.dispose();
      dev = openDevice({ backend: 'cpu' });
      checkChatMemory(f, dev, 'tiny');
      return await chat({ ...run, model: 'tiny', reason: `the CUDA backend of this build has no reference model (${e.message}): the CPU backend runs the chat` }, dev);
    }
  } finally {
    await dev.dispose();
  }
}

/** `kvflow demo [options]`: exit 0 when every check passed, 1 when one failed, 2 on a usage error, 130 when interrupted. */
export async function runDemo(args: string[]): Promise<number> {
  const f = parseFlags(args);
  if (f === undefined) {
    process.stdout.write(DEMO_USAGE);
    return 0;
  }
  if (f.storeCheck) {
    const t = TOKENS.storeCheck;
    checkTokenMemory(f.tokens, (n) => storeCheckBytes(n, STORE_CHECK_BYTES_PER_TOKEN), hostMemory(), 'memory', t.min, t.max, t.step);
  }
  const scratch = scratchDir(f.dir);
  const progress = new Progress();
  try {
    if (f.storeCheck) return await runStoreCheck({ tokens: f.tokens, backend: f.backend, dir: scratch.dir, signal: scratch.signal });
    progress.step('opening the device');
    const report = await runChat(f, { ...scratch, turns: f.turns, firstTokens: f.tokens, policy: f.policy, engine: f.engine, progress });
    process.stdout.write(f.json ? `${JSON.stringify(report, null, 2)}\n` : formatDemo(report));
    return report.ok ? 0 : 1;
  } catch (e) {
    if (scratch.signal.aborted || e instanceof Interrupted) return 130;
    throw e;
  } finally {
    progress.done();
    scratch.release();
  }
}

export const demoCommand: Command = {
  name: 'demo',
  summary: 'a multi-turn chat through kvflow with the reference model: TTFT against recompute, checked (--store-check: the store alone)',
  usage: DEMO_USAGE,
  run: runDemo,
};
