// What files get from the filesystem, tested for real where this machine
// allows it: mode 0600, the O_DIRECT verdict where a filesystem refuses it,
// a full filesystem, preallocation and size.
import { existsSync, rmSync, statSync } from 'node:fs';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvflowError, type KvFile } from '../../src/index.js';
import { probeDirectIo } from '../../src/io/probe.js';
import { poison, randomBytes, sameBytes } from '../helpers/backends.js';
import { directRefusingDir, engines, ioFixture, mountTemp, tmpDirect, uringSkipReason, type Mounted } from '../helpers/io.js';

const MiB = 1 << 20;

const io = ioFixture();

describe('files', () => {
  it('are created with mode 0600 and opened again without create', async () => {
    const p = path.join(io.dir, 'mode.bin');
    const f = await io.dev.openFile(p, { create: true });
    expect(statSync(p).mode & 0o777).toBe(0o600);
    await f.dispose();
    const again = await io.dev.openFile(p);
    expect(again.size()).toBe(0);
    await again.dispose();
  });

  it('preallocate grows the file and never shrinks it; size at open preallocates', async () => {
    const f = await io.dev.openFile(path.join(io.dir, 'pre.bin'), { create: true, size: 3 * MiB + 5 });
    expect(f.size()).toBe(3 * MiB + 5);
    await f.preallocate(8 * MiB);
    expect(f.size()).toBe(8 * MiB);
    await f.preallocate(MiB);
    expect(f.size()).toBe(8 * MiB);
    // Preallocated space reads back (as zeros: it was never written) without a short read.
    const dst = io.dev.allocPinned(4096);
    await f.read(dst, 0, 8 * MiB - 4096, 4096);
    await f.sync();
    await Promise.all([f.dispose(), dst.dispose()]);
  });

  it.skipIf(!tmpDirect.ok)("direct 'on' works where the probe succeeds, and says how it was verified", async () => {
    const f = await io.dev.openFile(path.join(io.dir, 'on.bin'), { create: true, direct: 'on' });
    expect(f.info.direct).toBe(true);
    expect(f.info.directReason).toMatch(/^O_DIRECT works at .+ \(probed: \d+ KiB aligned write and read\)$/);
    await f.dispose();
  });
});

describe('a filesystem that refuses O_DIRECT', () => {
  let refusing: Mounted;
  beforeAll(() => {
    refusing = directRefusingDir();
  });
  afterAll(() => {
    if ('release' in refusing) refusing.release();
  });

  it("direct 'on' is ERR_UNSUPPORTED with the probe's reason and leaves no file behind", async (ctx) => {
    if ('reason' in refusing) return ctx.skip(refusing.reason);
    const p = path.join(refusing.dir, 'kvflow-on.bin');
    let error: unknown;
    try {
      await io.dev.openFile(p, { create: true, direct: 'on' });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KvflowError);
    expect((error as KvflowError).code).toBe('ERR_UNSUPPORTED');
    expect((error as KvflowError).message).toBe(`O_DIRECT refused by the filesystem at ${refusing.dir}: EINVAL`);
    expect(existsSync(p)).toBe(false);
  });

  it.for(engines)("direct 'auto' falls back to buffered IO on $engine, says why, and round-trips", async ({ engine, skip }, ctx) => {
    if ('reason' in refusing) return ctx.skip(refusing.reason);
    if (skip) return ctx.skip(uringSkipReason);
    const p = path.join(refusing.dir, `kvflow-auto-${engine}.bin`);
    const f = await io.dev.openFile(p, { create: true, engine });
    expect(f.info.direct).toBe(false);
    expect(f.info.directReason).toBe(`buffered IO: O_DIRECT refused by the filesystem at ${refusing.dir}: EINVAL`);
    const src = io.dev.allocPinned(MiB + 4096);
    const dst = io.dev.allocPinned(MiB + 4096);
    src.array.set(randomBytes(src.byteLength));
    await f.write(4096, src, 4096, MiB);
    poison(dst.array);
    await f.read(dst, 4096, 4096, MiB);
    expect(sameBytes(dst.array.subarray(4096), src.array.subarray(4096))).toBe('equal');
    await Promise.all([f.dispose(), src.dispose(), dst.dispose()]);
    rmSync(p);
  });

  it('the probe gives the same verdict', (ctx) => {
    if ('reason' in refusing) return ctx.skip(refusing.reason);
    const p = probeDirectIo(refusing.dir);
    expect(p.ok).toBe(false);
    expect(p.reason).toBe(`O_DIRECT refused by the filesystem at ${refusing.dir}: EINVAL`);
  });
});

describe('a filesystem without fallocate (ramfs)', () => {
  let ramfs: Mounted;
  beforeAll(() => {
    ramfs = mountTemp('ramfs', 'mode=0700');
  });
  afterAll(() => {
    if ('release' in ramfs) ramfs.release();
  });

  it('preallocate falls back (posix_fallocate) and the space is there to use', async (ctx) => {
    if ('reason' in ramfs) return ctx.skip(ramfs.reason);
    const f = await io.dev.openFile(path.join(ramfs.dir, 'pre.bin'), { create: true, size: 3 * MiB + 5 });
    expect(f.size()).toBe(3 * MiB + 5);
    await f.preallocate(MiB);
    expect(f.size()).toBe(3 * MiB + 5);
    const src = io.dev.allocPinned(4096);
    const dst = io.dev.allocPinned(4096);
    src.array.set(randomBytes(4096));
    await f.write(3 * MiB + 5 - 4096, src, 0, 4096);
    await f.read(dst, 0, 3 * MiB + 5 - 4096, 4096);
    expect(sameBytes(dst.array, src.array)).toBe('equal');
    expect(f.size()).toBe(3 * MiB + 5);
    await Promise.all([f.dispose(), src.dispose(), dst.dispose()]);
  });
});

describe('a full filesystem', () => {
  let small: Mounted;
  beforeAll(() => {
    small = mountTemp('tmpfs', 'size=1m,mode=0700');
  });
  afterAll(() => {
    if ('release' in small) small.release();
  });

  it.for(engines)('a write past the space is ERR_NO_SPACE (errno 28) on $engine, and the file stays usable', async ({ engine, skip }, ctx) => {
    if ('reason' in small) return ctx.skip(small.reason);
    if (skip) return ctx.skip(uringSkipReason);
    const p = path.join(small.dir, `full-${engine}.bin`);
    const f: KvFile = await io.dev.openFile(p, { create: true, engine });
    const src = io.dev.allocPinned(2 * MiB);
    src.array.set(randomBytes(2 * MiB));
    await f.write(0, src, 0, 64 * 1024);
    let error: unknown;
    try {
      await f.write(MiB / 2, src, 0, 2 * MiB);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(KvflowError);
    expect((error as KvflowError).code).toBe('ERR_NO_SPACE');
    expect((error as KvflowError).errno).toBe(28);
    expect((error as KvflowError).message).toContain(`of ${p}`);
    // What was written before is intact, and the file takes writes that fit.
    const dst = io.dev.allocPinned(64 * 1024);
    await f.read(dst, 0, 0, 64 * 1024);
    expect(sameBytes(dst.array, src.array.subarray(0, 64 * 1024))).toBe('equal');
    await f.write(100, src, 7, 5000);
    await f.read(dst, 0, 100, 5000);
    expect(sameBytes(dst.array.subarray(0, 5000), src.array.subarray(7, 5007))).toBe('equal');
    // Preallocation past the space is ERR_NO_SPACE too.
    await expect(f.preallocate(4 * MiB)).rejects.toMatchObject({ code: 'ERR_NO_SPACE', errno: 28 });
    await Promise.all([f.dispose(), src.dispose(), dst.dispose()]);
    rmSync(p);
  });
});
