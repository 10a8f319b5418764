// Failures of file IO carry their code, errno, path and offset; a failed
// request rejects once and nothing else, and the file keeps working.
import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvflowError, openDevice, type KvFile, type KvflowErrorCode } from '../../src/index.js';
import { injectIoFault, ioStats } from '../../src/io/testing.js';
import { open, poison, randomBytes, sameBytes } from '../helpers/backends.js';
import { engines, ioFixture, tmpDirect, uringSkipReason } from '../helpers/io.js';

const MiB = 1 << 20;

async function rejection(p: Promise<unknown>): Promise<KvflowError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(KvflowError);
    return e as KvflowError;
  }
  throw new Error('expected a rejection, got success');
}

async function rejectionCode(p: Promise<unknown>): Promise<KvflowErrorCode> {
  return (await rejection(p)).code;
}

const io = ioFixture();

describe.each(engines)('IO failures on the $engine engine', ({ engine, skip }) => {
  let file: KvFile;
  const direct = tmpDirect.ok ? 'on' : 'off';
  beforeAll(async () => {
    if (!skip) file = await io.dev.openFile(path.join(io.dir, `e-${engine}.bin`), { create: true, engine, direct });
  });
  afterAll(async () => {
    await file?.dispose();
  });

  it.skipIf(skip)('a read past the end of the file is ERR_IO "short read", never zeros', async () => {
    const src = io.dev.allocPinned(3 * 4096 + 100);
    src.array.set(randomBytes(src.byteLength));
    await file.write(0, src, 0, src.byteLength);
    const dst = io.dev.allocPinned(8 * 4096);
    // Aligned (through O_DIRECT where it works), unaligned, and wholly past the end.
    const reads: Array<[number, number, number]> = [
      [0, 4 * 4096, 4 * 4096 - (3 * 4096 + 100)],
      [5000, 10_000, 5000 + 10_000 - (3 * 4096 + 100)],
      [20_000, 100, 100],
    ];
    for (const [offset, bytes, past] of reads) {
      poison(dst.array);
      const e = await rejection(file.read(dst, 0, offset, bytes));
      expect(e.code).toBe('ERR_IO');
      expect(e.message).toContain(`short read: ${past} bytes past end of file ${file.path}`);
    }
    // Up to the last byte is fine.
    await file.read(dst, 0, 4096, 2 * 4096 + 100);
    expect(sameBytes(dst.array.subarray(0, 2 * 4096 + 100), src.array.subarray(4096))).toBe('equal');
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('an injected EIO fails the request once with ERR_IO, errno 5, path and offset', async () => {
    const bytes = 16 * MiB; // four 4 MiB tasks
    const src = io.dev.allocPinned(bytes);
    const dst = io.dev.allocPinned(bytes);
    src.array.set(randomBytes(bytes));
    const failedBefore = ioStats(file).failedTasks;
    injectIoFault(file, 3, 5);
    const e = await rejection(file.write(0, src, 0, bytes));
    expect(e.code).toBe('ERR_IO');
    expect(e.errno).toBe(5);
    expect(e.message).toMatch(new RegExp(`^write of \\d+ bytes at offset \\d+ of ${file.path}.* failed: .*\\(EIO, errno 5\\)$`));
    expect(ioStats(file).failedTasks).toBe(failedBefore + 1);
    // The file keeps working: the same write succeeds and reads back.
    await file.write(0, src, 0, bytes);
    injectIoFault(file, 1, 5);
    expect((await rejection(file.read(dst, 0, 0, bytes))).errno).toBe(5);
    poison(dst.array);
    await file.read(dst, 0, 0, bytes);
    expect(sameBytes(dst.array, src.array)).toBe('equal');
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('an injected ENOSPC is ERR_NO_SPACE with errno 28', async () => {
    const src = io.dev.allocPinned(MiB);
    src.array.set(randomBytes(MiB));
    injectIoFault(file, 1, 28);
    const e = await rejection(file.write(123, src, 0, MiB));
    expect(e.code).toBe('ERR_NO_SPACE');
    expect(e.errno).toBe(28);
    expect(e.message).toContain(`no space left for write of ${MiB} bytes at offset 123 of ${file.path}`);
    await file.write(123, src, 0, MiB);
    await src.dispose();
  });

  it.skipIf(skip)('a fault fails only its own request among several in flight', async () => {
    const piece = 4 * MiB;
    const src = io.dev.allocPinned(6 * piece);
    src.array.set(randomBytes(src.byteLength));
    injectIoFault(file, 4, 5);
    const results = await Promise.allSettled(Array.from({ length: 6 }, (_, i) => file.write(i * piece, src, i * piece, piece)));
    const failed = results.filter((r) => r.status === 'rejected');
    expect(failed).toHaveLength(1);
    expect((failed[0] as PromiseRejectedResult).reason).toMatchObject({ code: 'ERR_IO', errno: 5 });
    await src.dispose();
  });
});

describe('bad arguments', () => {
  let file: KvFile;
  beforeAll(async () => {
    file = await io.dev.openFile(path.join(io.dir, 'args.bin'), { create: true, size: 4096 });
  });

  it('bad offsets, sizes and buffers are ERR_INVALID_ARG and never reach native code', async () => {
    const a = io.dev.allocPinned(64);
    for (const bad of [-1, Number.NaN, 1.5, Infinity, 2 ** 60, '8', null, 8n]) {
      const b = bad as number;
      expect(await rejectionCode(file.read(a, b, 0, 8)), `dstOffset ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(await rejectionCode(file.read(a, 0, b, 8)), `fileOffset ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(await rejectionCode(file.read(a, 0, 0, b)), `bytes ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(await rejectionCode(file.write(b, a, 0, 8)), `write fileOffset ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(await rejectionCode(file.write(0, a, b, 8)), `srcOffset ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(await rejectionCode(file.preallocate(b)), `preallocate ${String(bad)}`).toBe('ERR_INVALID_ARG');
    }
    const d = io.dev.allocDevice(64);
    await expect(file.read(d as never, 0, 0, 8)).rejects.toThrow('expected a PinnedBuffer or HostBuffer for dst, got a DeviceBuffer');
    expect(await rejectionCode(file.write(0, {} as never, 0, 8))).toBe('ERR_INVALID_ARG');
    expect(await rejectionCode(file.read(new Uint8Array(8) as never, 0, 0, 8))).toBe('ERR_INVALID_ARG');
    const other = open('cpu');
    const theirs = other.allocPinned(64);
    await expect(file.read(theirs, 0, 0, 8)).rejects.toThrow('expected a buffer of this device for destination');
    await other.dispose();
  });

  it('ranges past the buffer are ERR_OUT_OF_RANGE with the message of copies', async () => {
    const a = io.dev.allocPinned(64);
    expect(await rejectionCode(file.read(a, 60, 0, 8))).toBe('ERR_OUT_OF_RANGE');
    await expect(file.write(0, a, 60, 8)).rejects.toThrow("expected source range within the buffer's 64 bytes, got offset 60 + 8 bytes");
  });

  it('bad paths and options are ERR_INVALID_ARG', async () => {
    for (const bad of ['', 5, null, undefined, 'a\0b']) {
      expect(await rejectionCode(io.dev.openFile(bad as string)), `path ${String(bad)}`).toBe('ERR_INVALID_ARG');
    }
    const p = path.join(io.dir, 'opts.bin');
    await expect(io.dev.openFile(p, { direct: 'maybe' as never })).rejects.toThrow("expected 'auto', 'on' or 'off' for direct, got \"maybe\"");
    await expect(io.dev.openFile(p, { engine: 'spdk' as never })).rejects.toThrow("expected 'auto', 'posix' or 'io_uring' for engine, got \"spdk\"");
    expect(await rejectionCode(io.dev.openFile(p, { create: 'yes' as never }))).toBe('ERR_INVALID_ARG');
    expect(await rejectionCode(io.dev.openFile(p, { size: -1 }))).toBe('ERR_INVALID_ARG');
    expect(await rejectionCode(io.dev.openFile(p, null as never))).toBe('ERR_INVALID_ARG');
  });

  it('opening a missing file without create is ERR_IO with errno 2; a directory is ERR_IO with errno 21', async () => {
    const e = await rejection(io.dev.openFile(path.join(io.dir, 'missing.bin')));
    expect(e.code).toBe('ERR_IO');
    expect(e.errno).toBe(2);
    expect(e.message).toContain(`open of ${path.join(io.dir, 'missing.bin')} failed: `);
    mkdirSync(path.join(io.dir, 'sub'));
    expect((await rejection(io.dev.openFile(path.join(io.dir, 'sub')))).errno).toBe(21);
  });

  it('use after dispose is ERR_DISPOSED; dispose is idempotent', async () => {
    const f = await io.dev.openFile(path.join(io.dir, 'gone.bin'), { create: true });
    const a = io.dev.allocPinned(64);
    const p1 = f.dispose();
    expect(f.dispose()).toBe(p1);
    await p1;
    expect(await rejectionCode(f.read(a, 0, 0, 8))).toBe('ERR_DISPOSED');
    expect(await rejectionCode(f.write(0, a, 0, 8))).toBe('ERR_DISPOSED');
    expect(await rejectionCode(f.sync())).toBe('ERR_DISPOSED');
    expect(() => f.size()).toThrow(KvflowError);
    await a.dispose();
    expect(await rejectionCode(file.read(a, 0, 0, 8)), 'a disposed buffer').toBe('ERR_DISPOSED');
  });

  it('KVFLOW_IO_* settings are validated', () => {
    const cases: Array<[string, string]> = [
      ['KVFLOW_IO_TASK_SIZE', '1000'],
      ['KVFLOW_IO_TASK_SIZE', String(2 ** 31)],
      ['KVFLOW_IO_THREADS', '0'],
      ['KVFLOW_IO_QUEUE_DEPTH', '5000'],
      ['KVFLOW_IO_ENGINE', 'spdk'],
      ['KVFLOW_IO_DIRECT', 'yes'],
    ];
    for (const [name, value] of cases) {
      const saved = process.env[name];
      process.env[name] = value;
      try {
        expect(() => openDevice({ backend: 'cpu' }), `${name}=${value}`).toThrow(`for ${name}, got`);
      } finally {
        if (saved === undefined) delete process.env[name];
        else process.env[name] = saved;
      }
    }
  });
});

describe('engine selection', () => {
  it.skipIf(uringSkipReason === undefined)('io_uring where it cannot run is ERR_UNSUPPORTED with the reason; auto says why it chose posix', async () => {
    const p = path.join(io.dir, 'sel.bin');
    const e = await rejection(io.dev.openFile(p, { create: true, engine: 'io_uring' }));
    expect(e.code).toBe('ERR_UNSUPPORTED');
    expect(e.message).toContain(`the io_uring engine cannot be used: ${uringSkipReason}`);
    const f = await io.dev.openFile(p, { create: true, engine: 'auto' });
    expect(f.info.engine).toBe('posix');
    expect(f.info.engineReason).toBe(`io_uring cannot be used: ${uringSkipReason}`);
    await f.dispose();
  });

  it.skipIf(uringSkipReason !== undefined)('auto picks io_uring where it runs, and says so', async () => {
    const f = await io.dev.openFile(path.join(io.dir, 'sel.bin'), { create: true, engine: 'auto' });
    expect(f.info.engine).toBe('io_uring');
    expect(f.info.engineRequested).toBe('auto');
    expect(f.info.engineReason).toMatch(/io_uring works here/);
    await f.dispose();
  });

  it('KVFLOW_IO_ENGINE picks the engine of files opened without one', async () => {
    const saved = process.env.KVFLOW_IO_ENGINE;
    process.env.KVFLOW_IO_ENGINE = 'posix';
    try {
      // Read when a device opens.
      const dev = openDevice({ backend: 'cpu' });
      const f = await dev.openFile(path.join(io.dir, 'env.bin'), { create: true });
      expect(f.info.engine).toBe('posix');
      expect(f.info.engineRequested).toBe('posix');
      expect(f.info.choices.engine).toEqual({ requested: 'posix', chosen: 'posix', reason: 'the posix engine was requested' });
      await dev.dispose();
      expect(f.disposed).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.KVFLOW_IO_ENGINE;
      else process.env.KVFLOW_IO_ENGINE = saved;
    }
  });
});
