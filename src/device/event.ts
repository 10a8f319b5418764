/** Events: points in a stream (or the completion of an IO request) to await or to make a stream wait on. */
import type { NativeEvent } from '../binding/types.js';
import { abortable, checkSignal, throwIfAborted } from '../util/abort.js';
import { checkKnownOptions } from '../util/validate.js';
import type { Completions } from './completions.js';
import { elapsedMs, eventTimeMs } from './timing.js';

/** Options of a wait. */
export interface WaitOptions {
  /**
   * Stops waiting when it aborts: the call rejects with ERR_ABORTED (its
   * `cause` the signal's reason). The work waited for goes on; a later
   * `done()` still reports its outcome.
   */
  signal?: AbortSignal;
}

/** @internal What an event needs from its stream: the latest done() still pending, after which later events settle. */
export interface EventOrder {
  pendingDone: { id: number; promise: Promise<void> } | undefined;
}

/** @internal The signal of a wait's options, checked; ERR_ABORTED when it has already aborted. */
export function waitSignal(options: unknown, what: string): AbortSignal | undefined {
  const signal = checkSignal(checkKnownOptions(options, 'options', ['signal']).signal);
  throwIfAborted(signal, what);
  return signal;
}

/** Where an event stands. */
export type EventStatus = 'pending' | 'ok' | 'failed';

const STATUS: readonly EventStatus[] = ['pending', 'ok', 'failed'];

/**
 * A point in a stream: complete when all work enqueued on that stream before
 * it has completed. The event of an IO request (`file.readChecked`) is
 * completed by the IO threads instead; streams wait on both kinds alike.
 */
export class Event {
  readonly #native: NativeEvent;
  readonly #completions: Completions;
  #done: Promise<void> | undefined;
  /** @internal The stream it was recorded on; undefined for an IO request's event. */
  readonly stream: EventOrder | undefined;

  /** @internal */
  constructor(native: NativeEvent, stream: EventOrder | undefined, completions: Completions) {
    this.#native = native;
    this.stream = stream;
    this.#completions = completions;
  }

  /** @internal */
  get native(): NativeEvent {
    return this.#native;
  }

  /** Polls without waiting. */
  status(): EventStatus {
    return STATUS[this.#native.status()] ?? 'pending';
  }

  /** True for an event recorded with `{ timing: true }` (see src/device/timing.ts). */
  get timed(): boolean {
    return this.#native.timed === true;
  }

  /** When it completed, in milliseconds on its device's clock (a timed event, completed; see `eventTimeMs`). */
  timeMs(): number {
    return eventTimeMs(this);
  }

  /** Milliseconds from `earlier`'s completion to this one's, from device timestamps (see `elapsedMs`). */
  elapsedSince(earlier: Event): number {
    return elapsedMs(earlier, this);
  }

  /**
   * Settles once, when the event completes: rejects with the error of an
   * operation that failed before it (since the previous event on its stream,
   * or in an event its stream waited on). With `options.signal`, rejects
   * with ERR_ABORTED once it aborts (at once when it already has).
   */
  done(options?: WaitOptions): Promise<void> {
    if (options !== undefined) {
      let signal: AbortSignal | undefined;
      try {
        signal = waitSignal(options, 'waiting for the event');
      } catch (e) {
        return Promise.reject(e);
      }
      return abortable(this.done(), signal, 'waiting for the event');
    }
    if (this.#done) return this.#done;
    const own = this.#completions.settle(this.#native);
    const stream = this.stream;
    const id = this.#native.id;
    // Events of one stream settle in stream order: one found complete at once
    // waits for a done() of an earlier event of its stream that is still on
    // its way (complete too, since the stream runs in order; its notice is
    // only not delivered yet).
    const earlier = stream?.pendingDone;
    if (earlier && earlier.id < id) {
      own.catch(() => undefined); // handled below, once the earlier one settled
      this.#done = earlier.promise.then(() => own, () => own);
    } else {
      this.#done = own;
    }
    if (stream && (!stream.pendingDone || stream.pendingDone.id < id)) {
      const entry = { id, promise: this.#done };
      stream.pendingDone = entry;
      const clear = (): void => {
        if (stream.pendingDone === entry) stream.pendingDone = undefined;
      };
      this.#done.then(clear, clear);
    }
    return this.#done;
  }
}

