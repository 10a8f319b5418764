// One decoder layer, the embedding and the final norm against the formulas
// written out in f64 (helpers.ts) on random inputs: a random residual stream
// and a random cached prefix in shuffled blocks, prompts that are not block
// multiples, both cache arrangements, GQA, QK-norm on and off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Device, KvArrangement, Stream } from '../../src/index.js';
import { ReferenceModel } from '../../src/reference/index.js';
import { backends, open, randomBytes } from '../helpers/backends.js';
import { fillCache, readCache } from '../helpers/cache.js';
import {
  embedRow, encode, finalNormRow, randomTokens, randomValues, readRows, refLayer, relErr, rounded, setTokenKv,
  setWeights, shuffledBlocks, tokenKv, tolerance, writeBuffer, decode, type Shape,
} from './helpers.js';

const BASE = { layers: 2, weightLayers: 2, hidden: 32, heads: 4, kvHeads: 2, headDim: 8, intermediate: 48, vocab: 64,
  ropeTheta: 10000, normEps: 1e-5, qkNorm: false };

interface Case {
  name: string;
  arrangement: KvArrangement;
  blockTokens: number;
  start: number;
  count: number;
  layer: number;
  shape?: Partial<Shape>;
}

const CASES: Case[] = [
  { name: 'layer-major, prefix of 7 in 4-token blocks, 10 new', arrangement: 'layer-major', blockTokens: 4, start: 7, count: 10, layer: 1 },
  { name: 'block-major with QK-norm, prefix of 13 in 8-token blocks, 6 new', arrangement: 'block-major', blockTokens: 8, start: 13, count: 6, layer: 1,
    shape: { qkNorm: true, normEps: 1e-6 } },
  { name: 'no prefix, 9 new in 4-token blocks, MHA', arrangement: 'layer-major', blockTokens: 4, start: 0, count: 9, layer: 0,
    shape: { kvHeads: 4 } },
  { name: 'one weight set for 3 layers, the last layer, 8 kv groups of 1', arrangement: 'block-major', blockTokens: 2, start: 5, count: 4,
    layer: 2, shape: { layers: 3, weightLayers: 1, heads: 8, kvHeads: 1, headDim: 4, ropeTheta: 500000 } },
];

describe.each(backends)('reference layer on $backend', ({ backend, skip }) => {
  let dev: Device;
  let stream: Stream;
  const tol = tolerance(backend);

  beforeAll(() => {
    if (skip) return;
    dev = open(backend);
    stream = dev.createStream();
  });
  afterAll(async () => {
    await dev?.dispose();
  });

  it.skipIf(skip).each(CASES)('matches the f64 formulas: $name', async (c) => {
    const shape: Shape = { ...BASE, ...c.shape, seed: 1000 + c.start } as Shape;
    const model = ReferenceModel.create(dev, { ...shape, maxTokens: 32 });
    const dtype = model.dtype;
    const layout = model.kvLayout({ blockTokens: c.blockTokens, numBlocks: 16, arrangement: c.arrangement });
    const cache = dev.allocKvCache(layout);
    const width = shape.kvHeads * shape.headDim;

    // Poison everything, then put a random prefix of valid values in shuffled blocks.
    const data = cache.buffers.map((b) => randomBytes(b.byteLength));
    const blocks = shuffledBlocks(Math.ceil((c.start + c.count) / c.blockTokens) + 1, layout.numBlocks);
    const prefK: Float64Array[] = [];
    const prefV: Float64Array[] = [];
    for (let p = 0; p < c.start; p++) {
      prefK.push(rounded(randomValues(width), dtype));
      prefV.push(rounded(randomValues(width), dtype));
      setTokenKv(cache, data, blocks, c.layer, 0, p, encode(prefK[p]!, dtype));
      setTokenKv(cache, data, blocks, c.layer, 1, p, encode(prefV[p]!, dtype));
    }
    await fillCache(dev, stream, cache, data);
    const x = Array.from({ length: c.count }, () => rounded(randomValues(shape.hidden), dtype));
    const hidden = model.allocHidden(c.count);
    await writeBuffer(dev, stream, hidden, encode(x.flatMap((r) => [...r]), dtype));

    model.layer(stream, c.layer, { hidden, cache, blocks, start: c.start, count: c.count });
    await stream.synchronize();

    const ref = refLayer(shape, setWeights(shape, c.layer % shape.weightLayers), x, prefK, prefV, c.start);
    const got = await readRows(dev, stream, hidden, c.count, shape.hidden, dtype);
    expect(relErr(got, ref.out)).toBeLessThanOrEqual(tol);

    const after = await readCache(dev, stream, cache);
    const newK = ref.keys.map((_, t) => decode(tokenKv(cache, after, blocks, c.layer, 0, c.start + t), dtype));
    const newV = ref.values.map((_, t) => decode(tokenKv(cache, after, blocks, c.layer, 1, c.start + t), dtype));
    expect(relErr(newK, ref.keys)).toBeLessThanOrEqual(tol);
    expect(relErr(newV, ref.values)).toBeLessThanOrEqual(tol);

    // Nothing else in the cache changed: not the prefix, not other layers, not other blocks.
    for (let t = c.start; t < c.start + c.count; t++) {
      for (const kv of [0, 1] as const) setTokenKv(cache, data, blocks, c.layer, kv, t, tokenKv(cache, after, blocks, c.layer, kv, t));
    }
    after.forEach((b, i) => expect(Buffer.compare(Buffer.from(b), Buffer.from(data[i]!))).toBe(0));

    await hidden.dispose();
    await cache.dispose();
    await model.dispose();
  });

  it.skipIf(skip)('embed writes embedding rows; finalNorm is the f32 RMSNorm of each row', async () => {
    const shape: Shape = { ...BASE, seed: 77 };
    const model = ReferenceModel.create(dev, { ...shape, maxTokens: 16 });
    const tokens = randomTokens(11, shape.vocab);
    const hidden = model.allocHidden(11);
    const out = dev.allocDevice(11 * shape.hidden * 4);
    model.embed(stream, hidden, tokens);
    model.finalNorm(stream, out, hidden, 11);
    await stream.synchronize();
    const rows = await readRows(dev, stream, hidden, 11, shape.hidden, model.dtype);
    const expected = tokens.map((t) => rounded(embedRow(shape, t), model.dtype));
    expect(relErr(rows, expected)).toBe(0);
    const normed = await readRows(dev, stream, out, 11, shape.hidden, 'f32');
    expect(relErr(normed, rows.map((r) => finalNormRow(shape, r)))).toBeLessThanOrEqual(tol);
    await Promise.all([hidden.dispose(), out.dispose(), model.dispose()]);
  });
});
