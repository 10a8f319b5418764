/**
 * Where a prefill's wall time went, from its per-layer device timeline
 * (LayerPipeline with `timing: 'device'`). The five parts add up to the
 * prefill's `ms`:
 * - `outsideMs`: host time off the device timeline: before the attempt's
 *   first event (lookup, plan) and after the last layer's compute ended until
 *   the host saw it;
 * - `leadMs`: from the attempt's first event to the first compute's start,
 *   less the first layer's stall (the host issuing the first layer);
 * - `stallMs`: the compute stream waiting for loads (layer 0's whole load
 *   included: nothing runs before it);
 * - `computeMs`: the layers' compute, start to end event;
 * - `gapMs`: between one layer's compute end and the next one's start, less
 *   that layer's stall (the host enqueuing late, the stream's event waits).
 * Comparing a pipeline's parts with those of the same suffix computed alone
 * says where it lost time against the per-layer model.
 */
import { median } from './measure.js';

/** The fields of a PrefillResult this reads. */
export interface TimedPrefill {
  ms: number;
  layers: readonly {
    stallMs: number;
    /** Host clock, ms from the prefill's start: its compute enqueued, and seen finished. */
    computeEnqueuedMs?: number;
    computeEndMs?: number;
    /** The layer's load, start to landed on the device (0 when it loaded nothing). */
    loadMs?: number;
    device: { computeStartMs: number; computeEndMs: number } | null;
  }[];
}

export interface Breakdown {
  outsideMs: number;
  leadMs: number;
  stallMs: number;
  computeMs: number;
  gapMs: number;
}

export const PARTS: readonly (keyof Breakdown)[] = ['outsideMs', 'leadMs', 'stallMs', 'computeMs', 'gapMs'];

/** One prefill's parts; undefined when a layer has no device times. */
export function breakdown(run: TimedPrefill): Breakdown | undefined {
  const layers = run.layers;
  if (layers.length === 0 || layers.some((l) => l.device === null)) return undefined;
  const d = layers.map((l) => l.device!);
  let stall = 0;
  let compute = 0;
  let gap = 0;
  for (let l = 0; l < layers.length; l++) {
    stall += layers[l]!.stallMs;
    compute += d[l]!.computeEndMs - d[l]!.computeStartMs;
    if (l > 0) gap += d[l]!.computeStartMs - d[l - 1]!.computeEndMs - layers[l]!.stallMs;
  }
  const lead = d[0]!.computeStartMs - layers[0]!.stallMs;
  const end = d[d.length - 1]!.computeEndMs;
  return { outsideMs: run.ms - end, leadMs: lead, stallMs: stall, computeMs: compute, gapMs: gap };
}

/** The median of each part over the runs that have device times; undefined when none has. */
export function medianBreakdown(runs: readonly TimedPrefill[]): Breakdown | undefined {
  const all = runs.map(breakdown).filter((b): b is Breakdown => b !== undefined);
  if (all.length === 0) return undefined;
  const out = {} as Breakdown;
  for (const k of PARTS) out[k] = median(all.map((b) => b[k]));
  return out;
}

/**
 * The device time of a prefill's loads: the sum of its layers' loads (each
 * from its start to its landing, in the load stream's order), median over
 * the runs that have device times; undefined when none has. Set against a
 * bare copy of the same bytes beside the same compute, it says how close the
 * store's loads come to a contiguous copy's rate there.
 */
export function medianLoadDeviceMs(runs: readonly TimedPrefill[]): number | undefined {
  const sums = runs
    .filter((r) => r.layers.length > 0 && r.layers.every((l) => l.device !== null))
    .map((r) => r.layers.reduce((s, l) => s + (l.loadMs ?? 0), 0));
  return sums.length === 0 ? undefined : median(sums);
}

/** Where the host time outside the device timeline goes (ms, host clock). */
export interface HostEnds {
  /** From the prefill's start until the first layer's compute was enqueued (lookup, plan, the first loads issued). */
  firstEnqueueMs: number;
  /** From the last layer's compute enqueued until the host saw it finished. */
  lastEnqueuedToSeenMs: number;
  /** From the host seeing the last layer finished until the result's `ms` was taken (the attempt's wrap-up and timeline; the hit's release and the promise's resolution come after). */
  seenToResolvedMs: number;
}

/** The medians of a prefill's host ends over runs; undefined when the runs do not carry host times. */
export function medianHostEnds(runs: readonly TimedPrefill[]): HostEnds | undefined {
  const ends = runs.flatMap((r) => {
    const first = r.layers[0];
    const last = r.layers[r.layers.length - 1];
    if (first?.computeEnqueuedMs === undefined || last?.computeEnqueuedMs === undefined || last.computeEndMs === undefined) return [];
    return [{
      firstEnqueueMs: first.computeEnqueuedMs,
      lastEnqueuedToSeenMs: last.computeEndMs - last.computeEnqueuedMs,
      seenToResolvedMs: r.ms - last.computeEndMs,
    }];
  });
  if (ends.length === 0) return undefined;
  return {
    firstEnqueueMs: median(ends.map((e) => e.firstEnqueueMs)),
    lastEnqueuedToSeenMs: median(ends.map((e) => e.lastEnqueuedToSeenMs)),
    seenToResolvedMs: median(ends.map((e) => e.seenToResolvedMs)),
  };
}
