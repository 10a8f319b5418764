/**
 * What was asked for, what was chosen, and why: the one shape of every
 * decision kvflow makes on a user's behalf (backend, IO engine, O_DIRECT,
 * GPUDirect Storage, CUDA gate), so that no fallback is silent.
 */

/** A decision: `requested` by the caller (or a default), `chosen` by kvflow, and the `reason`. */
export interface Choice<T, R = T> {
  readonly requested: R;
  readonly chosen: T;
  readonly reason: string;
}

/** A frozen {@link Choice}. */
export function choice<T, R>(requested: R, chosen: T, reason: string): Choice<T, R> {
  return Object.freeze({ requested, chosen, reason });
}
