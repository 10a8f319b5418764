/**
 * The JS end of the completion channel: native threads post ids of finished
 * work (watched events, released buffers) in batches; this settles the
 * promises waiting on them. The channel keeps the process alive only while
 * something waits on it.
 */
import type { NativeDevice, NativeEvent } from '../binding/types.js';

export class Completions {
  readonly #waiters = new Map<number, Array<() => void>>();
  /** Events waited on for less than the spin window: checked on every turn of the loop. */
  readonly #fresh = new Map<number, { event: NativeEvent; until: number }>();
  #spinning = false;
  #spinMs = 0;
  #native: NativeDevice | undefined;

  /**
   * Set once the native device exists (the callback is needed to create it).
   * `spinUs`: how long a new wait is also checked on every turn of the event
   * loop (setImmediate: the loop goes on turning) before only the completion
   * thread's notice can settle it. The notice wakes a sleeping loop, which
   * costs more than a short operation itself; checking catches it sooner.
   */
  attach(native: NativeDevice, spinUs = 0): void {
    this.#native = native;
    this.#spinMs = spinUs / 1000;
  }

  #settle(id: number): void {
    const list = this.#waiters.get(id);
    if (!list) return;
    this.#waiters.delete(id);
    this.#fresh.delete(id);
    for (const resolve of list) {
      try {
        resolve();
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
    const done = new Array<boolean>(fresh.length);
    for (let i = fresh.length - 1; i >= 0; i--) {
      try {
        done[i] = fresh[i]![1].event.status() !== 0;
      } catch {
        done[i] = false; // the notice settles it
      }
    }
    fresh.forEach(([id, f], i) => {
      if (done[i]) this.#settle(id);
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
    return new Promise<void>((resolve) => {
      const list = this.#waiters.get(id);
      if (list) {
        list.push(resolve);
        return;
      }
      if (this.#waiters.size === 0) this.#native?.ref();
      this.#waiters.set(id, [resolve]);
      if (event !== undefined && this.#spinMs > 0) {
        this.#fresh.set(id, { event, until: performance.now() + this.#spinMs });
        this.#spin();
      }
    });
  }

  /**
   * Settles when a native event completes (watching it, so its completion is
   * posted): rejects with the error of the work it marks.
   */
  async settle(event: NativeEvent): Promise<void> {
    if (event.watch() === 0) await this.wait(event.id, event);
    const error = event.error();
    if (error) throw error;
  }

  get pending(): number {
    return this.#waiters.size;
  }
}
