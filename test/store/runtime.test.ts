// The store as a runtime drives it: batched loads of several requests with
// failures mid-prefill, per-request outcomes, puts after a failed load, whole
// block tables, tenants and the stats a runtime reads (issue #12).
import { closeSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvStore, KvLayout, type Device, type KvCache, type Stream } from '../../src/index.js';
import { nvmeLocation } from '../../src/store/testing.js';
import { backends, open, randomBytes } from '../helpers/backends.js';
import { CHUNK, FP, SPEC, fillCache, pieceOf, randomBlocks, randomTokens, readCache } from '../helpers/store.js';

const layout = new KvLayout(SPEC);
const BPC = CHUNK / SPEC.blockTokens;

describe.each(backends)('KvStore as a runtime uses it, on $backend', ({ backend, skip }) => {
  let dev: Device;
  let stream: Stream;
  let src: KvCache;
  let srcData: Uint8Array[];
  let dst: KvCache;
  let root: string;

  beforeAll(async () => {
    if (skip) return;
    dev = open(backend);
    stream = dev.createStream();
    src = dev.allocKvCache(layout);
    dst = dev.allocKvCache(layout);
    srcData = src.buffers.map((b) => randomBytes(b.byteLength));
    await fillCache(dev, stream, src, srcData);
    root = mkdtempSync(path.join(os.tmpdir(), 'kvflow-store-runtime-'));
  });
  afterAll(async () => {
    await dev?.dispose();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  let n = 0;
  function storeDir(): string {
    return path.join(root, `s${n++}`);
  }

  async function openStore(dir: string, extra: Partial<Parameters<typeof KvStore.open>[0]> = {}): Promise<KvStore> {
    return KvStore.open({ device: dev, layout, fingerprint: FP, dir, chunkTokens: CHUNK, nvmeBytes: 64 * 12288, dramBytes: 16 * 12288, ...extra });
  }

  /** Flips bytes inside layer `layer`'s extent of the chunk `key` (the store must be closed). */
  function corrupt(loc: { file: { path: string }; offset: number }, extentBytes: number, layer: number): void {
    const fd = openSync(loc.file.path, 'r+');
    const at = loc.offset + layer * extentBytes + 64;
    const buf = Buffer.alloc(16);
    readSync(fd, buf, 0, 16, at);
    for (let i = 0; i < 16; i++) buf[i] = buf[i]! ^ 0x5a;
    writeSync(fd, buf, 0, 16, at);
    closeSync(fd);
  }

  /** Whether blocks `to` of dst hold src's `from` blocks (or zeros where `from` is null) in `layers`. */
  function expectBlocks(got: Uint8Array[], to: readonly number[], from: readonly (number | null)[], layers: readonly number[], what: string): void {
    for (const layer of layers) {
      for (let i = 0; i < to.length; i++) {
        for (const kv of [0, 1] as const) {
          const have = pieceOf(dst, got, layer, kv, to[i]!);
          const f = from[i];
          if (f === null || f === undefined) expect(have.every((x) => x === 0), `${what}: layer ${layer} block ${i} kv ${kv} zeros`).toBe(true);
          else expect(Buffer.compare(have, pieceOf(src, srcData, layer, kv, f)), `${what}: layer ${layer} block ${i} kv ${kv}`).toBe(0);
        }
      }
    }
  }

  it.skipIf(skip)('a checksum failure on layer 0 of one request in a batched load: later layers never throw, the other request loads exactly, each hit settles with its own outcome', async () => {
    const dir = storeDir();
    const a = randomTokens(CHUNK * 3);
    const b = randomTokens(CHUNK * 2);
    const from = randomBlocks(5 * BPC, SPEC.numBlocks);
    const fa = from.slice(0, 3 * BPC);
    const fb = from.slice(3 * BPC);
    let store = await openStore(dir);
    await store.put(a, src, fa, stream, { durable: true });
    await store.put(b, src, fb, stream, { durable: true });
    const loc = nvmeLocation(store, store.keys(a)[1]!)!;
    await store.close();
    corrupt(loc, store.extentBytes, 0);

    store = await openStore(dir);
    const ha = store.lookup(a);
    const hb = store.lookup(b);
    expect([ha.nvme, hb.nvme]).toEqual([3, 2]);
    const to = randomBlocks(5 * BPC, SPEC.numBlocks);
    await fillCache(dev, stream, dst, dst.buffers.map((x) => randomBytes(x.byteLength)));
    const chunks = [...ha.chunks, ...hb.chunks];
    const e0 = store.loadLayer(chunks, 0, dst, to, stream);
    await expect(e0.done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
    // Each request's outcome, without store.flush().
    expect(await ha.settled()).toEqual({ ok: false, failed: [1], validTokens: CHUNK, codes: { 1: 'ERR_CHECKSUM' } });
    expect(await hb.settled()).toEqual({ ok: true, failed: [], validTokens: 2 * CHUNK, codes: {} });
    // Whether or not the bad chunk's drop from the index has landed, later layers load (never a throw).
    await store.flush();
    const later = [1, 2].map((layer) => store.loadLayer(chunks, layer, dst, to, stream));
    for (const e of later) await expect(e.done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
    expect(await hb.settled()).toMatchObject({ ok: true, failed: [] });
    expect(ha.failed).toEqual([1]);
    expect(ha.validTokens).toBe(CHUNK);
    const got = await readCache(dev, stream, dst);
    // A's chunk 1 holds zeros in every layer; A's other chunks and all of B are exact.
    const want = [...fa.slice(0, BPC), ...fa.slice(BPC, 2 * BPC).map(() => null), ...fa.slice(2 * BPC), ...fb];
    expectBlocks(got, to, want, [0, 1, 2], 'batched');
    expect(store.stats().local.checksumFailures).toBe(1);
    ha.release();
    hb.release();
    await store.close();
  });
});
