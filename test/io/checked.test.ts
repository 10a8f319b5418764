// Checksummed file IO: crc32c against a plain JS reference, summed writes and
// checked reads on every engine, corrupted pieces reported and zeroed before
// anyone sees them, streams that wait on a checked read (CPU backend; CUDA on
// the GPU box), faults, unhandled rejections, and bad arguments.
import { spawnSync } from 'node:child_process';
import { openSync, closeSync, writeSync, rmSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import {
  KvflowError,
  MAX_CHECKED_PIECES,
  crc32c,
  type CheckedPiece,
  type CheckedRead,
  type Device,
  type KvFile,
  type PinnedBuffer,
  type Stream,
  type SummedPiece,
} from '../../src/index.js';
import { summedWriteTable } from '../../src/io/checked.js';
import { injectIoFault, holdIo, ioStats } from '../../src/io/testing.js';
import { backends, codeOf, open, poison, randomBytes, sameBytes, ticks } from '../helpers/backends.js';
import { engines, ioFixture, tempDir } from '../helpers/io.js';

const MiB = 1 << 20;
const POISON = 0xa5;

/** CRC-32C bit by bit through one table: the reference the addon is checked against. */
const TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crcReference(data: Uint8Array, seed = 0): number {
  let c = ~seed >>> 0;
  for (let i = 0; i < data.length; i++) c = TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

/**
 * Six pieces at odd file offsets (one spans several 4 MiB engine tasks), laid
 * out in the buffer with gaps; nonzero seeds for some, to prove seeds are used.
 */
const layout: Array<{ bytes: number; fileOffset: number; seed: number }> = [
  { bytes: 1, fileOffset: 3, seed: 0 },
  { bytes: 4095, fileOffset: 5000, seed: 0x12345678 },
  { bytes: 4096, fileOffset: 12_288, seed: 0 },
  { bytes: 65_537, fileOffset: 100_003, seed: 0xffffffff },
  { bytes: MiB + 3, fileOffset: 2 * MiB + 1, seed: 7 },
  { bytes: 9 * MiB + 17, fileOffset: 8 * MiB + 4096, seed: 0 },
];
const GAP = 13;
const bufferOffsets = layout.reduce<number[]>((acc, p, i) => [...acc, i === 0 ? 5 : acc[i - 1]! + layout[i - 1]!.bytes + GAP], []);
const bufferBytes = bufferOffsets[layout.length - 1]! + layout[layout.length - 1]!.bytes + GAP;

function summed(): SummedPiece[] {
  return layout.map((p, i) => ({ srcOffset: bufferOffsets[i]!, fileOffset: p.fileOffset, bytes: p.bytes, seed: p.seed }));
}

function checked(sums: ArrayLike<number>): CheckedPiece[] {
  return layout.map((p, i) => ({ dstOffset: bufferOffsets[i]!, fileOffset: p.fileOffset, bytes: p.bytes, seed: p.seed, crc: sums[i]! }));
}

function pieceOf(array: Uint8Array, i: number): Uint8Array {
  return array.subarray(bufferOffsets[i]!, bufferOffsets[i]! + layout[i]!.bytes);
}

/** Overwrites `n` bytes of piece `i` in the file (behind kvflow's back) with their complement. */
function corrupt(file: KvFile, src: Uint8Array, i: number, n = 3): void {
  const p = layout[i]!;
  const at = Math.floor(p.bytes / 2);
  const len = Math.min(n, p.bytes - at);
  const bad = Buffer.from(pieceOf(src, i).subarray(at, at + len)).map((v) => v ^ 0xff);
  const fd = openSync(file.path, 'r+');
  try {
    writeSync(fd, bad, 0, len, p.fileOffset + at);
  } finally {
    closeSync(fd);
  }
}

async function rejection(p: Promise<unknown>): Promise<KvflowError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(KvflowError);
    return e as KvflowError;
  }
  throw new Error('expected a rejection, got success');
}

/** Writes fresh random bytes of every piece and returns the source and its sums. */
async function writeAll(dev: Device, file: KvFile): Promise<{ src: PinnedBuffer; sums: Uint32Array }> {
  const src = dev.allocPinned(bufferBytes);
  src.array.set(randomBytes(bufferBytes));
  const sums = await file.writeSummed(src, summed());
  return { src, sums };
}

const io = ioFixture();

describe('crc32c', () => {
  it('gives the standard check value and the iSCSI test vectors', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
    expect(crc32c(new Uint8Array(32))).toBe(0x8a9136aa);
    expect(crc32c(new Uint8Array(32).fill(0xff))).toBe(0x62a8ab43);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => i))).toBe(0x46dd794e);
    expect(crc32c(Uint8Array.from({ length: 32 }, (_, i) => 31 - i))).toBe(0x113fdb5c);
  });

  it('returns the seed for no bytes, and unsigned results', () => {
    expect(crc32c(new Uint8Array(0))).toBe(0);
    expect(crc32c(new Uint8Array(0), 0xdeadbeef)).toBe(0xdeadbeef);
    expect(crc32c(Buffer.from('123456789').subarray(9), 0xffffffff)).toBe(0xffffffff);
    for (let i = 0; i < 64; i++) {
      const v = crc32c(randomBytes(17));
      expect(Number.isInteger(v) && v >= 0 && v <= 0xffffffff).toBe(true);
    }
  });

  it('chains: crc32c(b, crc32c(a)) equals crc32c(a followed by b)', () => {
    const data = randomBytes(100_000);
    for (const cut of [0, 1, 7, 8, 9, 4095, 24_577, 50_000, 99_999, 100_000]) {
      for (const seed of [0, 0x9e3779b9]) {
        expect(crc32c(data.subarray(cut), crc32c(data.subarray(0, cut), seed)), `cut ${cut}, seed ${seed}`).toBe(crc32c(data, seed));
      }
    }
  });

  it('matches a plain reference on random buffers of odd lengths and unaligned starts', () => {
    const data = randomBytes(3 * MiB + 64);
    const sizes = [1, 7, 8, 9, 255, 256, 257, 767, 768, 769, 8191, 8192, 24_575, 24_576, 24_577, 49_159, 65_537, MiB + 3, 3 * MiB + 5];
    let k = 0;
    for (const n of sizes) {
      for (const start of [0, 1, 3, 7]) {
        const seed = (k++ * 0x9e3779b9) >>> 0;
        const view = data.subarray(start, start + n);
        expect(crc32c(view, seed), `${n} bytes at +${start}, seed ${seed}`).toBe(crcReference(view, seed));
      }
    }
  });

  it('rejects what is not a Uint8Array or an unsigned 32-bit seed with ERR_INVALID_ARG', () => {
    for (const bad of ['abc', null, undefined, 5, new Uint16Array(4), new ArrayBuffer(4), [1, 2]]) {
      expect(codeOf(() => crc32c(bad as never)), `data ${String(bad)}`).toBe('ERR_INVALID_ARG');
    }
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN, Infinity, '1', 1n, null]) {
      expect(codeOf(() => crc32c(new Uint8Array(4), bad as never)), `seed ${String(bad)}`).toBe('ERR_INVALID_ARG');
    }
    expect(() => crc32c(new Uint8Array(4), -1)).toThrow('expected an unsigned 32-bit integer for seed, got -1');
  });
});

describe.each(engines)('checked file IO on the $engine engine', ({ engine, skip }) => {
  let file: KvFile;
  beforeAll(async () => {
    if (!skip) file = await io.dev.openFile(path.join(io.dir, `checked-${engine}.bin`), { create: true, engine });
  });
  afterAll(async () => {
    await file?.dispose();
  });

  it.skipIf(skip)('writeSummed then readChecked round-trips random bytes; the sums are crc32c of the source', async () => {
    const { src, sums } = await writeAll(io.dev, file);
    expect(sums).toBeInstanceOf(Uint32Array);
    expect(Array.from(sums)).toEqual(layout.map((p, i) => crc32c(pieceOf(src.array, i), p.seed)));
    expect(sums[0]).toBe(crcReference(pieceOf(src.array, 0), 0));
    const dst = io.dev.allocHost(bufferBytes);
    poison(dst.array);
    const read = file.readChecked(dst, checked(sums));
    expect(await read.verified).toEqual([]);
    await read.event.done();
    expect(read.event.status()).toBe('ok');
    layout.forEach((_, i) => expect(sameBytes(pieceOf(dst.array, i), pieceOf(src.array, i)), `piece ${i}`).toBe('equal'));
    // Bytes between the pieces are untouched.
    expect(dst.array.subarray(0, bufferOffsets[0]!).every((v) => v === POISON)).toBe(true);
    for (let i = 1; i < layout.length; i++) {
      expect(dst.array.subarray(bufferOffsets[i]! - GAP, bufferOffsets[i]!).every((v) => v === POISON), `gap before ${i}`).toBe(true);
    }
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('a piece corrupted on disk is reported by index, zeroed, and fails the event with ERR_CHECKSUM', async () => {
    const { src, sums } = await writeAll(io.dev, file);
    corrupt(file, src.array, 3);
    const dst = io.dev.allocPinned(bufferBytes);
    poison(dst.array);
    const read = file.readChecked(dst, checked(sums));
    expect(await read.verified).toEqual([3]);
    const e = await rejection(read.event.done());
    expect(e.code).toBe('ERR_CHECKSUM');
    expect(e.message).toContain(`CRC32C mismatch in 1 of 6 pieces read from ${file.path} (first: piece 3, 65537 bytes at offset 100003`);
    expect(read.event.status()).toBe('failed');
    expect(pieceOf(dst.array, 3).every((v) => v === 0)).toBe(true);
    for (const i of [0, 1, 2, 4, 5]) expect(sameBytes(pieceOf(dst.array, i), pieceOf(src.array, i)), `piece ${i}`).toBe('equal');

    // Two bad pieces, the large one among them: ascending indices, both zeroed.
    corrupt(file, src.array, 5, 1);
    corrupt(file, src.array, 0, 1);
    poison(dst.array);
    const again = file.readChecked(dst, checked(sums));
    expect(await again.verified).toEqual([0, 3, 5]);
    for (const i of [0, 3, 5]) expect(pieceOf(dst.array, i).every((v) => v === 0), `piece ${i}`).toBe(true);
    for (const i of [1, 2, 4]) expect(sameBytes(pieceOf(dst.array, i), pieceOf(src.array, i)), `piece ${i}`).toBe('equal');
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('a wrong expected crc or seed fails the check like a corrupted file', async () => {
    const { src, sums } = await writeAll(io.dev, file);
    const dst = io.dev.allocPinned(bufferBytes);
    const pieces = checked(sums);
    pieces[1] = { ...pieces[1]!, crc: (sums[1]! ^ 1) >>> 0 };
    pieces[4] = { ...pieces[4]!, seed: pieces[4]!.seed + 1 };
    expect(await file.readChecked(dst, pieces).verified).toEqual([1, 4]);
    // A zero-byte piece checks its seed against its crc.
    const empty = file.readChecked(dst, [
      { dstOffset: 0, fileOffset: 0, bytes: 0, seed: 5, crc: 5 },
      { dstOffset: 0, fileOffset: 0, bytes: 0, seed: 5, crc: 6 },
    ]);
    expect(await empty.verified).toEqual([1]);
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('an IO failure rejects verified and the event with ERR_IO; the failed piece is zeroed too', async () => {
    const { src, sums } = await writeAll(io.dev, file);
    const dst = io.dev.allocPinned(bufferBytes);
    poison(dst.array);
    injectIoFault(file, 1, 5); // the first task: piece 0's
    const read = file.readChecked(dst, checked(sums));
    const e = await rejection(read.verified);
    expect(e).toMatchObject({ code: 'ERR_IO', errno: 5 });
    expect(await rejection(read.event.done())).toBe(e);
    expect(pieceOf(dst.array, 0).every((v) => v === 0)).toBe(true);
    for (let i = 1; i < layout.length; i++) expect(sameBytes(pieceOf(dst.array, i), pieceOf(src.array, i)), `piece ${i}`).toBe('equal');
    // Reading past the end of the file is an IO failure too ("short read"), never zeros that pass.
    const size = file.size();
    const past = file.readChecked(dst, [{ dstOffset: 0, fileOffset: size - 10, bytes: 20, seed: 0, crc: 0 }]);
    expect(await rejection(past.verified)).toMatchObject({ code: 'ERR_IO', message: expect.stringMatching(/short read/) });
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('writeSummed rejects with the code of a failed write (ERR_NO_SPACE, ERR_IO)', async () => {
    const src = io.dev.allocPinned(bufferBytes);
    src.array.set(randomBytes(bufferBytes));
    injectIoFault(file, 2, 28);
    expect(await rejection(file.writeSummed(src, summed()))).toMatchObject({ code: 'ERR_NO_SPACE', errno: 28 });
    injectIoFault(file, 4, 5);
    expect(await rejection(file.writeSummed(src, summed()))).toMatchObject({ code: 'ERR_IO', errno: 5 });
    expect((await file.writeSummed(src, summed())).length).toBe(layout.length);
    await src.dispose();
  });

  it.skipIf(skip)('contiguous pieces (moved as one request) are still checked one by one; an IO failure fails each piece of its run', async () => {
    // Eight 40 KiB pieces back to back in memory and in the file (as a record's layer extents), then one apart.
    const piece = 40 * 1024;
    const run = Array.from({ length: 8 }, (_, i) => ({ offset: i * piece, seed: 1000 + i }));
    const all = [...run, { offset: 8 * piece + 4096, seed: 2000 }];
    const bytes = 9 * piece + 4096;
    const src = io.dev.allocPinned(bytes);
    src.array.set(randomBytes(bytes));
    const base = 1 << 20; // a file range of its own
    const sums = await file.writeSummed(src, all.map((p) => ({ srcOffset: p.offset, fileOffset: base + p.offset, bytes: piece, seed: p.seed })));
    expect(Array.from(sums)).toEqual(all.map((p) => crc32c(src.array.subarray(p.offset, p.offset + piece), p.seed)));
    const pieces = all.map((p, i) => ({ dstOffset: p.offset, fileOffset: base + p.offset, bytes: piece, seed: p.seed, crc: sums[i]! }));
    // Corrupt piece 5 on disk: only it is reported and zeroed.
    const fd = openSync(file.path, 'r+');
    try {
      writeSync(fd, Buffer.from(src.array.subarray(5 * piece + 7, 5 * piece + 9)).map((v) => v ^ 0xff), 0, 2, base + 5 * piece + 7);
    } finally {
      closeSync(fd);
    }
    const dst = io.dev.allocPinned(bytes);
    poison(dst.array);
    expect(await file.readChecked(dst, pieces).verified).toEqual([5]);
    all.forEach((p, i) => {
      const got = dst.array.subarray(p.offset, p.offset + piece);
      if (i === 5) expect(got.every((v) => v === 0)).toBe(true);
      else expect(sameBytes(got, src.array.subarray(p.offset, p.offset + piece)), `piece ${i}`).toBe('equal');
    });
    // An IO failure of the first task: the whole run of eight fails and is zeroed; the piece apart arrives.
    poison(dst.array);
    injectIoFault(file, 1, 5);
    const read = file.readChecked(dst, pieces);
    expect(await rejection(read.verified)).toMatchObject({ code: 'ERR_IO', errno: 5 });
    for (let i = 0; i < 8; i++) expect(dst.array.subarray(i * piece, (i + 1) * piece).every((v) => v === 0), `piece ${i}`).toBe(true);
    expect(sameBytes(dst.array.subarray(all[8]!.offset, all[8]!.offset + piece), src.array.subarray(all[8]!.offset, all[8]!.offset + piece))).toBe('equal');
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('using only the event, or only verified, leaves no unhandled rejection', async () => {
    const { src, sums } = await writeAll(io.dev, file);
    corrupt(file, src.array, 2);
    const dst = io.dev.allocPinned(bufferBytes);
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      const a = file.readChecked(dst, checked(sums));
      await expect(a.event.done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
      injectIoFault(file, 1, 5);
      const b = file.readChecked(dst, checked(sums));
      await expect(b.verified).rejects.toMatchObject({ code: 'ERR_IO' });
      injectIoFault(file, 1, 5);
      const c = file.readChecked(dst, checked(sums)); // neither used
      while (c.event.status() === 'pending') await ticks(1);
      await ticks(20);
      await new Promise((r) => setTimeout(r, 10));
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
    expect(unhandled).toEqual([]);
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('dispose() waits for a checked read in flight', async () => {
    const f = await io.dev.openFile(path.join(io.dir, `checked-d-${engine}.bin`), { create: true, engine });
    const { src, sums } = await writeAll(io.dev, f);
    const dst = io.dev.allocPinned(bufferBytes);
    const release = holdIo(f);
    const read = f.readChecked(dst, checked(sums));
    expect(f.inFlight()).toBe(true);
    await expect(f.dispose({ wait: false })).rejects.toMatchObject({ code: 'ERR_BUSY' });
    const disposing = f.dispose();
    release();
    await disposing;
    expect(await read.verified).toEqual([]);
    await Promise.all([src.dispose(), dst.dispose()]);
  });
});

describe.each(backends)('streams waiting on a checked read on $backend', ({ backend, skip }) => {
  let dev: Device;
  let stream: Stream;
  let file: KvFile;
  let dir: string;
  beforeAll(async () => {
    if (skip) return;
    dev = open(backend);
    stream = dev.createStream();
    dir = tempDir('kvflow-checked-');
    file = await dev.openFile(path.join(dir, 'slab.bin'), { create: true });
  });
  afterAll(async () => {
    await dev?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  /** dst -> device memory -> a pinned check buffer, on the stream, after it waited on `read`. */
  function copyAfter(read: CheckedRead, dst: PinnedBuffer, check: PinnedBuffer): void {
    const d = dev.allocDevice(bufferBytes);
    stream.waitEvent(read.event);
    stream.copy(d, 0, dst, 0, bufferBytes);
    stream.copy(check, 0, d, 0, bufferBytes);
    void d.dispose();
  }

  it.skipIf(skip)('work enqueued after the wait runs after the read and sees its bytes', async () => {
    const { src, sums } = await writeAll(dev, file);
    const dst = dev.allocPinned(bufferBytes);
    const check = dev.allocPinned(bufferBytes);
    poison(dst.array);
    poison(check.array);
    const release = holdIo(file);
    const read = file.readChecked(dst, checked(sums));
    copyAfter(read, dst, check);
    const e = stream.record();
    await ticks(20);
    expect(e.status()).toBe('pending');
    expect(check.array.every((v) => v === POISON)).toBe(true);
    release();
    await e.done();
    layout.forEach((_, i) => expect(sameBytes(pieceOf(check.array, i), pieceOf(src.array, i)), `piece ${i}`).toBe('equal'));
    expect(await read.verified).toEqual([]);
    await Promise.all([src.dispose(), dst.dispose(), check.dispose()]);
  });

  it.skipIf(skip)('a corrupted piece fails the next event with ERR_CHECKSUM; the copy saw zeros; the stream goes on', async () => {
    const { src, sums } = await writeAll(dev, file);
    corrupt(file, src.array, 4);
    const dst = dev.allocPinned(bufferBytes);
    const check = dev.allocPinned(bufferBytes);
    poison(check.array);
    const read = file.readChecked(dst, checked(sums));
    copyAfter(read, dst, check);
    expect(await rejection(stream.record().done())).toMatchObject({ code: 'ERR_CHECKSUM' });
    expect(pieceOf(check.array, 4).every((v) => v === 0)).toBe(true);
    expect(sameBytes(pieceOf(check.array, 5), pieceOf(src.array, 5))).toBe('equal');
    expect(await read.verified).toEqual([4]);
    // Only the next event fails: the stream keeps working.
    stream.copy(check, 0, src, 0, 100);
    await expect(stream.synchronize()).resolves.toBeUndefined();
    // A completed failed event: nothing to wait for, the failure is still inherited.
    stream.waitEvent(read.event);
    await expect(stream.record().done()).rejects.toMatchObject({ code: 'ERR_CHECKSUM' });
    const ok = file.readChecked(dst, checked(sums).filter((_, i) => i !== 4));
    await ok.verified;
    stream.waitEvent(ok.event);
    await expect(stream.synchronize()).resolves.toBeUndefined();
    await Promise.all([src.dispose(), dst.dispose(), check.dispose()]);
  });

  it.skipIf(skip)('an IO fault rejects verified with ERR_IO and fails the stream event too', async () => {
    const { src, sums } = await writeAll(dev, file);
    const dst = dev.allocPinned(bufferBytes);
    const check = dev.allocPinned(bufferBytes);
    injectIoFault(file, 3, 5);
    const read = file.readChecked(dst, checked(sums));
    copyAfter(read, dst, check);
    expect(await rejection(stream.record().done())).toMatchObject({ code: 'ERR_IO', errno: 5 });
    expect(await rejection(read.verified)).toMatchObject({ code: 'ERR_IO', errno: 5 });
    await expect(stream.synchronize()).resolves.toBeUndefined();
    await Promise.all([src.dispose(), dst.dispose(), check.dispose()]);
  });

  it.skipIf(skip)('an IO event of another device is refused; bad events are ERR_INVALID_ARG', async () => {
    const other = open(backend);
    const theirs = await other.openFile(file.path);
    const dst = other.allocPinned(16);
    const read = theirs.readChecked(dst, [{ dstOffset: 0, fileOffset: 0, bytes: 16, seed: 0, crc: 0 }]);
    expect(() => stream.waitEvent(read.event)).toThrow('expected an event of this device, got an event of another device');
    expect(codeOf(() => stream.waitEvent(read as never))).toBe('ERR_INVALID_ARG');
    await read.verified; // a mismatch, most likely: only completion matters here
    await other.dispose();
  });

  it.skipIf(skip)('a process whose stream waited on a failed checked read exits on its own', () => {
    const root = path.resolve(import.meta.dirname, '..', '..');
    const entry = pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href;
    const script = `import { openDevice } from ${JSON.stringify(entry)};
import { writeFileSync } from 'node:fs';
const p = ${JSON.stringify(path.join(dir, 'child.bin'))};
writeFileSync(p, Buffer.alloc(1 << 20, 7));
const dev = openDevice({ backend: ${JSON.stringify(backend)} });
const f = await dev.openFile(p);
const s = dev.createStream();
const dst = dev.allocPinned(1 << 20);
const read = f.readChecked(dst, [{ dstOffset: 0, fileOffset: 0, bytes: 1 << 20, seed: 0, crc: 1 }]);
s.waitEvent(read.event);
s.copy(dev.allocDevice(1 << 20), 0, dst, 0, 1 << 20);
const r = await s.record().done().then(() => 'ok', (e) => e.code);
console.log(r, JSON.stringify(await read.verified));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('ERR_CHECKSUM [0]');
    expect(r.status).toBe(0);
  });
});

describe('bad arguments', () => {
  let file: KvFile;
  let dst: PinnedBuffer;
  const good: CheckedPiece = { dstOffset: 0, fileOffset: 0, bytes: 8, seed: 0, crc: 0 };
  beforeAll(async () => {
    file = await io.dev.openFile(path.join(io.dir, 'checked-args.bin'), { create: true });
    const src = io.dev.allocPinned(4096);
    src.array.set(randomBytes(4096));
    await file.write(0, src, 0, 4096);
    await src.dispose();
    dst = io.dev.allocPinned(64);
  });
  afterAll(async () => {
    await file?.dispose();
  });

  function readCode(pieces: unknown, buffer: unknown = dst): string {
    return codeOf(() => file.readChecked(buffer as PinnedBuffer, pieces as CheckedPiece[]));
  }

  it('are typed errors, thrown before anything is read', async () => {
    poison(dst.array);
    const before = ioStats(file);
    for (const bad of [-1, Number.NaN, 1.5, Infinity, 2 ** 60, '8', null, undefined, 8n]) {
      for (const field of ['dstOffset', 'fileOffset', 'bytes'] as const) {
        expect(readCode([{ ...good, [field]: bad }]), `${field} ${String(bad)}`).toBe('ERR_INVALID_ARG');
      }
    }
    for (const bad of [-1, 2 ** 32, 1.5, Number.NaN, '0', null, undefined]) {
      expect(readCode([{ ...good, seed: bad }]), `seed ${String(bad)}`).toBe('ERR_INVALID_ARG');
      expect(readCode([{ ...good, crc: bad }]), `crc ${String(bad)}`).toBe('ERR_INVALID_ARG');
    }
    expect(() => file.readChecked(dst, [{ ...good, crc: 2 ** 32 }])).toThrow('expected an unsigned 32-bit integer for pieces[0].crc, got 4294967296');
    for (const bad of [[], null, undefined, good, 'pieces', [null], [5]]) {
      expect(readCode(bad), `pieces ${JSON.stringify(bad)}`).toBe('ERR_INVALID_ARG');
    }
    expect(() => file.readChecked(dst, [])).toThrow(`expected 1 to ${MAX_CHECKED_PIECES} pieces for pieces, got 0`);
    const many = Array.from({ length: MAX_CHECKED_PIECES + 1 }, () => ({ ...good, bytes: 0 }));
    expect(readCode(many)).toBe('ERR_INVALID_ARG');
    expect(readCode([{ ...good, dstOffset: 60 }])).toBe('ERR_OUT_OF_RANGE');
    expect(() => file.readChecked(dst, [good, { ...good, dstOffset: 65, bytes: 0 }])).toThrow(
      "expected destination range within the buffer's 64 bytes, got offset 65 + 0 bytes",
    );
    expect(() => file.readChecked(dst, [good, { ...good, dstOffset: 7 }])).toThrow(
      'expected pieces whose destination ranges do not overlap, got pieces 0 and 1',
    );
    expect(readCode([{ ...good, dstOffset: 40, bytes: 20 }, good, { ...good, dstOffset: 4, bytes: 0 }, { ...good, dstOffset: 50 }])).toBe('ERR_INVALID_ARG');
    expect(readCode([good], io.dev.allocDevice(64))).toBe('ERR_INVALID_ARG');
    expect(readCode([good], new Uint8Array(64))).toBe('ERR_INVALID_ARG');
    const other = open('cpu');
    expect(() => file.readChecked(other.allocPinned(64), [good])).toThrow('expected a buffer of this device for destination');
    await other.dispose();
    // Nothing reached the engine, nothing landed in the destination.
    await ticks(5);
    expect(ioStats(file)).toEqual(before);
    expect(dst.array.every((v) => v === POISON)).toBe(true);
  });

  it('are checked again by the addon, whatever reaches it', () => {
    const native = file.native;
    const nd = dst.native;
    const call = (table: number[], width = 5) => codeOf(() => (width === 5 ? native.readChecked(nd, Float64Array.from(table)) : native.writeSummed(nd, Float64Array.from(table))));
    expect(call([])).toBe('ERR_INVALID_ARG');
    expect(call([0, 0, 8, 0])).toBe('ERR_INVALID_ARG'); // not 5 per piece
    expect(call([-1, 0, 8, 0, 0])).toBe('ERR_INVALID_ARG');
    expect(call([0, 0.5, 8, 0, 0])).toBe('ERR_INVALID_ARG');
    expect(call([0, 0, 8, 2 ** 32, 0])).toBe('ERR_INVALID_ARG');
    expect(call([0, 0, 8, 0, -1])).toBe('ERR_INVALID_ARG');
    expect(call([0, 0, 8, 0, Number.NaN])).toBe('ERR_INVALID_ARG');
    expect(call([60, 0, 8, 0, 0])).toBe('ERR_OUT_OF_RANGE');
    expect(call([0, 0, 8, 0, 0, 4, 0, 8, 0, 0])).toBe('ERR_INVALID_ARG'); // overlapping
    expect(call([0, 2 ** 53, 8, 0, 0])).toBe('ERR_INVALID_ARG'); // past the safe integers
    expect(call([0, 0, 8], 4)).toBe('ERR_INVALID_ARG');
    expect(call([60, 0, 8, 0], 4)).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => native.readChecked(nd, new Float32Array(5) as never))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => native.readChecked({} as never, new Float64Array(5)))).toBe('ERR_INVALID_ARG');
  });

  it('writeSummed rejects bad arguments with typed errors and writes nothing', async () => {
    const before = ioStats(file);
    const src = io.dev.allocPinned(64);
    const piece: SummedPiece = { srcOffset: 0, fileOffset: 0, bytes: 8, seed: 0 };
    const code = async (p: Promise<unknown>) => (await rejection(p)).code;
    expect(await code(file.writeSummed(src, []))).toBe('ERR_INVALID_ARG');
    expect(await code(file.writeSummed(src, [{ ...piece, srcOffset: -1 }]))).toBe('ERR_INVALID_ARG');
    expect(await code(file.writeSummed(src, [{ ...piece, seed: 2 ** 32 }]))).toBe('ERR_INVALID_ARG');
    expect(await code(file.writeSummed(src, [{ ...piece, srcOffset: 60 }]))).toBe('ERR_OUT_OF_RANGE');
    expect(await code(file.writeSummed(io.dev.allocDevice(64) as never, [piece]))).toBe('ERR_INVALID_ARG');
    expect(await code(file.writeSummed(src, null as never))).toBe('ERR_INVALID_ARG');
    // Overlapping sources are fine for a write.
    expect((await file.writeSummed(src, [piece, { ...piece, fileOffset: 8 }])).length).toBe(2);
    expect(ioStats(file).bufferedBytes + ioStats(file).directBytes - before.bufferedBytes - before.directBytes).toBe(16);
    await src.dispose();
  });

  it('writeSummed rejects overlapping file ranges before writing anything; adjacent ranges are written', async () => {
    const f = await io.dev.openFile(path.join(io.dir, 'summed-overlap.bin'), { create: true });
    const src = io.dev.allocPinned(4096);
    src.array.set(randomBytes(4096));
    const first = io.dev.allocPinned(256);
    first.array.set(randomBytes(256));
    await f.write(0, first, 0, 256);
    const before = ioStats(f);
    const piece: SummedPiece = { srcOffset: 0, fileOffset: 0, bytes: 64, seed: 0 };
    const overlapping: SummedPiece[][] = [
      [piece, { ...piece, srcOffset: 64, fileOffset: 63 }],
      [{ ...piece, fileOffset: 100 }, { ...piece, srcOffset: 64, fileOffset: 40, bytes: 200 }],
      [piece, { ...piece, srcOffset: 64 }],
      [{ ...piece, fileOffset: 128 }, { ...piece, srcOffset: 64, fileOffset: 192 }, { ...piece, srcOffset: 128, fileOffset: 130, bytes: 1 }],
    ];
    for (const pieces of overlapping) {
      const e = await rejection(f.writeSummed(src, pieces));
      expect(e.code).toBe('ERR_INVALID_ARG');
      expect(e.message).toMatch(/^expected pieces whose file ranges do not overlap, got pieces \d and \d$/);
    }
    await ticks(5);
    expect(ioStats(f)).toEqual(before);
    const back = io.dev.allocPinned(256);
    await f.read(back, 0, 0, 256);
    expect(sameBytes(back.array, first.array)).toBe('equal');
    // Adjacent ranges, and an empty piece anywhere, are accepted and written.
    const sums = await f.writeSummed(src, [{ ...piece, srcOffset: 64, fileOffset: 64 }, piece, { ...piece, fileOffset: 30, bytes: 0 }]);
    expect([...sums]).toEqual([crc32c(src.array.subarray(64, 128)), crc32c(src.array.subarray(0, 64)), 0]);
    await f.read(back, 0, 0, 256);
    expect(sameBytes(back.array.subarray(0, 128), src.array.subarray(0, 128))).toBe('equal');
    expect(sameBytes(back.array.subarray(128), first.array.subarray(128))).toBe('equal');
    await Promise.all([src.dispose(), first.dispose(), back.dispose(), f.dispose()]);
  });

  it('writeSummed accepts a set of file ranges exactly when no two non-empty ones overlap (property)', () => {
    // Arguments are checked before anything reaches the engine: a table that passes is the accepted one.
    const range = fc.record({ fileOffset: fc.integer({ min: 0, max: 64 }), bytes: fc.integer({ min: 0, max: 16 }) });
    fc.assert(
      fc.property(fc.array(range, { minLength: 1, maxLength: 8 }), (ranges) => {
        const pieces = ranges.map((r) => ({ ...r, srcOffset: 0, seed: 0 }));
        const overlap = ranges.some((a, i) => ranges.some((b, j) => i < j && a.bytes > 0 && b.bytes > 0 &&
          a.fileOffset < b.fileOffset + b.bytes && b.fileOffset < a.fileOffset + a.bytes));
        let code: string | undefined;
        try {
          summedWriteTable(pieces, 64);
        } catch (e) {
          code = (e as KvflowError).code;
        }
        expect(code).toBe(overlap ? 'ERR_INVALID_ARG' : undefined);
      }),
      { numRuns: 500 },
    );
  });

  it('a disposed file or buffer is ERR_DISPOSED', async () => {
    const f = await io.dev.openFile(path.join(io.dir, 'checked-gone.bin'), { create: true });
    await f.dispose();
    expect(codeOf(() => f.readChecked(dst, [good]))).toBe('ERR_DISPOSED');
    expect((await rejection(f.writeSummed(dst, [{ srcOffset: 0, fileOffset: 0, bytes: 8, seed: 0 }]))).code).toBe('ERR_DISPOSED');
    const gone = io.dev.allocPinned(64);
    await gone.dispose();
    expect(codeOf(() => file.readChecked(gone, [good]))).toBe('ERR_DISPOSED');
  });
});
