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

/** @internal What an event needs from its stream: the latest event waited on and not settled yet, after which later events settle. */
export interface EventOrder {
  pendingDone: Event | undefined;
}

/** @internal Told an event's outcome: its error, undefined when it succeeded. Must not throw. */
export type EventSink = (error: unknown) => void;

const NOT_WATCHED = 0;
const WATCHING = 1;
const SETTLED = 2;

function ignore(): void {
  // a rejection already handled by its owner
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
  #state = NOT_WATCHED;
  #error: unknown;
  /** Told the outcome when it settles (one sink, or several). */
  #sinks: EventSink | EventSink[] | undefined;
  /** A later event of the stream, complete, that settles right after this one. */
  #next: Event[] | undefined;
  /** The outcome a later event was told while waiting on an earlier one. */
  #told: unknown;
  /** It was its stream's latest pending event when first waited on: its rejection counts as handled. */
  #tracked = false;
  /** The native id, read once it is needed (reading it is a call into the addon); -1 until then. */
  #nativeId = -1;
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
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#done = done;
    this.#whenDone(true, (error) => {
      if (error === undefined) {
        resolve();
        return;
      }
      if (this.#tracked) done.catch(ignore);
      reject(error);
    });
    return done;
  }

  /**
   * @internal Tells `sink` the outcome once the event settles, exactly when
   * `done()` would settle (in stream order), without a promise: at once when
   * it has settled already. An event whose owner replaced its `done()` (the
   * store fails a load's event on the host: store/load.ts) is told what that
   * `done()` says.
   */
  whenDone(sink: EventSink): void {
    if (this.done !== Event.prototype.done) {
      this.done().then(() => sink(undefined), (e: unknown) => sink(e ?? new Error('failed')));
      return;
    }
    this.#whenDone(false, sink);
  }

  /** `short`: a user's `done()`, which may look for a short operation's completion on the spot (Completions.when). */
  #whenDone(short: boolean, sink: EventSink): void {
    if (this.#state === SETTLED) {
      sink(this.#error);
      return;
    }
    const sinks = this.#sinks;
    if (sinks === undefined) this.#sinks = sink;
    else if (typeof sinks === 'function') this.#sinks = [sinks, sink];
    else sinks.push(sink);
    if (this.#state === NOT_WATCHED) this.#watch(short);
  }

  #id(): number {
    if (this.#nativeId < 0) this.#nativeId = this.#native.id;
    return this.#nativeId;
  }

  #watch(short: boolean): void {
    this.#state = WATCHING;
    const stream = this.stream;
    const id = this.#id();
    // Events of one stream settle in stream order: one found complete at once
    // settles after an earlier event of its stream still on its way (complete
    // too, since the stream runs in order; its notice is only not delivered yet).
    const pending = stream?.pendingDone;
    const earlier = pending !== undefined && pending.#id() < id ? pending : undefined;
    if (stream && (pending === undefined || earlier !== undefined)) {
      stream.pendingDone = this;
      this.#tracked = true;
    }
    this.#completions.when(this.#native, (error) => {
      if (earlier === undefined || earlier.#state === SETTLED) {
        this.#settle(error);
        return;
      }
      this.#told = error;
      (earlier.#next ??= []).push(this);
    }, id, short && earlier === undefined);
  }

  #settle(error: unknown): void {
    this.#state = SETTLED;
    this.#error = error;
    const stream = this.stream;
    if (stream?.pendingDone === this) stream.pendingDone = undefined;
    const sinks = this.#sinks;
    this.#sinks = undefined;
    if (typeof sinks === 'function') tell(sinks, error);
    else if (sinks !== undefined) for (const sink of sinks) tell(sink, error);
    const next = this.#next;
    this.#next = undefined;
    if (next !== undefined) for (const e of next) Event.#settleLater(e);
  }

  // Events that waited on an earlier one settle from a queue, not from inside
  // the earlier one's settle: a chain of thousands (a stream found finished
  // before the first notice arrived) would otherwise recurse once per event
  // and overflow the stack. First in, first out, so stream order holds.
  static #queue: Event[] = [];
  static #settling = false;
  static #settleLater(e: Event): void {
    const queue = Event.#queue;
    queue.push(e);
    if (Event.#settling) return;
    Event.#settling = true;
    try {
      for (let i = 0; i < queue.length; i++) {
        const next = queue[i]!;
        const error = next.#told;
        next.#told = undefined;
        next.#settle(error);
      }
    } finally {
      queue.length = 0;
      Event.#settling = false;
    }
  }
}

function tell(sink: EventSink, error: unknown): void {
  try {
    sink(error);
  } catch {
    // a sink's own failure must not stop the others
  }
}
