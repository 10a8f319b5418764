// Writes that cover part of a block never disturb the bytes beside them, one
// at a time or many at once inside the same blocks (where a read-modify-write
// of shared blocks would lose one writer's bytes).
import { rmSync } from 'node:fs';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Device, KvFile, PinnedBuffer } from '../../src/index.js';
import { open, poison, randomBytes, sameBytes } from '../helpers/backends.js';
import { engines, tempDir, tmpDirect } from '../helpers/io.js';

const SIZE = 64 * 4096 + 123;

describe.each(engines)('neighbouring bytes on the $engine engine', ({ engine, skip }) => {
  let dev: Device;
  let dir: string;
  let file: KvFile;
  let model: Uint8Array; // what the file must hold
  let staging: PinnedBuffer;
  let check: PinnedBuffer;

  beforeAll(async () => {
    if (skip) return;
    dev = open('cpu');
    dir = tempDir();
    file = await dev.openFile(path.join(dir, 'n.bin'), { create: true, engine, direct: tmpDirect.ok ? 'on' : 'off' });
    staging = dev.allocPinned(SIZE);
    check = dev.allocPinned(SIZE);
    model = randomBytes(SIZE);
    staging.array.set(model);
    await file.write(0, staging, 0, SIZE);
  });
  afterAll(async () => {
    await dev?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  async function expectFileIsModel(): Promise<void> {
    poison(check.array);
    await file.read(check, 0, 0, SIZE);
    expect(sameBytes(check.array, model)).toBe('equal');
  }

  it.skipIf(skip)('one write at a time, at odd offsets and lengths across block edges', async () => {
    const pieces: Array<[number, number]> = [
      [1, 1],
      [4095, 2],
      [4096 + 7, 4096 - 14],
      [3 * 4096 - 5, 4096 + 10],
      [8 * 4096 + 1, 5 * 4096],
      [20 * 4096 + 100, 1],
      [SIZE - 7, 7],
    ];
    for (const [offset, bytes] of pieces) {
      const data = randomBytes(bytes);
      // From a source offset not congruent with the file offset: the whole piece goes through the page cache.
      staging.array.set(data, 3);
      await file.write(offset, staging, 3, bytes);
      model.set(data, offset);
      // And again from a congruent one: its aligned middle goes through O_DIRECT.
      const again = randomBytes(bytes);
      staging.array.set(again, offset % 4096);
      await file.write(offset, staging, offset % 4096, bytes);
      model.set(again, offset);
      await expectFileIsModel();
    }
  });

  it.skipIf(skip)('many writes in flight into the same blocks, each leaving the others alone', async () => {
    // Interleaved pieces of 1 to 900 bytes: every block holds several writers' bytes.
    const writes: Array<Promise<void>> = [];
    const bufs: PinnedBuffer[] = [];
    let offset = 4096 * 10 + 3;
    for (let i = 0; offset < 4096 * 40; i++) {
      const bytes = 1 + ((i * 397) % 900);
      const data = randomBytes(bytes);
      const buf = dev.allocPinned(bytes + 1);
      buf.array.set(data, 1);
      bufs.push(buf);
      writes.push(file.write(offset, buf, 1, bytes));
      model.set(data, offset);
      offset += bytes + (i % 3); // gaps of 0 to 2 bytes keep the original bytes between writers
    }
    await Promise.all(writes);
    await expectFileIsModel();
    await Promise.all(bufs.map((b) => b.dispose()));
  });

  it.skipIf(skip)('an aligned write in flight beside unaligned ones in the neighbouring blocks', async () => {
    const big = dev.allocPinned(8 * 4096);
    const small = dev.allocPinned(2 * 4096);
    const bigData = randomBytes(8 * 4096);
    const smallData = randomBytes(2 * 4096);
    big.array.set(bigData);
    small.array.set(smallData);
    const at = 48 * 4096;
    await Promise.all([
      file.write(at, big, 0, 8 * 4096),
      file.write(at - 100, small, 0, 100),
      file.write(at + 8 * 4096, small, 100, 333),
    ]);
    model.set(bigData, at);
    model.set(smallData.subarray(0, 100), at - 100);
    model.set(smallData.subarray(100, 433), at + 8 * 4096);
    await expectFileIsModel();
    await Promise.all([big.dispose(), small.dispose()]);
  });
});
