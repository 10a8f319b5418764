// Model configs: presets, defaults, the layout a model's cache takes, and
// the weights' documented values.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Device } from '../../src/index.js';
import { ReferenceModel, presets, resolveConfig } from '../../src/reference/index.js';
import { backends, open } from '../helpers/backends.js';
import { refWeight } from './helpers.js';

describe('reference model configs', () => {
  it('presets carry the published shapes', () => {
    expect(presets['llama-3-8b']).toMatchObject({ layers: 32, hidden: 4096, heads: 32, kvHeads: 8, headDim: 128, intermediate: 14336, vocab: 128256, ropeTheta: 500000 });
    expect(presets['qwen3-14b']).toMatchObject({ layers: 40, hidden: 5120, heads: 40, kvHeads: 8, headDim: 128, intermediate: 17408, vocab: 151936, ropeTheta: 1e6, qkNorm: true, normEps: 1e-6 });
    expect(presets['llama-3-70b']).toMatchObject({ layers: 80, weightLayers: 1, hidden: 8192, heads: 64, kvHeads: 8, headDim: 128, intermediate: 28672, vocab: 128256 });
    expect(Object.isFrozen(presets)).toBe(true);
    expect(Object.isFrozen(presets.tiny)).toBe(true);
    for (const p of Object.values(presets)) expect(() => resolveConfig(p)).not.toThrow();
  });

  it('fills defaults', () => {
    expect(resolveConfig(presets.tiny)).toEqual({ ...presets.tiny, weightLayers: 4, ropeTheta: 500000, normEps: 1e-5, qkNorm: false });
    expect(resolveConfig(presets['llama-3-70b']).weightLayers).toBe(1);
  });

  it('reference_weight is the documented hash, uniform in [-1, 1)', () => {
    const values = Array.from({ length: 4096 }, (_, i) => refWeight(42, 17, i));
    expect(Math.min(...values)).toBeGreaterThanOrEqual(-1);
    expect(Math.max(...values)).toBeLessThan(1);
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    expect(Math.abs(mean)).toBeLessThan(0.05);
    expect(refWeight(42, 17, 0)).not.toBe(refWeight(43, 17, 0));
    expect(refWeight(42, 17, 0)).not.toBe(refWeight(42, 18, 0));
  });
});

describe.each(backends)('reference model on $backend', ({ backend, skip }) => {
  let dev: Device;
  beforeAll(() => {
    if (!skip) dev = open(backend);
  });
  afterAll(async () => {
    await dev?.dispose();
  });

  it.skipIf(skip)('reports its dtype, sizes and cache layout', async () => {
    await using m = ReferenceModel.create(dev, { ...presets.tiny, maxTokens: 8, seed: 9 });
    expect(m.dtype).toBe(backend === 'cpu' ? 'f32' : 'bf16');
    expect(m.seed).toBe(9);
    expect(m.maxTokens).toBe(8);
    expect(m.hiddenBytesPerToken).toBe(64 * (m.dtype === 'f32' ? 4 : 2));
    expect(m.weightBytes).toBeGreaterThan(0);
    const layout = m.kvLayout({ blockTokens: 16, numBlocks: 4, arrangement: 'block-major' });
    expect(layout.toJSON()).toEqual({ layers: 4, kvHeads: 2, headDim: 16, dtype: m.dtype, blockTokens: 16, numBlocks: 4, arrangement: 'block-major' });
    const h = m.allocHidden(8);
    expect(h.byteLength).toBe(8 * m.hiddenBytesPerToken);
    await h.dispose();
  });

  it.skipIf(skip || backend !== 'cpu')('the CPU backend holds f32 weights: embedding, final norm and every set', async () => {
    await using m = ReferenceModel.create(dev, { ...presets.tiny, weightLayers: 2, maxTokens: 8 });
    const { hidden: h, heads, kvHeads, headDim: d, intermediate: i, vocab } = m.config;
    const perSet = 2 * h + 2 * heads * d * h + 2 * kvHeads * d * h + 3 * h * i;
    expect(m.weightBytes).toBe(4 * (vocab * h + h + 2 * perSet));
  });
});
