// Unknown options are refused (issue #17 item 4): a misspelt option would
// otherwise be ignored without a word. Every public call that takes an
// options object rejects `{ bogus: 1 }` with ERR_INVALID_ARG naming the key,
// and the rejected call changes nothing.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvConnector, KvLayout, KvStore, LayerPipeline, openDevice, type Device, type KvCache, type KvFile, type Stream } from '../../src/index.js';
import { ReferenceModel, presets } from '../../src/reference/index.js';
import { CHUNK, FP, SPEC, randomTokens } from '../helpers/store.js';

const base = mkdtempSync(path.join(os.tmpdir(), 'kvflow-options-'));
const BOGUS = { bogus: 1 } as never;
const BPC = CHUNK / SPEC.blockTokens;

let dev: Device;
let stream: Stream;
let cache: KvCache;
let store: KvStore;
let file: KvFile;

beforeAll(async () => {
  dev = openDevice({ backend: 'cpu' });
  stream = dev.createStream();
  cache = dev.allocKvCache(SPEC);
  store = await KvStore.open({ device: dev, layout: SPEC, fingerprint: FP, dir: path.join(base, 'store'), chunkTokens: CHUNK, nvmeBytes: 8 * 12288, dramBytes: 8 * 12288 });
  file = await dev.openFile(path.join(base, 'file.bin'), { create: true });
});

afterAll(async () => {
  await dev.dispose();
  rmSync(base, { recursive: true, force: true });
});

/** The error of `call` (a throw or a rejection). */
async function errorOf(call: () => unknown): Promise<unknown> {
  try {
    await call();
  } catch (e) {
    return e;
  }
  return undefined;
}

async function expectBogus(what: string, call: () => unknown): Promise<void> {
  const e = await errorOf(call);
  expect(e, what).toMatchObject({ name: 'KvflowError', code: 'ERR_INVALID_ARG' });
  expect((e as Error).message, what).toContain('"bogus"');
}

/** `options` with a bogus key added. */
const withBogus = <T extends object>(options: T): T => ({ ...options, bogus: 1 });

describe('unknown options are ERR_INVALID_ARG naming the key', () => {
  it('device, streams, events, buffers', async () => {
    await expectBogus('openDevice', () => openDevice(withBogus({ backend: 'cpu' as const })));
    await expectBogus('createStream', () => dev.createStream(BOGUS));
    const host = dev.allocPinned(4096);
    await expectBogus('event.done', () => stream.record().done(BOGUS));
    await expectBogus('stream.synchronize', () => stream.synchronize(BOGUS));
    await expectBogus('buffer.dispose', () => host.dispose(BOGUS));
    expect(host.disposed).toBe(false);
    await host.dispose();
  });

  it('layouts and paged transfers', async () => {
    await expectBogus('KvLayout', () => new KvLayout(withBogus(SPEC)));
    await expectBogus('allocKvCache', () => dev.allocKvCache(withBogus(SPEC)));
    const staging = dev.allocPinned(cache.layout.stagingBytes(CHUNK));
    staging.array.fill(5);
    await expectBogus('gather', () => cache.gather(stream, withBogus({ blocks: [0, 1], staging })));
    await stream.synchronize();
    expect(staging.array.every((x) => x === 5)).toBe(true);
    await staging.dispose();
  });

  it('files: openFile creates nothing, requests move nothing', async () => {
    const p = path.join(base, 'never.bin');
    await expectBogus('openFile', () => dev.openFile(p, withBogus({ create: true })));
    expect(existsSync(p)).toBe(false);
    const src = dev.allocPinned(4096);
    src.array.fill(9);
    await file.write(0, src, 0, 4096);
    const dst = dev.allocPinned(4096);
    dst.array.fill(3);
    await expectBogus('read', () => file.read(dst, 0, 0, 4096, BOGUS));
    await expectBogus('write', () => file.write(4096, src, 0, 4096, BOGUS));
    await expectBogus('writeSummed', () => file.writeSummed(src, [{ srcOffset: 0, fileOffset: 4096, bytes: 4096, seed: 1 }], BOGUS));
    await expectBogus('readChecked', () => file.readChecked(dst, [{ dstOffset: 0, fileOffset: 0, bytes: 4096, seed: 1, crc: 0 }], BOGUS));
    expect(file.size()).toBe(4096);
    expect(dst.array.every((x) => x === 3)).toBe(true);
    await src.dispose();
    await dst.dispose();
  });

  it('KvStore.open (and its fingerprint and file options) creates no directory', async () => {
    const dir = path.join(base, 'never');
    const options = { device: dev, layout: SPEC, fingerprint: FP, dir, chunkTokens: CHUNK };
    await expectBogus('KvStore.open', () => KvStore.open(withBogus(options)));
    await expectBogus('fingerprint', () => KvStore.open({ ...options, fingerprint: withBogus(FP) }));
    await expectBogus('file', () => KvStore.open({ ...options, file: BOGUS }));
    expect(existsSync(dir)).toBe(false);
  });

  it('the store\'s calls change nothing', async () => {
    const tokens = randomTokens(2 * CHUNK);
    const blocks = Array.from({ length: 2 * BPC }, (_, b) => b);
    await expectBogus('keys', () => store.keys(tokens, BOGUS));
    await expectBogus('lookup', () => store.lookup(tokens, BOGUS));
    await expectBogus('beginPut', () => store.beginPut(tokens, BOGUS));
    await expectBogus('put', () => store.put(tokens, cache, blocks, stream, BOGUS));
    const before = store.stats();
    expect(before.local.puts).toBe(0);
    const put = store.beginPut(tokens);
    await expectBogus('putLayer', () => store.putLayer(put, 0, cache, blocks, stream, BOGUS));
    await expectBogus('commit', () => store.commit(put, BOGUS));
    await store.abort(put);
    await expectBogus('loadLayer', () => store.loadLayer([], 0, cache, blocks, stream, BOGUS));
    await expectBogus('flush', () => store.flush(BOGUS));
    await expectBogus('close', () => store.close(BOGUS));
    expect(store.closed).toBe(false);
    expect(store.lookup(tokens).tokens).toBe(0);
    expect(store.stats().dram.chunks).toBe(0);
  });

  it('pipeline, connector, reference model', async () => {
    await expectBogus('LayerPipeline', () => new LayerPipeline(withBogus({ store, cache })));
    const pipe = new LayerPipeline({ store, cache });
    const tokens = randomTokens(CHUNK + 1);
    const blocks = Array.from({ length: 2 * BPC + 1 }, (_, b) => b);
    let computed = 0;
    await expectBogus('prefill', () => pipe.prefill(withBogus({ tokens, blocks, compute: () => void computed++ })));
    expect(computed).toBe(0);
    expect(pipe.inFlight).toBe(0);
    await pipe.dispose();
    await expectBogus('KvConnector', () => new KvConnector(withBogus({ store, cache })));
    const conn = new KvConnector({ store, cache });
    const req = conn.lookup(tokens);
    await expectBogus('startLoad', () => conn.startLoad(req, blocks, BOGUS));
    conn.startLoad(req, blocks); // the rejected call started nothing: a first start is still allowed
    await conn.dispose();
    await expectBogus('ReferenceModel.create', () => ReferenceModel.create(dev, withBogus({ ...presets.tiny, maxTokens: 8 })));
    const model = ReferenceModel.create(dev, { ...presets.tiny, maxTokens: 8 });
    await expectBogus('kvLayout', () => model.kvLayout(withBogus({ blockTokens: 4, numBlocks: 8 })));
    expect(model.kvLayout({ blockTokens: 4, numBlocks: 8 })).toBeInstanceOf(KvLayout);
    model.dispose();
  });
});
