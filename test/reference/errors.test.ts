// Bad calls get coded KvflowErrors, from TS and again from the native glue
// when TS is bypassed; a rejected call changes nothing; an injected failure
// skips the layer; dispose ends the model, not the work already enqueued.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvLayout, type Device, type DeviceBuffer, type KvCache, type Stream } from '../../src/index.js';
import { loadBinding } from '../../src/binding/load.js';
import type { NativeModelShape, NativePagedKv, NativeReferenceModel } from '../../src/binding/types.js';
import { holdStream, injectFailure } from '../../src/device/testing.js';
import { ReferenceModel, presets } from '../../src/reference/index.js';
import { backends, codeOf, open, randomBytes } from '../helpers/backends.js';
import { fillCache, readCache } from '../helpers/cache.js';
import { encode, randomValues, readBuffer, relErr, readRows, writeBuffer } from './helpers.js';

const TINY = { ...presets.tiny, seed: 5, maxTokens: 32 };
const BLOCK = 4;

describe.each(backends)('reference model errors on $backend', ({ backend, skip }) => {
  let dev: Device;
  let stream: Stream;
  let model: ReferenceModel;
  let cache: KvCache;
  let hidden: DeviceBuffer;
  const blocks = [9, 3, 14, 0, 7, 12, 1, 5];

  beforeAll(() => {
    if (skip) return;
    dev = open(backend);
    stream = dev.createStream();
    model = ReferenceModel.create(dev, TINY);
    cache = dev.allocKvCache(model.kvLayout({ blockTokens: BLOCK, numBlocks: 16 }));
    hidden = model.allocHidden(32);
  });
  afterAll(async () => {
    await dev?.dispose();
  });

  const call = (over: Record<string, unknown> = {}) => ({ hidden, cache, blocks, start: 4, count: 8, ...over });

  it.skipIf(skip)('rejects bad configs', () => {
    const bad: Array<[Record<string, unknown>, string]> = [
      [{ kvHeads: 3 }, 'ERR_INVALID_ARG'],
      [{ headDim: 15 }, 'ERR_INVALID_ARG'],
      [{ layers: 0 }, 'ERR_INVALID_ARG'],
      [{ weightLayers: 5 }, 'ERR_INVALID_ARG'],
      [{ maxTokens: 0 }, 'ERR_INVALID_ARG'],
      [{ maxTokens: undefined }, 'ERR_INVALID_ARG'],
      [{ seed: -1 }, 'ERR_INVALID_ARG'],
      [{ ropeTheta: Number.NaN }, 'ERR_INVALID_ARG'],
      [{ normEps: 0 }, 'ERR_INVALID_ARG'],
      [{ qkNorm: 'yes' }, 'ERR_INVALID_ARG'],
      [{ hidden: 1.5 }, 'ERR_INVALID_ARG'],
    ];
    for (const [over, code] of bad) expect(codeOf(() => ReferenceModel.create(dev, { ...TINY, ...over } as never)), JSON.stringify(over)).toBe(code);
    expect(codeOf(() => ReferenceModel.create({} as never, TINY))).toBe('ERR_INVALID_ARG');
  });

  it.skipIf(skip)('refuses weights larger than the device holds with ERR_OUT_OF_MEMORY', () => {
    expect(codeOf(() => ReferenceModel.create(dev, { ...TINY, hidden: 1 << 20, vocab: 1 << 24 }))).toBe('ERR_OUT_OF_MEMORY');
  });

  it.skipIf(skip)('rejects bad layer calls in TS with coded errors', () => {
    const f16 = dev.allocKvCache(new KvLayout({ ...cache.layout.toJSON(), dtype: model.dtype === 'f32' ? 'f16' : 'f32' }));
    const heads = dev.allocKvCache(new KvLayout({ ...cache.layout.toJSON(), kvHeads: 1 }));
    const pinned = dev.allocPinned(hidden.byteLength);
    const small = model.allocHidden(4);
    const cases: Array<[() => void, string]> = [
      [() => model.layer(stream, 4, call()), 'ERR_OUT_OF_RANGE'],
      [() => model.layer(stream, -1, call()), 'ERR_OUT_OF_RANGE'],
      [() => model.layer(stream, 0.5, call()), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ count: 33 })), 'ERR_OUT_OF_RANGE'],
      [() => model.layer(stream, 0, call({ count: 0 })), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ start: -1 })), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ blocks: [1, 2] })), 'ERR_OUT_OF_RANGE'],
      [() => model.layer(stream, 0, call({ blocks: [1, 2, 16] })), 'ERR_OUT_OF_RANGE'],
      [() => model.layer(stream, 0, call({ blocks: [1, 2, 1] })), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ blocks: [1, 2, 0.5] })), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ blocks: 'abc' })), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ cache: f16 })), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ cache: heads })), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ cache: {} })), 'ERR_INVALID_ARG'],
      [() => model.layer(stream, 0, call({ hidden: small })), 'ERR_OUT_OF_RANGE'],
      [() => model.layer(stream, 0, call({ hidden: pinned })), 'ERR_INVALID_ARG'],
      [() => model.layer({} as never, 0, call()), 'ERR_INVALID_ARG'],
      [() => model.embed(stream, hidden, [1, 512]), 'ERR_OUT_OF_RANGE'],
      [() => model.embed(stream, hidden, [1, -1]), 'ERR_OUT_OF_RANGE'],
      [() => model.embed(stream, hidden, []), 'ERR_INVALID_ARG'],
      [() => model.embed(stream, small, [1, 2, 3, 4, 5]), 'ERR_OUT_OF_RANGE'],
      [() => model.embed(stream, hidden, new Array(33).fill(1)), 'ERR_OUT_OF_RANGE'],
      [() => model.finalNorm(stream, small, hidden, 8), 'ERR_OUT_OF_RANGE'],
      [() => model.finalNorm(stream, hidden, hidden, 2), 'ERR_INVALID_ARG'],
      [() => model.prefill(stream, { tokens: [1, 2, 3], cache, blocks, start: 3 }), 'ERR_OUT_OF_RANGE'],
      [() => model.prefill(stream, { tokens: new Array(40).fill(1), cache, blocks: Array.from({ length: 10 }, (_, i) => i) }), 'ERR_OUT_OF_RANGE'],
      [() => model.prefill(stream, { tokens: [1, 2, 3], cache: f16, blocks }), 'ERR_INVALID_ARG'],
      [() => model.allocHidden(0), 'ERR_INVALID_ARG'],
      [() => model.kvLayout({ blockTokens: 0, numBlocks: 4 }), 'ERR_INVALID_ARG'],
    ];
    cases.forEach(([fn, code], i) => expect(codeOf(fn), `case ${i}`).toBe(code));
    expect(stream.idle()).toBe(true);
  });

  it.skipIf(skip)('the native glue checks again when TS is bypassed', async () => {
    const { binding } = loadBinding();
    const anchor = { native: dev.native };
    const host = dev.allocHost(4096);
    const shape: NativeModelShape = { ...model.config, maxTokens: 32, seed: 5 };
    const native: NativeReferenceModel = new binding.ReferenceModel(anchor.native, shape);
    const l = cache.layout;
    const kv: NativePagedKv = {
      buffers: cache.buffers.map((b) => b.native), blockMajor: false, layers: l.layers, kvHeads: l.kvHeads, headDim: l.headDim,
      blockTokens: l.blockTokens, numBlocks: l.numBlocks, elementBytes: l.elementBytes,
    };
    const table = Int32Array.from(blocks);
    const other = open(backend);
    const otherStream = other.createStream();
    const small = model.allocHidden(4);
    const cases: Array<[() => void, string]> = [
      [() => new binding.ReferenceModel(anchor.native, { ...shape, kvHeads: 3 }), 'ERR_INVALID_ARG'],
      [() => new binding.ReferenceModel(anchor.native, { ...shape, headDim: 7 }), 'ERR_INVALID_ARG'],
      [() => new binding.ReferenceModel(anchor.native, { ...shape, maxTokens: -1 }), 'ERR_INVALID_ARG'],
      [() => new binding.ReferenceModel({} as never, shape), 'ERR_INVALID_ARG'],
      [() => native.layer(stream.native, 4, hidden.native, kv, table, 4, 8), 'ERR_OUT_OF_RANGE'],
      [() => native.layer(stream.native, 0, hidden.native, kv, table, 4, 33), 'ERR_OUT_OF_RANGE'],
      [() => native.layer(stream.native, 0, hidden.native, kv, table, 4, 0), 'ERR_INVALID_ARG'],
      [() => native.layer(stream.native, 0, hidden.native, kv, Int32Array.of(1, 2), 4, 8), 'ERR_OUT_OF_RANGE'],
      [() => native.layer(stream.native, 0, hidden.native, kv, Int32Array.of(1, 2, 99), 4, 8), 'ERR_OUT_OF_RANGE'],
      [() => native.layer(stream.native, 0, hidden.native, kv, Int32Array.of(1, 2, -1), 4, 8), 'ERR_OUT_OF_RANGE'],
      [() => native.layer(stream.native, 0, hidden.native, kv, Int32Array.of(1, 2, 1), 4, 8), 'ERR_INVALID_ARG'],
      [() => native.layer(stream.native, 0, hidden.native, kv, [1, 2, 3] as never, 4, 8), 'ERR_INVALID_ARG'],
      [() => native.layer(stream.native, 0, hidden.native, { ...kv, elementBytes: l.elementBytes === 2 ? 4 : 2 }, table, 4, 8), 'ERR_INVALID_ARG'],
      [() => native.layer(stream.native, 0, hidden.native, { ...kv, kvHeads: 1 }, table, 4, 8), 'ERR_INVALID_ARG'],
      [() => native.layer(stream.native, 0, hidden.native, { ...kv, numBlocks: 64 }, table, 4, 8), 'ERR_OUT_OF_RANGE'],
      [() => native.layer(stream.native, 0, hidden.native, { ...kv, blockMajor: true }, table, 4, 8), 'ERR_INVALID_ARG'],
      [() => native.layer(stream.native, 0, hidden.native, { ...kv, buffers: kv.buffers.slice(1) }, table, 4, 8), 'ERR_INVALID_ARG'],
      [() => native.layer(stream.native, 0, small.native, kv, table, 4, 8), 'ERR_OUT_OF_RANGE'],
      [() => native.layer(otherStream.native, 0, hidden.native, kv, table, 4, 8), 'ERR_INVALID_ARG'],
      [() => native.embed(stream.native, hidden.native, Int32Array.of(1, 512)), 'ERR_OUT_OF_RANGE'],
      [() => native.embed(stream.native, hidden.native, new Int32Array(0)), 'ERR_INVALID_ARG'],
      [() => native.embed(stream.native, host.native, Int32Array.of(1)), 'ERR_INVALID_ARG'],
      [() => native.finalNorm(stream.native, hidden.native, hidden.native, 2), 'ERR_INVALID_ARG'],
      [() => native.finalNorm(stream.native, hidden.native, hidden.native, 99), 'ERR_OUT_OF_RANGE'],
    ];
    cases.forEach(([fn, code], i) => expect(codeOf(fn), `case ${i}`).toBe(code));
    expect(stream.idle()).toBe(true);
    native.close();
    expect(codeOf(() => native.embed(stream.native, hidden.native, Int32Array.of(1)))).toBe('ERR_DISPOSED');
    native.close(); // idempotent
    await Promise.all([host.dispose(), small.dispose(), other.dispose()]);
  });

  it.skipIf(skip)('a rejected call changes nothing in the cache or the hidden states', async () => {
    const data = cache.buffers.map((b) => randomBytes(b.byteLength));
    await fillCache(dev, stream, cache, data);
    const h = randomBytes(hidden.byteLength);
    await writeBuffer(dev, stream, hidden, h);
    expect(codeOf(() => model.layer(stream, 0, call({ blocks: [...blocks.slice(0, 2), 99] })))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => model.prefill(stream, { tokens: [1, 2, 3, 4, 5, 6, 7, 8, 9, 600], cache, blocks }))).toBe('ERR_OUT_OF_RANGE');
    await stream.synchronize();
    const after = await readCache(dev, stream, cache);
    after.forEach((b, i) => expect(Buffer.compare(Buffer.from(b), Buffer.from(data[i]!))).toBe(0));
    expect(Buffer.compare(Buffer.from(await readBuffer(dev, stream, hidden)), Buffer.from(h))).toBe(0);
  });

  it.skipIf(skip)('an injected failure skips the layer and fails the next event; the stream goes on', async () => {
    const x = encode(randomValues(8 * model.config.hidden), model.dtype);
    await writeBuffer(dev, stream, hidden, x);
    injectFailure(stream, 'ERR_IO', 'injected');
    model.layer(stream, 0, call());
    await expect(stream.synchronize()).rejects.toMatchObject({ code: 'ERR_IO' });
    expect(Buffer.compare(Buffer.from(await readBuffer(dev, stream, hidden, x.byteLength)), Buffer.from(x))).toBe(0);
    model.layer(stream, 0, call());
    await stream.synchronize();
    expect(Buffer.compare(Buffer.from(await readBuffer(dev, stream, hidden, x.byteLength)), Buffer.from(x))).not.toBe(0);
  });

  it.skipIf(skip)('dispose ends the model, not the work it enqueued; later calls are ERR_DISPOSED', async () => {
    const m = ReferenceModel.create(dev, TINY);
    const tokens = Array.from({ length: 20 }, (_, i) => (i * 31) % 512);
    const c = dev.allocKvCache(m.kvLayout({ blockTokens: BLOCK, numBlocks: 8 }));
    const expected = m.prefill(stream, { tokens, cache: c, blocks: [0, 1, 2, 3, 4] });
    await stream.synchronize();
    const out = m.prefill(stream, { tokens, cache: c, blocks: [5, 6, 7, 0, 1] });
    await m.dispose();
    expect(m.disposed).toBe(true);
    await stream.synchronize();
    const want = await readRows(dev, stream, expected, 20, m.config.hidden);
    expect(relErr(await readRows(dev, stream, out, 20, m.config.hidden), want)).toBe(0);
    expect(codeOf(() => m.layer(stream, 0, { hidden, cache: c, blocks: [0, 1], start: 0, count: 8 }))).toBe('ERR_DISPOSED');
    expect(codeOf(() => m.embed(stream, hidden, [1]))).toBe('ERR_DISPOSED');
    expect(codeOf(() => m.finalNorm(stream, out, hidden, 1))).toBe('ERR_DISPOSED');
    expect(codeOf(() => m.prefill(stream, { tokens, cache: c, blocks: [0, 1, 2, 3, 4] }))).toBe('ERR_DISPOSED');
    expect(codeOf(() => m.allocHidden(1))).toBe('ERR_DISPOSED');
    await m.dispose(); // idempotent
    await Promise.all([expected.dispose(), out.dispose(), c.dispose()]);
  });

  it.skipIf(skip)('a queued layer keeps its buffers alive; disposing them waits for it', async () => {
    const h = model.allocHidden(8);
    const c = dev.allocKvCache(model.kvLayout({ blockTokens: BLOCK, numBlocks: 4 }));
    const open = holdStream(stream);
    model.embed(stream, h, [1, 2, 3, 4, 5, 6, 7, 8]);
    model.layer(stream, 0, { hidden: h, cache: c, blocks: [2, 0], start: 0, count: 8 });
    expect(h.inFlight()).toBe(true);
    expect(c.buffers[0]!.inFlight()).toBe(true);
    let released = false;
    const disposed = Promise.all([h.dispose(), c.dispose()]).then(() => (released = true));
    await new Promise((r) => setImmediate(r));
    expect(released).toBe(false);
    open();
    await stream.synchronize();
    await disposed;
    expect(released).toBe(true);
  });

  it.skipIf(skip)('a disposed device disposes its models', async () => {
    const d = open(backend);
    const m = ReferenceModel.create(d, TINY);
    await d.dispose();
    expect(m.disposed).toBe(true);
    expect(codeOf(() => m.allocHidden(1))).toBe('ERR_DISPOSED');
    await m.dispose();
  });
});

describe.each(backends)('reference model process behaviour on $backend', ({ backend, skip }) => {
  const root = path.resolve(import.meta.dirname, '..', '..');
  const url = (p: string) => JSON.stringify(pathToFileURL(path.join(root, 'dist', 'src', p)).href);

  const run = (body: string) =>
    spawnSync(process.execPath, ['--input-type=module', '-e', `import { openDevice } from ${url('index.js')};
import { ReferenceModel, presets } from ${url('reference/index.js')};
const dev = openDevice({ backend: ${JSON.stringify(backend)} });
const s = dev.createStream();
const m = ReferenceModel.create(dev, { ...presets.tiny, maxTokens: 64 });
const cache = dev.allocKvCache(m.kvLayout({ blockTokens: 16, numBlocks: 8 }));
const out = m.prefill(s, { tokens: Array.from({ length: 40 }, (_, i) => i), cache, blocks: [3, 1, 2] });
${body}`], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, KVFLOW_BACKEND: undefined } });

  it.skipIf(skip)('the process exits after the model and the device are disposed, with a prefill in flight', () => {
    const r = run(`await m.dispose();
await dev.dispose();
console.log('disposed');`);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('disposed');
    expect(r.status).toBe(0);
  });

  it.skipIf(skip)('the process exits when only the device is disposed', () => {
    const r = run(`await s.synchronize();
await dev.dispose();
console.log('disposed', m.disposed);`);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('disposed true');
    expect(r.status).toBe(0);
  });
});
