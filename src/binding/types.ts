/**
 * Hand-written types of the raw native binding. Only the public classes in
 * src/device call these; nothing here is exported from the package.
 */

/** 0 device, 1 pinned, 2 host (pageable). */
export type NativeKind = 0 | 1 | 2;

export interface NativeCudaProbe {
  compiled: boolean;
  available: boolean;
  reason: string;
  deviceCount: number;
  driverVersion: number;
  runtimeVersion: number;
}

export interface NativeDeviceInfo {
  backend: 'cuda' | 'cpu';
  name: string;
  ordinal: number;
  totalMemory: number;
  freeMemory: number;
  computeCapability: string;
  multiprocessors: number;
  asyncEngines: number;
  pciBusId: string;
  pcieGen: number;
  pcieWidth: number;
  pcieMaxGen: number;
  pcieMaxWidth: number;
  pcieNote: string;
  driverVersion: number;
  runtimeVersion: number;
  cores: number;
  hostMemory: number;
  /** How streams wait on host-side gates: '' on the CPU backend. */
  cudaGate: '' | 'host' | 'wait-value';
  /** Why that one ('' on the CPU backend). */
  cudaGateReason: string;
}

export interface NativePoolStats {
  inUseBytes: number;
  cachedBytes: number;
  limitBytes: number;
  allocations: number;
  reuses: number;
}

export interface NativeBuffer {
  readonly bytes: number;
  readonly kind: NativeKind;
  readonly address: bigint;
  view(): ArrayBuffer;
  inFlight(): boolean;
  /** 0 when released at once, else a ticket posted when the last operation using it completes. */
  release(): number;
}

/** 0 pending, 1 ok, 2 failed. */
export type NativeEventStatus = 0 | 1 | 2;

export interface NativeEvent {
  readonly id: number;
  /** Marks it watched (its completion will be posted while pending); with `spinUs`, looks for the completion that long first (at most 1000). */
  watch(spinUs?: number): NativeEventStatus;
  status(): NativeEventStatus;
  error(): Error | undefined;
  /** Recorded with timing (absent in builds without timed events). */
  readonly timed?: boolean;
  /** Completion time on the device's clock, ms; undefined while pending, untimed, or unknown. */
  timeMs?(): number | undefined;
}

/** A batch checked once (prepareBatch); holds weak references to its buffers, checked at each copyPrepared. */
export interface NativeBatch {
  release(): void;
}

export interface NativeStream {
  copy(dst: NativeBuffer, dstOffset: number, src: NativeBuffer, srcOffset: number, bytes: number): void;
  /** copy() then record(timing) in one call. */
  copyRecord(dst: NativeBuffer, dstOffset: number, src: NativeBuffer, srcOffset: number, bytes: number, timing: boolean): number;
  /** pieces: [dst, dstOffset, src, srcOffset, bytes] per piece; engine 0 dma, 1 kernel. */
  copyBatch(dsts: NativeBuffer[], srcs: NativeBuffer[], pieces: Float64Array, engine: number): void;
  /** The pieces of groups [firstGroup, firstGroup + groupCount) of a prepared batch. */
  copyPrepared(batch: NativeBatch, firstGroup: number, groupCount: number, engine: number): void;
  busy(iterations: number): void;
  busyGemm(count: number, n: number): void;
  readFile(dst: NativeBuffer, dstOffset: number, file: NativeFile, fileOffset: number, bytes: number, chunk: number, slots: number): void;
  writeFile(file: NativeFile, fileOffset: number, src: NativeBuffer, srcOffset: number, bytes: number, chunk: number, slots: number): void;
  /** `timing`: a timed event. The id of the event in its device's table (the device's event* methods answer for it). */
  record(timing?: boolean): number;
  /** A recorded event's id, or an IO request's event. */
  waitEvent(event: NativeEvent | number): void;
  idle(): boolean;
  readonly handle: bigint;
  /** The returned function opens the gate; with (code, message), with that failure. */
  hold(): (code?: string, message?: string) => void;
  injectFailure(code: string, message: string): void;
  close(abandon: boolean): void;
}

/** What the native open reports of a file. */
export interface NativeFileInfo {
  path: string;
  direct: boolean;
  directReason: string;
  gds: boolean;
  gdsReason: string;
}

/** A request's priority on its engine; absent: high for reads, low for writes. */
export type NativeIoPriority = 'high' | 'low';

export interface NativeFile {
  read(dst: NativeBuffer, dstOffset: number, fileOffset: number, bytes: number, priority?: NativeIoPriority): NativeEvent;
  write(fileOffset: number, src: NativeBuffer, srcOffset: number, bytes: number, priority?: NativeIoPriority): NativeEvent;
  /** pieces: [dstOffset, fileOffset, bytes, seed, crc] per piece; mismatched() is undefined until the event completed. */
  readChecked(
    dst: NativeBuffer,
    pieces: Float64Array,
    priority?: NativeIoPriority,
  ): { event: NativeEvent; mismatched(): number[] | undefined };
  /** pieces: [srcOffset, fileOffset, bytes, seed] per piece; sums() is undefined until the event completed. */
  writeSummed(src: NativeBuffer, pieces: Float64Array, priority?: NativeIoPriority): { event: NativeEvent; sums(): Uint32Array | undefined };
  preallocate(bytes: number): NativeEvent;
  sync(): NativeEvent;
  size(): number;
  info(): NativeFileInfo;
  close(): void;
}

/** 0 auto, 1 on, 2 off. */
export type NativeDirectMode = 0 | 1 | 2;

export type NativeIoEngineKind = 'posix' | 'io_uring';

export interface NativeIoEngine {
  readonly kind: NativeIoEngineKind;
  readonly taskSize: number;
  /** The file is usable once the event completed without error. */
  open(path: string, create: boolean, direct: NativeDirectMode, size: number, gds: NativeDirectMode): [NativeFile, NativeEvent];
  /** highTasks/lowTasks: tasks of each priority taken from the queue. */
  stats(): { directBytes: number; bufferedBytes: number; failedTasks: number; highTasks: number; lowTasks: number };
  hold(): () => void;
  injectFault(nth: number, errno: number): void;
  close(abandon: boolean): void;
}

export interface NativeDevice {
  info(): NativeDeviceInfo;
  alloc(kind: NativeKind, bytes: number): NativeBuffer;
  wrap(address: bigint, bytes: number): NativeBuffer;
  createStream(priority: number): NativeStream;
  /** Test hook: completed work is not noticed (CUDA: the poller stops) until the returned function is called. */
  holdCompletions(): () => void;
  wrapStream(handle: bigint): NativeStream;
  createIoEngine(kind: NativeIoEngineKind, threads: number, taskSize: number, queueDepth: number): NativeIoEngine;
  poolStats(): NativePoolStats;
  trimPool(): void;
  ref(): void;
  unref(): void;
  nextId(): number;
  // A recorded event's queries by its id (NativeStream.record), as NativeEvent's methods.
  eventWatch(id: number, spinUs?: number): NativeEventStatus;
  eventStatus(id: number): NativeEventStatus;
  eventError(id: number): Error | undefined;
  eventTimeMs(id: number): number | undefined;
  /** Lets go of recorded events (their JS ends were collected); unknown ids are ignored. */
  releaseEvents(ids: number[]): void;
  close(abandon: boolean): void;
}

/** The shape a native reference model is made from (every field given; TS fills defaults). */
export interface NativeModelShape {
  layers: number;
  weightLayers: number;
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  vocab: number;
  ropeTheta: number;
  normEps: number;
  qkNorm: boolean;
  maxTokens: number;
  seed: number;
}

/** A paged KV cache as the reference model reads it: its buffers and the layout's shape. */
export interface NativePagedKv {
  buffers: NativeBuffer[];
  blockMajor: boolean;
  layers: number;
  kvHeads: number;
  headDim: number;
  blockTokens: number;
  numBlocks: number;
  elementBytes: number;
}

/** The reference transformer of one device; every call enqueues on `stream` and is checked first. */
export interface NativeReferenceModel {
  /** Bytes of one element of the residual stream and the KV cache (4: f32, 2: bf16). */
  readonly hiddenElementBytes: number;
  readonly weightBytes: number;
  embed(stream: NativeStream, hidden: NativeBuffer, tokens: Int32Array): void;
  layer(stream: NativeStream, layer: number, hidden: NativeBuffer, cache: NativePagedKv, blocks: Int32Array, start: number, count: number): void;
  finalNorm(stream: NativeStream, out: NativeBuffer, hidden: NativeBuffer, count: number): void;
  close(): void;
}

export interface NativeBinding {
  Device: new (
    backend: 'cpu' | 'cuda',
    ordinal: number,
    maxPinnedBytes: number,
    onCompletions: (ids: number[]) => void,
    /** 0 host functions, 1 wait-value, 2 auto; the CPU backend ignores it. */
    cudaGate: number,
    /** How long the CUDA completion poller keeps looking for new work before it sleeps, us (0-10000; default 50). */
    completionSpinUs?: number,
  ) => NativeDevice;
  /** The reference model on the device of `anchor` (any live buffer of that device). */
  ReferenceModel: new (device: NativeDevice, shape: NativeModelShape) => NativeReferenceModel;
  setErrorClass(cls: new (message: string, code: string) => Error): void;
  probeCuda(): NativeCudaProbe;
  /** Whether CUDA device `ordinal` takes wait-value gates; creates its context to try one. */
  probeCudaGate(ordinal: number): { available: boolean; reason: string };
  probeIoUring(): { available: boolean; reason: string };
  /** Blocking: creates, writes, reads and removes a probe file in `dir`. */
  probeDirect(dir: string): { supported: boolean; reason: string; alignment: number };
  probeGds(): { available: boolean; reason: string };
  /** CRC32C of `data` continuing from `seed`, on the calling thread. */
  crc32c(data: Uint8Array, seed: number): number;
  /** Checks and keeps a batch (rows as copyBatch takes them) cut into groups at the row indices of `groups`. */
  /** With `steps` (one per number of `pieces`): `repeat` copies of the pieces, copy k each number plus k steps. */
  prepareBatch(dsts: NativeBuffer[], srcs: NativeBuffer[], pieces: Float64Array, groups: Uint32Array, steps?: Float64Array, repeat?: number): NativeBatch;
  /** Creates `path` (0600) and holds an exclusive flock on it; returns the fd. ERR_BUSY when held elsewhere. */
  holdLock(path: string): number;
  /** Unlocks and closes a lock taken by holdLock. */
  releaseLock(fd: number): void;
  /** Whether an exclusive flock is held on `path` (false when it does not exist). */
  lockHeld(path: string): boolean;
  /** 'sse4.2', 'armv8-crc' or 'table'. */
  readonly crc32cImplementation: string;
  readonly abiVersion: number;
  readonly cudaCompiled: boolean;
}
