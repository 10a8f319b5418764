/**
 * One ownership chain: every kvflow resource is a {@link Disposable} whose
 * children subscribe to its disposal. Disposing a parent disposes its
 * children first, in {@link DisposeOrder}, then itself; a child disposed on
 * its own leaves its parent's list. `dispose()` is idempotent and
 * `Symbol.asyncDispose` calls it (`await using`).
 */
import { KvflowError } from '../errors.js';
import { checkKnownOptions } from './validate.js';

/** Options of `dispose()`. */
export interface DisposeOptions {
  /** Wait for operations in flight (default). With `false`, reject with ERR_BUSY instead when work is in flight. */
  wait?: boolean;
}

/**
 * The order in which a parent disposes its children (lowest first); children
 * of one rank are disposed together. Objects adopted from outside
 * (`device.adopt`: a store, say) go first, because they use everything else.
 */
export const DisposeOrder = Object.freeze({
  /** Adopted objects (stores, pipelines): they hold caches, plans, files and buffers of the device. */
  adopted: 0,
  /** KV caches and their prepared transfers. */
  caches: 10,
  /** Files (a file's descriptors stay open while a request in flight holds them). */
  files: 20,
  /** Streams wrapped from a runtime: one may wait on a stream of the device. */
  wrappedStreams: 30,
  /** Streams kvflow made. */
  streams: 40,
  /** IO engines: after the streams, whose file reads and writes in flight run on them. */
  engines: 45,
  /** Memory. */
  buffers: 50,
});

/** Something another object can own: kvflow's own resources, or any object with `Symbol.asyncDispose`. */
export type Child = Disposable | AsyncDisposableLike;

/** An object with an async dispose method (a KvStore, say). */
export interface AsyncDisposableLike {
  [Symbol.asyncDispose](): PromiseLike<void>;
}

/** Ends a child's membership of its parent: call it when the child is closed on its own. */
export type Detach = () => void;

/**
 * The disposable base. A subclass implements {@link Disposable.disposeSelf}
 * (free what it holds, after its children are gone) and, where it has work
 * in flight, {@link Disposable.busySelf}.
 */
export abstract class Disposable {
  #disposing: Promise<void> | undefined;
  readonly #children = new Map<Child, number>();
  /** Children held weakly: disposed with this object if still alive, never kept alive by it. */
  readonly #weak = new Set<{ ref: WeakRef<Disposable>; order: number }>();
  #detach: Detach | undefined;
  #sealed = false;

  /** What the object is, for messages ("stream", "device"...). */
  protected abstract readonly resourceName: string;

  /** Frees what this object holds; its children are disposed by then. */
  protected abstract disposeSelf(): Promise<void> | void;

  /**
   * Runs first when disposal starts, before the children are disposed;
   * children may still be added until it settles (a file whose open was in
   * flight, say).
   */
  protected prepareDispose(): Promise<unknown> | undefined {
    return undefined;
  }

  /** True while this object (not its children) has work in flight. */
  protected busySelf(): boolean {
    return false;
  }

  /** True once `dispose()` was called. */
  get disposed(): boolean {
    return this.#disposing !== undefined;
  }

  /** Throws ERR_DISPOSED once `dispose()` was called. */
  protected assertLive(): void {
    if (this.#disposing) throw new KvflowError(`${this.resourceName} is disposed`, 'ERR_DISPOSED');
  }

  /** True while this object or any of its children has work in flight. */
  busy(): boolean {
    if (this.busySelf()) return true;
    for (const child of this.#children.keys()) if (child instanceof Disposable && child.busy()) return true;
    for (const { ref } of this.#weak) if (ref.deref()?.busy()) return true;
    return false;
  }

  /**
   * Makes `child` disposed with this object, before it, at rank `order`
   * ({@link DisposeOrder}). A kvflow resource leaves on its own when it is
   * disposed; any other object calls the returned function when it closes
   * on its own. ERR_DISPOSED once this object is disposed.
   */
  protected own(child: Child, order: number): Detach {
    if (this.#sealed) throw new KvflowError(`${this.resourceName} is disposed`, 'ERR_DISPOSED');
    this.#children.set(child, order);
    const detach = (): void => {
      this.#children.delete(child);
    };
    if (child instanceof Disposable) child.#detach = detach;
    return detach;
  }

  /**
   * As {@link Disposable.own}, but without keeping `child` alive: one the
   * program dropped without disposing is left to its finalizer (many small
   * plans made and forgotten must not pile up under a long-lived parent).
   */
  protected ownWeakly(child: Disposable, order: number): void {
    if (this.#sealed) throw new KvflowError(`${this.resourceName} is disposed`, 'ERR_DISPOSED');
    const entry = { ref: new WeakRef(child), order };
    this.#weak.add(entry);
    forgetWhenCollected.register(child, () => this.#weak.delete(entry), entry);
    child.#detach = () => {
      this.#weak.delete(entry);
      forgetWhenCollected.unregister(entry);
    };
  }

  /**
   * Disposes the children (rank by rank, each rank together), then this
   * object. With `wait: false`, rejects with ERR_BUSY and disposes nothing
   * when this object or a child has work in flight. Idempotent: later calls
   * return the first call's promise.
   */
  dispose(options: DisposeOptions | null = {}): Promise<void> {
    let wait: unknown;
    try {
      wait = checkKnownOptions(options, 'options', ['wait']).wait;
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.#disposing) return this.#disposing;
    if (wait === false && this.busy()) {
      return Promise.reject(new KvflowError(`${this.resourceName} has work in flight`, 'ERR_BUSY'));
    }
    this.#disposing = this.#run();
    return this.#disposing;
  }

  /** `await using` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  #run(): Promise<void> {
    const before = this.prepareDispose();
    // With nothing to wait for, disposeSelf starts synchronously: a buffer's
    // views are detached before dispose() returns.
    if (before === undefined && this.#children.size === 0 && this.#weak.size === 0) {
      this.#sealed = true;
      return this.#finish(undefined);
    }
    return (async () => {
      await before;
      this.#sealed = true;
      const ranks = new Map<number, Child[]>();
      const add = (child: Child, order: number): void => {
        const rank = ranks.get(order);
        if (rank) rank.push(child);
        else ranks.set(order, [child]);
      };
      for (const [child, order] of this.#children) add(child, order);
      for (const { ref, order } of this.#weak) {
        const child = ref.deref();
        if (child) add(child, order);
      }
      let failure: { error: unknown } | undefined;
      for (const order of [...ranks.keys()].sort((a, b) => a - b)) {
        const results = await Promise.allSettled(ranks.get(order)!.map(disposeChild));
        for (const r of results) if (r.status === 'rejected') failure ??= { error: r.reason };
      }
      await this.#finish(failure);
    })();
  }

  async #finish(failure: { error: unknown } | undefined): Promise<void> {
    try {
      await this.disposeSelf();
    } finally {
      this.#children.clear();
      this.#weak.clear();
      this.#detach?.();
      this.#detach = undefined;
    }
    if (failure) throw failure.error;
  }
}

/** Drops a weak child's entry once the child is collected. */
const forgetWhenCollected = new FinalizationRegistry<() => void>((forget) => forget());

function disposeChild(child: Child): PromiseLike<void> {
  return child instanceof Disposable ? child.dispose() : child[Symbol.asyncDispose]();
}
