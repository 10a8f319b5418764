/** Streams order work on a device. */
import type { NativeStream } from '../binding/types.js';
import type { KvflowDefaults } from '../defaults.js';
import { fail } from '../errors.js';
import { abortable } from '../util/abort.js';
import { Disposable } from '../util/disposable.js';
import { checkBoolean, checkKnownOptions, checkRange, checkSize, invalidParameterError } from '../util/validate.js';
import { KvBuffer } from './buffer.js';
import type { Completions } from './completions.js';
import { Event, waitSignal, type WaitOptions } from './event.js';
import { RecordedEvent, type RecordedEvents } from './recorded.js';

/** Internal: what a stream needs from its device. */
export interface StreamOwner {
  readonly completions: Completions;
  readonly recorded: RecordedEvents;
  readonly config: KvflowDefaults;
}

/** Options of `device.createStream()`. */
export interface StreamOptions {
  /** `high` maps to the device's greatest stream priority (CUDA); the CPU backend ignores it. */
  priority?: 'normal' | 'high';
}

/** Options of `stream.record()`. */
export interface RecordOptions {
  /** Record a timed event (default false): it carries its completion time from the device's clock. */
  timing?: boolean;
}

/**
 * An ordered queue of operations. Operations are enqueued synchronously and
 * run asynchronously, in order; `record()` returns an Event to await or to
 * make another stream wait on.
 */
export class Stream extends Disposable {
  /** @internal Its events waited on and not settled yet, in stream order from `watchHead` (see EventOrder). */
  readonly watching: Event[] = [];
  /** @internal */
  watchHead = 0;
  /** @internal */
  settling = false;
  #native: NativeStream | undefined;
  readonly #owner: StreamOwner;
  protected readonly resourceName = 'stream';
  /** The priority it was created with (`normal` for wrapped streams). */
  readonly priority: 'normal' | 'high';
  /** False for a stream wrapped with `wrapStreamUnsafe` (kvflow never destroys it). */
  readonly owned: boolean;

  /** @internal */
  constructor(native: NativeStream, owner: StreamOwner, priority: 'normal' | 'high', owned: boolean) {
    super();
    this.#native = native;
    this.#owner = owner;
    this.priority = priority;
    this.owned = owned;
  }

  /** @internal */
  get native(): NativeStream {
    this.assertLive();
    if (!this.#native) fail('ERR_DISPOSED', 'stream is disposed');
    return this.#native;
  }

  /** @internal The config of the stream's device. */
  get config(): KvflowDefaults {
    return this.#owner.config;
  }

  /** The cudaStream_t (as a bigint) for other addons; an opaque id on the CPU backend. */
  get handle(): bigint {
    return this.native.handle;
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
    checkCopyRanges(dst, dstOffset, src, srcOffset, bytes);
    native.copy(d, dstOffset, s, srcOffset, bytes);
  }

  /**
   * `copy()` then `record()`, in one call into the addon: for a copy awaited
   * on its own (`await stream.copyAndRecord(...).done()`), which this makes
   * cheaper by a crossing. Checked as `copy()` is: a rejected call enqueues
   * and records nothing.
   */
  copyAndRecord(dst: KvBuffer, dstOffset: number, src: KvBuffer, srcOffset: number, bytes: number, options?: RecordOptions): Event {
    const native = this.native;
    const d = bufferArg(dst, 'dst');
    const s = bufferArg(src, 'src');
    checkCopyRanges(dst, dstOffset, src, srcOffset, bytes);
    const timing = options !== undefined && recordTiming(options);
    const owner = this.#owner;
    return new Event(owner.recorded.adopt(native.copyRecord(d, dstOffset, s, srcOffset, bytes, timing), timing), this, owner.completions);
  }

  /**
   * Marks the current end of the stream. With `{ timing: true }` the event
   * also carries when it completed, from the device's clock (GPU timestamps
   * on CUDA): `event.timeMs()`, `event.elapsedSince(other)`.
   */
  record(options?: RecordOptions): Event {
    const native = this.native;
    const owner = this.#owner;
    const timing = options !== undefined && recordTiming(options);
    return new Event(owner.recorded.adopt(timing ? native.record(true) : native.record(), timing), this, owner.completions);
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
    // One instanceof, not checkInstance's list of classes (an array and a closure per wait).
    if (!(event instanceof Event)) throw invalidParameterError('event', 'an Event', event);
    const e = event.native;
    if (e instanceof RecordedEvent) {
      // Ids are per device: the addon could not tell another device's apart.
      if (!this.#owner.recorded.owns(e)) fail('ERR_INVALID_ARG', 'expected an event of this device, got an event of another device');
      // One known to have succeeded has nothing left to wait for (and its id is released).
      if (!e.succeeded) native.waitEvent(e.id);
    } else {
      native.waitEvent(e);
    }
  }

  /**
   * Resolves when all work enqueued so far completed (rejects with its
   * failure). `options.signal` stops the wait, as `event.done()`'s does.
   */
  synchronize(options?: WaitOptions): Promise<void> {
    if (options === undefined) return this.record().done();
    let signal: AbortSignal | undefined;
    try {
      signal = waitSignal(options, 'synchronizing the stream');
    } catch (e) {
      return Promise.reject(e);
    }
    return abortable(this.record().done(), signal, 'synchronizing the stream');
  }

  /** True when nothing enqueued is still pending. */
  idle(): boolean {
    return this.native.idle();
  }

  protected override busySelf(): boolean {
    return this.#native !== undefined && !this.#native.idle();
  }

  /**
   * Waits for enqueued work (or, with `wait: false`, rejects with ERR_BUSY
   * when work is pending), then destroys the stream. Idempotent.
   */
  protected async disposeSelf(): Promise<void> {
    const native = this.#native;
    if (!native) return;
    const last = new Event(this.#owner.recorded.adopt(native.record(), false), this, this.#owner.completions);
    await last.untilDone().catch(() => undefined);
    native.close(false);
    this.#native = undefined;
  }

  /** @internal Closes at once, abandoning waits (device teardown). */
  abandon(): void {
    this.#native?.close(true);
    this.#native = undefined;
    void this.dispose();
  }
}

const RECORD_OPTIONS: readonly string[] = ['timing'];

/**
 * The `timing` of record()'s options. `{ timing: true }` (or false), the
 * shape every timed record passes, is checked without allocating (no key
 * list, no option array); anything else takes the full check, which throws
 * what it always did.
 */
function recordTiming(options: RecordOptions): boolean {
  if (typeof options === 'object' && options !== null) {
    const timing = options.timing;
    if (typeof timing === 'boolean') {
      let onlyTiming = true;
      for (const key in options) {
        if (key !== 'timing') {
          onlyTiming = false;
          break;
        }
      }
      if (onlyTiming) return timing;
    }
  }
  return checkBoolean(checkKnownOptions(options, 'options', RECORD_OPTIONS).timing ?? false, 'timing');
}

/** A copy's offsets and size, checked against its buffers (ERR_INVALID_ARG, ERR_OUT_OF_RANGE naming the bad one). */
function checkCopyRanges(dst: KvBuffer, dstOffset: number, src: KvBuffer, srcOffset: number, bytes: number): void {
  checkSize(dstOffset, 'dstOffset');
  checkSize(srcOffset, 'srcOffset');
  checkSize(bytes, 'bytes');
  checkRange(dstOffset, bytes, dst.byteLength, 'destination');
  checkRange(srcOffset, bytes, src.byteLength, 'source');
}

/**
 * @internal The native buffer of a kvflow buffer argument, or ERR_INVALID_ARG
 * naming it. One instanceof, not checkInstance's list of classes: it runs
 * twice on every copy.
 */
export function bufferArg(value: unknown, name: string) {
  if (value instanceof KvBuffer) return value.native;
  throw invalidParameterError(name, 'a kvflow buffer', value);
}
