/**
 * Timed events (`stream.record({ timing: true })`): each carries the time it
 * completed at, on a clock of its device: GPU timestamps on CUDA (CUDA
 * events with timing, read against a reference event of the device), the
 * host's steady clock on the CPU backend's stream worker. Only differences
 * between times of one device mean anything.
 */
import type { NativeEvent } from '../binding/types.js';
import { fail } from '../errors.js';

/** What timing needs of an event (an Event: kept structural, event.ts uses this module). */
export interface TimedEventLike {
  readonly native: NativeEvent;
}

/**
 * When `event` completed, in milliseconds on its device's clock. ERR_INVALID_ARG
 * for an event recorded without timing (or an IO request's event), ERR_BUSY
 * while it is pending, ERR_UNSUPPORTED when the device gave no time (a failed
 * event, or a CUDA device that refused its timing reference).
 */
export function eventTimeMs(event: TimedEventLike): number {
  const native = event.native;
  // One call into the addon when there is a time (the common case): the
  // addon gives undefined for an untimed, pending or timeless event, and
  // only then is the reason asked for.
  const ms = native.timeMs?.();
  if (ms !== undefined) return ms;
  if (native.timed !== true) fail('ERR_INVALID_ARG', `expected a timed event (stream.record({ timing: true })), got event ${native.id} recorded without timing`);
  if (native.status() === 0) fail('ERR_BUSY', `event ${native.id} is still pending: await its done() before reading its time`);
  // It may have completed since the first read (its time is set before its status).
  const late = native.timeMs?.();
  if (late !== undefined) return late;
  fail('ERR_UNSUPPORTED', `event ${native.id} completed without a time (it failed, or its device gave none)`);
}

/** Milliseconds from `from`'s completion to `to`'s (negative when `to` completed first); both timed events of one device, both completed. */
export function elapsedMs(from: TimedEventLike, to: TimedEventLike): number {
  return eventTimeMs(to) - eventTimeMs(from);
}
