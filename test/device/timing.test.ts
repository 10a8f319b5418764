/**
 * Timed events: `stream.record({ timing: true })` carries the time the event
 * completed at, on its device's clock (GPU timestamps on CUDA, the stream
 * worker's clock on the CPU backend). Order, never durations, is asserted.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { elapsedMs, eventTimeMs, type Device, type Stream } from '../../src/index.js';
import { holdStream } from '../../src/device/testing.js';
import { backends, open, randomBytes } from '../helpers/backends.js';

describe.each(backends)('timed events on $backend', ({ backend, skip }) => {
  let dev: Device;
  let stream: Stream;
  beforeAll(() => {
    if (skip) return;
    dev = open(backend);
    stream = dev.createStream();
  });
  afterAll(async () => {
    if (!skip) await dev.dispose();
  });

  it.skipIf(skip)('give non-negative, ordered elapsed times along a stream and across streams', async () => {
    const other = dev.createStream();
    const src = dev.allocPinned(1 << 20);
    src.array.set(randomBytes(1 << 20));
    const dst = dev.allocDevice(1 << 20);
    const a = stream.record({ timing: true });
    stream.copy(dst, 0, src, 0, 1 << 20);
    const b = stream.record({ timing: true });
    other.waitEvent(b);
    other.copy(src, 0, dst, 0, 1 << 20);
    const c = other.record({ timing: true });
    await Promise.all([a.done(), b.done(), c.done()]);
    expect(a.timed && b.timed && c.timed).toBe(true);
    for (const e of [a, b, c]) expect(Number.isFinite(e.timeMs())).toBe(true);
    expect(b.elapsedSince(a)).toBeGreaterThanOrEqual(0);
    expect(elapsedMs(b, c)).toBeGreaterThanOrEqual(0);
    expect(elapsedMs(a, c)).toBeCloseTo(elapsedMs(a, b) + elapsedMs(b, c), 6);
    expect(eventTimeMs(a)).toBeLessThanOrEqual(eventTimeMs(b));
    expect(elapsedMs(c, a)).toBe(-elapsedMs(a, c));
    await other.dispose();
    await src.dispose();
    await dst.dispose();
  });

  it.skipIf(skip)('untimed events and pending ones refuse time queries with codes; bad options are refused', async () => {
    const plain = stream.record();
    const timed = stream.record({ timing: true });
    await Promise.all([plain.done(), timed.done()]);
    expect(plain.timed).toBe(false);
    expect(() => plain.timeMs()).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => elapsedMs(plain, timed)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => timed.elapsedSince(plain)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    const release = holdStream(stream);
    const pending = stream.record({ timing: true });
    expect(() => pending.timeMs()).toThrow(expect.objectContaining({ code: 'ERR_BUSY' }));
    release();
    await pending.done();
    expect(pending.elapsedSince(timed)).toBeGreaterThanOrEqual(0);
    expect(() => stream.record({ timing: 1 } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => stream.record({ timed: true } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(stream.record({ timing: false }).timed).toBe(false);
    expect(stream.record(null as never).timed).toBe(false);
  });

  it.skipIf(skip)('record options: { timing } alone is read directly; any other shape gets the full check', async () => {
    expect(stream.record({ timing: true }).timed).toBe(true);
    expect(stream.record({}).timed).toBe(false);
    expect(stream.record(undefined).timed).toBe(false);
    // An unknown key next to a valid timing is still refused, whichever comes first.
    expect(() => stream.record({ timing: true, extra: 1 } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG', message: expect.stringContaining('"extra"') }));
    expect(() => stream.record({ extra: 1, timing: true } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => stream.record({ timing: undefined, extra: 1 } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => stream.record({ timing: 'yes' } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG', message: expect.stringContaining('timing') }));
    expect(() => stream.record(true as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    // Inherited keys were never options: an object whose prototype carries one is read by its own keys.
    const inherited = Object.create({ other: 1 }) as { timing?: boolean };
    inherited.timing = true;
    expect(stream.record(inherited).timed).toBe(true);
    expect(stream.record({ timing: undefined }).timed).toBe(false);
    // A completed timed event's time, read again, is the same number.
    const e = stream.record({ timing: true });
    await e.done();
    expect(e.timeMs()).toBe(e.timeMs());
  });

  it.skipIf(skip)('waitEvent refuses what is not an Event, naming the argument', () => {
    expect(() => stream.waitEvent({} as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG', message: expect.stringContaining('event') }));
    expect(() => stream.waitEvent(undefined as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
  });

  it.skipIf(skip)('a failed timed event has no time (ERR_UNSUPPORTED), and the stream goes on timing', async () => {
    const release = holdStream(stream);
    const failed = stream.record({ timing: true });
    release({ code: 'ERR_IO', message: 'injected' });
    await expect(failed.done()).rejects.toMatchObject({ code: 'ERR_IO' });
    expect(() => failed.timeMs()).toThrow(expect.objectContaining({ code: 'ERR_UNSUPPORTED' }));
    const next = stream.record({ timing: true });
    await next.done();
    expect(Number.isFinite(next.timeMs())).toBe(true);
  });
});
