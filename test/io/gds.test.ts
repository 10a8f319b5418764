// GPUDirect Storage: `auto` falls back to the bounce path and says why; `on`
// fails with the reason where cuFile is missing or refuses the file; where it
// registers, bytes still round-trip exactly.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvflowError, type Device, type KvFile } from '../../src/index.js';
import { backends, open, poison, randomBytes, sameBytes } from '../helpers/backends.js';

describe.each(backends)('GPUDirect Storage choice on $backend', ({ backend, skip }) => {
  let dev: Device;
  let dir: string;
  beforeAll(() => {
    if (skip) return;
    dev = open(backend);
    dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-gds-'));
  });
  afterAll(async () => {
    await dev?.dispose();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it.skipIf(skip)("'auto' opens the file, says whether cuFile is used and why, and file -> device -> file is exact", async () => {
    const bytes = 3 * 1024 * 1024 + 4096;
    const data = randomBytes(bytes);
    const p = path.join(dir, 'auto.bin');
    writeFileSync(p, data);
    const file = await dev.openFile(p, { gds: 'auto' });
    expect(file.info.gdsRequested).toBe('auto');
    expect(file.info.gdsReason).toMatch(/GPUDirect Storage/);
    if (backend === 'cpu') expect(file.info.gds).toBe(false);
    const d = dev.allocDevice(bytes);
    const out = dev.allocPinned(bytes);
    poison(out.array);
    const s = dev.createStream();
    s.readFile(d, 0, file, 0, bytes);
    s.copy(out, 0, d, 0, bytes);
    await s.synchronize();
    expect(sameBytes(out.array, data)).toBe('equal');
    const copy = await dev.openFile(path.join(dir, 'copy.bin'), { create: true, gds: 'auto' });
    s.writeFile(copy, 0, d, 0, bytes);
    await s.synchronize();
    const back = dev.allocPinned(bytes);
    await copy.read(back, 0, 0, bytes);
    expect(sameBytes(back.array, data)).toBe('equal');
    await Promise.all([file.dispose(), copy.dispose(), s.dispose()]);
  });

  it.skipIf(skip)("'on' either uses cuFile or fails with ERR_UNSUPPORTED and the reason", async () => {
    const p = path.join(dir, 'on.bin');
    writeFileSync(p, randomBytes(8192));
    let file: KvFile | undefined;
    let error: unknown;
    try {
      file = await dev.openFile(p, { gds: 'on' });
    } catch (e) {
      error = e;
    }
    if (file) {
      expect(file.info.gds).toBe(true);
      await file.dispose();
      return;
    }
    expect(error).toBeInstanceOf(KvflowError);
    expect((error as KvflowError).code).toBe('ERR_UNSUPPORTED');
    expect((error as KvflowError).message).toMatch(/GPUDirect Storage/);
  });

  it.skipIf(skip)('a bad gds value is ERR_INVALID_ARG', async () => {
    await expect(dev.openFile(path.join(dir, 'x'), { create: true, gds: 'maybe' as never })).rejects.toMatchObject({
      code: 'ERR_INVALID_ARG',
    });
  });
});
