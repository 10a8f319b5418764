// Cancellation by AbortSignal (issue #17 item 4): an aborted wait rejects
// with ERR_ABORTED whose cause is the signal's reason; an already-aborted
// signal rejects at once and starts nothing; work already submitted goes on
// and completes into kvflow-owned memory, which is never freed under it.
// Streams and IO engines are held with the test hooks, so nothing here
// depends on timing.
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';

import { KvStore, LayerPipeline, openDevice, type Device, type KvFile } from '../../src/index.js';
import { holdStream } from '../../src/device/testing.js';
import { holdIo, ioStats } from '../../src/io/testing.js';
import { randomBytes } from '../helpers/backends.js';
import { CHUNK, FP, SPEC, randomTokens } from '../helpers/store.js';

const base = mkdtempSync(path.join(os.tmpdir(), 'kvflow-abort-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const BPC = CHUNK / SPEC.blockTokens;
let dev: Device;
let n = 0;
const fresh = (name: string): string => path.join(base, `${name}-${n++}`);

beforeEach(() => {
  dev = openDevice({ backend: 'cpu' });
});
afterEach(async () => {
  await dev.dispose();
});

/** The rejection of `p` (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<Error & { code?: string; cause?: unknown }> {
  try {
    await p;
  } catch (e) {
    return e as Error & { code?: string; cause?: unknown };
  }
  throw new Error('expected a rejection');
}

function expectAborted(e: { code?: string; cause?: unknown; name: string }, reason: unknown): void {
  expect(e.name).toBe('KvflowError');
  expect(e.code).toBe('ERR_ABORTED');
  expect(e.cause).toBe(reason);
}

describe('event.done and stream.synchronize take a signal', () => {
  it('an abort stops the wait; the work goes on and a later done() reports it', async () => {
    const s = dev.createStream();
    const src = dev.allocPinned(1 << 16);
    const dst = dev.allocPinned(1 << 16);
    const bytes = randomBytes(1 << 16);
    src.array.set(bytes);
    const open = holdStream(s);
    s.copy(dst, 0, src, 0, 1 << 16);
    const ev = s.record();
    const ac = new AbortController();
    const waiting = ev.done({ signal: ac.signal });
    const syncing = s.synchronize({ signal: ac.signal });
    const reason = new Error('user gave up');
    ac.abort(reason);
    expectAborted(await rejection(waiting), reason);
    expectAborted(await rejection(syncing), reason);
    expect(ev.status()).toBe('pending');
    open();
    await ev.done();
    await ev.done({ signal: new AbortController().signal });
    expect(Buffer.from(dst.array).equals(Buffer.from(bytes))).toBe(true);
  });

  it('an already-aborted signal rejects at once (its default reason as the cause); a bad signal is ERR_INVALID_ARG', async () => {
    const s = dev.createStream();
    const ev = s.record();
    const signal = AbortSignal.abort();
    expectAborted(await rejection(ev.done({ signal })), signal.reason);
    expectAborted(await rejection(s.synchronize({ signal })), signal.reason);
    expect(signal.reason).toBeInstanceOf(DOMException);
    await expect(ev.done({ signal: {} as AbortSignal })).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    await ev.done();
  });
});

describe('file IO takes a signal', () => {
  let file: KvFile;
  beforeEach(async () => {
    file = await dev.openFile(fresh('file'), { create: true });
  });

  it('an aborted read abandons the wait; the read lands in its buffer even when the buffer was disposed meanwhile', async () => {
    const bytes = randomBytes(1 << 20);
    const src = dev.allocPinned(1 << 20);
    src.array.set(bytes);
    await file.write(0, src, 0, 1 << 20);
    const dst = dev.allocPinned(1 << 20);
    dst.array.fill(0);
    const release = holdIo(file);
    const ac = new AbortController();
    const reading = file.read(dst, 0, 0, 1 << 20, { signal: ac.signal });
    const view = dst.array;
    ac.abort('stop');
    expectAborted(await rejection(reading), 'stop');
    expect(file.inFlight()).toBe(true);
    // Disposed while the IO threads still write into it: the memory stays until they are done.
    const disposed = dst.dispose();
    expect(view.byteLength).toBe(0);
    release();
    await disposed;
    await file.dispose();
    expect(file.inFlight()).toBe(false);
  });

  it('an aborted write still writes its bytes; an already-aborted one submits nothing', async () => {
    const bytes = randomBytes(1 << 18);
    const src = dev.allocPinned(1 << 18);
    src.array.set(bytes);
    const release = holdIo(file);
    const ac = new AbortController();
    const writing = file.write(0, src, 0, 1 << 18, { signal: ac.signal });
    ac.abort();
    expectAborted(await rejection(writing), ac.signal.reason);
    release();
    await file.sync();
    const back = dev.allocPinned(1 << 18);
    await file.read(back, 0, 0, 1 << 18);
    expect(Buffer.from(back.array).equals(Buffer.from(bytes))).toBe(true);

    const before = ioStats(file);
    const signal = AbortSignal.abort('no');
    expectAborted(await rejection(file.write(0, back, 0, 4096, { signal })), 'no');
    expectAborted(await rejection(file.read(back, 0, 0, 4096, { signal })), 'no');
    expectAborted(await rejection(file.writeSummed(back, [{ srcOffset: 0, fileOffset: 0, bytes: 4096, seed: 1 }], { signal })), 'no');
    expect(() => file.readChecked(back, [{ dstOffset: 0, fileOffset: 0, bytes: 4096, seed: 1, crc: 0 }], { signal })).toThrow(expect.objectContaining({ code: 'ERR_ABORTED' }));
    const after = ioStats(file);
    expect(after.highTasks + after.lowTasks).toBe(before.highTasks + before.lowTasks);
  });
});

describe('the store takes a signal', () => {
  const options = (dir: string | undefined, extra: object = {}) => ({
    device: dev, layout: SPEC, fingerprint: FP, dir, chunkTokens: CHUNK, nvmeBytes: 8 * 12288, dramBytes: 8 * 12288, ...extra,
  });

  it('KvStore.open with an aborted signal touches nothing; aborted during the open, it closes and removes what it created', async () => {
    const dir = fresh('store');
    const signal = AbortSignal.abort('never mind');
    expectAborted(await rejection(KvStore.open({ ...options(dir), signal })), 'never mind');
    expect(existsSync(dir)).toBe(false);

    const ac = new AbortController();
    const opening = KvStore.open({ ...options(dir, { slabFileBytes: 2 * 12288 }), signal: ac.signal });
    ac.abort('later');
    expectAborted(await rejection(opening), 'later');
    expect(existsSync(dir)).toBe(false);

    // An existing store aborted during its open keeps its chunks.
    const store = await KvStore.open(options(dir));
    const cache = dev.allocKvCache(SPEC);
    const stream = dev.createStream();
    const tokens = randomTokens(CHUNK);
    await store.put(tokens, cache, Array.from({ length: BPC }, (_, b) => b), stream, { durable: true });
    await store.close();
    const again = new AbortController();
    const reopening = KvStore.open({ ...options(dir), signal: again.signal });
    again.abort('again');
    expectAborted(await rejection(reopening), 'again');
    expect(readdirSync(path.join(dir, 'writers'))).toEqual([]);
    const reopened = await KvStore.open(options(dir));
    expect(reopened.lookup(tokens).tokens).toBe(CHUNK);
    await reopened.close();
  });

  it('flush({ signal }) stops waiting for background writes, which still complete', async () => {
    const store = await KvStore.open(options(fresh('flush'), { admit: 'always' }));
    const held = await dev.openFile(fresh('hold'), { create: true });
    const cache = dev.allocKvCache(SPEC);
    const stream = dev.createStream();
    const tokens = randomTokens(CHUNK);
    const release = holdIo(held); // the engine the store's slab files share
    await store.put(tokens, cache, Array.from({ length: BPC }, (_, b) => b), stream);
    const ac = new AbortController();
    const flushing = store.flush({ signal: ac.signal });
    ac.abort('enough');
    expectAborted(await rejection(flushing), 'enough');
    expectAborted(await rejection(store.flush({ signal: AbortSignal.abort('x') })), 'x');
    release();
    await store.flush();
    expect(store.stats().nvme.chunks).toBe(1);
    await store.close();
  });

  it('prefill: ERR_ABORTED with the reason as its cause, at once when already aborted (compute never called)', async () => {
    const store = await KvStore.open(options(fresh('pipe')));
    const cache = dev.allocKvCache(SPEC);
    const pipe = new LayerPipeline({ store, cache });
    const tokens = randomTokens(2 * CHUNK + 1);
    const blocks = Array.from({ length: 3 * BPC }, (_, b) => b);
    let calls = 0;
    const signal = AbortSignal.abort('before');
    expectAborted(await rejection(pipe.prefill({ tokens, blocks, compute: () => void calls++, signal })), 'before');
    expect(calls).toBe(0);
    const ac = new AbortController();
    const reason = { why: 'client left' };
    const run = pipe.prefill({ tokens, blocks, policy: 'recompute', signal: ac.signal, compute: (l) => {
      calls++;
      if (l === 1) ac.abort(reason);
    } });
    expectAborted(await rejection(run), reason);
    expect(store.lookup(tokens).tokens).toBe(0);
    await pipe.dispose();
    await store.close();
  });
});
