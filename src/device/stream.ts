/** Streams order work on a device; events mark points in a stream. */
import type { NativeEvent, NativeStream } from '../binding/types.js';
import { KvflowError, describe, fail } from '../errors.js';
import { KvBuffer, type DisposeOptions } from './buffer.js';
import type { Completions } from './completions.js';
import { checkRange, checkSize } from './validate.js';
import { defaults } from '../defaults.js';
import { KvFile } from '../io/file.js';

/** Internal: what a stream needs from its device. */
export interface StreamOwner {
  readonly completions: Completions;
  forget(child: object): void;
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
  readonly stream: Stream | undefined;

  /** @internal */
  constructor(native: NativeEvent, stream: Stream | undefined, completions: Completions) {
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

  /**
   * Settles once, when the event completes: rejects with the error of an
   * operation that failed before it (since the previous event on its stream,
   * or in an event its stream waited on).
   */
  done(): Promise<void> {
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

/** Options of `device.createStream()`. */
export interface StreamOptions {
  /** `high` maps to the device's greatest stream priority (CUDA); the CPU backend ignores it. */
  priority?: 'normal' | 'high';
}

/**
 * An ordered queue of operations. Operations are enqueued synchronously and
 * run asynchronously, in order; `record()` returns an Event to await or to
 * make another stream wait on.
 */
export class Stream {
  /** @internal The latest done() of an event of this stream still pending: later events settle after it. */
  pendingDone: { id: number; promise: Promise<void> } | undefined;
  #native: NativeStream | undefined;
  readonly #owner: StreamOwner;
  #disposing: Promise<void> | undefined;
  /** The priority it was created with (`normal` for wrapped streams). */
  readonly priority: 'normal' | 'high';
  /** False for a stream wrapped with `wrapStreamUnsafe` (kvflow never destroys it). */
  readonly owned: boolean;

  /** @internal */
  constructor(native: NativeStream, owner: StreamOwner, priority: 'normal' | 'high', owned: boolean) {
    this.#native = native;
    this.#owner = owner;
    this.priority = priority;
    this.owned = owned;
  }

  /** @internal */
  get native(): NativeStream {
    if (!this.#native || this.#disposing) fail('ERR_DISPOSED', 'stream is disposed');
    return this.#native;
  }

  /** The cudaStream_t (as a bigint) for other addons; an opaque id on the CPU backend. */
  get handle(): bigint {
    return this.native.handle;
  }

  /** True once `dispose()` was called. */
  get disposed(): boolean {
    return this.#disposing !== undefined;
  }

  /**
   * Enqueues a copy of `bytes` bytes from `src` at `srcOffset` to `dst` at
   * `dstOffset` (destination first, as memcpy). Any pair of device, pinned and
   * host buffers of this stream's device. Checked before it is enqueued.
   */
  copy(dst: KvBuffer, dstOffset: number, src: KvBuffer, srcOffset: number, bytes: number): void {
    const native = this.native;
    const d = bufferArg(dst, 'dst');
    const s = bufferArg(src, 'src');
    checkSize(dstOffset, 'dstOffset');
    checkSize(srcOffset, 'srcOffset');
    checkSize(bytes, 'bytes');
    checkRange(dstOffset, bytes, dst.byteLength, 'destination');
    checkRange(srcOffset, bytes, src.byteLength, 'source');
    native.copy(d, dstOffset, s, srcOffset, bytes);
  }

  /**
   * Enqueues a read of `bytes` bytes of `file` at `fileOffset` into `dst` at
   * `dstOffset` (device, pinned or host memory), in stream order: work
   * enqueued after this runs once the data is in place. Disk reads run
   * through a ring of pinned bounce buffers (`KVFLOW_IO_BOUNCE_CHUNK` x
   * `KVFLOW_IO_BOUNCE_SLOTS`) overlapped with the copies into `dst`; no host
   * thread waits on the GPU. A failed read (or reading past the end of the
   * file) fails the stream's next event; the stream never waits forever.
   */
  readFile(dst: KvBuffer, dstOffset: number, file: KvFile, fileOffset: number, bytes: number): void {
    const native = this.native;
    const d = bufferArg(dst, 'dst');
    const f = fileArg(file);
    checkSize(dstOffset, 'dstOffset');
    checkSize(fileOffset, 'fileOffset');
    checkSize(bytes, 'bytes');
    checkRange(dstOffset, bytes, dst.byteLength, 'destination');
    const { ioBounceChunk, ioBounceSlots } = defaults();
    native.readFile(d, dstOffset, f, fileOffset, bytes, ioBounceChunk, ioBounceSlots);
  }

  /**
   * Enqueues a write of `bytes` bytes of `src` at `srcOffset` to `file` at
   * `fileOffset`, after the work enqueued before it; an event recorded after
   * this completes once the bytes are written (not yet fsync'ed: see
   * `file.sync()`). A failed write fails the stream's next event.
   */
  writeFile(file: KvFile, fileOffset: number, src: KvBuffer, srcOffset: number, bytes: number): void {
    const native = this.native;
    const f = fileArg(file);
    const s = bufferArg(src, 'src');
    checkSize(fileOffset, 'fileOffset');
    checkSize(srcOffset, 'srcOffset');
    checkSize(bytes, 'bytes');
    checkRange(srcOffset, bytes, src.byteLength, 'source');
    const { ioBounceChunk, ioBounceSlots } = defaults();
    native.writeFile(f, fileOffset, s, srcOffset, bytes, ioBounceChunk, ioBounceSlots);
  }

  /** Marks the current end of the stream. */
  record(): Event {
    return new Event(this.native.record(), this, this.#owner.completions);
  }

  /**
   * Work enqueued on this stream after this call waits until `event`
   * completed; on CUDA the GPU waits, the host does not. A failed event
   * releases the wait and fails this stream's next event too. `event` is one
   * recorded on a stream of this device, or the event of an IO request of a
   * file opened on it (`file.readChecked(...).event`): the stream then runs
   * later work once the IO and its checks are done, and fails its next event
   * with ERR_CHECKSUM or the IO error when they failed.
   */
  waitEvent(event: Event): void {
    const native = this.native;
    if (!(event instanceof Event)) fail('ERR_INVALID_ARG', `expected an Event for event, got ${describe(event)}`);
    native.waitEvent(event.native);
  }

  /** Resolves when all work enqueued so far completed (rejects with its failure). */
  synchronize(): Promise<void> {
    return this.record().done();
  }

  /** True when nothing enqueued is still pending. */
  idle(): boolean {
    return this.native.idle();
  }

  /**
   * Waits for enqueued work (or rejects with ERR_BUSY when `wait: false` and
   * work is pending), then destroys the stream. Idempotent.
   */
  dispose(options: DisposeOptions = {}): Promise<void> {
    if (this.#disposing) return this.#disposing;
    const native = this.#native;
    if (!native) return Promise.resolve();
    if (options.wait === false && !native.idle()) {
      return Promise.reject(new KvflowError('stream has work in flight', 'ERR_BUSY'));
    }
    const last = new Event(native.record(), this, this.#owner.completions);
    this.#disposing = last
      .done()
      .catch(() => undefined)
      .then(() => {
        native.close(false);
        this.#native = undefined;
        this.#owner.forget(this);
      });
    return this.#disposing;
  }

  /** `await using` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }

  /** @internal Closes at once, abandoning waits (device teardown). */
  abandon(): void {
    this.#native?.close(true);
    this.#native = undefined;
    this.#disposing ??= Promise.resolve();
  }
}

function fileArg(value: unknown) {
  if (!(value instanceof KvFile)) fail('ERR_INVALID_ARG', `expected a KvFile for file, got ${describe(value)}`);
  return value.native;
}

function bufferArg(value: unknown, name: string) {
  if (!(value instanceof KvBuffer)) fail('ERR_INVALID_ARG', `expected a kvflow buffer for ${name}, got ${describe(value)}`);
  return value.native;
}
