/**
 * Host time a prefill spends per layer, by who spent it: the runtime's
 * `compute` callback, the store's calls (and the stream events recorded
 * around them), and the pipeline's own scheduling (the rest). The pipeline
 * measures its host windows (the code that runs per layer between its
 * awaits) and subtracts the store and compute time inside them; a store call
 * made for a group of prefills (a batched load or save) is charged to each of
 * the group's N prefills as 1/N of its time, and so is the scheduling of a
 * deferred flush (one that runs outside any prefill's window).
 */

/** Host time of one layer of one prefill (ms). */
export interface HostCost {
  /** The pipeline's own scheduling: its code per layer, store and compute calls left out. */
  ownMs: number;
  /** Inside the store's `loadLayer` / `putLayer` calls and the event records around them (1/N of a call carrying N prefills). */
  storeMs: number;
  /** Inside the runtime's `compute` callback. */
  computeMs: number;
}

export function hostCost(): HostCost {
  return { ownMs: 0, storeMs: 0, computeMs: 0 };
}

/** A clock of the store time spent so far: a window's own time is its length less the store time that passed inside it. */
export interface StoreClock {
  readonly storeMs: number;
}

/** Measures one host window of the pipeline's code for a layer's cost. */
export class Window {
  #t = 0;
  #s = 0;
  constructor(readonly clock: StoreClock) {}

  open(): void {
    this.#t = performance.now();
    this.#s = this.clock.storeMs;
  }

  /** Charges the window's length, less the store time inside it and `computeMs`, to `cost`'s own time. */
  close(cost: HostCost, computeMs = 0): void {
    cost.ownMs += performance.now() - this.#t - (this.clock.storeMs - this.#s) - computeMs;
  }
}
