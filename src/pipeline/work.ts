/** What the runtime's compute is given per layer (shared by the pipeline and its attempts). */
import type { Stream } from '../device/stream.js';
import type { PrefillPlan } from '../model/plan.js';

/**
 * What `compute` is told of the layer it enqueues: one object for every layer
 * of an attempt (nothing in it depends on the layer), frozen.
 */
export interface PrefillWork {
  /** Enqueue the layer's kernels here: loads the layer needs are already waited for on it. */
  readonly stream: Stream;
  /** The prompt. */
  readonly tokens: ArrayLike<number>;
  /** The request's block table for the whole prompt. */
  readonly blocks: ArrayLike<number>;
  /** Compute tokens [computeFrom, tokens.length); positions below are in the cache. */
  readonly computeFrom: number;
  /** The plan of this attempt. */
  readonly plan: PrefillPlan;
  /** 0, then 1, 2, ... after restarts (compute starts again from layer 0). */
  readonly attempt: number;
}

/** Enqueues one layer of the runtime's compute on `work.stream`; must not wait for the device. */
export type LayerCompute = (layer: number, work: PrefillWork) => void;

