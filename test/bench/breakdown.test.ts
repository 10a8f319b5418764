import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { breakdown, medianBreakdown, medianLoadDeviceMs, PARTS, type TimedPrefill } from '../../bench/lib/breakdown.js';

/** A consistent timeline: per layer a gap, a stall (wait for its load), then compute; `ms` adds host time around it. */
const timeline = fc
  .record({
    before: fc.double({ min: 0, max: 5, noNaN: true }),
    after: fc.double({ min: 0, max: 5, noNaN: true }),
    layers: fc.array(
      fc.record({ gap: fc.double({ min: 0, max: 2, noNaN: true }), stall: fc.double({ min: 0, max: 2, noNaN: true }), compute: fc.double({ min: 0.01, max: 3, noNaN: true }) }),
      { minLength: 1, maxLength: 40 },
    ),
  })
  .map(({ before, after, layers }) => {
    let t = 0;
    const out: TimedPrefill['layers'][number][] = [];
    for (const l of layers) {
      t += l.gap + l.stall;
      out.push({ stallMs: l.stall, device: { computeStartMs: t, computeEndMs: t + l.compute } });
      t += l.compute;
    }
    return { run: { ms: before + t + after, layers: out }, layers, before, after };
  });

describe('bench prefill breakdown', () => {
  it('splits the wall time into parts that add up to it', () => {
    fc.assert(
      fc.property(timeline, ({ run, layers, after }) => {
        const b = breakdown(run)!;
        const sum = PARTS.reduce((s, k) => s + b[k], 0);
        expect(sum).toBeCloseTo(run.ms, 6);
        expect(b.stallMs).toBeCloseTo(layers.reduce((s, l) => s + l.stall, 0), 6);
        expect(b.computeMs).toBeCloseTo(layers.reduce((s, l) => s + l.compute, 0), 6);
        expect(b.leadMs).toBeCloseTo(layers[0]!.gap, 6);
        expect(b.gapMs).toBeCloseTo(layers.slice(1).reduce((s, l) => s + l.gap, 0), 6);
        // Host time around the device timeline: the attempt's origin is the device clock's 0.
        expect(b.outsideMs).toBeGreaterThanOrEqual(after - 1e-9);
      }),
    );
  });

  it('gives no breakdown without device times, and medians of each part over the runs that have them', () => {
    const timed: TimedPrefill = { ms: 10, layers: [{ stallMs: 1, device: { computeStartMs: 2, computeEndMs: 6 } }, { stallMs: 0.5, device: { computeStartMs: 7, computeEndMs: 9 } }] };
    const host: TimedPrefill = { ms: 10, layers: [{ stallMs: 0, device: null }] };
    expect(breakdown(host)).toBeUndefined();
    expect(breakdown({ ms: 1, layers: [] })).toBeUndefined();
    expect(medianBreakdown([host])).toBeUndefined();
    expect(breakdown(timed)).toEqual({ outsideMs: 1, leadMs: 1, stallMs: 1.5, computeMs: 6, gapMs: 0.5 });
    const slower: TimedPrefill = { ...timed, ms: 14 };
    const slowest: TimedPrefill = { ...timed, ms: 20 };
    expect(medianBreakdown([timed, host, slowest, slower])).toEqual({ outsideMs: 5, leadMs: 1, stallMs: 1.5, computeMs: 6, gapMs: 0.5 });
  });

  it('sums a run\'s per-layer load times and takes the median over the runs with device times', () => {
    fc.assert(
      fc.property(
        fc.array(fc.array(fc.double({ min: 0, max: 5, noNaN: true }), { minLength: 1, maxLength: 40 }), { minLength: 1, maxLength: 7 }),
        (runsLoads) => {
          const runs: TimedPrefill[] = runsLoads.map((loads) => ({
            ms: 1,
            layers: loads.map((loadMs, l) => ({ stallMs: 0, loadMs, device: { computeStartMs: l, computeEndMs: l + 1 } })),
          }));
          const sums = runsLoads.map((loads) => loads.reduce((s, x) => s + x, 0)).sort((a, b) => a - b);
          const got = medianLoadDeviceMs(runs)!;
          // The median lies between the middle sums (odd counts: is the middle one).
          const mid = Math.floor(sums.length / 2);
          const lo = sums.length % 2 === 1 ? sums[mid]! : sums[mid - 1]!;
          expect(got).toBeGreaterThanOrEqual(lo - 1e-9);
          expect(got).toBeLessThanOrEqual(sums[mid]! + 1e-9);
          // A run with a layer off the device timeline does not count; none left: undefined.
          const hostOnly = runs.map((r) => ({ ...r, layers: r.layers.map((l, i) => (i === 0 ? { ...l, device: null } : l)) }));
          expect(medianLoadDeviceMs(hostOnly)).toBeUndefined();
          expect(medianLoadDeviceMs([...hostOnly, runs[0]!])).toBeCloseTo(runsLoads[0]!.reduce((s, x) => s + x, 0), 9);
        },
      ),
    );
  });
});

