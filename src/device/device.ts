/** Opening a device (CUDA GPU or the CPU stand-in), allocating memory and making streams. */
import { loadBinding } from '../binding/load.js';
import type { NativeDevice, NativeDeviceInfo } from '../binding/types.js';
import { defaults, type BackendRequest, type CudaGateRequest } from '../defaults.js';
import { KvflowError, describe, fail } from '../errors.js';
import { DeviceIo } from '../io/engine.js';
import type { KvFile, OpenFileOptions } from '../io/file.js';
import { DeviceBuffer, HostBuffer, KvBuffer, PinnedBuffer, type DisposeOptions } from './buffer.js';
import { Completions } from './completions.js';
import { Stream, type StreamOptions } from './stream.js';
import { KvLayout, type KvLayoutSpec } from '../layout/layout.js';
import { KvCache, allocKvCache, wrapKvCache } from '../layout/kvcache.js';
import { checkAddress, checkPositiveSize, checkSize } from './validate.js';

/** The backend a device runs on. */
export type Backend = 'cuda' | 'cpu';

/** Options of {@link openDevice}; each falls back to its `KVFLOW_*` variable, then to the built-in default. */
export interface OpenDeviceOptions {
  /** `auto` (default): CUDA when a device can be opened, else CPU, saying why. `cuda` fails with the reason instead of falling back. */
  backend?: BackendRequest;
  /** CUDA device ordinal (default 0). */
  ordinal?: number;
  /** Cap on pinned host memory held by this device (in use plus pooled), 0 for no cap but the system's. */
  maxPinnedBytes?: number;
  /**
   * How CUDA streams wait on host-side gates (see {@link CudaGateRequest});
   * `info().cudaGate` says which is in use and `cudaGateReason` why. The CPU
   * backend ignores it.
   */
  cudaGate?: CudaGateRequest;
}

/** Which backend was chosen, and why. */
export interface BackendSelection {
  requested: BackendRequest;
  backend: Backend;
  reason: string;
}

/** What `device.info()` reports. Fields that do not apply are 0 or empty. */
export interface DeviceInfo extends NativeDeviceInfo {
  selection: BackendSelection;
  /** Pinned pool usage. */
  pinned: PinnedPoolStats;
  /** The addon in use. */
  addon: { path: string; build: string; cudaCompiled: boolean };
}

/** Pinned pool usage of one device. */
export interface PinnedPoolStats {
  inUseBytes: number;
  cachedBytes: number;
  limitBytes: number;
  allocations: number;
  reuses: number;
}

/** Decides the backend for a request; `auto` never throws for a missing GPU. */
export function selectBackend(requested: BackendRequest): BackendSelection {
  const { binding } = loadBinding();
  if (requested === 'cpu') return { requested, backend: 'cpu', reason: 'the CPU backend was requested' };
  const probe = binding.probeCuda();
  if (requested === 'cuda') {
    if (!probe.available) fail('ERR_UNSUPPORTED', `the CUDA backend cannot be used: ${probe.reason}`);
    return { requested, backend: 'cuda', reason: 'the CUDA backend was requested' };
  }
  if (probe.available) {
    return { requested, backend: 'cuda', reason: `a CUDA device is available (${probe.deviceCount} visible)` };
  }
  return { requested, backend: 'cpu', reason: `no usable CUDA device: ${probe.reason}` };
}

/** Native gate modes, by index. */
const CUDA_GATE_MODES: readonly CudaGateRequest[] = ['host', 'wait-value', 'auto'];

/**
 * Opens a device. Synchronous: creating a CUDA context takes a moment once.
 * Close it with `dispose()` (or `await using`).
 */
export function openDevice(options: OpenDeviceOptions = {}): Device {
  const d = defaults();
  const requested = options.backend ?? d.backend;
  if (requested !== 'auto' && requested !== 'cuda' && requested !== 'cpu') {
    fail('ERR_INVALID_ARG', `expected 'auto', 'cuda' or 'cpu' for backend, got ${describe(requested)}`);
  }
  const ordinal = checkSize(options.ordinal ?? d.ordinal, 'ordinal');
  const maxPinnedBytes = checkSize(options.maxPinnedBytes ?? d.maxPinnedBytes, 'maxPinnedBytes');
  const cudaGate = options.cudaGate ?? d.cudaGate;
  const gateMode = CUDA_GATE_MODES.indexOf(cudaGate);
  if (gateMode < 0) {
    fail('ERR_INVALID_ARG', `expected 'host', 'wait-value' or 'auto' for cudaGate, got ${describe(cudaGate)}`);
  }
  const selection = selectBackend(requested);
  return new Device(selection, ordinal, maxPinnedBytes, gateMode);
}

/**
 * A GPU (or the CPU stand-in). Owns its streams and buffers: disposing the
 * device disposes them, waiting for work in flight.
 */
export class Device {
  #native: NativeDevice | undefined;
  readonly #children = new Set<KvBuffer | Stream>();
  #io: DeviceIo | undefined;
  /** @internal */
  readonly completions = new Completions();
  #disposing: Promise<void> | undefined;
  /** The backend in use. */
  readonly backend: Backend;
  /** What was asked for, what was chosen, and why. */
  readonly selection: BackendSelection;

  /** @internal Use {@link openDevice}. */
  constructor(selection: BackendSelection, ordinal: number, maxPinnedBytes: number, cudaGate: number) {
    const { binding } = loadBinding();
    this.selection = selection;
    this.backend = selection.backend;
    this.#native = new binding.Device(selection.backend, ordinal, maxPinnedBytes, this.completions.onBatch, cudaGate);
    this.completions.attach(this.#native);
  }

  get #live(): NativeDevice {
    if (!this.#native || this.#disposing) fail('ERR_DISPOSED', 'device is disposed');
    return this.#native;
  }

  /** True once `dispose()` was called. */
  get disposed(): boolean {
    return this.#disposing !== undefined;
  }

  /** Device facts: name, memory, compute capability, PCIe link, versions (CPU: cores, memory). */
  info(): DeviceInfo {
    const native = this.#live;
    const { path, build, binding } = loadBinding();
    return {
      ...native.info(),
      selection: this.selection,
      pinned: native.poolStats(),
      addon: { path, build, cudaCompiled: binding.cudaCompiled },
    };
  }

  /** Device memory of `bytes` bytes (contents undefined). ERR_OUT_OF_MEMORY when it cannot be had. */
  allocDevice(bytes: number): DeviceBuffer {
    checkPositiveSize(bytes, 'bytes');
    return this.#adopt(new DeviceBuffer(this.#live.alloc(0, bytes), this, true));
  }

  /** Pinned host memory from the pool (reused across dispose/alloc; contents undefined). */
  allocPinned(bytes: number): PinnedBuffer {
    checkPositiveSize(bytes, 'bytes');
    return this.#adopt(new PinnedBuffer(this.#live.alloc(1, bytes), this, true));
  }

  /** Pageable host memory, 4 KiB aligned (contents undefined). */
  allocHost(bytes: number): HostBuffer {
    checkPositiveSize(bytes, 'bytes');
    return this.#adopt(new HostBuffer(this.#live.alloc(2, bytes), this, true));
  }

  /**
   * Wraps device memory that a runtime already owns (a CUDA device pointer;
   * host memory on the CPU backend) so streams can copy to and from it with
   * bounds checks. kvflow never frees it; the caller keeps it alive until
   * the buffer is disposed and its operations completed.
   */
  wrapUnsafe(address: bigint, bytes: number): DeviceBuffer {
    checkAddress(address, 'address');
    checkPositiveSize(bytes, 'bytes');
    return this.#adopt(new DeviceBuffer(this.#live.wrap(address, bytes), this, false));
  }

  /** A KV cache in device memory for `layout` (a KvLayout or its spec): one buffer per layer, or one for block-major. */
  allocKvCache(layout: KvLayout | KvLayoutSpec): KvCache {
    void this.#live;
    return allocKvCache(this, layout instanceof KvLayout ? layout : new KvLayout(layout));
  }

  /**
   * A runtime's own KV cache: its buffers (from {@link Device.wrapUnsafe}) plus
   * the layout, so every block access is checked against both.
   */
  wrapKvCache(layout: KvLayout | KvLayoutSpec, buffers: DeviceBuffer[]): KvCache {
    void this.#live;
    return wrapKvCache(layout instanceof KvLayout ? layout : new KvLayout(layout), buffers);
  }

  /** A new stream owned by kvflow. */
  createStream(options: StreamOptions = {}): Stream {
    const priority = options.priority ?? 'normal';
    if (priority !== 'normal' && priority !== 'high') {
      fail('ERR_INVALID_ARG', `expected 'normal' or 'high' for priority, got ${describe(priority)}`);
    }
    return this.#adopt(new Stream(this.#live.createStream(priority === 'high' ? 1 : 0), this, priority, true));
  }

  /**
   * Wraps a runtime's own CUDA stream (a cudaStream_t as a bigint) so kvflow's
   * events order its kernels. kvflow never destroys it. CUDA backend only.
   */
  wrapStreamUnsafe(handle: bigint): Stream {
    checkAddress(handle, 'handle');
    return this.#adopt(new Stream(this.#live.wrapStream(handle), this, 'normal', false));
  }

  /**
   * Opens (or, with `create`, creates with mode 0600) a file for the NVMe
   * tier, once its engine is running and O_DIRECT was probed in its
   * directory; `file.info` says what was chosen and why.
   */
  async openFile(path: string, options: OpenFileOptions = {}): Promise<KvFile> {
    const native = this.#live;
    this.#io ??= new DeviceIo(native, this.completions, this.backend);
    return this.#io.open(path, options);
  }

  /** Pinned pool usage. */
  pinnedStats(): PinnedPoolStats {
    return this.#live.poolStats();
  }

  /** Releases pinned memory the pool keeps for reuse. */
  trimPinned(): void {
    this.#live.trimPool();
  }

  /** @internal Test hook (see device/testing.ts). */
  holdCompletions(): () => void {
    return this.#live.holdCompletions();
  }

  /** @internal */
  forget(child: object): void {
    this.#children.delete(child as KvBuffer | Stream);
  }

  #adopt<T extends KvBuffer | Stream>(child: T): T {
    this.#children.add(child);
    return child;
  }

  /**
   * Disposes every stream (after its work completes), then every file (after
   * its IO), then every buffer, then the device. With `wait: false`, rejects
   * with ERR_BUSY and disposes nothing when work is in flight. Idempotent.
   */
  dispose(options: DisposeOptions = {}): Promise<void> {
    if (this.#disposing) return this.#disposing;
    const native = this.#native;
    if (!native) return Promise.resolve();
    if (options.wait === false) {
      const busy =
        [...this.#children].some((c) => (c instanceof Stream ? !c.idle() : c.inFlight())) || this.#io?.busy() === true;
      if (busy) return Promise.reject(new KvflowError('device has work in flight', 'ERR_BUSY'));
    }
    this.#disposing = this.#teardown(native);
    return this.#disposing;
  }

  async #teardown(native: NativeDevice): Promise<void> {
    const children = [...this.#children];
    const streams = children.filter((c) => c instanceof Stream);
    // Wrapped streams first: one may wrap the handle of a stream of this device,
    // which must not be destroyed while the wrap still waits on it.
    await Promise.all(streams.filter((s) => !s.owned).map((s) => s.dispose()));
    await Promise.all(streams.filter((s) => s.owned).map((s) => s.dispose()));
    await this.#io?.dispose();
    await Promise.all(children.filter((c) => c instanceof KvBuffer).map((b) => b.dispose()));
    native.close(false);
    this.#native = undefined;
  }

  /** `await using` support. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.dispose();
  }
}
