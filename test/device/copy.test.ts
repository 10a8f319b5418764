import { describe, expect, it } from 'vitest';

import type { Device, KvBuffer, MemoryKind, PinnedBuffer } from '../../src/index.js';
import { backends, codeOf, deviceSuite, poison, randomBytes, sameBytes } from '../helpers/backends.js';

const KINDS: MemoryKind[] = ['device', 'pinned', 'host'];
const MiB = 1 << 20;

function alloc(dev: Device, kind: MemoryKind, bytes: number): KvBuffer {
  if (kind === 'device') return dev.allocDevice(bytes);
  if (kind === 'pinned') return dev.allocPinned(bytes);
  return dev.allocHost(bytes);
}

describe.each(backends)('copy on $backend', ({ backend, skip }) => {
  const fx = deviceSuite(backend, skip);

  // Each case moves random bytes source -> a -> b -> check for every pair (a, b)
  // of memory kinds, through poisoned destinations, at the given offsets.
  const cases: Array<[number, number, number]> = [
    [1, 0, 0],
    [1, 3, 1],
    [4096, 0, 0],
    [4096, 5, 4093],
    [65_537, 7, 13],
    [MiB + 3, 4096, 1],
    [16 * MiB, 0, 0],
    [16 * MiB - 5, 3, 2],
  ];
  it.skipIf(skip).each(cases)('every pair round-trips %i bytes (offsets %i, %i)', async (bytes, offA, offB) => {
    const stream = fx.dev.createStream();
    const data = randomBytes(bytes);
    const source = fx.dev.allocPinned(bytes);
    source.array.set(data);
    const check = fx.dev.allocPinned(bytes + offB);
    for (const ka of KINDS) {
      for (const kb of KINDS) {
        const a = alloc(fx.dev, ka, bytes + offA);
        const b = alloc(fx.dev, kb, bytes + offB);
        const poisonBuf = fx.dev.allocPinned(Math.max(bytes + offA, bytes + offB));
        poison(poisonBuf.array);
        stream.copy(a, 0, poisonBuf, 0, bytes + offA);
        stream.copy(b, 0, poisonBuf, 0, bytes + offB);
        poison(check.array);
        stream.copy(a, offA, source, 0, bytes);
        stream.copy(b, offB, a, offA, bytes);
        stream.copy(check, 0, b, 0, bytes + offB);
        await stream.synchronize();
        const got = check.array;
        expect(sameBytes(got.subarray(offB, offB + bytes), data), `${ka} -> ${kb}`).toBe('equal');
        // bytes before the destination offset keep the poison
        expect(got.subarray(0, offB).every((v) => v === 0xa5), `${ka} -> ${kb} prefix`).toBe(true);
        await Promise.all([a.dispose(), b.dispose(), poisonBuf.dispose()]);
      }
    }
    await Promise.all([source.dispose(), check.dispose(), stream.dispose()]);
  });

  it.skipIf(skip)('256 MiB round-trips through every pair', async () => {
    const bytes = 256 * MiB;
    const stream = fx.dev.createStream();
    const source = fx.dev.allocPinned(bytes);
    source.array.set(randomBytes(bytes));
    const check: PinnedBuffer = fx.dev.allocPinned(bytes);
    for (const ka of KINDS) {
      const a = alloc(fx.dev, ka, bytes);
      stream.copy(a, 0, source, 0, bytes);
      for (const kb of KINDS) {
        const b = alloc(fx.dev, kb, bytes);
        poison(check.array);
        stream.copy(b, 0, a, 0, bytes);
        stream.copy(check, 0, b, 0, bytes);
        await stream.synchronize();
        expect(sameBytes(check.array, source.array), `${ka} -> ${kb}`).toBe('equal');
        await b.dispose();
      }
      await a.dispose();
    }
    await stream.dispose();
  });

  // Overlapping copies are undefined on CUDA (as cudaMemcpy); the CPU backend guarantees memmove semantics.
  it.skipIf(skip || backend !== 'cpu')('a copy within one buffer moves overlapping ranges correctly on the CPU backend', async () => {
    const stream = fx.dev.createStream();
    const buf = fx.dev.allocPinned(1000);
    const data = randomBytes(1000);
    buf.array.set(data);
    stream.copy(buf, 10, buf, 0, 900);
    await stream.synchronize();
    expect(sameBytes(buf.array.subarray(10, 910), data.subarray(0, 900))).toBe('equal');
    await stream.dispose();
  });

  it.skipIf(skip)('a zero-byte copy is accepted and moves nothing', async () => {
    const stream = fx.dev.createStream();
    const a = fx.dev.allocPinned(16);
    const b = fx.dev.allocPinned(16);
    a.array.set(randomBytes(16));
    poison(b.array);
    stream.copy(b, 16, a, 16, 0);
    await stream.synchronize();
    expect(b.array.every((v) => v === 0xa5)).toBe(true);
    await stream.dispose();
  });

  it.skipIf(skip)('copyAndRecord: each event is done once its own copy landed, byte for byte', async () => {
    const stream = fx.dev.createStream();
    const bytes = 65_536 + 3;
    const source = fx.dev.allocPinned(bytes * 4);
    source.array.set(randomBytes(bytes * 4));
    const dev = fx.dev.allocDevice(bytes * 4);
    const back = fx.dev.allocPinned(bytes * 4);
    poison(back.array);
    for (let i = 0; i < 4; i++) {
      const up = stream.copyAndRecord(dev, i * bytes, source, i * bytes, bytes);
      const down = stream.copyAndRecord(back, i * bytes, dev, i * bytes, bytes, { timing: true });
      expect(up.timed).toBe(false);
      expect(down.timed).toBe(true);
      await down.done();
      // Checked when this copy's event resolved: later chunks still hold the poison.
      expect(sameBytes(back.array.subarray(0, (i + 1) * bytes), source.array.subarray(0, (i + 1) * bytes))).toBe('equal');
      expect(back.array.subarray((i + 1) * bytes).every((v) => v === 0xa5)).toBe(true);
      expect(up.status()).toBe('ok');
      expect(Number.isFinite(down.timeMs())).toBe(true);
    }
    // One copy long enough that an event recorded ahead of it would resolve
    // well before its bytes land: checked the moment the event resolves.
    const big = 48 * MiB;
    const src = fx.dev.allocPinned(big);
    src.array.set(randomBytes(big));
    const dst = fx.dev.allocPinned(big);
    poison(dst.array);
    await stream.copyAndRecord(dst, 0, src, 0, big).done();
    expect(sameBytes(dst.array, src.array)).toBe('equal');
    await Promise.all([source.dispose(), dev.dispose(), back.dispose(), src.dispose(), dst.dispose(), stream.dispose()]);
  });

  it.skipIf(skip)('copyAndRecord checks as copy() does: a rejected call enqueues and records nothing', async () => {
    const stream = fx.dev.createStream();
    const a = fx.dev.allocPinned(64);
    const b = fx.dev.allocPinned(64);
    a.array.set(randomBytes(64));
    poison(b.array);
    const gone = fx.dev.allocPinned(64);
    await gone.dispose();
    // Events take the device's ids in order: one recorded by a rejected call would leave a gap.
    const before = stream.record();
    expect(codeOf(() => stream.copyAndRecord(b, 0, a, 0, 65))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => stream.copyAndRecord(b, -1, a, 0, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => stream.copyAndRecord(b, 0, {} as never, 0, 8))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => stream.copyAndRecord(b, 0, a, 0, 8, { timing: 1 } as never))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => stream.copyAndRecord(b, 0, a, 0, 8, { timed: true } as never))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => stream.copyAndRecord(b, 0, gone, 0, 8))).toBe('ERR_DISPOSED');
    // The addon checks on its own too (whatever TS checked), before it enqueues.
    const native = stream.native;
    expect(codeOf(() => native.copyRecord(b.native, 0, a.native, 0, 65, false))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => native.copyRecord(b.native, 0, native as never, 0, 8, false))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => native.copyRecord(b.native, 0, a.native, 0, -8, false))).toBe('ERR_INVALID_ARG');
    const after = stream.record();
    expect(after.native.id).toBe(before.native.id + 1);
    await after.done();
    expect(b.array.every((v) => v === 0xa5)).toBe(true);
    // A zero-byte copy still records.
    await stream.copyAndRecord(b, 64, a, 64, 0).done();
    expect(b.array.every((v) => v === 0xa5)).toBe(true);
    await stream.dispose();
    expect(codeOf(() => stream.copyAndRecord(b, 0, a, 0, 8))).toBe('ERR_DISPOSED');
    await Promise.all([a.dispose(), b.dispose()]);
  });

  it.skipIf(skip)('wrapUnsafe aliases memory: bytes written through the wrap land in the original', async () => {
    const stream = fx.dev.createStream();
    const owner = fx.dev.allocDevice(8192);
    const wrapped = fx.dev.wrapUnsafe(owner.address + 100n, 4096);
    expect(wrapped.owned).toBe(false);
    const src = fx.dev.allocPinned(4096);
    const data = randomBytes(4096);
    src.array.set(data);
    const out = fx.dev.allocPinned(4096);
    poison(out.array);
    stream.copy(wrapped, 0, src, 0, 4096);
    stream.copy(out, 0, owner, 100, 4096);
    await stream.synchronize();
    expect(sameBytes(out.array, data)).toBe('equal');
    await wrapped.dispose();
    await stream.dispose();
  });
});
