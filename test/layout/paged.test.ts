import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvflowError, KvLayout, type Device, type KvArrangement, type KvCache, type KvDtype, type PinnedBuffer, type Stream } from '../../src/index.js';
import { backends, codeOf, open, poison, randomBytes, sameBytes } from '../helpers/backends.js';
import { loadBinding } from '../../src/binding/load.js';
import { fillCache, readCache } from '../helpers/cache.js';
import { holdStream, injectFailure } from '../../src/device/testing.js';

interface Shape {
  layers: number;
  kvHeads: number;
  headDim: number;
  dtype: KvDtype;
  blockTokens: number;
  numBlocks: number;
}

const SHAPES: Shape[] = [
  { layers: 3, kvHeads: 2, headDim: 8, dtype: 'fp8_e4m3', blockTokens: 4, numBlocks: 12 },
  { layers: 2, kvHeads: 3, headDim: 5, dtype: 'f16', blockTokens: 3, numBlocks: 9 },
  { layers: 4, kvHeads: 1, headDim: 16, dtype: 'f32', blockTokens: 2, numBlocks: 10 },
  { layers: 4, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens: 16, numBlocks: 48 },
];
const ARRANGEMENTS: KvArrangement[] = ['layer-major', 'block-major'];
const ENGINES = ['dma', 'kernel'] as const;

/** Offset of K/V of (layer, block), from the arrangement's definition, independent of KvLayout.piece(). */
function refOffset(s: Shape, arr: KvArrangement, layer: number, kv: number, block: number, piece: number): [number, number] {
  if (arr === 'layer-major') return [layer, (kv * s.numBlocks + block) * piece];
  return [0, (((block * s.layers + layer) * 2) + kv) * piece];
}

/**
 * Expects `arr` at `at` to hold the staging record of `blocks` (a cache of
 * `shape` in `arrangement`) for `count` layers from `first`, as `original`
 * (the cache's buffers) holds them.
 */
function expectRecord(shape: Shape, original: Uint8Array[], arr: Uint8Array, at: number, blocks: readonly number[], label: string,
  first = 0, count = shape.layers, arrangement: KvArrangement = 'layer-major'): void {
  const layout = new KvLayout({ ...shape, arrangement });
  const piece = layout.pieceBytes;
  const extent = layout.extentBytes(blocks.length * shape.blockTokens);
  for (let li = 0; li < count; li++) {
    for (let kv = 0; kv < 2; kv++) {
      blocks.forEach((b, i) => {
        const [buf, off] = refOffset(shape, arrangement, first + li, kv, b, piece);
        const o = at + li * extent + (kv * blocks.length + i) * piece;
        expect(sameBytes(arr.subarray(o, o + piece), original[buf]!.subarray(off, off + piece)), `${label} layer ${first + li} kv ${kv} block ${b}`).toBe('equal');
      });
    }
  }
}

function shuffle(n: number): number[] {
  const a = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j]!, a[i]!];
  }
  return a;
}

describe.each(backends)('paged transfers on $backend', ({ backend, skip }) => {
  let dev: Device;
  let stream: Stream;
  beforeAll(() => {
    if (skip) return;
    dev = open(backend);
    stream = dev.createStream({ priority: 'high' });
  });
  afterAll(async () => {
    await dev?.dispose();
  });

  /** Fills the cache with random bytes; returns a host copy per buffer. */
  async function fill(cache: KvCache): Promise<Uint8Array[]> {
    const data = cache.buffers.map((b) => randomBytes(b.byteLength));
    await fillCache(dev, stream, cache, data);
    return data;
  }

  const readBack = (cache: KvCache): Promise<Uint8Array[]> => readCache(dev, stream, cache);

  describe.each(ARRANGEMENTS)('%s', (arrangement) => {
    it.skipIf(skip).each(
      SHAPES.flatMap((s) => ENGINES.map((engine) => [s.dtype, s.blockTokens, engine, s] as const)),
    )('%s, %i-token blocks, %s engine: gather matches the reference and scatter puts it back exactly', async (_d, _t, engine, shape) => {
      const layout = new KvLayout({ ...shape, arrangement });
      const cache = dev.allocKvCache(layout);
      const original = await fill(cache);
      const order = shuffle(shape.numBlocks);
      const blocks = order.slice(0, Math.floor(shape.numBlocks / 2));
      const targets = order.slice(blocks.length, blocks.length * 2);
      const piece = layout.pieceBytes;
      const tokens = blocks.length * shape.blockTokens;
      const extent = layout.extentBytes(tokens);
      const stagingOffset = 4096;

      for (const range of [{ first: 0, count: shape.layers }, { first: shape.layers - 1, count: 1 }]) {
        const staging: PinnedBuffer = dev.allocPinned(stagingOffset + extent * range.count);
        poison(staging.array);
        cache.gather(stream, { blocks, staging, stagingOffset, layers: range, engine });
        await stream.synchronize();
        expectRecord(shape, original, staging.array, stagingOffset, blocks, 'gathered', range.first, range.count, arrangement);
        expect(staging.array.subarray(0, stagingOffset).every((v) => v === 0xa5)).toBe(true);
        await staging.dispose();
      }

      // Round trip: every layer's record scattered into other blocks.
      const staging = dev.allocPinned(layout.stagingBytes(tokens));
      cache.gather(stream, { blocks, staging, engine });
      cache.scatter(stream, { blocks: targets, staging, engine });
      await stream.synchronize();
      const after = await readBack(cache);
      const expected = original.map((b) => b.slice());
      for (let layer = 0; layer < shape.layers; layer++) {
        for (let kv = 0; kv < 2; kv++) {
          blocks.forEach((b, i) => {
            const [sb, so] = refOffset(shape, arrangement, layer, kv, b, piece);
            const [tb, to] = refOffset(shape, arrangement, layer, kv, targets[i]!, piece);
            expected[tb]!.set(original[sb]!.subarray(so, so + piece), to);
          });
        }
      }
      after.forEach((b, i) => expect(sameBytes(b, expected[i]!), `buffer ${i}`).toBe('equal'));
      await staging.dispose();
      await cache.dispose();
    });
  });

  it.skipIf(skip).each(ENGINES)('%s engine: records in several staging buffers move in one batch; a gather writes nothing between records', async (engine) => {
    const layout = new KvLayout({ ...SHAPES[3]!, numBlocks: 24 });
    const cache = dev.allocKvCache(layout);
    await fill(cache);
    const per = layout.stagingBytes(2 * layout.blockTokens, 1);
    const a = dev.allocPinned(4 * per + 8192);
    const b = dev.allocPinned(per + 8192);
    // A@0 and A@per+4096+per sit apart by a gap; A@per+4096 touches the last one (one span);
    // B at an odd offset (no 16-byte accesses on its span).
    const records = [
      { blocks: [3, 17], staging: a, stagingOffset: 0 },
      { blocks: [8, 1], staging: b, stagingOffset: 8191 },
      { blocks: [22, 0], staging: a, stagingOffset: 2 * per + 4096 },
      { blocks: [5, 11], staging: a, stagingOffset: per + 4096 },
    ];
    poison(a.array);
    poison(b.array);
    const sentinelA = a.array.slice();
    const sentinelB = b.array.slice();
    cache.moveRecords(stream, 'gather', records, 2, engine);
    await stream.synchronize();
    // Each record as a gather of its own blocks alone puts it (verified against the layout's reference above).
    const one = dev.allocPinned(per);
    const touched = [new Uint8Array(a.byteLength), new Uint8Array(b.byteLength)];
    for (const r of records) {
      cache.gather(stream, { blocks: r.blocks, staging: one, layers: 2, engine: 'dma' });
      await stream.synchronize();
      const got = r.staging.array.subarray(r.stagingOffset, r.stagingOffset + per);
      expect(sameBytes(got, one.array), `record at ${r.stagingOffset}`).toBe('equal');
      touched[r.staging === a ? 0 : 1]!.fill(1, r.stagingOffset, r.stagingOffset + per);
    }
    [[a, sentinelA, touched[0]!], [b, sentinelB, touched[1]!]].forEach(([buf, sentinel, t]) => {
      const arr = (buf as PinnedBuffer).array;
      for (let i = 0; i < arr.length; i++) {
        if ((t as Uint8Array)[i] === 0 && arr[i] !== (sentinel as Uint8Array)[i]) expect.fail(`byte ${i} outside every record changed`);
      }
    });
    // Scatter them back into other blocks, then each target's gather equals its record.
    const targets = [[2, 4], [6, 7], [9, 10], [12, 13]];
    cache.moveRecords(stream, 'scatter', records.map((r, i) => ({ ...r, blocks: targets[i]! })), 2, engine);
    for (let i = 0; i < records.length; i++) {
      const r = records[i]!;
      poison(one.array);
      cache.gather(stream, { blocks: targets[i]!, staging: one, layers: 2, engine: 'dma' });
      await stream.synchronize();
      expect(sameBytes(one.array, r.staging.array.subarray(r.stagingOffset, r.stagingOffset + per)), `target ${i}`).toBe('equal');
    }
    await Promise.all([a.dispose(), b.dispose(), one.dispose()]);
    await cache.dispose();
  });

  it.skipIf(skip).each(ENGINES)('%s engine: a large batch (enqueued by two threads on CUDA) lands exactly, and the next batch on the stream sees it', async (engine) => {
    const shape = { ...SHAPES[3]!, numBlocks: 200 };
    const layout = new KvLayout(shape);
    const cache = dev.allocKvCache(layout);
    const original = await fill(cache);
    const perRecord = 8;
    const tokens = perRecord * layout.blockTokens;
    const recordBytes = layout.stagingBytes(tokens);
    const order = shuffle(layout.numBlocks);
    // 12 records (24 MiB with every layer) in three buffers, 4 KiB apart and at an odd offset.
    const bufs = [0, 1, 2].map(() => dev.allocPinned(4 * (recordBytes + 4096) + 1));
    const records = Array.from({ length: 12 }, (_, i) => ({
      blocks: order.slice(i * perRecord, (i + 1) * perRecord),
      staging: bufs[i % 3]!,
      stagingOffset: Math.floor(i / 3) * (recordBytes + 4096) + (i % 3 === 2 ? 1 : 0),
    }));
    for (const b of bufs) poison(b.array);
    const sentinels = bufs.map((b) => b.array.slice());
    cache.moveRecords(stream, 'gather', records, undefined, engine);
    await stream.synchronize();
    records.forEach((r, i) => expectRecord(shape, original, r.staging.array, r.stagingOffset, r.blocks, `record ${i}`));
    // The same records prepared and moved a layer at a time (192 pieces per layer) into a second staging.
    const second = dev.allocPinned(records.length * recordBytes);
    poison(second.array);
    const plan = cache.prepare('gather', records.map((r, i) => ({ blocks: r.blocks, staging: second, stagingOffset: i * recordBytes })), undefined, engine);
    for (let layer = layout.layers - 1; layer >= 0; layer--) plan.move(stream, layer);
    await stream.synchronize();
    plan.dispose();
    records.forEach((r, i) => expectRecord(shape, original, second.array, i * recordBytes, r.blocks, `prepared record ${i}`));
    await second.dispose();
    bufs.forEach((b, k) => {
      const inRecord = new Uint8Array(b.byteLength);
      for (const r of records) if (r.staging === b) inRecord.fill(1, r.stagingOffset, r.stagingOffset + recordBytes);
      for (let i = 0; i < b.byteLength; i++) {
        if (inRecord[i] === 0 && b.array[i] !== sentinels[k]![i]) expect.fail(`buffer ${k} byte ${i} outside every record changed`);
      }
    });
    // Scatter into other blocks and, without waiting, gather those blocks back on the same stream.
    const targets = records.map((_, i) => order.slice(100 + i * perRecord, 100 + (i + 1) * perRecord));
    const back = dev.allocPinned(records.length * recordBytes);
    poison(back.array);
    cache.moveRecords(stream, 'scatter', records.map((r, i) => ({ ...r, blocks: targets[i]! })), undefined, engine);
    cache.moveRecords(stream, 'gather', targets.map((blocks, i) => ({ blocks, staging: back, stagingOffset: i * recordBytes })), undefined, engine);
    await stream.synchronize();
    records.forEach((r, i) => expectRecord(shape, original, back.array, i * recordBytes, r.blocks, `scattered record ${i}`));
    await Promise.all([...bufs.map((b) => b.dispose()), back.dispose()]);
    await cache.dispose();
  });

  it.skipIf(skip).each(ENGINES)('%s engine: batches back to back on one stream see the batch before, and a copy between them', async (engine) => {
    // On CUDA the kernel engine runs a batch's first stage on a side stream,
    // ahead of the previous batch's second stage: these are the orders that
    // must not change what lands.
    const shape = { ...SHAPES[3]!, numBlocks: 96 };
    const layout = new KvLayout(shape);
    const cache = dev.allocKvCache(layout);
    const original = await fill(cache);
    const piece = layout.pieceBytes;
    const order = shuffle(layout.numBlocks);
    const sizes = [1, 6, 2, 9, 3, 5]; // the scratch grows and shrinks between batches
    let next = 0;
    const take = (n: number): number[] => order.slice(next, (next += n));
    const xs = sizes.map(take);
    const ys = sizes.map(take);
    const zs = take(sizes[3]!);
    const bytesOf = (n: number): number => layout.stagingBytes(n * layout.blockTokens);
    const offsets = sizes.map((_, i) => sizes.slice(0, i).reduce((sum, n) => sum + bytesOf(n), 0));
    const staging = dev.allocPinned(offsets[5]! + bytesOf(sizes[5]!));
    const back = dev.allocPinned(staging.byteLength);
    poison(staging.array);
    poison(back.array);
    // A record of other bytes, in device memory, for the copy between batches.
    const fresh = randomBytes(bytesOf(sizes[3]!));
    const freshDevice = dev.allocDevice(fresh.byteLength);
    const freshPinned = dev.allocPinned(fresh.byteLength);
    freshPinned.array.set(fresh);
    stream.copy(freshDevice, 0, freshPinned, 0, fresh.byteLength);
    await stream.synchronize();
    // Everything below is enqueued before any of it runs (the stream is held),
    // so a stage that ran too early would see old bytes. Two batches of the
    // largest size first, so that no scratch is allocated while the stream is
    // held (CUDA may wait for the device in an allocation).
    for (let k = 0; k < 2; k++) cache.gather(stream, { blocks: xs[3]!, staging, engine });
    await stream.synchronize();
    poison(staging.array);
    const release = holdStream(stream);
    // Gathers back to back (events recorded between some), then without waiting
    // scatters into other blocks, the first of them reading what the last gather wrote.
    xs.forEach((blocks, i) => {
      cache.gather(stream, { blocks, staging, stagingOffset: offsets[i]!, engine });
      if (i % 2 === 1) void stream.record();
    });
    for (let i = sizes.length - 1; i >= 0; i--) {
      cache.scatter(stream, { blocks: ys[i]!, staging, stagingOffset: offsets[i]!, engine });
      if (i % 2 === 0) void stream.record();
    }
    // A copy on the stream rewrites record 3's staging; the next scatter must read the new bytes.
    stream.copy(staging, offsets[3]!, freshDevice, 0, fresh.byteLength);
    cache.scatter(stream, { blocks: zs, staging, stagingOffset: offsets[3]!, engine });
    // And gathers of the scattered blocks, right behind the scatters.
    ys.forEach((blocks, i) => cache.gather(stream, { blocks, staging: back, stagingOffset: offsets[i]!, engine }));
    release();
    await stream.synchronize();
    xs.forEach((blocks, i) => expectRecord(shape, original, back.array, offsets[i]!, blocks, `record ${i} gathered back`));
    expect(sameBytes(staging.array.subarray(offsets[3]!, offsets[3]! + fresh.byteLength), fresh)).toBe('equal');
    const after = await readBack(cache);
    const expected = original.map((x) => x.slice());
    const extent = layout.extentBytes(zs.length * layout.blockTokens);
    for (let layer = 0; layer < layout.layers; layer++) {
      for (let kv = 0; kv < 2; kv++) {
        xs.forEach((blocks, k) => blocks.forEach((blk, i) => {
          const [sb, so] = refOffset(shape, 'layer-major', layer, kv, blk, piece);
          const [tb, to] = refOffset(shape, 'layer-major', layer, kv, ys[k]![i]!, piece);
          expected[tb]!.set(original[sb]!.subarray(so, so + piece), to);
        }));
        zs.forEach((blk, i) => {
          const [tb, to] = refOffset(shape, 'layer-major', layer, kv, blk, piece);
          const from = layer * extent + (kv * zs.length + i) * piece;
          expected[tb]!.set(fresh.subarray(from, from + piece), to);
        });
      }
    }
    after.forEach((x, i) => expect(sameBytes(x, expected[i]!), `buffer ${i}`).toBe('equal'));
    await Promise.all([staging.dispose(), back.dispose(), freshDevice.dispose(), freshPinned.dispose()]);
    await cache.dispose();
  });

  it.skipIf(skip).each(ENGINES)('%s engine: a failed batch between batches fails its event, does nothing, and the batches around it land', async (engine) => {
    const shape = { ...SHAPES[3]!, numBlocks: 64 };
    const layout = new KvLayout(shape);
    const cache = dev.allocKvCache(layout);
    const original = await fill(cache);
    const order = shuffle(layout.numBlocks);
    const blocks = [order.slice(0, 4), order.slice(4, 10), order.slice(10, 13)];
    const bytes = layout.stagingBytes(6 * layout.blockTokens);
    const staging = blocks.map(() => dev.allocPinned(bytes));
    staging.forEach((b) => poison(b.array));
    const s = dev.createStream({ priority: 'high' });
    // Scratch and side streams made before the hold (making them may wait for the device).
    for (let k = 0; k < 2; k++) cache.gather(s, { blocks: blocks[1]!, staging: staging[1]!, engine });
    await s.synchronize();
    poison(staging[1]!.array);
    const untouched = staging[1]!.array.slice();
    const release = holdStream(s); // all enqueued before any of it runs
    cache.gather(s, { blocks: blocks[0]!, staging: staging[0]!, engine });
    injectFailure(s, 'ERR_IO', 'injected batch failure');
    cache.gather(s, { blocks: blocks[1]!, staging: staging[1]!, engine }); // fails, moves nothing
    const failed = s.record();
    cache.gather(s, { blocks: blocks[2]!, staging: staging[2]!, engine });
    const after = s.record();
    release();
    await expect(failed.done()).rejects.toMatchObject({ code: 'ERR_IO', message: 'injected batch failure' });
    await expect(after.done()).resolves.toBeUndefined();
    expectRecord(shape, original, staging[0]!.array, 0, blocks[0]!, 'before the failure');
    expect(sameBytes(staging[1]!.array, untouched)).toBe('equal');
    expectRecord(shape, original, staging[2]!.array, 0, blocks[2]!, 'after the failure');
    await s.dispose();
    await Promise.all(staging.map((b) => b.dispose()));
    await cache.dispose();
  });

  it.skipIf(skip || backend !== 'cuda')('kernel engine: work enqueued through the stream\'s handle between two batches comes before the second', async () => {
    const shape = { ...SHAPES[3]!, numBlocks: 64 };
    const layout = new KvLayout(shape);
    const cache = dev.allocKvCache(layout);
    const original = await fill(cache);
    const order = shuffle(layout.numBlocks);
    const first = order.slice(0, 8);
    const target = order[20]!;
    const s = dev.createStream({ priority: 'high' });
    const w = dev.wrapStreamUnsafe(s.handle); // the same CUDA stream, as a runtime would hold it
    const a = dev.allocPinned(layout.stagingBytes(8 * layout.blockTokens));
    const b = dev.allocPinned(layout.stagingBytes(8 * layout.blockTokens));
    for (let k = 0; k < 2; k++) cache.gather(s, { blocks: first, staging: a, engine: 'kernel' }); // scratch made before the hold
    await s.synchronize();
    poison(a.array);
    poison(b.array);
    const fresh = randomBytes(layout.pieceBytes);
    const src = dev.allocPinned(fresh.byteLength);
    src.array.set(fresh);
    const at = layout.piece(0, 0, target);
    const release = holdStream(s);
    cache.gather(s, { blocks: first, staging: a, engine: 'kernel' });
    w.copy(cache.buffers[at.buffer]!, at.offset, src, 0, fresh.byteLength); // layer 0, K of `target`
    cache.gather(s, { blocks: [target], staging: b, layers: 0, engine: 'kernel' });
    release();
    await s.synchronize();
    expectRecord(shape, original, a.array, 0, first, 'first gather', 0, 4);
    expect(sameBytes(b.array.subarray(0, fresh.byteLength), fresh)).toBe('equal');
    await w.dispose();
    await s.dispose();
    await Promise.all([a.dispose(), b.dispose(), src.dispose()]);
    await cache.dispose();
  });

  it.skipIf(skip).each(ENGINES)('%s engine: a prepared transfer moves layer by layer (any order) what moveRecords moves', async (engine) => {
    const shape = { ...SHAPES[3]!, numBlocks: 64 };
    const layout = new KvLayout(shape);
    const cache = dev.allocKvCache(layout);
    const original = await fill(cache);
    const piece = layout.pieceBytes;
    const order = shuffle(layout.numBlocks);
    const recs = [order.slice(0, 3), order.slice(3, 8), order.slice(8, 9)];
    const bytes = recs.map((b) => layout.stagingBytes(b.length * layout.blockTokens));
    const a = dev.allocPinned(bytes[0]! + bytes[2]! + 4096);
    const b = dev.allocPinned(bytes[1]! + 1);
    const records = [
      { blocks: recs[0]!, staging: a, stagingOffset: 0 },
      { blocks: recs[1]!, staging: b, stagingOffset: 1 },
      { blocks: recs[2]!, staging: a, stagingOffset: bytes[0]! + 4096 },
    ];
    poison(a.array);
    poison(b.array);
    const gather = cache.prepare('gather', records, undefined, engine);
    expect(gather.layers).toEqual({ first: 0, count: layout.layers });
    for (const layer of [3, 0, 2, 1]) gather.move(stream, layer);
    await stream.synchronize();
    records.forEach((r, k) => expectRecord(shape, original, r.staging.array, r.stagingOffset, r.blocks, `record ${k}`));
    // Scatter them into other blocks with a prepared range of layers 1..3, moved as 1 then 2..3.
    const targets = [order.slice(20, 23), order.slice(23, 28), order.slice(28, 29)];
    // A record of layers 1..3 starts where layer 1 sits in the staging written above.
    const fromLayer1 = records.map((r) => ({ ...r, stagingOffset: r.stagingOffset + layout.extentBytes(r.blocks.length * layout.blockTokens) }));
    const shifted = cache.prepare('scatter', fromLayer1.map((r, i) => ({ ...r, blocks: targets[i]! })), { first: 1, count: 3 }, engine);
    shifted.move(stream, 1);
    shifted.move(stream, { first: 2, count: 2 });
    await stream.synchronize();
    const after = await readBack(cache);
    const expected = original.map((x) => x.slice());
    for (let layer = 1; layer < layout.layers; layer++) {
      for (let kv = 0; kv < 2; kv++) {
        recs.forEach((blocks, k) => blocks.forEach((blk, i) => {
          const [sb, so] = refOffset(shape, 'layer-major', layer, kv, blk, piece);
          const [tb, to] = refOffset(shape, 'layer-major', layer, kv, targets[k]![i]!, piece);
          expected[tb]!.set(original[sb]!.subarray(so, so + piece), to);
        }));
      }
    }
    after.forEach((x, i) => expect(sameBytes(x, expected[i]!), `buffer ${i}`).toBe('equal'));
    // Errors: layers outside the prepared range, a disposed staging buffer, a disposed plan, another device.
    expect(codeOf(() => shifted.move(stream, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => shifted.move(stream, { first: 3, count: 2 }))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => cache.prepare('scatter', [{ blocks: [1, 1], staging: a }], 0, engine))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => cache.prepare('gather', [{ blocks: [1], staging: a, stagingOffset: a.byteLength }], 0, engine))).toBe('ERR_OUT_OF_RANGE');
    const other = open(backend);
    const otherStream = other.createStream();
    expect(codeOf(() => gather.move(otherStream, 0))).toBe('ERR_INVALID_ARG');
    await other.dispose();
    const empty = cache.prepare('gather', [{ blocks: [], staging: a }], 0, engine);
    empty.move(stream);
    empty.dispose();
    expect(codeOf(() => empty.move(stream))).toBe('ERR_DISPOSED');
    await b.dispose();
    expect(codeOf(() => shifted.move(stream, 1))).toBe('ERR_DISPOSED');
    shifted.dispose();
    shifted.dispose(); // idempotent
    expect(shifted.disposed).toBe(true);
    expect(codeOf(() => shifted.move(stream, 1))).toBe('ERR_DISPOSED');
    gather.dispose();
    await a.dispose();
    await cache.dispose();
  });

  it.skipIf(skip).each(ARRANGEMENTS)('%s: a prepared gather of any layer range moves the bytes moveRecords moves, layer by layer (random records, runs that merge)', async (arrangement) => {
    const layout = new KvLayout({ ...SHAPES[3]!, layers: 5, numBlocks: 48, arrangement });
    const cache = dev.allocKvCache(layout);
    await fill(cache);
    for (let round = 0; round < 6; round++) {
      const first = Math.floor(Math.random() * layout.layers);
      const range = { first, count: 1 + Math.floor(Math.random() * (layout.layers - first)) };
      const order = shuffle(layout.numBlocks);
      // Three records: random blocks, a run of neighbours (merged pieces), one block.
      const start = Math.floor(Math.random() * (layout.numBlocks - 4));
      const blockSets = [order.slice(0, 1 + Math.floor(Math.random() * 6)), [start, start + 1, start + 2, start + 3], [order[10]!]];
      const sizes = blockSets.map((b) => layout.extentBytes(b.length * layout.blockTokens) * range.count);
      const total = sizes.reduce((a, b) => a + b, 0) + 3 * 4096;
      const viaPlan = dev.allocPinned(total);
      const viaMove = dev.allocPinned(total);
      poison(viaPlan.array);
      viaMove.array.set(viaPlan.array);
      let at = 0;
      const records = blockSets.map((blocks, i) => {
        const r = { blocks, stagingOffset: at + 4096 * i };
        at += sizes[i]!;
        return r;
      });
      const plan = cache.prepare('gather', records.map((r) => ({ ...r, staging: viaPlan })), range);
      for (let li = range.count - 1; li >= 0; li--) plan.move(stream, range.first + li);
      for (let li = 0; li < range.count; li++) {
        const layer = range.first + li;
        cache.moveRecords(stream, 'gather', records.map((r, i) => ({
          blocks: r.blocks, staging: viaMove, stagingOffset: r.stagingOffset + li * layout.extentBytes(blockSets[i]!.length * layout.blockTokens),
        })), layer);
      }
      await stream.synchronize();
      expect(sameBytes(viaPlan.array, viaMove.array), `round ${round} layers ${range.first}+${range.count}`).toBe('equal');
      plan.dispose();
      await Promise.all([viaPlan.dispose(), viaMove.dispose()]);
    }
    await cache.dispose();
  });

  it.skipIf(skip)('a prepared transfer moves with the engine a move names, and refuses what that engine cannot move', async () => {
    const shape = { ...SHAPES[3]!, numBlocks: 64 };
    const layout = new KvLayout(shape);
    const cache = dev.allocKvCache(layout);
    const original = await fill(cache);
    const order = shuffle(layout.numBlocks);
    const recs = [order.slice(0, 4), order.slice(4, 7)];
    const bytes = recs.map((b) => layout.stagingBytes(b.length * layout.blockTokens));
    const a = dev.allocPinned(bytes[0]!);
    const b = dev.allocPinned(bytes[1]!);
    poison(a.array);
    poison(b.array);
    // Prepared for the copy engines; layers alternate between the kernel engine, 'auto' and the default.
    const plan = cache.prepare('gather', [{ blocks: recs[0]!, staging: a }, { blocks: recs[1]!, staging: b }], undefined, 'dma');
    for (let layer = 0; layer < layout.layers; layer++) plan.move(stream, layer, (['kernel', 'auto', undefined] as const)[layer % 3]);
    await stream.synchronize();
    expectRecord(shape, original, a.array, 0, recs[0]!, 'record 0');
    expectRecord(shape, original, b.array, 0, recs[1]!, 'record 1');
    expect(codeOf(() => plan.move(stream, 0, 'fast' as never))).toBe('ERR_INVALID_ARG');
    // Pinned and device staging in one plan: the copy engines move it, the kernel engine refuses it and enqueues nothing.
    const d = dev.allocDevice(bytes[1]!);
    const mixed = cache.prepare('gather', [{ blocks: recs[0]!, staging: a }, { blocks: recs[1]!, staging: d }], undefined, 'dma');
    poison(a.array);
    const poisoned = a.array.slice();
    expect(codeOf(() => mixed.move(stream, 0, 'kernel'))).toBe('ERR_INVALID_ARG');
    await stream.synchronize();
    expect(sameBytes(a.array, poisoned)).toBe('equal');
    mixed.move(stream, undefined, 'dma');
    await stream.synchronize();
    expectRecord(shape, original, a.array, 0, recs[0]!, 'mixed record 0');
    mixed.dispose();
    plan.dispose();
    await Promise.all([a.dispose(), b.dispose(), d.dispose()]);
    await cache.dispose();
  });

  it.skipIf(skip)('a native prepared batch keeps its groups across empty rows and refuses bad groups', async () => {
    const { binding } = loadBinding();
    const src = dev.allocPinned(4096);
    const dst = dev.allocDevice(4096);
    const back = dev.allocPinned(4096);
    src.array.set(randomBytes(4096));
    // Rows (dst, dstOffset, src, srcOffset, bytes): group 0 = rows 0-1 (row 1 empty), group 1 = rows 2-3 (row 2 empty).
    const table = new Float64Array([0, 0, 0, 0, 100, 0, 200, 0, 200, 0, 0, 300, 0, 300, 0, 0, 500, 0, 500, 77]);
    const batch = binding.prepareBatch([dst.native], [src.native], table, new Uint32Array([0, 2, 4]));
    poison(back.array);
    stream.copy(dst, 0, back, 0, 4096); // dst poisoned
    stream.native.copyPrepared(batch, 1, 1, 0); // only group 1: bytes 500..576
    stream.copy(back, 0, dst, 0, 4096);
    await stream.synchronize();
    expect(sameBytes(back.array.subarray(500, 577), src.array.subarray(500, 577))).toBe('equal');
    expect(back.array.subarray(0, 500).every((v) => v === 0xa5)).toBe(true);
    stream.native.copyPrepared(batch, 0, 2, 0); // both groups
    stream.copy(back, 0, dst, 0, 4096);
    await stream.synchronize();
    expect(sameBytes(back.array.subarray(0, 100), src.array.subarray(0, 100))).toBe('equal');
    expect(back.array.subarray(100, 500).every((v) => v === 0xa5)).toBe(true);
    expect(codeOf(() => stream.native.copyPrepared(batch, 1, 2, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => binding.prepareBatch([dst.native], [src.native], table, new Uint32Array([0, 3, 2, 4])))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => binding.prepareBatch([dst.native], [src.native], table, new Uint32Array([0, 2])))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => binding.prepareBatch([dst.native], [src.native], new Float64Array([0, 0, 0, 4000, 200]), new Uint32Array([0, 1])))).toBe('ERR_OUT_OF_RANGE');
    batch.release();
    expect(codeOf(() => stream.native.copyPrepared(batch, 0, 1, 0))).toBe('ERR_DISPOSED');
    // Steps: one row of 64 bytes, repeated 3 times 1000 bytes further on both sides; group k = copy k.
    const one = new Float64Array([0, 10, 0, 20, 64]);
    const steps = new Float64Array([0, 1000, 0, 1000, 0]);
    const repeated = binding.prepareBatch([dst.native], [src.native], one, new Uint32Array([0, 1, 2, 3]), steps, 3);
    poison(back.array);
    stream.copy(dst, 0, back, 0, 4096);
    stream.native.copyPrepared(repeated, 0, 3, 0);
    stream.copy(back, 0, dst, 0, 4096);
    await stream.synchronize();
    for (const k of [0, 1, 2]) expect(sameBytes(back.array.subarray(10 + 1000 * k, 74 + 1000 * k), src.array.subarray(20 + 1000 * k, 84 + 1000 * k)), `copy ${k}`).toBe('equal');
    expect(back.array.subarray(74, 1010).every((v) => v === 0xa5)).toBe(true);
    repeated.release();
    // Steps of another length, no repeat, a repeat that walks off the buffer: refused.
    expect(codeOf(() => binding.prepareBatch([dst.native], [src.native], one, new Uint32Array([0, 1]), new Float64Array(4), 1))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => binding.prepareBatch([dst.native], [src.native], one, new Uint32Array([0, 1]), steps, 0))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => binding.prepareBatch([dst.native], [src.native], one, new Uint32Array([0, 1, 2, 3, 4, 5, 6]), steps, 6))).toBe('ERR_OUT_OF_RANGE');
    await Promise.all([src.dispose(), dst.dispose(), back.dispose()]);
  });

  it.skipIf(skip)('device staging works too', async () => {
    const layout = new KvLayout({ ...SHAPES[3]!, numBlocks: 16 });
    const cache = dev.allocKvCache(layout);
    const original = await fill(cache);
    const staging = dev.allocDevice(layout.stagingBytes(2 * 16, 1));
    const check = dev.allocPinned(staging.byteLength);
    for (const engine of ENGINES) {
      poison(check.array);
      cache.gather(stream, { blocks: [9, 2], staging, layers: 1, engine });
      stream.copy(check, 0, staging, 0, staging.byteLength);
      await stream.synchronize();
      const piece = layout.pieceBytes;
      expect(sameBytes(check.array.subarray(0, piece), original[1]!.subarray(9 * piece, 10 * piece))).toBe('equal');
      expect(sameBytes(check.array.subarray(3 * piece, 4 * piece), original[1]!.subarray((16 + 2) * piece, (16 + 3) * piece))).toBe('equal');
    }
    await cache.dispose();
  });

  it.skipIf(skip)('a wrapped runtime cache is checked against its layout', async () => {
    const layout = new KvLayout({ layers: 2, kvHeads: 1, headDim: 64, dtype: 'f16', blockTokens: 4, numBlocks: 8 });
    const raw = [dev.allocDevice(layout.bufferBytes), dev.allocDevice(layout.bufferBytes)];
    const wrapped = dev.wrapKvCache(layout, raw.map((b) => dev.wrapUnsafe(b.address, b.byteLength)));
    expect(wrapped.owned).toBe(false);
    const small = dev.wrapUnsafe(raw[0]!.address, layout.bufferBytes - 1);
    expect(() => dev.wrapKvCache(layout, [small, small])).toThrow(KvflowError);
    expect(() => dev.wrapKvCache(layout, [raw[0]!])).toThrow(/expected 2 device buffers/);
    const staging = dev.allocPinned(layout.stagingBytes(8));
    staging.array.set(randomBytes(staging.byteLength));
    wrapped.scatter(stream, { blocks: [7, 0], staging });
    await stream.synchronize();
    await wrapped.dispose(); // wrapped buffers: the runtime's memory stays
    const check = dev.allocPinned(layout.pieceBytes);
    stream.copy(check, 0, raw[1]!, 7 * layout.pieceBytes, layout.pieceBytes);
    await stream.synchronize();
    const extent = layout.extentBytes(8);
    expect(sameBytes(check.array, staging.array.subarray(extent, extent + layout.pieceBytes))).toBe('equal');
  });

  it.skipIf(skip)('bad input is rejected with a code and nothing moves', async () => {
    const layout = new KvLayout({ layers: 2, kvHeads: 1, headDim: 64, dtype: 'f16', blockTokens: 4, numBlocks: 8 });
    const cache = dev.allocKvCache(layout);
    const original = await fill(cache);
    const staging = dev.allocPinned(layout.stagingBytes(8));
    staging.array.set(randomBytes(staging.byteLength));
    const host = dev.allocHost(staging.byteLength);
    const devStaging = dev.allocDevice(staging.byteLength);
    const cases: Array<[string, () => void]> = [
      ['ERR_OUT_OF_RANGE', () => cache.scatter(stream, { blocks: [0, 8], staging })],
      ['ERR_OUT_OF_RANGE', () => cache.scatter(stream, { blocks: [-1, 0], staging })],
      ['ERR_INVALID_ARG', () => cache.scatter(stream, { blocks: [3, 3], staging })],
      ['ERR_INVALID_ARG', () => cache.scatter(stream, { blocks: [1.5, 3], staging })],
      ['ERR_OUT_OF_RANGE', () => cache.scatter(stream, { blocks: [0, 1], staging, layers: 2 })],
      ['ERR_OUT_OF_RANGE', () => cache.scatter(stream, { blocks: [0, 1], staging, layers: { first: 1, count: 2 } })],
      ['ERR_OUT_OF_RANGE', () => cache.scatter(stream, { blocks: [0, 1], staging, stagingOffset: 4096 })],
      ['ERR_OUT_OF_RANGE', () => cache.scatter(stream, { blocks: [0, 1, 2, 3, 4], staging })],
      ['ERR_INVALID_ARG', () => cache.scatter(stream, { blocks: [0, 1], staging: host as never })],
      ['ERR_INVALID_ARG', () => cache.scatter(stream, { blocks: [0, 1], staging, engine: 'magic' as never })],
      ['ERR_INVALID_ARG', () => cache.scatter(stream, { blocks: 'ab' as never, staging })],
      // A block in two records of one scatter is refused too, before either moves.
      ['ERR_INVALID_ARG', () => cache.moveRecords(stream, 'scatter', [{ blocks: [0, 5], staging }, { blocks: [2, 5], staging, stagingOffset: 4096 }], 0)],
      // The kernel engine takes staging of one kind per batch, on every backend.
      ['ERR_INVALID_ARG', () => cache.moveRecords(stream, 'gather', [{ blocks: [1], staging }, { blocks: [2], staging: devStaging }], 0, 'kernel')],
    ];
    for (const [want, fn] of cases) {
      let got = 'no error';
      try {
        fn();
      } catch (e) {
        expect(e).toBeInstanceOf(KvflowError);
        got = (e as KvflowError).code;
      }
      expect(got, fn.toString()).toBe(want);
    }
    // a gather of blocks repeated is fine (reads only)
    cache.gather(stream, { blocks: [3, 3], staging });
    cache.moveRecords(stream, 'gather', [{ blocks: [4], staging }, { blocks: [4], staging, stagingOffset: 4096 }], 0);
    await stream.synchronize();
    const after = await readBack(cache);
    after.forEach((b, i) => expect(sameBytes(b, original[i]!)).toBe('equal'));
    await cache.dispose();
  });
});
