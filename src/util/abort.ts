/**
 * Cancellation by AbortSignal: a call that takes `{ signal }` rejects with
 * ERR_ABORTED (its `cause` the signal's reason) once the signal aborts. An
 * already-aborted signal rejects before anything starts; work already handed
 * to a thread (IO, stream work) is not interrupted: only the wait for it is
 * abandoned, and kvflow keeps its buffers alive until that work completes.
 */
import { KvflowError } from '../errors.js';
import { invalidParameterError } from './validate.js';

/** The `signal` option: undefined, or an AbortSignal (ERR_INVALID_ARG otherwise). */
export function checkSignal(value: unknown, name = 'signal'): AbortSignal | undefined {
  if (value === undefined) return undefined;
  if (!(value instanceof AbortSignal)) throw invalidParameterError(name, 'an AbortSignal', value);
  return value;
}

/** The ERR_ABORTED error of `what` (e.g. "the read"), its cause the signal's reason. */
export function abortError(signal: AbortSignal, what: string): KvflowError {
  return new KvflowError(`${what} was aborted`, 'ERR_ABORTED', { cause: signal.reason });
}

/** Throws ERR_ABORTED when `signal` has aborted (call before changing anything, and between the steps of a long operation). */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw abortError(signal, what);
}

/**
 * `work`, or ERR_ABORTED as soon as `signal` aborts (the work itself goes on;
 * its outcome is then ignored). Without a signal, `work` itself.
 */
export function abortable<T>(work: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return work;
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(abortError(signal, what));
  }
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => {
      work.catch(() => undefined);
      reject(abortError(signal, what));
    };
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e);
      },
    );
  });
}
