/**
 * What an attempt waits on, made cheap: per layer it would otherwise hold a
 * promise (and its closures) for every load issued and every compute
 * finished, though only one of each is ever awaited at a time.
 */
import type { Event } from '../device/event.js';

/** An event watched from the host: when it was seen settled (ms from `t0`) and its error. */
export interface Watched {
  event: Event;
  at: number;
  error: unknown;
}

/**
 * Watches `event`: `onSettled` runs once its outcome is known. `pending`
 * counts it until then (no promise per event: the attempt awaits the count once).
 */
export function watch(event: Event, t0: number, pending: Pending, onSettled?: (w: Watched) => void): Watched {
  const w: Watched = { event, at: Number.NaN, error: undefined };
  pending.add();
  event.whenDone((error) => {
    settle(w, t0, pending, error);
    onSettled?.(w);
  });
  return w;
}

/** Notes a watched event's outcome and uncounts it. */
function settle(w: Watched, t0: number, pending: Pending, error: unknown): void {
  w.at = performance.now() - t0;
  w.error = error;
  pending.done();
}

/**
 * Watches a layer's compute-end `event` as `watch` does, then sets `layer` in
 * `settled` (one closure per event: nothing else to call).
 */
export function watchLayer(event: Event, t0: number, pending: Pending, settled: LayerFlags<true>, layer: number): Watched {
  const w: Watched = { event, at: Number.NaN, error: undefined };
  pending.add();
  event.whenDone((error) => {
    settle(w, t0, pending, error);
    settled.set(layer, true);
  });
  return w;
}

/**
 * A value per layer, set once (the first set wins), and one waiter at a time
 * for one layer's: the attempt's issuer waits on one set of flags, its compute
 * steps on another.
 */
export class LayerFlags<T> {
  readonly #values: (T | undefined)[];
  #waiting = -1;
  #wake: (() => void) | undefined;

  constructor(layers: number) {
    this.#values = new Array<T | undefined>(layers).fill(undefined);
  }

  get(layer: number): T | undefined {
    return this.#values[layer];
  }

  set(layer: number, value: T): void {
    if (this.#values[layer] !== undefined) return;
    this.#values[layer] = value;
    if (this.#waiting === layer) {
      const wake = this.#wake!;
      this.#waiting = -1;
      this.#wake = undefined;
      wake();
    }
  }

  /** Calls `wake` from inside the `set` of `layer` (which must not be set yet); it must not throw. */
  when(layer: number, wake: () => void): void {
    this.#waiting = layer;
    this.#wake = wake;
  }
}

/** A count of calls under way, and a wait for none left. */
export class Pending {
  #n = 0;
  #wake: (() => void) | undefined;

  add(): void {
    this.#n++;
  }

  done(): void {
    if (--this.#n === 0 && this.#wake) {
      const wake = this.#wake;
      this.#wake = undefined;
      wake();
    }
  }

  /** Undefined when none is under way; else a promise that resolves once the last one is done. */
  drained(): Promise<void> | undefined {
    return this.#n === 0 ? undefined : new Promise<void>((resolve) => (this.#wake = resolve));
  }
}
