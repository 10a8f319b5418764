// stream.readFile / stream.writeFile: files <-> any buffer in stream order
// through the pinned bounce ring, on every backend (CUDA on the GPU box).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Device, KvBuffer, MemoryKind, Stream } from '../../src/index.js';
import { holdCompletions, injectFailure } from '../../src/device/testing.js';
import { holdIo, injectIoFault } from '../../src/io/testing.js';
import { backends, codeOf, open, poison, randomBytes, sameBytes, ticks } from '../helpers/backends.js';

const MiB = 1 << 20;

describe.each(backends)('stream file transfers on $backend', ({ backend, skip }) => {
  let dev: Device;
  let stream: Stream;
  let dir: string;
  const saved = { chunk: process.env.KVFLOW_IO_BOUNCE_CHUNK, slots: process.env.KVFLOW_IO_BOUNCE_SLOTS };
  beforeAll(() => {
    if (skip) return;
    // Small bounce buffers so that every transfer below goes round the ring
    // several times (the device reads them when it opens).
    process.env.KVFLOW_IO_BOUNCE_CHUNK = String(256 * 1024);
    process.env.KVFLOW_IO_BOUNCE_SLOTS = '3';
    dev = open(backend);
    stream = dev.createStream();
    dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-sf-'));
  });
  afterAll(async () => {
    for (const [k, v] of [['KVFLOW_IO_BOUNCE_CHUNK', saved.chunk], ['KVFLOW_IO_BOUNCE_SLOTS', saved.slots]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    await dev?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  function alloc(kind: MemoryKind, bytes: number): KvBuffer {
    return kind === 'device' ? dev.allocDevice(bytes) : kind === 'pinned' ? dev.allocPinned(bytes) : dev.allocHost(bytes);
  }

  it.skipIf(skip).each([
    ['device', 1],
    ['device', 3 * MiB + 123],
    ['pinned', 777_777],
    ['host', 2 * MiB],
  ] as const)('file -> %s -> file round-trips %i random bytes at odd offsets', async (kind, bytes) => {
    const data = randomBytes(bytes + 4096);
    const inPath = path.join(dir, `in-${kind}-${bytes}`);
    writeFileSync(inPath, data);
    const input = await dev.openFile(inPath);
    const output = await dev.openFile(path.join(dir, `out-${kind}-${bytes}`), { create: true });
    const buf = alloc(kind, bytes + 9);
    const check = dev.allocPinned(bytes + 9);
    poison(check.array);
    stream.copy(buf, 0, check, 0, bytes + 9);
    stream.readFile(buf, 5, input, 3, bytes);
    stream.copy(check, 0, buf, 0, bytes + 9); // runs after the data is in place
    stream.writeFile(output, 11, buf, 5, bytes);
    await stream.synchronize();
    expect(sameBytes(check.array.subarray(5, 5 + bytes), data.subarray(3, 3 + bytes))).toBe('equal');
    expect(check.array.subarray(0, 5).every((v) => v === 0xa5)).toBe(true);
    const written = readFileSync(path.join(dir, `out-${kind}-${bytes}`));
    expect(written.byteLength).toBe(11 + bytes);
    expect(sameBytes(written.subarray(11), data.subarray(3, 3 + bytes))).toBe('equal');
    await Promise.all([input.dispose(), output.dispose(), buf.dispose(), check.dispose()]);
  });

  it.skipIf(skip)('work after a read waits for the disk: nothing is copied while the engine is held', async () => {
    const bytes = MiB;
    const data = randomBytes(bytes);
    const p = path.join(dir, 'held');
    writeFileSync(p, data);
    const file = await dev.openFile(p);
    const d = dev.allocDevice(bytes);
    const out = dev.allocPinned(bytes);
    poison(out.array);
    const release = holdIo(file);
    stream.readFile(d, 0, file, 0, bytes);
    stream.copy(out, 0, d, 0, bytes);
    const e = stream.record();
    await ticks(20);
    expect(e.status()).toBe('pending');
    expect(out.array.every((v) => v === 0xa5)).toBe(true);
    release();
    await e.done();
    expect(sameBytes(out.array, data)).toBe('equal');
    await Promise.all([file.dispose(), d.dispose(), out.dispose()]);
  });

  it.skipIf(skip)('a read and a write round the ring finish while completions go unnoticed and this thread allocates memory', async () => {
    // Each slot's reuse must not wait for an event to be noticed: on CUDA the
    // poller that notices them can stall behind an allocation's implicit
    // synchronisation, which itself waits for this stream.
    const bytes = 4 * MiB; // 16 chunks through 3 slots, each way
    const data = randomBytes(bytes);
    const p = path.join(dir, 'unnoticed');
    writeFileSync(p, data);
    const input = await dev.openFile(p);
    const outPath = path.join(dir, 'unnoticed-out');
    const output = await dev.openFile(outPath, { create: true });
    const d = dev.allocDevice(bytes);
    const check = dev.allocPinned(bytes);
    poison(check.array);
    const extra: KvBuffer[] = [];
    const release = holdCompletions(dev);
    try {
      stream.readFile(d, 0, input, 0, bytes);
      stream.copy(check, 0, d, 0, bytes);
      stream.writeFile(output, 0, d, 0, bytes);
      for (let i = 0; i < 4; i++) extra.push(dev.allocPinned(5 * MiB + (i + 1) * 69632), dev.allocDevice(MiB + i));
      // No event can complete while held: watch the bytes themselves.
      const arrived = async (probe: () => boolean): Promise<boolean> => {
        for (const end = Date.now() + 30_000; Date.now() < end; await sleep(10)) if (probe()) return true;
        return false;
      };
      expect(await arrived(() => sameBytes(check.array, data) === 'equal'), 'read into device memory, then copied out').toBe(true);
      const fileDone = (): boolean => {
        const got = readFileSync(outPath);
        return got.byteLength >= bytes && sameBytes(got.subarray(0, bytes), data) === 'equal';
      };
      expect(await arrived(fileDone), 'written back to the file').toBe(true);
    } finally {
      release();
    }
    await stream.synchronize();
    await Promise.all([input.dispose(), output.dispose(), d.dispose(), check.dispose(), ...extra.map((b) => b.dispose())]);
  });

  it.skipIf(skip)('a failure injected into a transfer fails its event but never stalls the ring; the stream goes on', async () => {
    const bytes = 2 * MiB + 5; // several chunks through 3 slots
    const data = randomBytes(bytes);
    const p = path.join(dir, 'injected');
    writeFileSync(p, data);
    const file = await dev.openFile(p);
    const d = dev.allocDevice(bytes);
    const out = dev.allocPinned(bytes);
    for (const direction of ['read', 'write'] as const) {
      injectFailure(stream, 'ERR_IO', 'injected');
      if (direction === 'read') stream.readFile(d, 0, file, 0, bytes);
      else stream.writeFile(file, 0, d, 0, bytes);
      await expect(stream.record().done()).rejects.toMatchObject({ code: 'ERR_IO', message: 'injected' });
    }
    poison(out.array);
    stream.readFile(d, 0, file, 0, bytes);
    stream.copy(out, 0, d, 0, bytes);
    await stream.synchronize();
    expect(sameBytes(out.array, data)).toBe('equal');
    await Promise.all([file.dispose(), d.dispose(), out.dispose()]);
  });

  it.skipIf(skip)('a failed disk read fails the next event with ERR_IO, and the stream goes on', async () => {
    const p = path.join(dir, 'faulty');
    writeFileSync(p, randomBytes(2 * MiB));
    const file = await dev.openFile(p);
    const d = dev.allocDevice(2 * MiB);
    injectIoFault(file, 3, 5); // EIO on the third task
    stream.readFile(d, 0, file, 0, 2 * MiB);
    await expect(stream.record().done()).rejects.toMatchObject({ code: 'ERR_IO' });
    stream.readFile(d, 0, file, 0, 2 * MiB);
    await expect(stream.synchronize()).resolves.toBeUndefined();
    await Promise.all([file.dispose(), d.dispose()]);
  });

  it.skipIf(skip)('reading past the end of the file fails with ERR_IO, never zeros', async () => {
    const p = path.join(dir, 'short');
    writeFileSync(p, randomBytes(100_000));
    const file = await dev.openFile(p);
    const d = dev.allocDevice(MiB);
    stream.readFile(d, 0, file, 0, MiB);
    await expect(stream.record().done()).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringMatching(/short read/) });
    await Promise.all([file.dispose(), d.dispose()]);
  });

  it.skipIf(skip)('a failed write (ENOSPC) fails the event after it with ERR_NO_SPACE', async () => {
    const file = await dev.openFile(path.join(dir, 'full'), { create: true });
    const s = dev.allocDevice(MiB);
    injectIoFault(file, 2, 28);
    stream.writeFile(file, 0, s, 0, MiB);
    await expect(stream.record().done()).rejects.toMatchObject({ code: 'ERR_NO_SPACE' });
    await Promise.all([file.dispose(), s.dispose()]);
  });

  it.skipIf(skip)('bad arguments are typed errors', async () => {
    const file = await dev.openFile(path.join(dir, 'args'), { create: true });
    const d = dev.allocDevice(4096);
    expect(codeOf(() => stream.readFile(d, 0, file, 0, 4097))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => stream.readFile(d, -1, file, 0, 1))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => stream.readFile(d, 0, {} as never, 0, 1))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => stream.writeFile(file, 0.5, d, 0, 1))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => stream.writeFile(file, 0, d, 4000, 100))).toBe('ERR_OUT_OF_RANGE');
    await file.dispose();
    expect(codeOf(() => stream.readFile(d, 0, file, 0, 1))).toBe('ERR_DISPOSED');
    await d.dispose();
  });

  it.skipIf(skip)('devices opened one after another (and beside a long-lived one) each move files in stream order', async () => {
    // The shape of bench/nvme's sweep, which stopped after its first point on an H200.
    const bytes = 2 * MiB + 4096;
    const data = randomBytes(bytes);
    const p = path.join(dir, 'sequence');
    writeFileSync(p, data);
    for (let round = 0; round < 3; round++) {
      const d2 = open(backend);
      const file = await d2.openFile(p);
      const s = d2.createStream();
      const buf = d2.allocDevice(bytes);
      const out = d2.allocPinned(bytes);
      poison(out.array);
      s.readFile(buf, 0, file, 0, bytes);
      s.writeFile(file, 0, buf, 0, bytes);
      s.copy(out, 0, buf, 0, bytes);
      await s.record().done();
      await file.sync();
      expect(sameBytes(out.array, data), `round ${round}`).toBe('equal');
      await d2.dispose();
    }
  });
});
