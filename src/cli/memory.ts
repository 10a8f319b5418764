/**
 * How many prompt tokens `kvflow demo` can take on this machine: an
 * estimate of the memory a run needs per token, against the memory there is
 * (host memory for the CPU backend and the host copies, GPU memory for the
 * model on CUDA). A `--tokens` above the cap is refused before anything is
 * allocated, with the estimate and the cap.
 */
import os from 'node:os';

import type { ModelConfig } from '../reference/config.js';
import { UsageError } from './args.js';

/** The share of a memory a demo may plan to use. */
const SHARE = 0.5;

const gib = (bytes: number): string => `${(bytes / 2 ** 30).toFixed(1)} GiB`;

/**
 * Bytes `--store-check` needs for a `tokens`-token prompt of `bytesPerToken`
 * of KV: the KV cache (the prompt's blocks and as many to load into), the
 * host copy it is checked against, the copy read back to check, and the
 * store's DRAM tier.
 */
export function storeCheckBytes(tokens: number, bytesPerToken: number): number {
  const cache = (2 * tokens + 1024) * bytesPerToken;
  return 3 * cache + (tokens + 512) * bytesPerToken;
}

/**
 * Bytes the chat needs on its device for prompts up to `longest` tokens: the
 * model's weights, its activations for that many tokens, the KV cache (two
 * prompts' blocks) and the store's DRAM tier (two prompts' KV).
 */
export function chatBytes(c: Required<Pick<ModelConfig, 'layers' | 'hidden' | 'heads' | 'kvHeads' | 'headDim' | 'intermediate' | 'vocab'>> & { weightLayers?: number }, dtypeBytes: number, longest: number): number {
  const q = c.heads * c.headDim;
  const kv = c.kvHeads * c.headDim;
  const perLayer = c.hidden * (2 * q + 2 * kv) + 3 * c.hidden * c.intermediate;
  const weights = ((c.weightLayers ?? c.layers) * perLayer + c.vocab * c.hidden) * dtypeBytes;
  const activations = longest * (6 * c.hidden + 3 * c.intermediate + q + 2 * kv) * 4;
  const kvPerToken = c.layers * 2 * kv * dtypeBytes;
  return weights + activations + 4 * longest * kvPerToken;
}

/** The largest `tokens` from `min` whose `need(tokens)` fits in SHARE of `memory`, in steps of `step`. */
export function tokenCap(need: (tokens: number) => number, memory: number, min: number, max: number, step: number): number {
  let lo = min;
  if (need(lo) > SHARE * memory) return 0;
  let hi = max;
  while (hi - lo > step) {
    const mid = Math.floor((lo + hi) / 2 / step) * step;
    if (need(mid) <= SHARE * memory) lo = mid;
    else hi = mid;
  }
  return need(hi) <= SHARE * memory ? hi : lo;
}

/** The host's memory in bytes (what the CPU backend allocates from). */
export function hostMemory(): number {
  return os.totalmem();
}

/**
 * Refuses `tokens` above what `memory` holds: a UsageError with the
 * estimate, the memory, and the cap (`--tokens` is named).
 */
export function checkTokenMemory(tokens: number, need: (tokens: number) => number, memory: number, where: string, min: number, max: number, step: number): void {
  if (need(tokens) <= SHARE * memory) return;
  const cap = tokenCap(need, memory, min, max, step);
  throw new UsageError(
    `--tokens ${tokens} needs about ${gib(need(tokens))} of ${where}; this machine has ${gib(memory)} ` +
      `(a demo plans to use at most half): ${cap > 0 ? `at most --tokens ${cap} here` : 'no prompt fits here'}`,
  );
}
