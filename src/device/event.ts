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

/**
 * @internal What an event needs from its stream: the stream's events waited
 * on and not settled yet, in stream order from `watchHead` (each settles once
 * it and every one before it were told their outcome), and whether they are
 * being settled now.
 */
export interface EventOrder {
  watching: Event[];
  watchHead: number;
  settling: boolean;
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
  /** Its outcome is known; it settles once every event of its stream waited on before it in stream order has. */
  #toldOutcome = false;
  /** That outcome, until it settles. */
  #told: unknown;
  /** It was its stream's newest event waited on when first waited on: its rejection counts as handled. */
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
    return this.#promise(true);
  }

  /**
   * @internal `done()` for kvflow's own waits: never looks for the completion
   * on the spot (a short wait, Completions.when: kvflow's own threads of work
   * have more to do than wait). Follows a `done()` its owner replaced.
   */
  untilDone(): Promise<void> {
    if (this.done !== Event.prototype.done) return this.done();
    return this.#promise(false);
  }

  #promise(short: boolean): Promise<void> {
    if (this.#done) return this.#done;
    let resolve!: () => void;
    let reject!: (e: unknown) => void;
    const done = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.#done = done;
    this.#whenDone(short, (error) => {
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
    if (stream === undefined) {
      // An IO request's event: nothing to keep in order with.
      this.#completions.when(this.#native, (error) => this.#settle(error), id);
      return;
    }
    // Events of one stream settle in stream order: one found complete at once
    // still settles after every earlier event of its stream waited on (complete
    // too, since the stream runs in order; their notices are only not
    // delivered yet), whichever order they were waited on in.
    const alone = Event.#enqueue(stream, this, id);
    this.#tracked = alone !== undefined;
    this.#completions.when(this.#native, (error) => {
      this.#told = error;
      this.#toldOutcome = true;
      Event.#settleInOrder(stream);
    }, id, short && alone === true);
  }

  /**
   * Adds a watched event to its stream's list, by id. Undefined when an
   * event later in stream order is waited on already; else whether it is the
   * only one.
   */
  static #enqueue(stream: EventOrder, e: Event, id: number): boolean | undefined {
    const list = stream.watching;
    let i = list.length;
    while (i > stream.watchHead && list[i - 1]!.#nativeId > id) i--;
    if (i === list.length) {
      list.push(e);
      return list.length - stream.watchHead === 1;
    }
    list.splice(i, 0, e);
    return undefined;
  }

  /**
   * Settles the stream's watched events that were told their outcome, from
   * the oldest, up to the first not told yet. A loop, never a recursion: a
   * chain of thousands (a stream found finished before the first notice
   * arrived) settles without deepening the stack, and an event told while
   * this runs (a sink waited on another) is taken by the same loop.
   */
  static #settleInOrder(stream: EventOrder): void {
    if (stream.settling) return;
    stream.settling = true;
    const list = stream.watching;
    try {
      while (stream.watchHead < list.length) {
        const head = list[stream.watchHead]!;
        if (!head.#toldOutcome) break;
        stream.watchHead++;
        const error = head.#told;
        head.#told = undefined;
        head.#settle(error);
      }
    } finally {
      if (stream.watchHead === list.length) {
        list.length = 0;
        stream.watchHead = 0;
      } else if (stream.watchHead >= 64 && stream.watchHead * 2 >= list.length) {
        list.splice(0, stream.watchHead);
        stream.watchHead = 0;
      }
      stream.settling = false;
    }
  }

  #settle(error: unknown): void {
    this.#state = SETTLED;
    this.#error = error;
    const sinks = this.#sinks;
    this.#sinks = undefined;
    if (typeof sinks === 'function') tell(sinks, error);
    else if (sinks !== undefined) for (const sink of sinks) tell(sink, error);
  }
}

function tell(sink: EventSink, error: unknown): void {
  try {
    sink(error);
  } catch {
    // a sink's own failure must not stop the others
  }
}
