/**
 * The JS end of the completion channel: native threads post ids of finished
 * work (watched events, released buffers) in batches; this settles the
 * promises waiting on them. The channel keeps the process alive only while
 * something waits on it.
 */
import type { NativeDevice, NativeEvent } from '../binding/types.js';

export class Completions {
  readonly #waiters = new Map<number, Array<() => void>>();
  #native: NativeDevice | undefined;

  /** Set once the native device exists (the callback is needed to create it). */
  attach(native: NativeDevice): void {
    this.#native = native;
  }

  /** Called by the native side on the JS thread with a batch of ids. Never throws. */
  readonly onBatch = (ids: number[]): void => {
    for (const id of ids) {
      const list = this.#waiters.get(id);
      if (!list) continue;
      this.#waiters.delete(id);
      for (const resolve of list) {
        try {
          resolve();
        } catch {
          // a waiter's own failure must not stop the others
        }
      }
    }
    if (this.#waiters.size === 0) this.#native?.unref();
  };

  /** Resolves when `id` is posted. */
  wait(id: number): Promise<void> {
    return new Promise<void>((resolve) => {
      const list = this.#waiters.get(id);
      if (list) {
        list.push(resolve);
        return;
      }
      if (this.#waiters.size === 0) this.#native?.ref();
      this.#waiters.set(id, [resolve]);
    });
  }

  /**
   * Settles when a native event completes (watching it, so its completion is
   * posted): rejects with the error of the work it marks.
   */
  async settle(event: NativeEvent): Promise<void> {
    if (event.watch() === 0) await this.wait(event.id);
    const error = event.error();
    if (error) throw error;
  }

  get pending(): number {
    return this.#waiters.size;
  }
}
