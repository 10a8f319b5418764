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
  watch(): NativeEventStatus;
  status(): NativeEventStatus;
  error(): Error | undefined;
}

export interface NativeStream {
  copy(dst: NativeBuffer, dstOffset: number, src: NativeBuffer, srcOffset: number, bytes: number): void;
  /** pieces: [dst, dstOffset, src, srcOffset, bytes] per piece; engine 0 dma, 1 kernel. */
  copyBatch(dsts: NativeBuffer[], srcs: NativeBuffer[], pieces: Float64Array, engine: number): void;
  busy(iterations: number): void;
  record(): NativeEvent;
  waitEvent(event: NativeEvent): void;
  idle(): boolean;
  readonly handle: bigint;
  hold(): () => void;
  injectFailure(code: string, message: string): void;
  close(abandon: boolean): void;
}

export interface NativeDevice {
  info(): NativeDeviceInfo;
  alloc(kind: NativeKind, bytes: number): NativeBuffer;
  wrap(address: bigint, bytes: number): NativeBuffer;
  createStream(priority: number): NativeStream;
  wrapStream(handle: bigint): NativeStream;
  poolStats(): NativePoolStats;
  trimPool(): void;
  ref(): void;
  unref(): void;
  nextId(): number;
  close(abandon: boolean): void;
}

export interface NativeBinding {
  Device: new (
    backend: 'cpu' | 'cuda',
    ordinal: number,
    maxPinnedBytes: number,
    onCompletions: (ids: number[]) => void,
  ) => NativeDevice;
  setErrorClass(cls: new (message: string, code: string) => Error): void;
  probeCuda(): NativeCudaProbe;
  readonly abiVersion: number;
  readonly cudaCompiled: boolean;
}
