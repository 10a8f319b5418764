/** Memory that streams copy between: device memory, pinned host memory and pageable host memory. */
import type { NativeBuffer } from '../binding/types.js';
import { KvflowError, fail } from '../errors.js';
import type { Completions } from './completions.js';

/** Where a buffer's memory lives. */
export type MemoryKind = 'device' | 'pinned' | 'host';

const KINDS: readonly MemoryKind[] = ['device', 'pinned', 'host'];

/** Options of `dispose()`. */
export interface DisposeOptions {
  /** Wait for operations in flight (default). With `false`, reject with ERR_BUSY instead when work is in flight. */
  wait?: boolean;
}

/** Internal: what a buffer needs from its device. */
export interface BufferOwner {
  readonly completions: Completions;
  forget(child: object): void;
}

/** Base of every buffer. Operations in flight keep the memory alive; `dispose()` waits for them. */
export abstract class KvBuffer {
  #native: NativeBuffer | undefined;
  readonly #owner: BufferOwner;
  #disposing: Promise<void> | undefined;
  /** Size in bytes. */
  readonly byteLength: number;
  /** Where the memory lives. */
  readonly kind: MemoryKind;
  /** True when kvflow allocated the memory (false for `wrapUnsafe`). */
  readonly owned: boolean;

  /** @internal */
  constructor(native: NativeBuffer, owner: BufferOwner, owned: boolean) {
    this.#native = native;
    this.#owner = owner;
    this.byteLength = native.bytes;
    this.kind = KINDS[native.kind] ?? 'host';
    this.owned = owned;
  }

  /** @internal The native handle, or ERR_DISPOSED. */
  get native(): NativeBuffer {
    if (!this.#native || this.#disposing) fail('ERR_DISPOSED', `${this.kind} buffer is disposed`);
    return this.#native;
  }

  /** True once `dispose()` was called. */
  get disposed(): boolean {
    return this.#disposing !== undefined;
  }

  /** True while an operation enqueued on a stream still uses this buffer. */
  inFlight(): boolean {
    return this.#native !== undefined && !this.#disposing && this.#native.inFlight();
  }

  /**
   * The memory's address, for other addons (a CUDA device pointer for device
   * buffers). Valid until `dispose()`.
   */
  get address(): bigint {
    return this.native.address;
  }

  /**
   * Frees the memory (pinned memory returns to the pool) once operations in
   * flight complete; JS views are detached at once. Idempotent.
   */
  dispose(options: DisposeOptions = {}): Promise<void> {
    if (this.#disposing) return this.#disposing;
    const native = this.#native;
    if (!native) return Promise.resolve();
    if (options.wait === false && native.inFlight()) {
      return Promise.reject(new KvflowError(`${this.kind} buffer is in use by operations in flight`, 'ERR_BUSY'));
    }
    const ticket = native.release();
    this.#native = undefined;
    this.#owner.forget(this);
    this.#disposing = ticket === 0 ? Promise.resolve() : this.#owner.completions.wait(ticket);
    return this.#disposing;
  }

  /** `await using` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}

/** GPU memory (host memory on the CPU backend). */
export class DeviceBuffer extends KvBuffer {}

/** Host memory readable and writable from JS without a copy. */
abstract class HostVisibleBuffer extends KvBuffer {
  #array: Uint8Array | undefined;

  /**
   * A Uint8Array over the memory itself (no copy). Detached (length 0) once
   * the buffer is disposed. Do not touch it while a copy into it is in flight.
   */
  get array(): Uint8Array {
    if (!this.#array || this.#array.byteLength === 0) this.#array = new Uint8Array(this.native.view(), 0, this.byteLength);
    return this.#array;
  }
}

/** Page-locked host memory from the device's pool: the fast path to and from the GPU. */
export class PinnedBuffer extends HostVisibleBuffer {}

/** Pageable host memory (slower GPU transfers; copies bounce through pinned memory). */
export class HostBuffer extends HostVisibleBuffer {}
