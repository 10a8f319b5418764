// Random bytes round-trip through a file on every engine available here,
// direct and buffered, at sizes from 1 byte to 512 MiB with odd offsets on
// both the buffer and the file side, into poisoned destinations. The engine's
// byte counters prove which path (O_DIRECT or the page cache) each part took.
import { rmSync } from 'node:fs';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { FileIoBuffer, KvFile, PinnedBuffer } from '../../src/index.js';
import { ioStats } from '../../src/io/testing.js';
import { poison, randomBytes, sameBytes } from '../helpers/backends.js';
import { engines, expectedDirectBytes, ioFixture, tmpDirect, uringSkipReason } from '../helpers/io.js';

const MiB = 1 << 20;
const POISON = 0xa5;

// [bytes, source offset, file offset, destination offset]
const cases: Array<[number, number, number, number]> = [
  [1, 0, 0, 0],
  [1, 3, 4097, 5],
  [4095, 1, 1, 2],
  [4096, 0, 0, 0],
  [4096, 4096, 8192, 4096],
  [4097, 5, 4095, 4095],
  [65_537, 7, 13, 13],
  [MiB + 3, 4096, 1, 3],
  [4 * MiB, 0, 0, 0],
  [4 * MiB + 1, 4095, 3 * 4096, 0],
  [10 * MiB + 100, 1000, 3 * 8192 + 1000, 1000],
  [16 * MiB + 5, 3, 2, 1],
  [16 * MiB + 4096, 4096, 4096, 8192],
  [33 * MiB - 7, 4097, 4097, 4097],
];

const modes = [
  { direct: 'on' as const, skip: !tmpDirect.ok },
  { direct: 'off' as const, skip: false },
];

const io = ioFixture();

/** Writes `bytes` random bytes from `src` at `srcOffset`, reads them back into poisoned `dst` at `dstOffset`. */
async function roundTrip(
  file: KvFile,
  src: FileIoBuffer,
  dst: FileIoBuffer,
  [bytes, srcOffset, fileOffset, dstOffset]: [number, number, number, number],
): Promise<void> {
  const before = ioStats(file);
  await file.write(fileOffset, src, srcOffset, bytes);
  poison(dst.array);
  await file.read(dst, dstOffset, fileOffset, bytes);
  expect(sameBytes(dst.array.subarray(dstOffset, dstOffset + bytes), src.array.subarray(srcOffset, srcOffset + bytes))).toBe('equal');
  expect(dst.array.subarray(0, dstOffset).every((v) => v === POISON), 'bytes before the destination range').toBe(true);
  expect(dst.array.subarray(dstOffset + bytes).every((v) => v === POISON), 'bytes after the destination range').toBe(true);
  const after = ioStats(file);
  const align = tmpDirect.alignment;
  const direct = file.info.direct
    ? expectedDirectBytes(src.address, srcOffset, fileOffset, bytes, align) +
      expectedDirectBytes(dst.address, dstOffset, fileOffset, bytes, align)
    : 0;
  expect(after.directBytes - before.directBytes, 'bytes through O_DIRECT').toBe(direct);
  expect(after.bufferedBytes - before.bufferedBytes, 'bytes through the page cache').toBe(2 * bytes - direct);
  expect(after.failedTasks).toBe(before.failedTasks);
}

describe.each(engines)('round trips on the $engine engine', ({ engine, skip }) => {
  describe.each(modes)('direct $direct', ({ direct, skip: noDirect }) => {
    let file: KvFile;
    beforeAll(async () => {
      if (skip || noDirect) return;
      file = await io.dev.openFile(path.join(io.dir, `${engine}-${direct}.bin`), { create: true, engine, direct });
    });
    afterAll(async () => {
      await file?.dispose();
    });

    it.skipIf(skip || noDirect)('reports the engine and the direct verdict it runs with', () => {
      expect(file.info.engine).toBe(engine);
      expect(file.info.direct).toBe(direct === 'on');
      expect(file.info.directReason).toMatch(direct === 'on' ? /^O_DIRECT works at / : /direct 'off' was requested/);
    });

    it.skipIf(skip || noDirect).each(cases)('%i bytes (source +%i, file +%i, destination +%i)', async (...c) => {
      const [bytes, srcOffset, , dstOffset] = c;
      // Pinned to host on even sizes, host to pinned on odd ones: both kinds on both sides.
      const pinnedFirst = bytes % 2 === 0;
      const src = pinnedFirst ? io.dev.allocPinned(bytes + srcOffset) : io.dev.allocHost(bytes + srcOffset);
      const dst = pinnedFirst ? io.dev.allocHost(bytes + dstOffset + 11) : io.dev.allocPinned(bytes + dstOffset + 11);
      src.array.set(randomBytes(bytes), srcOffset);
      await roundTrip(file, src, dst, c);
      await Promise.all([src.dispose(), dst.dispose()]);
    });

    it.skipIf(skip || noDirect)('several requests in flight at once each land where they belong', async () => {
      const n = 12;
      const piece = 3 * MiB + 17;
      const src = io.dev.allocPinned(n * piece);
      const dst = io.dev.allocPinned(n * piece);
      src.array.set(randomBytes(n * piece));
      const base = 64 * MiB;
      await Promise.all(Array.from({ length: n }, (_, i) => file.write(base + i * piece, src, i * piece, piece)));
      poison(dst.array);
      await Promise.all(Array.from({ length: n }, (_, i) => file.read(dst, i * piece, base + i * piece, piece)));
      expect(sameBytes(dst.array, src.array)).toBe('equal');
      await Promise.all([src.dispose(), dst.dispose()]);
    });
  });
});

describe('512 MiB', () => {
  const bytes = 512 * MiB - 3;
  let src: PinnedBuffer;
  let dst: PinnedBuffer;
  beforeAll(() => {
    src = io.dev.allocPinned(bytes + 4096 + 5);
    dst = io.dev.allocPinned(bytes + 4096 + 5);
    src.array.set(randomBytes(bytes), 4096 + 5);
  });
  afterAll(async () => {
    await Promise.all([src?.dispose(), dst?.dispose()]);
  });

  // Offsets congruent modulo 4096 on the direct run (its middle goes through
  // O_DIRECT), unrelated ones on the buffered run.
  const runs = engines.flatMap(({ engine, skip }) => [
    { engine, direct: 'on' as const, offsets: [4096 + 5, 5, 5] as const, skip: skip || !tmpDirect.ok },
    { engine, direct: 'off' as const, offsets: [4096 + 5, 7, 1] as const, skip },
  ]);
  it.for(runs)('round-trips through $engine, direct $direct, with odd offsets', async ({ engine, direct, offsets, skip }, ctx) => {
    if (skip) ctx.skip(engine === 'io_uring' ? uringSkipReason : tmpDirect.reason);
    const file = await io.dev.openFile(path.join(io.dir, `big-${engine}-${direct}.bin`), { create: true, engine, direct });
    const [srcOffset, fileOffset, dstOffset] = offsets;
    await roundTrip(file, src, dst, [bytes, srcOffset, fileOffset, dstOffset]);
    await file.dispose();
    rmSync(path.join(io.dir, `big-${engine}-${direct}.bin`));
  });
});
