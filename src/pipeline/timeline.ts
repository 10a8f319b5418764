/**
 * A prefill's per-layer timeline. Host times (when the host issued a load
 * or enqueued a compute, and when it learnt they finished) always; device
 * times from timed events (`stream.record({ timing: true })`: GPU
 * timestamps on CUDA, the stream worker's clock on the CPU backend) when the
 * device gave them: the durations (load, compute, stall) then come from the
 * device, which the host's view of completions (polling, the event loop)
 * would only blur.
 */
import type { Event } from '../device/event.js';
import type { HostCost } from './hostcost.js';

export type { HostCost } from './hostcost.js';

/** What happened in one layer. */
export interface LayerTiming {
  layer: number;
  /** When its load was issued and seen landed (host clock, ms from the prefill's start); null without a load. */
  loadIssuedMs: number | null;
  loadLandedMs: number | null;
  /** When its compute was enqueued and seen finished (host clock, ms from the prefill's start). */
  computeEnqueuedMs: number;
  computeEndMs: number;
  /**
   * Device times (ms from the attempt's start on its compute stream, from
   * timed events): the load began and landed (null without a load), the
   * compute began and ended. Null when the device gave no times. A
   * compute's start is the record that ends the compute just before it on the
   * stream (this prefill's previous layer, or another prefill's layer) where
   * nothing was enqueued between the two (src/pipeline/runs.ts). Where that
   * other prefill's compute failed on the device, its end record carries no
   * time, and this prefill's timeline takes the host's times instead.
   */
  device: { loadStartMs: number | null; loadLandedMs: number | null; computeStartMs: number; computeEndMs: number } | null;
  /** Time the load took (device: its store call from start to landing, shared with the prefills batched with it). */
  loadMs: number;
  /** Time the compute ran (device: between its start and end events). */
  computeMs: number;
  /** Time the compute stream waited for this layer's load after the previous layer's compute. */
  stallMs: number;
  /** Host time spent on the layer (ms): `host.ownMs + host.storeMs + host.computeMs`. */
  hostMs: number;
  /**
   * That host time by who spent it: the pipeline's own scheduling, the
   * store's calls for the layer's load and save (1/N of a call batched for N
   * prefills), the runtime's `compute` callback.
   */
  host: HostCost;
}

/** What an attempt knows of one layer once everything settled. */
export interface LayerRecord {
  loadIssuedMs: number | null;
  /** Host time the load was seen landed, or null. */
  loadSeenMs: number | null;
  loadBefore: Event | undefined;
  loadAfter: Event | undefined;
  computeEnqueuedMs: number;
  computeSeenMs: number;
  computeStart: Event | undefined;
  computeEnd: Event;
  host: HostCost;
}

/**
 * When a timed event completed (the device's clock), or undefined where the
 * device gave no time (a failed event, an untimed one). Read once per event:
 * every read is a few calls into the addon.
 */
function timeOf(e: Event | undefined): number | undefined {
  if (e === undefined) return undefined;
  try {
    return e.timeMs();
  } catch {
    return undefined; // a failed event, an untimed one, or a device that gave no time
  }
}

/** Device times of every layer, relative to `origin`, or undefined when any is missing. */
function deviceTimes(origin: Event | undefined, layers: LayerRecord[]): LayerTiming['device'][] | undefined {
  const o = timeOf(origin);
  if (o === undefined) return undefined;
  const out: LayerTiming['device'][] = [];
  // A compute's start is often the end record of the compute before it (runs.ts): its time is read once.
  let prevEnd: Event | undefined;
  let prevEndMs: number | undefined;
  for (const r of layers) {
    const start = r.computeStart !== undefined && r.computeStart === prevEnd ? prevEndMs : timeOf(r.computeStart);
    const end = timeOf(r.computeEnd);
    const loadStart = r.loadAfter ? timeOf(r.loadBefore) : null;
    const landed = r.loadAfter ? timeOf(r.loadAfter) : null;
    if (start === undefined || end === undefined || loadStart === undefined || landed === undefined) return undefined;
    prevEnd = r.computeEnd;
    prevEndMs = end;
    out.push({
      loadStartMs: loadStart === null ? null : loadStart - o,
      loadLandedMs: landed === null ? null : landed - o,
      computeStartMs: start - o,
      computeEndMs: end - o,
    });
  }
  return out;
}

/** The timeline of a finished attempt: device durations when every layer has device times, host ones otherwise. */
export function timeline(origin: Event | undefined, layers: LayerRecord[]): { layers: LayerTiming[]; source: 'device' | 'host' } {
  const dev = deviceTimes(origin, layers);
  const out: LayerTiming[] = [];
  for (let l = 0; l < layers.length; l++) {
    const r = layers[l]!;
    // Float rounding can leave a window's own time a hair below 0.
    const host = { ownMs: Math.max(0, r.host.ownMs), storeMs: r.host.storeMs, computeMs: r.host.computeMs };
    const d = dev?.[l] ?? null;
    let loadMs: number;
    let computeMs: number;
    let stallMs: number;
    if (d) {
      const prevEnd = l > 0 ? dev![l - 1]!.computeEndMs : 0;
      loadMs = d.loadLandedMs === null ? 0 : Math.max(0, d.loadLandedMs - d.loadStartMs!);
      computeMs = Math.max(0, d.computeEndMs - d.computeStartMs);
      stallMs = d.loadLandedMs === null ? 0 : Math.max(0, Math.min(d.loadLandedMs, d.computeStartMs) - prevEnd);
    } else {
      const prevEnd = l > 0 ? layers[l - 1]!.computeSeenMs : 0;
      const landed = r.loadSeenMs;
      const startBound = Math.max(prevEnd, landed ?? 0, r.computeEnqueuedMs);
      const prevLanded = l > 0 ? layers[l - 1]!.loadSeenMs ?? 0 : 0;
      loadMs = landed === null ? 0 : Math.max(0, landed - Math.max(r.loadIssuedMs!, prevLanded));
      computeMs = Math.max(0, r.computeSeenMs - startBound);
      stallMs = landed === null ? 0 : Math.max(0, landed - Math.max(prevEnd, r.computeEnqueuedMs));
    }
    // One object shape for every layer (spreading a base object per layer cost microseconds each).
    out.push({
      layer: l, loadIssuedMs: r.loadIssuedMs, loadLandedMs: r.loadSeenMs, computeEnqueuedMs: r.computeEnqueuedMs,
      computeEndMs: r.computeSeenMs, device: d, loadMs, computeMs, stallMs, hostMs: host.ownMs + host.storeMs + host.computeMs, host,
    });
  }
  return { layers: out, source: dev ? 'device' : 'host' };
}
