import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvLayout, KvStore, openDevice, type Device, type KvCache } from '../../src/index.js';
import { FP } from '../helpers/store.js';

/** The code a call throws (sync) or rejects with (async), or 'none'. */
async function codeOf(fn: () => unknown): Promise<string> {
  try {
    await fn();
    return 'none';
  } catch (e) {
    return (e as { code?: string }).code ?? `untyped: ${String(e)}`;
  }
}

describe('arguments at the edges of the API get coded errors, never a TypeError', () => {
  let dev: Device;
  let cache: KvCache;
  const layout = new KvLayout({ layers: 2, kvHeads: 2, headDim: 8, dtype: 'f16', blockTokens: 4, numBlocks: 16 });

  beforeAll(() => {
    dev = openDevice({ backend: 'cpu' });
    cache = dev.allocKvCache(layout);
  });
  afterAll(async () => {
    await dev.dispose();
  });

  it('a stream argument that is not a Stream', async () => {
    const staging = dev.allocPinned(layout.stagingBytes(8));
    const store = await KvStore.open({ device: dev, layout, fingerprint: FP, chunkTokens: 8, nvmeBytes: 8 * 8192, dramBytes: 8 * 8192 });
    const hit = store.lookup([1, 2, 3, 4, 5, 6, 7, 8]);
    const put = store.beginPut([1, 2, 3, 4, 5, 6, 7, 8]);
    const plan = cache.prepare('gather', [{ blocks: [0, 1], staging, stagingOffset: 0 }]);
    for (const bad of [undefined, null, 5, 'x', {}, { native: {} }]) {
      const s = bad as never;
      expect(await codeOf(() => cache.gather(s, { blocks: [0, 1], staging }))).toBe('ERR_INVALID_ARG');
      expect(await codeOf(() => cache.scatter(s, { blocks: [0, 1], staging }))).toBe('ERR_INVALID_ARG');
      expect(await codeOf(() => cache.moveRecords(s, 'gather', []))).toBe('ERR_INVALID_ARG');
      expect(await codeOf(() => plan.move(s))).toBe('ERR_INVALID_ARG');
      expect(await codeOf(() => store.loadLayer(hit.chunks, 0, cache, [0, 1], s))).toBe('ERR_INVALID_ARG');
      expect(await codeOf(() => store.putLayer(put, 0, cache, [0, 1], s))).toBe('ERR_INVALID_ARG');
      expect(await codeOf(() => store.put([9, 9, 9, 9, 9, 9, 9, 9], cache, [0, 1], s))).toBe('ERR_INVALID_ARG');
    }
    // Nothing was changed by the refused calls.
    expect(store.lookup([9, 9, 9, 9, 9, 9, 9, 9]).chunks).toHaveLength(0);
    hit.release();
    await store.abort(put);
    await plan.dispose();
    await store.close();
    await staging.dispose();
  });

  it('stream and device options', async () => {
    for (const bad of ['high', 0.5, true, [1]]) expect(await codeOf(() => dev.createStream(bad as never))).toBe('ERR_INVALID_ARG');
    expect(await codeOf(() => dev.createStream({ priority: 'urgent' } as never))).toBe('ERR_INVALID_ARG');
    expect(await codeOf(() => dev.createStream({ prio: 'high' } as never))).toBe('ERR_INVALID_ARG');
    const s = dev.createStream(null as never); // null means defaults
    expect(s.priority).toBe('normal');
    await s.dispose();
    expect(await codeOf(() => openDevice({ backend: 'cpu', ordinal: 7 }))).toBe('ERR_OUT_OF_RANGE');
    expect(await codeOf(() => openDevice({ backend: 'cpu', bogus: 1 } as never))).toBe('ERR_INVALID_ARG');
    expect(await codeOf(() => openDevice('cpu' as never))).toBe('ERR_INVALID_ARG');
  });

  it('files that are not storage', async () => {
    expect(await codeOf(() => dev.openFile('/proc/self/mem'))).toBe('ERR_INVALID_ARG');
    expect(await codeOf(() => dev.openFile('/sys/kernel/notes'))).toBe('ERR_INVALID_ARG');
    expect(await codeOf(() => dev.openFile('/dev/zero'))).toBe('ERR_INVALID_ARG');
    expect(await codeOf(() => dev.openFile('/proc/kvflow-new', { create: true, size: 4096 }))).toBe('ERR_INVALID_ARG');
  });
});
