/** Request priorities of file IO: which queued tasks an engine shared by reads and writes starts first. */
import { describe, fail } from '../errors.js';

/**
 * `high` tasks start before queued `low` ones; within a priority, in
 * submission order. A task already started is never interrupted, and after
 * 8 high tasks in a row have started while a low one waited, the oldest low
 * one starts next, so background writes keep moving under a steady stream of
 * reads.
 */
export type IoPriority = 'high' | 'low';

/** Options of one file request (`read`, `write`, `readChecked`, `writeSummed`). */
export interface IoRequestOptions {
  /** Default `high` for reads (`read`, `readChecked`), `low` for writes (`write`, `writeSummed`). */
  priority?: IoPriority;
}

/** The priority `options` asks for, or `fallback` when it names none; ERR_INVALID_ARG for anything else. */
export function requestPriority(options: unknown, fallback: IoPriority): IoPriority {
  if (options === undefined) return fallback;
  if (typeof options !== 'object' || options === null) {
    fail('ERR_INVALID_ARG', `expected an options object for options, got ${describe(options)}`);
  }
  const priority = (options as Record<string, unknown>).priority;
  if (priority === undefined) return fallback;
  if (priority !== 'high' && priority !== 'low') {
    fail('ERR_INVALID_ARG', `expected 'high' or 'low' for priority, got ${describe(priority)}`);
  }
  return priority;
}
