/** Request priorities of file IO: which queued tasks an engine shared by reads and writes starts first. */
import { checkChoice, checkOptions } from '../util/validate.js';

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
  const priority = checkOptions(options).priority;
  return priority === undefined ? fallback : checkChoice(priority, 'priority', ['high', 'low'] as const);
}
