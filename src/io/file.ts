/** Files of the NVMe tier: reads into and writes from pinned or host memory on an IO engine. */
import type { NativeEvent, NativeFile, NativeIoEngine } from '../binding/types.js';
import type { DirectRequest, IoEngineRequest } from '../defaults.js';
import { KvflowError, fail } from '../errors.js';
import { HostBuffer, PinnedBuffer } from '../device/buffer.js';
import type { Completions } from '../device/completions.js';
import { Event } from '../device/event.js';
import type { Choice } from '../util/choice.js';
import { abortable } from '../util/abort.js';
import { Disposable } from '../util/disposable.js';
import { checkInstance, checkRange, checkSize } from '../util/validate.js';
import { checkedReadTable, summedWriteTable, type CheckedPiece, type CheckedRead, type SummedPiece } from './checked.js';
import { requestOptions, type IoRequestOptions } from './priority.js';

/** The engine kinds that move a file's bytes. */
export type IoEngineKind = 'posix' | 'io_uring';

/** Options of `device.openFile()`; each falls back to its `KVFLOW_IO_*` variable, then to the built-in default. */
export interface OpenFileOptions {
  /** Create the file (mode 0600) when it does not exist. Default false: a missing file is ERR_IO with errno 2. */
  create?: boolean;
  /** O_DIRECT: `auto` (default) where a probe in the file's directory succeeds; `on` or ERR_UNSUPPORTED; `off`. */
  direct?: DirectRequest;
  /** `posix` (default), `io_uring` (ERR_UNSUPPORTED with the reason where the kernel forbids it), or `auto`. */
  engine?: IoEngineRequest;
  /** Preallocate at least this many bytes when opening (see `preallocate`). Default 0: nothing. */
  size?: number;
  /**
   * GPUDirect Storage for `stream.readFile`/`writeFile` of device memory:
   * `auto` (default, `KVFLOW_GDS`) where cuFile (loaded at run time) registers
   * the file, else the pinned bounce path, saying why; `on` or ERR_UNSUPPORTED
   * with the reason; `off`. CUDA backend only.
   */
  gds?: DirectRequest;
}

/** How a file's bytes move, and why. */
export interface FileInfo {
  path: string;
  /** True when aligned parts of requests bypass the page cache (O_DIRECT). */
  direct: boolean;
  directRequested: DirectRequest;
  /** How O_DIRECT was verified, or why buffered IO is used, e.g. "buffered IO: O_DIRECT refused by the filesystem at /mnt: EINVAL". */
  directReason: string;
  /** True when device-memory transfers of this file go through cuFile. */
  gds: boolean;
  gdsRequested: DirectRequest;
  /** Why GPUDirect Storage is used or not, e.g. "GPUDirect Storage unavailable: libcufile.so.0 not found (...)". */
  gdsReason: string;
  engine: IoEngineKind;
  engineRequested: IoEngineRequest;
  engineReason: string;
  /** The largest piece of a request one task moves. */
  taskSize: number;
  /** Threads the engine moves bytes on. */
  threads: number;
  /** Tasks the engine keeps in flight at most. */
  queueDepth: number;
  /** The three decisions above as requested / chosen / why (the flat fields repeat them). */
  choices: {
    engine: Choice<IoEngineKind, IoEngineRequest>;
    direct: Choice<boolean, DirectRequest>;
    gds: Choice<boolean, DirectRequest>;
  };
}

/** Internal: what a file needs from the device that opened it. */
export interface FileOwner {
  readonly completions: Completions;
}

/** A buffer that file IO reads into or writes from. */
export type FileIoBuffer = PinnedBuffer | HostBuffer;

/**
 * An open file. Reads and writes run on the device's IO engine, split into
 * tasks that run in parallel, and return Promises that settle once. Buffers
 * and files are 4 KiB aligned at their start; requests whose offsets or
 * length are not still work (their unaligned edges go through the page
 * cache) and never disturb neighbouring bytes. The engine is shared by the
 * device's files: tasks of `high`-priority requests (reads, by default)
 * start before queued tasks of `low` ones (writes, by default); see
 * `IoPriority`.
 */
export class KvFile extends Disposable {
  #native: NativeFile | undefined;
  readonly #engine: NativeIoEngine;
  readonly #owner: FileOwner;
  readonly #inFlight = new Set<Promise<void>>();
  protected readonly resourceName = 'file';
  /** How bytes move, and why. */
  readonly info: FileInfo;

  /** @internal Use `device.openFile()`. */
  constructor(native: NativeFile, engine: NativeIoEngine, owner: FileOwner, info: FileInfo) {
    super();
    this.#native = native;
    this.#engine = engine;
    this.#owner = owner;
    this.info = info;
  }

  /** @internal The engine, for the test hooks. */
  get engine(): NativeIoEngine {
    return this.#engine;
  }

  /** @internal The native file, or ERR_DISPOSED (for stream.readFile/writeFile). */
  get native(): NativeFile {
    return this.#live;
  }

  get #live(): NativeFile {
    this.assertLive();
    if (!this.#native) fail('ERR_DISPOSED', 'file is disposed');
    return this.#native;
  }

  /** The path it was opened with. */
  get path(): string {
    return this.info.path;
  }

  /** True while a read, write, preallocate or sync of this file has not settled. */
  inFlight(): boolean {
    return this.#inFlight.size > 0;
  }

  /**
   * Reads `bytes` bytes at `fileOffset` into `dst` at `dstOffset` (destination
   * first). Reading past the end of the file rejects with ERR_IO ("short
   * read"), never zeros; the destination's contents are then undefined.
   * Priority `high` unless `options.priority` says otherwise; `options.signal` stops the wait (see `IoRequestOptions`).
   */
  async read(dst: FileIoBuffer, dstOffset: number, fileOffset: number, bytes: number, options?: IoRequestOptions): Promise<void> {
    const native = this.#live;
    const d = ioBuffer(dst, 'dst');
    checkSize(dstOffset, 'dstOffset');
    checkSize(fileOffset, 'fileOffset');
    checkSize(bytes, 'bytes');
    checkRange(dstOffset, bytes, dst.byteLength, 'destination');
    const { priority, signal } = requestOptions(options, 'high', 'the read');
    return abortable(this.#track(native.read(d, dstOffset, fileOffset, bytes, priority)), signal, 'the read');
  }

  /**
   * Writes `bytes` bytes of `src` at `srcOffset` to the file at `fileOffset`,
   * growing it as needed. ERR_NO_SPACE when the filesystem is full, ERR_IO
   * (with `errno`) for other failures; the range's contents are then undefined.
   * Priority `low` unless `options.priority` says otherwise; `options.signal` stops the wait (see `IoRequestOptions`).
   */
  async write(fileOffset: number, src: FileIoBuffer, srcOffset: number, bytes: number, options?: IoRequestOptions): Promise<void> {
    const native = this.#live;
    const s = ioBuffer(src, 'src');
    checkSize(fileOffset, 'fileOffset');
    checkSize(srcOffset, 'srcOffset');
    checkSize(bytes, 'bytes');
    checkRange(srcOffset, bytes, src.byteLength, 'source');
    const { priority, signal } = requestOptions(options, 'low', 'the write');
    return abortable(this.#track(native.write(fileOffset, s, srcOffset, bytes, priority)), signal, 'the write');
  }

  /**
   * Reads each piece into `dst` at its `dstOffset` (pieces at any file
   * offsets, unaligned ones included, as `read` allows) and checks it on the
   * IO thread that read it: a piece whose CRC32C(seed, bytes) differs from
   * its `crc` has its destination bytes zeroed before the request completes,
   * so they never reach a stream that waits on `event`; so does a piece whose
   * read failed. Destination ranges must not overlap. Bad arguments throw
   * (ERR_INVALID_ARG, ERR_OUT_OF_RANGE) and nothing is read. Priority
   * `high` unless `options.priority` says otherwise; `options.signal`
   * rejects `verified` with ERR_ABORTED when it aborts (wait on `event`
   * with `event.done({ signal })`).
   */
  readChecked(dst: FileIoBuffer, pieces: readonly CheckedPiece[], options?: IoRequestOptions): CheckedRead {
    const native = this.#live;
    const d = ioBuffer(dst, 'dst');
    const table = checkedReadTable(pieces, dst.byteLength);
    const { priority, signal } = requestOptions(options, 'high', 'the checked read');
    const request = native.readChecked(d, table, priority);
    const event = new Event(request.event, undefined, this.#owner.completions);
    const done = this.#remember(event.untilDone());
    const verified = abortable(done, signal, 'the checked read').then(
      () => [] as number[],
      (e: unknown) => {
        if (e instanceof KvflowError && e.code === 'ERR_CHECKSUM') return request.mismatched() ?? [];
        throw e;
      },
    );
    // Callers may use only one of the two: neither may end up an unhandled rejection.
    done.catch(() => undefined);
    verified.catch(() => undefined);
    return { event, verified };
  }

  /**
   * Writes each piece of `src` to the file and resolves with each piece's
   * CRC32C(seed, bytes written), computed on an IO thread once the piece is
   * written (so `src` must not change meanwhile). ERR_NO_SPACE and ERR_IO as
   * `write`; the contents of the ranges are then undefined. Priority `low`
   * unless `options.priority` says otherwise.
   */
  async writeSummed(src: FileIoBuffer, pieces: readonly SummedPiece[], options?: IoRequestOptions): Promise<Uint32Array> {
    const native = this.#live;
    const s = ioBuffer(src, 'src');
    const table = summedWriteTable(pieces, src.byteLength);
    const { priority, signal } = requestOptions(options, 'low', 'the summed write');
    const request = native.writeSummed(s, table, priority);
    await abortable(this.#track(request.event), signal, 'the summed write');
    const sums = request.sums();
    if (!sums) fail('ERR_IO', 'summed write completed without its checksums');
    return sums;
  }

  /**
   * Reserves space so the file is at least `bytes` long (it never shrinks):
   * fallocate, else posix_fallocate, else a sparse ftruncate where the
   * filesystem supports neither. ERR_NO_SPACE when the space is not there.
   */
  async preallocate(bytes: number): Promise<void> {
    const native = this.#live;
    checkSize(bytes, 'bytes');
    return this.#track(native.preallocate(bytes));
  }

  /** Makes writes that settled before this call durable (fsync). */
  async sync(): Promise<void> {
    return this.#track(this.#live.sync());
  }

  /** The file's size in bytes now. */
  size(): number {
    return this.#live.size();
  }

  protected override busySelf(): boolean {
    return this.#inFlight.size > 0;
  }

  /**
   * Waits for IO in flight (or, with `wait: false`, rejects with ERR_BUSY
   * when there is some), then closes the file. Idempotent.
   */
  protected async disposeSelf(): Promise<void> {
    const native = this.#native;
    if (!native) return;
    await Promise.allSettled([...this.#inFlight]);
    native.close();
    this.#native = undefined;
  }

  #track(event: NativeEvent): Promise<void> {
    return this.#remember(this.#owner.completions.settle(event));
  }

  /** Counts `done` as IO in flight until it settles (dispose waits for it). */
  #remember(done: Promise<void>): Promise<void> {
    this.#inFlight.add(done);
    const forget = (): void => {
      this.#inFlight.delete(done);
    };
    done.then(forget, forget);
    return done;
  }
}

function ioBuffer(value: unknown, name: string) {
  return checkInstance<FileIoBuffer>(value, name, 'a PinnedBuffer or HostBuffer', PinnedBuffer, HostBuffer).native;
}
