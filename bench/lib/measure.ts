/**
 * Timing helpers every benchmark shares, so that all of them (and the C++
 * baselines, which implement the same algorithm) measure the same way.
 */
import { randomFillSync } from 'node:crypto';

const MiB = 1 << 20;

/** A timed run of `reps` operations, returning seconds. */
export type Run = (reps: number) => Promise<number>;

/** The host clock. */
export function now(): bigint {
  return process.hrtime.bigint();
}

/** Seconds since `t0` (from {@link now}). */
export function since(t0: bigint): number {
  return Number(now() - t0) / 1e9;
}

/** The middle value (the upper one of two). */
export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[s.length >> 1] ?? Number.NaN;
}

/** (max - min) / median, in percent. */
export function spreadPct(values: readonly number[]): number {
  return (100 * (Math.max(...values) - Math.min(...values))) / median(values);
}

/** What {@link measure} found. */
export interface Measured {
  reps: number;
  /** Seconds per sample of `reps` operations. */
  median: number;
  spreadPct: number;
}

/**
 * Two warm-up runs, then reps doubled until a run takes a tenth of the target
 * and scaled to the target (+10%), then `samples` runs; the median is kept.
 * The same algorithm as measure() in bench/native/*_baseline.cu.
 */
export async function measure(run: Run, minSeconds: number, samples: number): Promise<Measured> {
  await run(1);
  await run(1);
  let reps = 1;
  let t = await run(reps);
  while (t < minSeconds / 10) {
    reps *= 2;
    t = await run(reps);
  }
  reps = Math.max(1, Math.round((reps * minSeconds * 1.1) / t));
  const s: number[] = [];
  for (let i = 0; i < samples; i++) s.push(await run(reps));
  return { reps, median: median(s), spreadPct: spreadPct(s) };
}

/** crypto.randomFillSync in chunks (one call is capped near 2 GiB): never time on zeros. */
export function fillRandom(a: Uint8Array): void {
  for (let off = 0; off < a.byteLength; off += 64 * MiB) {
    randomFillSync(a, off, Math.min(64 * MiB, a.byteLength - off));
  }
}
