import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvflowError, openDevice, type Device, type KvflowErrorCode } from '../../src/index.js';
import { loadCandidates } from '../../src/binding/load.js';
import type { RecordedEvent } from '../../src/device/recorded.js';
import { holdStream } from '../../src/device/testing.js';
import { backends, codeOf, cudaSkipReason, open } from '../helpers/backends.js';


describe.each(backends)('errors on $backend', ({ backend, skip }) => {
  let dev: Device;
  beforeAll(() => {
    if (!skip) dev = open(backend, { maxPinnedBytes: 64 << 20 });
  });
  afterAll(async () => {
    await dev?.dispose();
  });

  it.skipIf(skip)('bad sizes and offsets are ERR_INVALID_ARG and never reach native code', async () => {
    const s = dev.createStream();
    const a = dev.allocPinned(64);
    const b = dev.allocDevice(64);
    for (const bad of [-1, Number.NaN, 1.5, Infinity, 2 ** 60, '8', null, 8n]) {
      expect(codeOf(() => s.copy(b, bad as number, a, 0, 8)), `dstOffset ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(codeOf(() => s.copy(b, 0, a, bad as number, 8)), `srcOffset ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(codeOf(() => s.copy(b, 0, a, 0, bad as number)), `bytes ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(codeOf(() => dev.allocDevice(bad as number)), `alloc ${String(bad)}`).toBe('ERR_INVALID_ARG');
    }
    expect(codeOf(() => dev.allocPinned(0))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => s.copy({} as never, 0, a, 0, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => s.copy(b, 0, s as never, 0, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => s.waitEvent({} as never))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => dev.wrapUnsafe(-1n, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => dev.wrapUnsafe(5 as never, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => dev.createStream({ priority: 'urgent' as never }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => openDevice({ backend: 'tpu' as never }))).toBe('ERR_INVALID_ARG');
    await s.dispose();
  });

  it.skipIf(skip)('the native glue takes only objects it made itself, whatever TS checked', async () => {
    const s = dev.createStream();
    const a = dev.allocPinned(64);
    const b = dev.allocDevice(64);
    const native = s.native;
    // Inherits a buffer's prototype but was never made by the addon.
    expect(codeOf(() => native.copy(Object.create(b.native) as never, 0, a.native, 0, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => native.copy(b.native, 0, native as never, 0, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => native.copy(b.native, '0' as never, a.native, 0, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => native.copy(b.native, 0, a.native, 0, -8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => native.copy(b.native, 0, a.native, 0, undefined as never))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => native.waitEvent(b.native as never))).toBe('ERR_INVALID_ARG');
    const event = s.record();
    const recorded = event.native as RecordedEvent;
    // A recorded event is an id in its device's table: the object around it
    // is kvflow's JS, never handed to the addon, and ids it never gave out are refused.
    expect(codeOf(() => native.waitEvent(recorded as never))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => native.waitEvent(Object.create(recorded) as never))).toBe('ERR_INVALID_ARG');
    for (const bad of [0, -1, 1.5, Number.NaN, recorded.id + 1000, 2 ** 60]) {
      expect(codeOf(() => native.waitEvent(bad)), `id ${bad}`).toBe('ERR_INVALID_ARG');
      expect(codeOf(() => dev.native.eventStatus(bad)), `status of ${bad}`).toBe('ERR_INVALID_ARG');
      expect(codeOf(() => dev.native.eventWatch(bad)), `watch of ${bad}`).toBe('ERR_INVALID_ARG');
    }
    expect(codeOf(() => dev.native.eventError('1' as never))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => dev.native.eventWatch(recorded.id, 1001))).toBe('ERR_OUT_OF_RANGE');
    // Releasing ids it never gave out, or not numbers, changes nothing.
    dev.native.releaseEvents([0, -1, recorded.id + 0.5, recorded.id + 1000, 'x' as never]);
    expect(dev.native.eventStatus(recorded.id)).toBeGreaterThanOrEqual(0);
    // The checks above left nothing behind: a good call works, and so do events.
    a.array.set([1, 2, 3, 4, 5, 6, 7, 8]);
    native.copy(b.native, 8, a.native, 0, 8);
    native.waitEvent(recorded.id);
    s.copy(a, 16, b, 8, 8);
    await s.synchronize();
    expect([...a.array.subarray(16, 24)]).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    await event.done();
    await s.dispose();
  });

  it.skipIf(skip)('the message says what was expected and what came', () => {
    const s = dev.createStream();
    const a = dev.allocPinned(64);
    expect(() => s.copy(a, -1, a, 0, 1)).toThrow('expected a non-negative integer for dstOffset, got -1');
    expect(() => s.copy(a, 60, a, 0, 8)).toThrow("expected destination range within the buffer's 64 bytes, got offset 60 + 8 bytes");
  });

  it.skipIf(skip)('ranges past the end are ERR_OUT_OF_RANGE', async () => {
    const s = dev.createStream();
    const a = dev.allocPinned(64);
    const b = dev.allocDevice(32);
    expect(codeOf(() => s.copy(b, 0, a, 0, 33))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => s.copy(b, 1, a, 0, 32))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => s.copy(a, 0, b, 32, 1))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => s.copy(a, 65, b, 0, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => s.copy(a, Number.MAX_SAFE_INTEGER, b, 0, 1))).toBe('ERR_OUT_OF_RANGE');
    await s.dispose();
  });

  it.skipIf(skip)('a buffer or event of another device is ERR_INVALID_ARG', async () => {
    const other = open(backend);
    const s = dev.createStream();
    const mine = dev.allocPinned(64);
    const theirs = other.allocPinned(64);
    const os2 = other.createStream();
    expect(codeOf(() => s.copy(mine, 0, theirs, 0, 8))).toBe('ERR_INVALID_ARG');
    // Ids are per device, so an id of theirs may name an event of this one: refused by device, not by id.
    expect(() => s.waitEvent(os2.record())).toThrow('expected an event of this device, got an event of another device');
    expect(codeOf(() => s.waitEvent(os2.record()))).toBe('ERR_INVALID_ARG');
    await other.dispose();
    await s.dispose();
  });

  it.skipIf(skip)('use after dispose is ERR_DISPOSED', async () => {
    const other = open(backend);
    const s = other.createStream();
    const a = other.allocPinned(64);
    const b = other.allocDevice(64);
    await b.dispose();
    expect(codeOf(() => s.copy(b, 0, a, 0, 8))).toBe('ERR_DISPOSED');
    expect(codeOf(() => b.address)).toBe('ERR_DISPOSED');
    await s.dispose();
    expect(codeOf(() => s.record())).toBe('ERR_DISPOSED');
    expect(codeOf(() => s.copy(a, 0, a, 8, 8))).toBe('ERR_DISPOSED');
    await other.dispose();
    expect(codeOf(() => a.array)).toBe('ERR_DISPOSED');
    expect(codeOf(() => other.allocPinned(8))).toBe('ERR_DISPOSED');
    expect(codeOf(() => other.createStream())).toBe('ERR_DISPOSED');
    expect(codeOf(() => other.info())).toBe('ERR_DISPOSED');
  });

  it.skipIf(skip)('dispose({ wait: false }) with work in flight is ERR_BUSY and disposes nothing', async () => {
    const other = open(backend);
    const s = other.createStream();
    const a = other.allocPinned(4096);
    const b = other.allocDevice(4096);
    const release = holdStream(s);
    s.copy(b, 0, a, 0, 4096);
    await expect(s.dispose({ wait: false })).rejects.toMatchObject({ code: 'ERR_BUSY' });
    await expect(a.dispose({ wait: false })).rejects.toMatchObject({ code: 'ERR_BUSY' });
    await expect(other.dispose({ wait: false })).rejects.toMatchObject({ code: 'ERR_BUSY' });
    expect(s.disposed || a.disposed || other.disposed).toBe(false);
    release();
    await s.synchronize();
    await expect(a.dispose({ wait: false })).resolves.toBeUndefined();
    await other.dispose({ wait: false });
  });

  it.skipIf(skip)('pinned memory past the limit, and absurd sizes, are ERR_OUT_OF_MEMORY', async () => {
    const held = dev.allocPinned(48 << 20);
    expect(codeOf(() => dev.allocPinned(32 << 20))).toBe('ERR_OUT_OF_MEMORY');
    await held.dispose();
    // freed memory returns to the pool and the request now fits
    const ok = dev.allocPinned(32 << 20);
    await ok.dispose();
    expect(codeOf(() => dev.allocDevice(2 ** 52))).toBe('ERR_OUT_OF_MEMORY');
    expect(codeOf(() => dev.allocHost(2 ** 53 - 1))).toBe('ERR_OUT_OF_MEMORY');
  });

  it.skipIf(skip || backend !== 'cpu')('the CPU backend has no CUDA stream to wrap: ERR_UNSUPPORTED', () => {
    expect(codeOf(() => dev.wrapStreamUnsafe(1234n))).toBe('ERR_UNSUPPORTED');
  });

  it.skipIf(skip)('device memory has no host view: ERR_UNSUPPORTED', () => {
    const b = dev.allocDevice(64);
    expect(codeOf(() => b.native.view())).toBe('ERR_UNSUPPORTED');
  });
});

describe('backend selection errors', () => {
  it.skipIf(cudaSkipReason === undefined)('an explicit cuda request without a usable GPU fails with the reason, no fallback', () => {
    let error: unknown;
    try {
      openDevice({ backend: 'cuda' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KvflowError);
    expect((error as KvflowError).code).toBe('ERR_UNSUPPORTED');
    expect((error as KvflowError).message).toMatch(/CUDA backend cannot be used: .+/);
  });

  it('auto reports what it chose and why', async () => {
    const dev = openDevice({ backend: 'auto' });
    expect(dev.selection.requested).toBe('auto');
    expect(['cuda', 'cpu']).toContain(dev.selection.backend);
    expect(dev.selection.reason.length).toBeGreaterThan(10);
    if (cudaSkipReason !== undefined) expect(dev.selection.reason).toContain(cudaSkipReason.replace(/^.*cannot be used: /, ''));
    await dev.dispose();
  });

  it('KVFLOW_BACKEND picks the backend and is validated', async () => {
    const saved = process.env.KVFLOW_BACKEND;
    try {
      process.env.KVFLOW_BACKEND = 'cpu';
      const dev = openDevice();
      expect(dev.backend).toBe('cpu');
      await dev.dispose();
      process.env.KVFLOW_BACKEND = 'gpu';
      expect(codeOf(() => openDevice())).toBe('ERR_INVALID_ARG');
    } finally {
      if (saved === undefined) delete process.env.KVFLOW_BACKEND;
      else process.env.KVFLOW_BACKEND = saved;
    }
  });
});

describe('loader', () => {
  it('lists every path tried and why, with the fix: ERR_LOAD', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-load-'));
    const bogus = path.join(dir, 'kvflow.node');
    writeFileSync(bogus, 'not a shared object');
    const missing = path.join(dir, 'missing.node');
    let error: unknown;
    try {
      loadCandidates([
        { path: missing, build: 'cmake' },
        { path: bogus, build: 'env' },
      ]);
    } catch (e) {
      error = e;
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    expect(error).toBeInstanceOf(KvflowError);
    expect((error as KvflowError).code).toBe('ERR_LOAD');
    const message = (error as KvflowError).message;
    expect(message).toContain(`${missing}: not found`);
    expect(message).toContain(`${bogus}: `);
    expect(message).toContain('npm rebuild kvflow');
  });
});
