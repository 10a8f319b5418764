// Who enqueues a stream's large copy-engine batches (`dmaSubmit`): with
// 'thread' a CUDA stream hands them, and the records and waits after them,
// to a submission thread of its own; any other operation first waits until
// those are enqueued. The stream's order, its events and the bytes must be
// exactly those of 'caller'. The CPU backend ignores the option (its streams
// run on threads of their own), so there these cases check the option's
// plumbing and the same order.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvLayout, openDevice, type Device, type KvCache, type PinnedBuffer, type Stream } from '../../src/index.js';
import { backends, codeOf, randomBytes, sameBytes } from '../helpers/backends.js';
import { fillCache, readCache } from '../helpers/cache.js';
import { holdStream, injectFailure } from '../../src/device/testing.js';

// 2 layers x K,V x 80 blocks: 320 pieces per whole transfer, past the 128 at
// which a batch is handed to the submission thread.
const SHAPE = { layers: 2, kvHeads: 8, headDim: 128, dtype: 'bf16' as const, blockTokens: 16, numBlocks: 160 };
const BLOCKS = 80;

const modes = backends.flatMap(({ backend, skip }) => (['caller', 'thread'] as const).map((dmaSubmit) => ({ backend, skip, dmaSubmit })));

describe.each(modes)('dmaSubmit $dmaSubmit on $backend', ({ backend, skip, dmaSubmit }) => {
  let dev: Device;
  const layout = new KvLayout(SHAPE);
  const bytes = layout.stagingBytes(BLOCKS * SHAPE.blockTokens);
  beforeAll(() => {
    if (!skip) dev = openDevice({ backend, dmaSubmit });
  });
  afterAll(async () => {
    await dev?.dispose();
  });

  /** A cache of random bytes, a record of random bytes in pinned staging, and two block lists. */
  async function setup(s: Stream): Promise<{ cache: KvCache; original: Uint8Array[]; record: PinnedBuffer; blocks: number[]; others: number[] }> {
    const cache = dev.allocKvCache(layout);
    const original = cache.buffers.map((b) => randomBytes(b.byteLength));
    await fillCache(dev, s, cache, original);
    const record = dev.allocPinned(bytes);
    record.array.set(randomBytes(bytes));
    const order = Array.from({ length: SHAPE.numBlocks }, (_, i) => i).sort(() => Math.random() - 0.5);
    return { cache, original, record, blocks: order.slice(0, BLOCKS), others: order.slice(BLOCKS, 2 * BLOCKS) };
  }

  it.skipIf(skip)('is the device config, and a bad value is refused with ERR_INVALID_ARG', () => {
    expect(dev.config.dmaSubmit).toBe(dmaSubmit);
    expect(codeOf(() => openDevice({ backend, dmaSubmit: 'worker' as never }))).toBe('ERR_INVALID_ARG');
  });

  it.skipIf(skip)('a large scatter, a record another stream waits on, and that stream gathering it back: bytes exact', async () => {
    const a = dev.createStream();
    const b = dev.createStream();
    const { cache, record, blocks } = await setup(a);
    const back = dev.allocPinned(bytes);
    back.array.fill(0xa5);
    for (let round = 0; round < 3; round++) {
      cache.scatter(a, { blocks, staging: record, engine: 'dma' });
      const landed = a.record();
      b.waitEvent(landed);
      cache.gather(b, { blocks, staging: back, engine: round === 1 ? 'dma' : 'kernel' });
      await b.synchronize();
      expect(sameBytes(back.array, record.array), `round ${round}`).toBe('equal');
      back.array.fill(0xa5);
      record.array.set(randomBytes(bytes));
    }
    await Promise.all([a.dispose(), b.dispose(), back.dispose(), record.dispose(), cache.dispose()]);
  });

  it.skipIf(skip)('every other operation after a large batch follows it: copy, kernel gather, handle, synchronize', async () => {
    const s = dev.createStream();
    const { cache, original, record, blocks, others } = await setup(s);
    const back = dev.allocPinned(bytes);
    // scatter (large, copy engines), then a plain copy of a whole cache buffer out.
    cache.scatter(s, { blocks, staging: record, engine: 'dma' });
    const whole = dev.allocPinned(cache.buffers[0]!.byteLength);
    s.copy(whole, 0, cache.buffers[0]!, 0, whole.byteLength);
    // then a kernel-engine gather of the same blocks, then one on the copy engines of other blocks.
    cache.gather(s, { blocks, staging: back, engine: 'kernel' });
    const untouched = dev.allocPinned(bytes);
    cache.gather(s, { blocks: others, staging: untouched, engine: 'dma' });
    await s.synchronize();
    expect(sameBytes(back.array, record.array)).toBe('equal');
    // The other blocks still hold what the cache was filled with: gather them from the original arrays.
    const after = await readCache(dev, s, cache);
    const piece = layout.pieceBytes;
    for (let layer = 0; layer < SHAPE.layers; layer++) {
      for (let kv = 0; kv < 2; kv++) {
        others.forEach((blk, i) => {
          const off = (kv * SHAPE.numBlocks + blk) * piece;
          const at = layer * layout.extentBytes(BLOCKS * SHAPE.blockTokens) + (kv * BLOCKS + i) * piece;
          expect(sameBytes(untouched.array.subarray(at, at + piece), original[layer]!.subarray(off, off + piece)), `layer ${layer} kv ${kv} block ${blk}`).toBe('equal');
        });
      }
    }
    // The plain copy saw layer 0 after the scatter.
    expect(sameBytes(whole.array, after[0]!)).toBe('equal');
    // A handle read after a large batch: whatever is enqueued on it comes after the batch.
    cache.scatter(s, { blocks: others, staging: record, engine: 'dma' });
    expect(typeof s.handle).toBe('bigint');
    cache.gather(s, { blocks: others, staging: back, engine: 'dma' });
    await s.synchronize();
    expect(sameBytes(back.array, record.array)).toBe('equal');
    await Promise.all([s.dispose(), whole.dispose(), back.dispose(), untouched.dispose(), record.dispose(), cache.dispose()]);
  });

  it.skipIf(skip)('a failure injected before a large batch fails the next event only; the stream goes on', async () => {
    const s = dev.createStream();
    const { cache, record, blocks, others } = await setup(s);
    const back = dev.allocPinned(bytes);
    back.array.fill(0xa5);
    const untouched = back.array.slice();
    const release = holdStream(s); // all enqueued before any of it runs
    cache.scatter(s, { blocks, staging: record, engine: 'dma' });
    injectFailure(s, 'ERR_IO', 'injected batch failure');
    cache.gather(s, { blocks: others, staging: back, engine: 'dma' }); // fails, moves nothing
    const failed = s.record();
    cache.gather(s, { blocks, staging: back, engine: 'dma' });
    const after = s.record();
    release();
    await expect(failed.done()).rejects.toMatchObject({ code: 'ERR_IO', message: 'injected batch failure' });
    await expect(after.done()).resolves.toBeUndefined();
    expect(sameBytes(back.array, untouched)).not.toBe('equal');
    expect(sameBytes(back.array, record.array)).toBe('equal');
    await Promise.all([s.dispose(), back.dispose(), record.dispose(), cache.dispose()]);
  });

  it.skipIf(skip)('a stream disposed right after large batches finishes them first', async () => {
    const s = dev.createStream();
    const { cache, record, blocks } = await setup(s);
    for (let i = 0; i < 4; i++) cache.scatter(s, { blocks, staging: record, engine: 'dma' });
    await s.dispose();
    const check = dev.createStream();
    const back = dev.allocPinned(bytes);
    cache.gather(check, { blocks, staging: back, engine: 'dma' });
    await check.synchronize();
    expect(sameBytes(back.array, record.array)).toBe('equal');
    await Promise.all([check.dispose(), back.dispose(), record.dispose(), cache.dispose()]);
  });
});
