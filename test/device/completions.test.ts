/**
 * The completion channel's JS end: a wait is settled by the completion
 * thread's notice, or, within the spin window, by the event loop seeing the
 * event complete on one of its turns (no notice needed).
 */
import { describe, expect, it } from 'vitest';

import type { NativeDevice, NativeEvent, NativeEventStatus } from '../../src/binding/types.js';
import { Completions } from '../../src/device/completions.js';

/**
 * A native event whose status the test sets; counts how often it is asked,
 * records the look each watch asked for, and with `quick` completes during
 * any look.
 */
function fakeEvent(
  id: number,
  quick = false,
): NativeEvent & { state: NativeEventStatus; asked: number; looks: Array<number | undefined>; error: () => Error | undefined } {
  const e = {
    id,
    state: 0 as NativeEventStatus,
    asked: 0,
    looks: [] as Array<number | undefined>,
    watch: (spinUs?: number) => {
      e.looks.push(spinUs);
      if (quick && spinUs !== undefined && spinUs > 0) e.state = 1;
      return e.state;
    },
    status: () => {
      e.asked++;
      return e.state;
    },
    error: (): Error | undefined => undefined,
  };
  return e;
}

function fakeDevice(): NativeDevice & { refs: number } {
  const d = { refs: 0, ref: () => void (d.refs = 1), unref: () => void (d.refs = 0) };
  return d as unknown as NativeDevice & { refs: number };
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

describe('Completions', () => {
  it('within the spin window, an event seen complete settles its wait without a notice; the channel is let go', async () => {
    const c = new Completions();
    const dev = fakeDevice();
    c.attach(dev, 1_000_000); // a window far longer than the test
    const e = fakeEvent(7);
    let settled = false;
    const p = c.settle(e).then(() => void (settled = true));
    await turns(3);
    expect(settled).toBe(false);
    expect(dev.refs).toBe(1); // something waits: the process is held
    e.state = 1;
    await turns(3);
    expect(settled).toBe(true);
    expect(dev.refs).toBe(0);
    expect(c.pending).toBe(0);
    c.onBatch([7]); // the late notice changes nothing
    await p;
  });

  it('an event seen failed within the spin window rejects its wait with the event\'s error', async () => {
    const c = new Completions();
    c.attach(fakeDevice(), 1_000_000);
    const e = fakeEvent(5);
    const failure = new Error('read failed');
    e.error = () => (e.state === 2 ? failure : undefined);
    const p = c.settle(e);
    const seen = p.then(() => undefined, (err: unknown) => err);
    await turns(2);
    e.state = 2;
    expect(await seen).toBe(failure);
    expect(c.pending).toBe(0);
  });

  it('an event seen ok on a turn settles without asking for its error; a notice or a failure asks, once', async () => {
    const c = new Completions();
    c.attach(fakeDevice(), 1_000_000);
    const counted = (id: number) => {
      const e = fakeEvent(id);
      const failure = new Error(`event ${id} failed`);
      let errors = 0;
      e.error = () => {
        errors++;
        return e.state === 2 ? failure : undefined;
      };
      return { e, failure, errors: () => errors };
    };
    const ok = counted(1);
    const failed = counted(2);
    const noticed = counted(3);
    const results: unknown[] = [];
    const record = (i: number) => [(v: unknown) => void (results[i] = v), (err: unknown) => void (results[i] = err)] as const;
    const a = c.settle(ok.e).then(...record(0));
    const b = c.settle(failed.e).then(...record(1));
    const n = c.settle(noticed.e).then(...record(2));
    await turns(2);
    ok.e.state = 1;
    failed.e.state = 2;
    await turns(3);
    noticed.e.state = 1;
    c.onBatch([3]);
    await Promise.all([a, b, n]);
    expect(results).toEqual([undefined, failed.failure, undefined]);
    expect([ok.errors(), failed.errors(), noticed.errors()]).toEqual([0, 1, 1]);
    // A ticket's wait resolves with nothing, whoever settles it.
    const ticket = c.wait(9);
    c.onBatch([9]);
    expect(await ticket).toBeUndefined();
  });

  it('work that completes in queue order is settled in that order, even when it completes while the loop checks', async () => {
    const c = new Completions();
    c.attach(fakeDevice(), 1_000_000);
    // Three events of one queue; each completes (with all before it) when the check asks any event a set number of times.
    const events = [fakeEvent(1), fakeEvent(2), fakeEvent(3)];
    let asks = 0;
    for (const e of events) {
      const status = e.status;
      e.status = () => {
        asks++;
        // The queue moves on while the loop is checking: after the 2nd ask, events 1 and 2 are done; after the 4th, all three.
        const finished = asks >= 4 ? 3 : asks >= 2 ? 2 : 0;
        events.forEach((x, i) => {
          if (i < finished) x.state = 1 as NativeEventStatus;
        });
        return status();
      };
    }
    const order: number[] = [];
    const waits = events.map((e) => c.wait(e.id, e).then(() => order.push(e.id)));
    await turns(4);
    await Promise.all(waits);
    expect(order).toEqual([1, 2, 3]);
  });

  it('without a spin window only the notice settles a wait, and the event is never polled', async () => {
    const c = new Completions();
    c.attach(fakeDevice(), 0);
    const e = fakeEvent(3);
    let settled = false;
    void c.settle(e).then(() => void (settled = true));
    e.state = 1;
    await turns(5);
    expect(settled).toBe(false);
    expect(e.asked).toBe(0);
    c.onBatch([3]);
    await turns(1);
    expect(settled).toBe(true);
  });

  it('past the window an event is no longer polled; its notice still settles it', async () => {
    const c = new Completions();
    c.attach(fakeDevice(), 200);
    const e = fakeEvent(9);
    let settled = false;
    void c.settle(e).then(() => void (settled = true));
    await new Promise((r) => setTimeout(r, 20)); // well past 200 us
    await turns(2);
    const asked = e.asked;
    await turns(5);
    expect(e.asked).toBe(asked);
    expect(settled).toBe(false);
    c.onBatch([9]);
    await turns(1);
    expect(settled).toBe(true);
  });

  describe('short waits', () => {
    it('a short wait alone looks on the spot and settles at once when its work completed during the look', () => {
      const c = new Completions();
      c.attach(fakeDevice(), 0, 20);
      const e = fakeEvent(1, true);
      let told: unknown = 'not yet';
      c.when(e, (error) => void (told = error), 1, true);
      expect(e.looks).toEqual([20]);
      expect(told).toBeUndefined(); // settled inside the call: no turn, no notice
      expect(c.pending).toBe(0);
    });

    it('no look while something else is waited on, for a wait that is not short, or with shortWaitUs 0', () => {
      const c = new Completions();
      c.attach(fakeDevice(), 0, 20);
      const other = fakeEvent(1, false);
      c.when(other, () => undefined, 1, false); // not short: a plain watch
      expect(other.looks).toEqual([undefined]);
      const e = fakeEvent(2, true);
      c.when(e, () => undefined, 2, true); // not alone: `other` is pending
      expect(e.looks).toEqual([undefined]);
      c.onBatch([1, 2]);
      const off = new Completions();
      off.attach(fakeDevice(), 0, 0);
      const f = fakeEvent(3, true);
      off.when(f, () => undefined, 3, true);
      expect(f.looks).toEqual([undefined]);
    });

    it('after a look that ran out, the next 64 short waits go without one', () => {
      const c = new Completions();
      c.attach(fakeDevice(), 0, 20);
      const slow = fakeEvent(1, false);
      c.when(slow, () => undefined, 1, true);
      expect(slow.looks).toEqual([20]); // looked, ran out: pending
      c.onBatch([1]);
      const looks: Array<number | undefined> = [];
      for (let i = 0; i < 65; i++) {
        const e = fakeEvent(10 + i, true);
        c.when(e, () => undefined, 10 + i, true);
        looks.push(...e.looks);
        c.onBatch([10 + i]);
      }
      expect(looks.slice(0, 64)).toEqual(new Array(64).fill(undefined));
      expect(looks[64]).toBe(20);
    });
  });
});
