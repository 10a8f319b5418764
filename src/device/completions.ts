/**
 * The JS end of the completion channel: native threads post ids of finished
 * work (watched events, released buffers) in batches; this settles the
 * promises waiting on them. The channel keeps the process alive only while
 * something waits on it.
 */
import type { NativeDevice, NativeEvent } from '../binding/types.js';

/** What a waiter on a completion is told: the event's error, undefined when it succeeded. */
type Settle = (error: unknown) => void;

/**
 * Called once the work is done, with its event's status when the check on
 * the loop's turn saw it (1 ok, 2 failed), 0 when the completion thread's
 * notice came: an event seen ok needs no call for its error.
 */
type Waiter = (status: number) => void;

/** After a short wait's look ran out, this many fresh waits go without one (work that long is not short). */
const SHORT_BACKOFF = 64;

function errorOf(event: NativeEvent): unknown {
  try {
    return event.error() ?? undefined;
  } catch (e) {
    return e;
  }
}

export class Completions {
  readonly #waiters = new Map<number, Waiter | Waiter[]>();
  /** Events waited on for less than the spin window: checked on every turn of the loop. */
  readonly #fresh = new Map<number, { event: NativeEvent; until: number }>();
  #spinning = false;
  #spinMs = 0;
  /** How long a short wait looks for its completion on the spot (us; 0: never). */
  #shortUs = 0;
  /** Fresh waits left to go without that look, after one ran out. */
  #shortSkip = 0;
  #native: NativeDevice | undefined;

  /**
   * Set once the native device exists (the callback is needed to create it).
   * `spinUs`: how long a new wait is also checked on every turn of the event
   * loop (setImmediate: the loop goes on turning) before only the completion
   * thread's notice can settle it. The notice wakes a sleeping loop, which
   * costs more than a short operation itself; checking catches it sooner.
   * `shortWaitUs`: how long a short wait (see `when`) looks for its
   * completion on the spot, blocking the thread, before it waits as any other.
   */
  attach(native: NativeDevice, spinUs = 0, shortWaitUs = 0): void {
    this.#native = native;
    this.#spinMs = spinUs / 1000;
    this.#shortUs = shortWaitUs;
  }

  /**
   * The look a short wait takes now, in us: none while anything else is
   * waited on (the wait is not alone: the thread has other completions to
   * take), nor for a while after a look that ran out.
   */
  #shortSpin(): number {
    if (this.#shortUs === 0 || this.#waiters.size > 0) return 0;
    if (this.#shortSkip > 0) {
      this.#shortSkip--;
      return 0;
    }
    return this.#shortUs;
  }

  #settle(id: number, status = 0): void {
    const list = this.#waiters.get(id);
    if (!list) return;
    this.#waiters.delete(id);
    this.#fresh.delete(id);
    if (typeof list === 'function') {
      try {
        list(status);
      } catch {
        // a waiter's own failure must not stop the others
      }
      return;
    }
    for (const resolve of list) {
      try {
        resolve(status);
      } catch {
        // a waiter's own failure must not stop the others
      }
    }
  }

  readonly #check = (): void => {
    this.#spinning = false;
    const now = performance.now();
    // Newest wait first: work that completes in the order it was queued (one
    // stream, one IO queue) is then never seen done before work queued ahead
    // of it, which is checked later; the settling below goes oldest first, so
    // promises resolve in the order their work completed.
    const fresh = [...this.#fresh];
    const done = new Array<number>(fresh.length);
    for (let i = fresh.length - 1; i >= 0; i--) {
      try {
        done[i] = fresh[i]![1].event.status();
      } catch {
        done[i] = 0; // the notice settles it
      }
    }
    fresh.forEach(([id, f], i) => {
      if (done[i] !== 0) this.#settle(id, done[i]);
      else if (now >= f.until) this.#fresh.delete(id);
    });
    if (this.#waiters.size === 0) this.#native?.unref();
    if (this.#fresh.size > 0) this.#spin();
  };

  #spin(): void {
    if (this.#spinning) return;
    this.#spinning = true;
    setImmediate(this.#check);
  }

  /** Called by the native side on the JS thread with a batch of ids. Never throws. */
  readonly onBatch = (ids: number[]): void => {
    for (const id of ids) this.#settle(id);
    if (this.#waiters.size === 0) this.#native?.unref();
  };

  /** Resolves when `id` is posted (or, given its event, seen complete within the spin window). */
  wait(id: number, event?: NativeEvent): Promise<void> {
    return new Promise<void>((resolve) => this.#add(id, () => resolve(), event));
  }

  /** Calls `fn` (which must not throw) once `id` is posted, or its event seen complete within the spin window. */
  #add(id: number, fn: Waiter, event: NativeEvent | undefined): void {
    const list = this.#waiters.get(id);
    if (list) {
      if (typeof list === 'function') this.#waiters.set(id, [list, fn]);
      else list.push(fn);
      return;
    }
    if (this.#waiters.size === 0) this.#native?.ref();
    this.#waiters.set(id, fn);
    if (event !== undefined && this.#spinMs > 0) {
      this.#fresh.set(id, { event, until: performance.now() + this.#spinMs });
      this.#spin();
    }
  }

  /**
   * Calls `fn` with the error of the work a native event marks (undefined
   * when it succeeded) once it completed, watching it so that its
   * completion is posted: at once when it has already. `fn` must not throw.
   * No promise: the cheap form of `settle`. `id` is `event.id`, for a
   * caller that has it already (reading it is a call into the addon).
   * `short`: a user's own wait (`event.done()`), which may look for the
   * completion on the spot first when nothing else is waited on: a short
   * copy then settles without a turn of the loop or a notice.
   */
  when(event: NativeEvent, fn: Settle, id?: number, short = false): void {
    let status: number;
    try {
      const spin = short ? this.#shortSpin() : 0;
      status = spin > 0 ? event.watch(spin) : event.watch();
      if (spin > 0 && status === 0) this.#shortSkip = SHORT_BACKOFF;
    } catch (e) {
      fn(e);
      return;
    }
    if (status !== 0) fn(status === 1 ? undefined : errorOf(event));
    else this.#add(id ?? event.id, (seen) => fn(seen === 1 ? undefined : errorOf(event)), event);
  }

  /**
   * Settles when a native event completes (watching it, so its completion is
   * posted): rejects with the error of the work it marks.
   */
  settle(event: NativeEvent): Promise<void> {
    return new Promise<void>((resolve, reject) => this.when(event, (error) => (error === undefined ? resolve() : reject(error))));
  }

  get pending(): number {
    return this.#waiters.size;
  }
}
