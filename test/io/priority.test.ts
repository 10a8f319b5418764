// Request priorities: on an engine that starts one task at a time (one posix
// thread, or an io_uring queue depth of 1), tasks of high-priority requests
// start before queued tasks of low-priority ones, in submission order within
// a priority, and a waiting low one gets its turn after 8 highs in a row.
// Order is forced with the hold() hook and read from completion sequences
// and injected faults, never from clocks.
import { rmSync } from 'node:fs';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvflowError, crc32c, type Device, type KvFile, type PinnedBuffer } from '../../src/index.js';
import { holdIo, injectIoFault, ioStats } from '../../src/io/testing.js';
import { open, poison, randomBytes, sameBytes } from '../helpers/backends.js';
import { engines, tempDir, tmpDirect } from '../helpers/io.js';

/** Each request moves one region: one task, whatever the task size. */
const REGION = 64 * 1024;
const REGIONS = 16;
const TASK_SIZE = 1 << 20;

/** Environment settings in force while `fn` runs (a device reads them when it opens). */
async function withEnv<T>(vars: Record<string, string>, fn: () => Promise<T>): Promise<T> {
  const saved = Object.fromEntries(Object.keys(vars).map((k) => [k, process.env[k]]));
  Object.assign(process.env, vars);
  try {
    return await fn();
  } finally {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  }
}

/** Completion order of named promises, as their `.then` callbacks run. */
function sequence(): { order: string[]; track(name: string, p: Promise<unknown>): Promise<void> } {
  const order: string[] = [];
  return {
    order,
    track: (name, p) =>
      p.then(
        () => {
          order.push(name);
        },
        () => {
          order.push(`${name} failed`);
        },
      ),
  };
}

describe.each(engines)('request priorities on the $engine engine', ({ engine, skip }) => {
  let dev: Device;
  let dir: string;
  let file: KvFile;
  let src: PinnedBuffer; // what the file's regions hold once written
  let dst: PinnedBuffer;
  let model: Uint8Array; // what the file must hold

  beforeAll(async () => {
    if (skip) return;
    dev = await withEnv({ KVFLOW_IO_THREADS: '1', KVFLOW_IO_QUEUE_DEPTH: '1', KVFLOW_IO_TASK_SIZE: String(TASK_SIZE) }, async () =>
      open('cpu'),
    );
    expect(dev.config.ioThreads).toBe(1);
    dir = tempDir();
    file = await dev.openFile(path.join(dir, 'p.bin'), { create: true, engine, direct: tmpDirect.ok ? 'on' : 'off' });
    src = dev.allocPinned(REGIONS * REGION);
    dst = dev.allocPinned(REGIONS * REGION);
    model = randomBytes(REGIONS * REGION);
    src.array.set(model);
    await file.write(0, src, 0, REGIONS * REGION);
  });
  afterAll(async () => {
    await dev?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** New random bytes for region `r` in `src` (and the model), to be written by the test. */
  function refill(r: number): void {
    const data = randomBytes(REGION);
    src.array.set(data, r * REGION);
    model.set(data, r * REGION);
  }

  /** The bytes region `r` must hold, against what a read put in `dst`. */
  function regionRead(r: number): string {
    return sameBytes(dst.array.subarray(r * REGION, (r + 1) * REGION), model.subarray(r * REGION, (r + 1) * REGION));
  }

  async function expectFileIsModel(): Promise<void> {
    const check = dev.allocPinned(REGIONS * REGION);
    poison(check.array);
    await file.read(check, 0, 0, REGIONS * REGION);
    expect(sameBytes(check.array, model)).toBe('equal');
    await check.dispose();
  }

  it.skipIf(skip)('the engine starts one task at a time', () => {
    expect(file.info.engine).toBe(engine);
    expect(engine === 'posix' ? file.info.threads : file.info.queueDepth).toBe(1);
    expect(file.info.taskSize).toBe(TASK_SIZE);
  });

  it.skipIf(skip)('by default a read queued behind writes completes first; the writes follow in order', async () => {
    const before = ioStats(file);
    poison(dst.array);
    for (const r of [1, 2, 3, 4]) refill(r);
    const { order, track } = sequence();
    const release = holdIo(file);
    const done = [
      ...[1, 2, 3, 4].map((r) => track(`write ${r}`, file.write(r * REGION, src, r * REGION, REGION))),
      track('read 0', file.read(dst, 0, 0, REGION)),
    ];
    release();
    await Promise.all(done);
    expect(order).toEqual(['read 0', 'write 1', 'write 2', 'write 3', 'write 4']);
    expect(regionRead(0)).toBe('equal');
    const after = ioStats(file);
    expect(after.highTasks - before.highTasks).toBe(1);
    expect(after.lowTasks - before.lowTasks).toBe(4);
    await expectFileIsModel();
  });

  it.skipIf(skip)('the high task is the first to start (an injected fault hits it, not a write)', async () => {
    for (const r of [5, 6, 7]) refill(r);
    const release = holdIo(file);
    const writes = [5, 6, 7].map((r) => file.write(r * REGION, src, r * REGION, REGION));
    const read = file.read(dst, 0, 0, REGION);
    injectIoFault(file, 1, 5);
    release();
    await expect(read).rejects.toMatchObject({ code: 'ERR_IO', errno: 5 });
    await Promise.all(writes);
    await expectFileIsModel();
  });

  it.skipIf(skip)('explicit priorities override the defaults; FIFO within a priority', async () => {
    poison(dst.array);
    refill(8);
    refill(9);
    const { order, track } = sequence();
    const release = holdIo(file);
    const done = [
      track('low read 2', file.read(dst, 2 * REGION, 2 * REGION, REGION, { priority: 'low' })),
      track('write 8', file.write(8 * REGION, src, 8 * REGION, REGION)),
      track('high write 9', file.write(9 * REGION, src, 9 * REGION, REGION, { priority: 'high' })),
      track('read 3', file.read(dst, 3 * REGION, 3 * REGION, REGION)),
      track('high read 4', file.read(dst, 4 * REGION, 4 * REGION, REGION, { priority: 'high' })),
    ];
    release();
    await Promise.all(done);
    expect(order).toEqual(['high write 9', 'read 3', 'high read 4', 'low read 2', 'write 8']);
    for (const r of [2, 3, 4]) expect(regionRead(r), `region ${r}`).toBe('equal');
    await expectFileIsModel();
  });

  it.skipIf(skip)('a checked read queued behind summed writes completes first, and both keep their checks', async () => {
    poison(dst.array);
    for (const r of [10, 11, 12]) refill(r);
    const crcs = [0, 1].map((r) => crc32c(model.subarray(r * REGION, (r + 1) * REGION)));
    const { order, track } = sequence();
    const release = holdIo(file);
    const sums = [10, 11, 12].map((r) => file.writeSummed(src, [{ srcOffset: r * REGION, fileOffset: r * REGION, bytes: REGION, seed: 0 }]));
    const done = sums.map((s, i) => track(`summed write ${10 + i}`, s));
    const pieces = [0, 1].map((r) => ({ dstOffset: r * REGION, fileOffset: r * REGION, bytes: REGION, seed: 0, crc: crcs[r]! }));
    const read = file.readChecked(dst, pieces);
    done.push(track('checked read', read.event.done()));
    release();
    await Promise.all(done);
    expect(order).toEqual(['checked read', 'summed write 10', 'summed write 11', 'summed write 12']);
    expect(await read.verified).toEqual([]);
    expect(regionRead(0)).toBe('equal');
    expect(regionRead(1)).toBe('equal');
    for (const [i, s] of sums.entries()) {
      const r = 10 + i;
      expect((await s)[0]).toBe(crc32c(model.subarray(r * REGION, (r + 1) * REGION)));
    }
    await expectFileIsModel();
  });

  it.skipIf(skip)('checked reads and summed writes take explicit priorities', async () => {
    // Which task the engine starts first is what a fault injected into the
    // next task hits (completion order through Promises would depend on how
    // many hops each API's Promise takes).
    poison(dst.array);
    refill(13);
    const crc = crc32c(model.subarray(5 * REGION, 6 * REGION));
    const release = holdIo(file);
    injectIoFault(file, 1, 5);
    const read = file.readChecked(dst, [{ dstOffset: 5 * REGION, fileOffset: 5 * REGION, bytes: REGION, seed: 0, crc }], { priority: 'low' });
    const summed = [{ srcOffset: 13 * REGION, fileOffset: 13 * REGION, bytes: REGION, seed: 0 }];
    const sum = file.writeSummed(src, summed, { priority: 'high' });
    release();
    await expect(sum).rejects.toMatchObject({ code: 'ERR_IO', errno: 5 });
    expect(await read.verified).toEqual([]);
    expect(regionRead(5)).toBe('equal');
    expect(Array.from(await file.writeSummed(src, summed))).toEqual([crc32c(model.subarray(13 * REGION, 14 * REGION))]);
    await expectFileIsModel();
  });

  it.skipIf(skip)('a waiting write starts after 8 reads in a row, so reads cannot starve it', async () => {
    refill(14);
    const { order, track } = sequence();
    const release = holdIo(file);
    const done = [track('write', file.write(14 * REGION, src, 14 * REGION, REGION))];
    for (let r = 0; r < 12; r++) done.push(track(`read ${r}`, file.read(dst, r * REGION, r * REGION, REGION)));
    release();
    await Promise.all(done);
    expect(order.indexOf('write')).toBe(8);
    expect(order.filter((n) => n !== 'write')).toEqual(Array.from({ length: 12 }, (_, r) => `read ${r}`));
    for (let r = 0; r < 12; r++) expect(regionRead(r), `region ${r}`).toBe('equal');
    await expectFileIsModel();
  });

  it.skipIf(skip)('a priority other than high or low is ERR_INVALID_ARG, and nothing is queued', async () => {
    const before = ioStats(file);
    const piece = { dstOffset: 0, fileOffset: 0, bytes: 8, seed: 0, crc: 0 };
    const summed = { srcOffset: 0, fileOffset: 0, bytes: 8, seed: 0 };
    for (const bad of ['urgent', 'HIGH', 0, null, true]) {
      const options = { priority: bad } as never;
      const message = /^expected 'high' or 'low' for priority, got /;
      await expect(file.read(dst, 0, 0, 8, options)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(message) });
      await expect(file.write(0, src, 0, 8, options)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(message) });
      await expect(file.writeSummed(src, [summed], options)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
      expect(() => file.readChecked(dst, [piece], options)).toThrow(KvflowError);
      expect(() => file.readChecked(dst, [piece], options)).toThrow(message);
    }
    for (const bad of ['high', 1, null]) {
      const options = bad as never;
      await expect(file.read(dst, 0, 0, 8, options)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG', message: expect.stringMatching(/for options, got/) });
      await expect(file.write(0, src, 0, 8, options)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
      await expect(file.writeSummed(src, [summed], options)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
      expect(() => file.readChecked(dst, [piece], options)).toThrow(/for options, got/);
    }
    const after = ioStats(file);
    expect([after.highTasks, after.lowTasks]).toEqual([before.highTasks, before.lowTasks]);
    expect(file.inFlight()).toBe(false);
  });
});
