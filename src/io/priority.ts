/** Request priorities of file IO: which queued tasks an engine shared by reads and writes starts first. */
import { checkSignal, throwIfAborted } from '../util/abort.js';
import { checkChoice, checkKnownOptions, checkOptions } from '../util/validate.js';

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
  /**
   * Stops waiting when it aborts: the call rejects with ERR_ABORTED (its
   * `cause` the signal's reason), at once when it already had (nothing is
   * then submitted). IO already submitted is not interrupted: it completes
   * into (or from) its buffer, which stays allocated until then even if
   * disposed, and `file.dispose()` still waits for it.
   */
  signal?: AbortSignal;
}

/** A request's checked options: its priority (`fallback` when it names none) and signal (ERR_ABORTED when already aborted). */
export function requestOptions(options: unknown, fallback: IoPriority, what: string): { priority: IoPriority; signal: AbortSignal | undefined } {
  const o = options === undefined ? {} : checkKnownOptions(checkOptions(options), 'options', ['priority', 'signal']);
  const priority = o.priority === undefined ? fallback : checkChoice(o.priority, 'priority', ['high', 'low'] as const);
  const signal = checkSignal(o.signal);
  throwIfAborted(signal, what);
  return { priority, signal };
}

/** The priority `options` asks for, or `fallback` when it names none; ERR_INVALID_ARG for anything else. */
export function requestPriority(options: unknown, fallback: IoPriority): IoPriority {
  return requestOptions(options, fallback, 'the request').priority;
}
