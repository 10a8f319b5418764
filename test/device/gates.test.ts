import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { defaults, openDevice, type Backend, type CudaGateRequest, type Device } from '../../src/index.js';
import { holdStream } from '../../src/device/testing.js';
import { codeOf, cudaSkipReason, poison, randomBytes, sameBytes, throughDevice, ticks } from '../helpers/backends.js';

// Gates are what a stream waits on when a host thread (an IO completion, or
// the test hook here) must let it go on. The CPU backend ignores cudaGate;
// on CUDA both ways of waiting run the same suite.
const modes: Array<{ backend: Backend; cudaGate: CudaGateRequest; skip: boolean }> = [
  { backend: 'cpu', cudaGate: 'wait-value', skip: false },
  { backend: 'cuda', cudaGate: 'host', skip: cudaSkipReason !== undefined },
  { backend: 'cuda', cudaGate: 'wait-value', skip: cudaSkipReason !== undefined },
];

describe.each(modes)('gates on $backend (cudaGate $cudaGate)', ({ backend, cudaGate, skip }) => {
  // CUDA blocks the enqueuing thread once a few dozen host functions are
  // pending, and runs every stream's host functions on one thread: with
  // host-function gates, the cases marked below would deadlock the JS thread.
  const hostFunctions = backend === 'cuda' && cudaGate === 'host';
  let dev: Device;
  beforeAll(() => {
    if (!skip) dev = openDevice({ backend, cudaGate });
  });
  afterAll(async () => {
    await dev?.dispose();
  });

  it.skipIf(skip)('info() says how streams wait on gates, and why', () => {
    const info = dev.info();
    if (backend === 'cpu') {
      expect(info.cudaGate).toBe('');
    } else {
      expect(info.cudaGate).toBe(cudaGate);
      expect(info.cudaGateReason).toMatch(/requested/);
    }
  });

  it.skipIf(skip)('a held stream runs nothing until its gate opens, then runs in order', async () => {
    const s = dev.createStream();
    const bytes = 1 << 20;
    const { src, mid, out, data } = throughDevice(dev, bytes);
    const release = holdStream(s);
    s.copy(mid, 0, src, 0, bytes);
    s.copy(out, 0, mid, 0, bytes);
    const done = s.record();
    await ticks(20);
    expect(done.status()).toBe('pending');
    expect(out.array.every((v) => v === 0xa5)).toBe(true);
    release();
    await done.done();
    expect(sameBytes(out.array, data)).toBe('equal');
    await s.dispose();
  });

  it.skipIf(skip)('a gate opened with a failure fails the next event with it, and only that one', async () => {
    const s = dev.createStream();
    const src = dev.allocPinned(4096);
    const out = dev.allocPinned(4096);
    const data = randomBytes(4096);
    src.array.set(data);
    const release = holdStream(s);
    s.copy(out, 0, src, 0, 4096);
    const failed = s.record();
    release({ code: 'ERR_IO', message: 'the read behind this gate failed' });
    await expect(failed.done()).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringContaining('the read behind this gate failed') });
    poison(out.array);
    s.copy(out, 0, src, 0, 4096);
    const clean = s.record();
    await clean.done();
    expect(sameBytes(out.array, data)).toBe('equal');
    await s.dispose();
  });

  it.skipIf(skip || hostFunctions)('100 gates pending on one stream: enqueueing returns, and the stream passes them in order', async () => {
    const s = dev.createStream();
    const n = 100;
    const piece = 256;
    const src = dev.allocPinned(n * piece);
    const dst = dev.allocDevice(n * piece);
    const out = dev.allocPinned(n * piece);
    const data = randomBytes(n * piece);
    src.array.set(data);
    // Twice: the second round reuses what the first released (on CUDA, the
    // flags), which must be closed again.
    for (let round = 0; round < 2; round++) {
      poison(out.array);
      const releases = [];
      const events = [];
      for (let i = 0; i < n; i++) {
        releases.push(holdStream(s));
        s.copy(dst, i * piece, src, i * piece, piece);
        events.push(s.record());
      }
      s.copy(out, 0, dst, 0, n * piece);
      const last = s.record();
      for (let i = n - 1; i >= 1; i--) releases[i]!();
      await ticks(20);
      // Everything is behind the first gate, still closed.
      expect(events.map((e) => e.status()).every((st) => st === 'pending'), `round ${round}`).toBe(true);
      releases[0]!();
      await last.done();
      expect(events.every((e) => e.status() === 'ok')).toBe(true);
      expect(sameBytes(out.array, data)).toBe('equal');
    }
    await s.dispose();
  });

  it.skipIf(skip || hostFunctions)('a stream held at a gate does not hold host copies on another stream', async () => {
    const a = dev.createStream();
    const b = dev.createStream();
    const src = dev.allocPinned(4096);
    const dev1 = dev.allocDevice(4096);
    const h1 = dev.allocHost(4096);
    const h2 = dev.allocHost(4096);
    const data = randomBytes(4096);
    h1.array.set(data);
    poison(h2.array);
    const release = holdStream(a);
    a.copy(dev1, 0, src, 0, 4096);
    const held = a.record();
    // Host to host: a host function on CUDA, run on the same CUDA thread a
    // host-function gate would occupy.
    b.copy(h2, 0, h1, 0, 4096);
    await b.record().done();
    expect(sameBytes(h2.array, data)).toBe('equal');
    expect(held.status()).toBe('pending');
    release();
    await held.done();
    await Promise.all([a.dispose(), b.dispose()]);
  });

  it.skipIf(skip)('abandoning a held stream opens its gates: the work behind them runs, its events say ERR_ABORTED', async () => {
    const s = dev.createStream();
    const src = dev.allocPinned(4096);
    const out = dev.allocPinned(4096);
    const data = randomBytes(4096);
    src.array.set(data);
    poison(out.array);
    holdStream(s); // never released
    s.copy(out, 0, src, 0, 4096);
    const behind = s.record();
    s.abandon();
    await expect(behind.done()).rejects.toMatchObject({ code: 'ERR_ABORTED' });
    expect(sameBytes(out.array, data)).toBe('equal');
  });
});

describe('cudaGate selection', () => {
  it('cudaGate and KVFLOW_CUDA_GATE are validated: ERR_INVALID_ARG', async () => {
    expect(codeOf(() => openDevice({ backend: 'cpu', cudaGate: 'spin' as CudaGateRequest }))).toBe('ERR_INVALID_ARG');
    const saved = process.env.KVFLOW_CUDA_GATE;
    try {
      delete process.env.KVFLOW_CUDA_GATE;
      expect(defaults().cudaGate).toBe('host');
      process.env.KVFLOW_CUDA_GATE = 'auto';
      expect(defaults().cudaGate).toBe('auto');
      const dev = openDevice({ backend: 'cpu' });
      await dev.dispose();
      process.env.KVFLOW_CUDA_GATE = 'waitvalue';
      expect(codeOf(() => defaults())).toBe('ERR_INVALID_ARG');
      expect(codeOf(() => openDevice({ backend: 'cpu' }))).toBe('ERR_INVALID_ARG');
    } finally {
      if (saved === undefined) delete process.env.KVFLOW_CUDA_GATE;
      else process.env.KVFLOW_CUDA_GATE = saved;
    }
  });

  it.skipIf(cudaSkipReason !== undefined)('auto says what it chose and why', async () => {
    const dev = openDevice({ backend: 'cuda', cudaGate: 'auto' });
    const info = dev.info();
    expect(['host', 'wait-value']).toContain(info.cudaGate);
    expect(info.cudaGateReason).toMatch(info.cudaGate === 'wait-value' ? /^auto: wait-value works/ : /^auto: wait-value is unavailable \(.+\)$/);
    await dev.dispose();
  });
});
