import { describe, expect, it } from 'vitest';

import type { Event } from '../../src/device/event.js';
import { KvflowError, openDevice } from '../../src/index.js';
import { holdStream, injectFailure } from '../../src/device/testing.js';
import { backends, codeOf, deviceSuite, sameBytes, throughDevice, ticks } from '../helpers/backends.js';

describe.each(backends)('streams and events on $backend', ({ backend, skip }) => {
  const fx = deviceSuite(backend, skip);

  /** A device of this backend opened with one variable set (the environment is read once, at open). */
  const openWithEnv = (name: string, value: string) => {
    const before = process.env[name];
    process.env[name] = value;
    try {
      return openDevice({ backend });
    } finally {
      if (before === undefined) delete process.env[name];
      else process.env[name] = before;
    }
  };

  /** A stream whose copy fails with ERR_IO, and the event recorded after it. */
  const failedCopy = () => {
    const s = fx.dev.createStream();
    const buf = fx.dev.allocPinned(64);
    const dst = fx.dev.allocDevice(64);
    injectFailure(s, 'ERR_IO', 'injected read failure');
    s.copy(dst, 0, buf, 0, 64);
    return { s, buf, dst, failed: s.record() };
  };

  it.skipIf(skip)('a copy that waits on another stream\'s event sees its data', async () => {
    const a = fx.dev.createStream();
    const b = fx.dev.createStream({ priority: 'high' });
    const bytes = 4 * 1024 * 1024;
    const { src, mid, out, data } = throughDevice(fx.dev, bytes);
    const release = holdStream(a); // a cannot start until released
    a.copy(mid, 0, src, 0, bytes);
    const loaded = a.record();
    b.waitEvent(loaded);
    b.copy(out, 0, mid, 0, bytes);
    const copied = b.record();
    await ticks(20);
    // b is ordered behind a, which is held: nothing may have run yet
    expect(loaded.status()).toBe('pending');
    expect(copied.status()).toBe('pending');
    expect(out.array.every((v) => v === 0xa5)).toBe(true);
    release();
    await copied.done();
    expect(loaded.status()).toBe('ok');
    expect(sameBytes(out.array, data)).toBe('equal');
    await Promise.all([a.dispose(), b.dispose()]);
  });

  it.skipIf(skip)('events of one stream settle in stream order whichever order they were waited on in', async () => {
    const s = fx.dev.createStream();
    const buf = fx.dev.allocPinned(4096);
    const dst = fx.dev.allocDevice(4096);
    const order: string[] = [];
    const release = holdStream(s);
    s.copy(dst, 0, buf, 0, 4096);
    const w = s.record();
    s.copy(dst, 0, buf, 0, 4096);
    const x = s.record();
    s.copy(dst, 0, buf, 0, 4096);
    const p = s.record();
    const waits = [w.done().then(() => order.push('w')), p.done().then(() => order.push('p'))];
    release();
    // x, waited on last and found complete at once, must still settle
    // between w and p (whose notices are not delivered yet: this thread
    // has not let the loop turn).
    const until = Date.now() + 10_000;
    while (x.status() === 'pending' && Date.now() < until) {
      // the stream runs on its own threads
    }
    expect(x.status()).toBe('ok');
    waits.push(x.done().then(() => order.push('x')));
    await Promise.all(waits);
    expect(order).toEqual(['w', 'x', 'p']);
    await s.dispose();
  });

  it.skipIf(skip)("done() looks on the spot only when it is the device's only wait; kvflow's own waits never do", async () => {
    const dev = openDevice({ backend }); // its own: a look that runs out holds later looks back
    try {
      /** The arguments of every native watch() of `e`. */
      const spy = (e: Event): unknown[][] => {
        const calls: unknown[][] = [];
        const native = e.native as unknown as { watch: (...args: unknown[]) => number };
        const watch = native.watch.bind(native);
        Object.defineProperty(native, 'watch', {
          value: (...args: unknown[]) => {
            calls.push(args);
            return watch(...args);
          },
        });
        return calls;
      };
      const s = dev.createStream();
      const release = holdStream(s);
      const a = s.record();
      const b = s.record();
      const [la, lb] = [spy(a), spy(b)];
      const waits = [a.done(), b.done()];
      release();
      await Promise.all(waits);
      expect(la).toEqual([[dev.config.shortWaitUs]]); // alone: looked (and ran out: the stream was held)
      expect(lb).toEqual([[]]); // a was waited on: no look
      const c = s.record();
      const d = s.record();
      const [lc, ld] = [spy(c), spy(d)];
      await c.untilDone();
      await new Promise<void>((resolve) => d.whenDone(() => resolve()));
      expect(lc).toEqual([[]]);
      expect(ld).toEqual([[]]);
      // The native look takes 0 to 1000 us, and nothing else.
      const held = holdStream(s);
      const e = s.record();
      const codes = [1001, -1, Number.NaN, '5'].map((v) => codeOf(() => e.native.watch(v as number)));
      const whileHeld = e.native.watch(1000); // the look runs out
      held();
      await e.done();
      expect(codes).toEqual(['ERR_OUT_OF_RANGE', 'ERR_OUT_OF_RANGE', 'ERR_OUT_OF_RANGE', 'ERR_INVALID_ARG']);
      expect(whileHeld).toBe(0);
      expect(e.native.watch(1000)).toBe(1);
      await s.dispose();
    } finally {
      await dev.dispose();
    }
  });

  it.skipIf(skip)('done() awaited alone: a look that runs out still settles later, and copies awaited one by one arrive exact', async () => {
    const dev = openWithEnv('KVFLOW_SHORT_WAIT_US', '1000'); // the longest look
    expect(dev.config.shortWaitUs).toBe(1000);
    try {
      const s = dev.createStream();
      const bytes = 64 * 1024;
      const { src, mid, out, data } = throughDevice(dev, bytes);
      const release = holdStream(s);
      s.copy(mid, 0, src, 0, bytes);
      let settled = false;
      const held = s.record().done().then(() => void (settled = true));
      await ticks(10);
      expect(settled).toBe(false); // the look ran out: the wait goes on as any other
      release();
      await held;
      // Then one copy at a time, each awaited alone: whatever settles them (a
      // look, a turn of the loop or a notice), each lands whole.
      for (let i = 0; i < 100; i++) {
        s.copy(out, 0, mid, 0, bytes);
        await s.record().done();
        expect(sameBytes(out.array, data), `copy ${i}`).toBe('equal');
        out.array.fill(0);
      }
      await s.dispose();
    } finally {
      await dev.dispose();
    }
  });

  it.skipIf(skip)('a stream whose last event was seen done is idle: dispose({ wait: false }) never finds it busy', async () => {
    // Both ways of seeing an event done: the completion thread's notice (no
    // spin) and the event loop's own check (the default spin).
    for (const spin of ['0', '50']) {
      const dev = openWithEnv('KVFLOW_COMPLETION_SPIN_US', spin);
      const a = dev.allocPinned(4096);
      const b = dev.allocPinned(4096);
      let busy = 0;
      for (let i = 0; i < 3000; i++) {
        const s = dev.createStream();
        s.copy(b, 0, a, 0, 64);
        await s.record().done();
        if (!s.idle()) busy++;
        await s.dispose({ wait: false });
      }
      expect(busy, `spin ${spin}`).toBe(0);
      await dev.dispose();
    }
  });

  it.skipIf(skip)('10k small operations in flight all complete, in order', async () => {
    const s = fx.dev.createStream();
    const n = 10_000;
    const piece = 64;
    const { src, mid: dst, out, data } = throughDevice(fx.dev, n * piece);
    const events = [];
    for (let i = 0; i < n; i++) {
      s.copy(dst, i * piece, src, i * piece, piece);
      if (i % 10 === 9) events.push(s.record());
    }
    for (let i = 0; i < n; i++) s.copy(out, i * piece, dst, (n - 1 - i) * piece, piece);
    const last = s.record();
    const order: number[] = [];
    await Promise.all(events.map((e, i) => e.done().then(() => order.push(i))));
    await last.done();
    expect(order).toEqual(events.map((_, i) => i));
    for (let i = 0; i < n; i += 997) {
      expect(sameBytes(out.array.subarray(i * piece, (i + 1) * piece), data.subarray((n - 1 - i) * piece, (n - i) * piece))).toBe('equal');
    }
    await s.dispose();
  });

  it.skipIf(skip)('events of one stream settle in stream order even when a later one is found complete first', async () => {
    const s = fx.dev.createStream();
    const release = holdStream(s);
    const a = s.record();
    const b = s.record();
    const order: string[] = [];
    const pa = a.done().then(() => order.push('a')); // a is pending: its notice comes in a later batch
    release();
    // Spin without yielding, so that no completion batch is delivered meanwhile.
    const until = Date.now() + 10_000;
    while (b.status() === 'pending' && Date.now() < until);
    expect(b.status()).toBe('ok');
    const pb = b.done().then(() => order.push('b')); // b is complete already
    await Promise.all([pa, pb]);
    expect(order).toEqual(['a', 'b']);
    await s.dispose();
  });

  it.skipIf(skip)('whenDone tells each sink once, in stream order with done(), at once for an event settled already', async () => {
    const s = fx.dev.createStream();
    const release = holdStream(s);
    const [a, b, c] = [s.record(), s.record(), s.record()];
    const order: string[] = [];
    a.whenDone((e) => order.push(`a:${String(e)}`));
    const pb = b.done();
    b.whenDone(() => order.push('b'));
    a.whenDone(() => order.push('a2'));
    release();
    // c is found complete before a's notice is delivered: it still settles after a and b.
    const until = Date.now() + 10_000;
    while (c.status() === 'pending' && Date.now() < until);
    c.whenDone(() => order.push('c'));
    expect(order).toEqual([]);
    await pb;
    await ticks(2);
    expect(order).toEqual(['a:undefined', 'a2', 'b', 'c']);
    let late: unknown = 'not told';
    a.whenDone((e) => (late = e));
    expect(late).toBeUndefined();
    await s.dispose();
  });

  it.skipIf(skip)('a long chain of events found complete before the first notice all settle, in order', async () => {
    const s = fx.dev.createStream();
    const release = holdStream(s);
    const first = s.record();
    const pFirst = first.done(); // pending: its notice comes in a later batch
    const n = 20_000;
    const rest = Array.from({ length: n }, () => s.record());
    release();
    const until = Date.now() + 20_000;
    while (rest[n - 1]!.status() === 'pending' && Date.now() < until);
    expect(rest[n - 1]!.status()).toBe('ok');
    // Each waits on the one before it: settling them must not recurse once per event.
    const order: number[] = [];
    rest.forEach((e, i) => e.whenDone((err) => order.push(err === undefined ? i : -1 - i)));
    const pLast = rest[n - 1]!.done();
    await pFirst;
    await pLast;
    expect(order.length).toBe(n);
    expect(order.every((v, i) => v === i)).toBe(true);
    await s.dispose();
  });

  it.skipIf(skip)('whenDone tells a failure with its code, and what a replaced done() says', async () => {
    const { s, failed } = failedCopy();
    const told = await new Promise<unknown>((resolve) => failed.whenDone(resolve));
    expect(told).toMatchObject({ code: 'ERR_IO', message: 'injected read failure' });
    // An owner that fails an event on the host replaces its done(): whenDone follows it.
    const ok = s.record();
    const failure = new KvflowError('evicted', 'ERR_EVICTED');
    const done = ok.done.bind(ok);
    ok.done = () => done().then(() => Promise.reject(failure));
    expect(await new Promise<unknown>((resolve) => ok.whenDone(resolve))).toBe(failure);
    await s.dispose();
  });

  it.skipIf(skip)('a wait on an event that completed long ago never waits on later records, which reuse its device event', async () => {
    // On CUDA a completed event's cudaEvent_t goes back to the pool at once
    // (while its Event object lives on) and the next records take it again:
    // a stream told to wait on the old event must not wait on them.
    const a = fx.dev.createStream();
    const b = fx.dev.createStream();
    const old = [a.record(), a.record({ timing: true })];
    const failedOld = failedCopy();
    await Promise.all(old.map((e) => e.done()));
    await expect(failedOld.failed.done()).rejects.toMatchObject({ code: 'ERR_IO' });
    const release = holdStream(a);
    const held = [];
    for (let i = 0; i < 64; i++) held.push(a.record(), a.record({ timing: true }));
    for (const e of old) b.waitEvent(e);
    const after = b.record({ timing: true });
    await after.done();
    expect(held.every((e) => e.status() === 'pending')).toBe(true);
    expect(Number.isFinite(old[1]!.timeMs())).toBe(true);
    // An old failed event still fails a stream that waits on it.
    b.waitEvent(failedOld.failed);
    await expect(b.record().done()).rejects.toMatchObject({ code: 'ERR_IO' });
    // A pending event (one that holds its device event) is waited on as ever.
    b.waitEvent(held[held.length - 1]!);
    const behind = b.record();
    await ticks(20);
    expect(behind.status()).toBe('pending');
    release();
    await behind.done();
    await Promise.all([...held.map((e) => e.done()), a.dispose(), b.dispose(), failedOld.s.dispose(), failedOld.buf.dispose(), failedOld.dst.dispose()]);
  });

  it.skipIf(skip)('done() settles once and returns the same promise', async () => {
    const s = fx.dev.createStream();
    const e = s.record();
    expect(e.done()).toBe(e.done());
    await e.done();
    await e.done();
    expect(e.status()).toBe('ok');
    await s.dispose();
  });

  it.skipIf(skip)('a failed operation rejects the next event with its code, and the stream recovers', async () => {
    const { s, buf, dst, failed } = failedCopy();
    await expect(failed.done()).rejects.toMatchObject({ code: 'ERR_IO', message: 'injected read failure' });
    await expect(failed.done()).rejects.toBeInstanceOf(KvflowError);
    expect(failed.status()).toBe('failed');
    s.copy(dst, 0, buf, 0, 64);
    await expect(s.record().done()).resolves.toBeUndefined();
    await s.dispose();
  });

  it.skipIf(skip)('a stream waiting on a failed event is released and inherits the failure', async () => {
    const a = fx.dev.createStream();
    const b = fx.dev.createStream();
    const buf = fx.dev.allocPinned(64);
    const dst = fx.dev.allocDevice(64);
    const release = holdStream(a);
    injectFailure(a, 'ERR_IO', 'load failed');
    a.copy(dst, 0, buf, 0, 64);
    const loaded = a.record();
    b.waitEvent(loaded);
    b.copy(buf, 0, dst, 0, 64);
    const after = b.record();
    release();
    await expect(loaded.done()).rejects.toMatchObject({ code: 'ERR_IO' });
    await expect(after.done()).rejects.toMatchObject({ code: 'ERR_IO', message: 'load failed' });
    // the next span on b is clean again
    await expect(b.synchronize()).resolves.toBeUndefined();
    await Promise.all([a.dispose(), b.dispose()]);
  });

  it.skipIf(skip)('the event loop keeps turning during a 1 GiB copy', async () => {
    const s = fx.dev.createStream();
    const bytes = 1024 * 1024 * 1024;
    const src = fx.dev.allocPinned(bytes);
    const dst = fx.dev.allocDevice(bytes);
    src.array.fill(0x5a, 0, 1 << 20);
    s.copy(dst, 0, src, 0, bytes);
    const e = s.record();
    let turns = 0;
    while (e.status() === 'pending') {
      await new Promise<void>((r) => setImmediate(r));
      turns++;
    }
    await e.done();
    expect(turns).toBeGreaterThan(0);
    await Promise.all([src.dispose(), dst.dispose(), s.dispose()]);
  });

  it.skipIf(skip)('stream.handle is a bigint, distinct per stream', async () => {
    const a = fx.dev.createStream();
    const b = fx.dev.createStream();
    expect(typeof a.handle).toBe('bigint');
    expect(a.handle).not.toBe(b.handle);
    await Promise.all([a.dispose(), b.dispose()]);
  });
});
