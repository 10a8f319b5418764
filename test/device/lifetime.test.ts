import { describe, expect, it } from 'vitest';

import { holdStream } from '../../src/device/testing.js';
import { backends, deviceSuite, open, randomBytes, sameBytes, throughDevice, ticks } from '../helpers/backends.js';

describe.each(backends)('lifetimes on $backend', ({ backend, skip }) => {
  const fx = deviceSuite(backend, skip);

  it.skipIf(skip)('dispose() waits for operations in flight, and they still complete correctly', async () => {
    const s = fx.dev.createStream();
    const bytes = 1 << 20;
    const { src, mid, out, data } = throughDevice(fx.dev, bytes);
    const release = holdStream(s);
    s.copy(mid, 0, src, 0, bytes);
    s.copy(out, 0, mid, 0, bytes);
    const done = s.record();
    expect(mid.inFlight()).toBe(true);
    let midFreed = false;
    const midDisposed = mid.dispose().then(() => {
      midFreed = true;
    });
    expect(mid.disposed).toBe(true);
    await ticks(20);
    expect(midFreed).toBe(false); // the held copies still use it
    release();
    await done.done();
    await midDisposed;
    expect(sameBytes(out.array, data)).toBe('equal');
    await s.dispose();
  });

  it.skipIf(skip)('dispose() is idempotent and returns the same promise', async () => {
    const b = fx.dev.allocPinned(64);
    const p1 = b.dispose();
    expect(b.dispose()).toBe(p1);
    await p1;
    const s = fx.dev.createStream();
    const q1 = s.dispose();
    expect(s.dispose()).toBe(q1);
    await q1;
  });

  it.skipIf(skip)('pinned views are the memory itself and are detached on dispose', async () => {
    const s = fx.dev.createStream();
    const a = fx.dev.allocPinned(4096);
    const b = fx.dev.allocPinned(4096);
    const view = a.array;
    expect(a.array).toBe(view); // one view, no copy
    view.set(randomBytes(4096));
    s.copy(b, 0, a, 0, 4096);
    await s.synchronize();
    expect(sameBytes(b.array, view)).toBe('equal');
    await a.dispose();
    expect(view.byteLength).toBe(0);
    expect(view.buffer.byteLength).toBe(0);
    await s.dispose();
  });

  it.skipIf(skip)('pinned memory returns to the pool and is reused', async () => {
    const before = fx.dev.pinnedStats();
    const a = fx.dev.allocPinned(3 << 20);
    const addr = a.address;
    await a.dispose();
    const mid = fx.dev.pinnedStats();
    expect(mid.cachedBytes).toBeGreaterThanOrEqual(before.cachedBytes + (3 << 20));
    const b = fx.dev.allocPinned(3 << 20);
    expect(b.address).toBe(addr);
    expect(fx.dev.pinnedStats().reuses).toBe(mid.reuses + 1);
    await b.dispose();
    fx.dev.trimPinned();
    expect(fx.dev.pinnedStats().cachedBytes).toBe(0);
  });

  it.skipIf(skip)('disposing the device disposes its streams and buffers after their work', async () => {
    const other = open(backend);
    const s = other.createStream();
    const a = other.allocPinned(1 << 20);
    const d = other.allocDevice(1 << 20);
    const h = other.allocHost(1 << 20);
    a.array.set(randomBytes(1 << 20));
    const release = holdStream(s);
    s.copy(d, 0, a, 0, 1 << 20);
    s.copy(h, 0, d, 0, 1 << 20);
    const last = s.record();
    const closing = other.dispose();
    expect(other.disposed).toBe(true);
    await ticks(10);
    expect(last.status()).toBe('pending');
    release();
    await closing;
    expect(last.status()).toBe('ok');
    expect(s.disposed && a.disposed && d.disposed && h.disposed).toBe(true);
    await expect(other.dispose()).resolves.toBeUndefined();
  });

  it.skipIf(skip)('Symbol.asyncDispose disposes', async () => {
    const other = open(backend);
    const b = other.allocPinned(64);
    await b[Symbol.asyncDispose]();
    expect(b.disposed).toBe(true);
    await other[Symbol.asyncDispose]();
    expect(other.disposed).toBe(true);
  });

  it.skipIf(skip)('info() reports the backend and its facts', () => {
    const info = fx.dev.info();
    expect(info.backend).toBe(backend);
    expect(info.name.length).toBeGreaterThan(0);
    expect(info.cores).toBeGreaterThan(0);
    expect(info.hostMemory).toBeGreaterThan(0);
    expect(info.totalMemory).toBeGreaterThan(0);
    expect(info.selection.backend).toBe(backend);
    expect(info.addon.path).toMatch(/kvflow\.node$/);
    if (backend === 'cuda') {
      expect(info.computeCapability).toMatch(/^\d+\.\d+$/);
      expect(info.driverVersion).toBeGreaterThanOrEqual(13000);
      expect(info.runtimeVersion).toBeGreaterThanOrEqual(13000);
      expect(info.pcieGen > 0 || info.pcieNote.length > 0).toBe(true);
    } else {
      expect(info.pcieNote).toContain('CPU backend');
    }
  });
});
