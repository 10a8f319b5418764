/**
 * The CUDA reference model on the head sizes its tensor-core attention takes
 * (64 and 128; the shared suites' tiny shapes use the plain kernel), over
 * more than one 128-query tile and prompts that are not block multiples, in
 * shuffled blocks: its prefill matches the CPU backend's (f32) within the
 * bf16 tolerance, and a prefill whose prefix came from an earlier call
 * matches the whole prompt computed at once. Skipped without a GPU.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Device, DeviceBuffer, KvArrangement, Stream } from '../../src/index.js';
import { ReferenceModel, type ModelConfig } from '../../src/reference/index.js';
import { cudaSkipReason, open } from '../helpers/backends.js';

const skip = cudaSkipReason !== undefined;

interface Case {
  name: string;
  config: ModelConfig;
  arrangement: KvArrangement;
  blockTokens: number;
  tokens: number;
  prefix: number;
}

const CASES: Case[] = [
  {
    name: 'head 64, GQA 2, layer-major, 16-token blocks, 300 tokens, prefix 170',
    config: { layers: 2, hidden: 256, heads: 4, kvHeads: 2, headDim: 64, intermediate: 384, vocab: 256 },
    arrangement: 'layer-major', blockTokens: 16, tokens: 300, prefix: 170,
  },
  {
    name: 'head 128, GQA 4 with QK-norm, block-major, 7-token blocks, 261 tokens, prefix 131',
    config: { layers: 2, weightLayers: 1, hidden: 128, heads: 4, kvHeads: 1, headDim: 128, intermediate: 256, vocab: 300,
      qkNorm: true, normEps: 1e-6, ropeTheta: 1e6 },
    arrangement: 'block-major', blockTokens: 7, tokens: 261, prefix: 131,
  },
];

function shuffled(n: number, total: number, seed: number): Int32Array {
  const all = Int32Array.from({ length: total }, (_, i) => i);
  let s = seed >>> 0;
  for (let i = total - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    const t = all[i] as number;
    all[i] = all[j] as number;
    all[j] = t;
  }
  return all.subarray(0, n);
}

async function readF32(dev: Device, stream: Stream, buf: DeviceBuffer, floats: number): Promise<Float32Array> {
  const host = dev.allocPinned(floats * 4);
  stream.copy(host, 0, buf, 0, floats * 4);
  await stream.synchronize();
  const out = new Float32Array(floats);
  out.set(new Float32Array(host.array.buffer, host.array.byteOffset, floats));
  await host.dispose();
  return out;
}

/** max|a - b| / max|b|, over the last a.length values of b. */
function relErr(a: Float32Array, b: Float32Array): number {
  const off = b.length - a.length;
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs((a[i] as number) - (b[off + i] as number));
    if (!(d <= num)) num = Number.isNaN(d) ? Infinity : d;
    den = Math.max(den, Math.abs(b[off + i] as number));
  }
  return num / den;
}

async function prefill(dev: Device, stream: Stream, c: Case, tokens: Int32Array, split: number): Promise<Float32Array> {
  const model = ReferenceModel.create(dev, { ...c.config, seed: 5, maxTokens: c.tokens });
  const numBlocks = Math.ceil(c.tokens / c.blockTokens) + 9;
  const cache = dev.allocKvCache(model.kvLayout({ blockTokens: c.blockTokens, numBlocks, arrangement: c.arrangement }));
  const blocks = shuffled(numBlocks - 9, numBlocks, 3);
  try {
    if (split > 0) {
      const first = model.prefill(stream, { tokens: tokens.subarray(0, split), cache, blocks });
      await stream.synchronize();
      await first.dispose();
    }
    const out = model.prefill(stream, { tokens, cache, blocks, start: split });
    const rows = await readF32(dev, stream, out, (c.tokens - split) * c.config.hidden);
    await out.dispose();
    return rows;
  } finally {
    await cache.dispose();
    await model.dispose();
  }
}

/**
 * A cached suffix whose attention takes the balanced launch on an H100 or
 * H200 (132 SMs; other GPUs may take the plain one): 1,792 new tokens of 32
 * heads are 448 blocks of 128 queries, 1.7 waves of the plain launch
 * (balance::balanced_pays). The whole prompt takes the plain launch. An
 * end-to-end run of the model's balanced path (its scratch, the merge, no
 * NaN), not a fine check of the launch: one layer's output is mostly its
 * residual, and attention over 16k random keys is small beside it. The
 * launch itself is checked against an f64 reference by attention_check
 * (case llama8b_1792_over_14592_checked). CUDA only: the CPU backend would
 * take minutes over 16k tokens.
 */
const BALANCED: Case = {
  name: '32 heads of 128, GQA 4, 16k tokens, prefix 14,592',
  config: { layers: 1, hidden: 256, heads: 32, kvHeads: 8, headDim: 128, intermediate: 256, vocab: 300 },
  arrangement: 'layer-major', blockTokens: 16, tokens: 16384, prefix: 14592,
};

describe.skipIf(skip)('reference model on CUDA, tensor-core attention', () => {
  let cuda: Device;
  let cpu: Device;
  let cs: Stream;
  let hs: Stream;
  beforeAll(() => {
    cuda = open('cuda');
    cpu = open('cpu');
    cs = cuda.createStream();
    hs = cpu.createStream();
  });
  afterAll(async () => {
    await cuda?.dispose();
    await cpu?.dispose();
  });

  it.each(CASES)('matches the CPU backend, whole and with a cached prefix: $name', async (c) => {
    let s = 99;
    const tokens = Int32Array.from({ length: c.tokens }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s % c.config.vocab;
    });
    const ref = await prefill(cpu, hs, c, tokens, 0);
    const whole = await prefill(cuda, cs, c, tokens, 0);
    const suffix = await prefill(cuda, cs, c, tokens, c.prefix);
    expect(relErr(whole, ref)).toBeLessThanOrEqual(2e-2);
    expect(relErr(suffix, ref)).toBeLessThanOrEqual(2e-2);
    expect(relErr(suffix, whole)).toBeLessThanOrEqual(2e-2);
  });

  it('a long cached suffix (the balanced attention launch on 132-SM GPUs) runs and matches the whole prompt', async () => {
    const c = BALANCED;
    let s = 7;
    const tokens = Int32Array.from({ length: c.tokens }, () => {
      s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
      return s % c.config.vocab;
    });
    const whole = await prefill(cuda, cs, c, tokens, 0);
    const suffix = await prefill(cuda, cs, c, tokens, c.prefix);
    expect(suffix.length).toBe((c.tokens - c.prefix) * c.config.hidden);
    expect(suffix.every(Number.isFinite)).toBe(true);
    expect(relErr(suffix, whole)).toBeLessThanOrEqual(2e-2);
  });
});
