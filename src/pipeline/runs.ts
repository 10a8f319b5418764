/**
 * Synchronous runs of a pipeline's compute steps, and the timed record they
 * may share.
 *
 * A compute step enqueues, on the shared compute stream: a wait for its load
 * (unless the stream waits on that event already), a timed record (its
 * compute start), the runtime's kernels, a timed record (its compute end).
 * Where one step's end record is the last thing on the stream when the next
 * step begins, and the next step enqueues no wait, that record marks the next
 * compute's start exactly: the stream starts the next compute right after it.
 * The next step then takes it as its start instead of recording its own
 * (recompute layers one after another; prefills whose loads of a layer went
 * to the store in one call, whose steps the batcher resumes together).
 *
 * The rule that keeps it exact: the end record is shared only within one
 * synchronous run of the pipeline's code (no other JS runs between the two
 * steps, so nothing else can enqueue on the stream), and only by the step
 * that comes next (a step takes the record and so clears it; one that
 * enqueues a wait records its own start). Every run clears what is left at
 * its end. Only the runtime's own `compute` callback runs inside a step,
 * between that step's start and end records.
 */
import type { Event } from '../device/event.js';

export class ComputeRuns {
  #tail: Event | undefined;
  #gathering: (() => void)[] | undefined;

  /** The previous step's end record, if it may mark this step's start (see the file's comment); cleared either way. */
  take(): Event | undefined {
    const e = this.#tail;
    this.#tail = undefined;
    return e;
  }

  /** A step's end record, the last thing it enqueued: the next step of this run may take it. */
  set(end: Event): void {
    this.#tail = end;
  }

  /** Runs `fn` as a run of its own: nothing it leaves is shared after it. */
  run(fn: () => void): void {
    try {
      fn();
    } finally {
      this.#tail = undefined;
    }
  }

  /**
   * Resumes a prefill's compute steps: inside `gather`, once its body is
   * over, in one run with the others resumed there; else on a microtask, as
   * a run of its own. `fn` must not throw.
   */
  resume(fn: () => void): void {
    if (this.#gathering) this.#gathering.push(fn);
    else queueMicrotask(() => this.run(fn));
  }

  /**
   * Runs `body` (the batcher's deferred flush, which tells many prefills at
   * once that their loads went to the store), then every step resumed inside
   * it, in the order they were resumed, in one run.
   */
  gather(body: () => void): void {
    const resumed: (() => void)[] = [];
    const outer = this.#gathering;
    this.#gathering = resumed;
    try {
      body();
    } finally {
      this.#gathering = outer;
      this.run(() => {
        // Each step on its own: one that throws must not strand the prefills after it.
        let failure: unknown;
        for (const fn of resumed) {
          try {
            fn();
          } catch (e) {
            failure ??= e;
            this.#tail = undefined; // what it left is not a record the next step may share
          }
        }
        if (failure !== undefined) throw failure;
      });
    }
  }
}
