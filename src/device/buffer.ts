/** Memory that streams copy between: device memory, pinned host memory and pageable host memory. */
import type { NativeBuffer } from '../binding/types.js';
import { fail } from '../errors.js';
import { Disposable } from '../util/disposable.js';
import type { Completions } from './completions.js';

export type { DisposeOptions } from '../util/disposable.js';

/** Where a buffer's memory lives. */
export type MemoryKind = 'device' | 'pinned' | 'host';

const KINDS: readonly MemoryKind[] = ['device', 'pinned', 'host'];

/** Internal: what a buffer needs from its device. */
export interface BufferOwner {
  readonly completions: Completions;
}

/** Base of every buffer. Operations in flight keep the memory alive; `dispose()` waits for them. */
export abstract class KvBuffer extends Disposable {
  #native: NativeBuffer | undefined;
  readonly #owner: BufferOwner;
  protected readonly resourceName: string;
  /** Size in bytes. */
  readonly byteLength: number;
  /** Where the memory lives. */
  readonly kind: MemoryKind;
  /** True when kvflow allocated the memory (false for `wrapUnsafe`). */
  readonly owned: boolean;

  /** @internal */
  constructor(native: NativeBuffer, owner: BufferOwner, owned: boolean) {
    super();
    this.#native = native;
    this.#owner = owner;
    this.byteLength = native.bytes;
    this.kind = KINDS[native.kind] ?? 'host';
    this.resourceName = `${this.kind} buffer`;
    this.owned = owned;
  }

  /** @internal The native handle, or ERR_DISPOSED. */
  get native(): NativeBuffer {
    this.assertLive();
    if (!this.#native) fail('ERR_DISPOSED', `${this.kind} buffer is disposed`);
    return this.#native;
  }

  /** True while an operation enqueued on a stream still uses this buffer. */
  inFlight(): boolean {
    return this.#native !== undefined && !this.disposed && this.#native.inFlight();
  }

  /**
   * The memory's address, for other addons (a CUDA device pointer for device
   * buffers). Valid until `dispose()`.
   */
  get address(): bigint {
    return this.native.address;
  }

  protected override busySelf(): boolean {
    return this.inFlight();
  }

  /**
   * Frees the memory (pinned memory returns to the pool) once operations in
   * flight complete; JS views are detached at once.
   */
  protected disposeSelf(): Promise<void> {
    const native = this.#native;
    if (!native) return Promise.resolve();
    const ticket = native.release();
    this.#native = undefined;
    return ticket === 0 ? Promise.resolve() : this.#owner.completions.wait(ticket);
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
