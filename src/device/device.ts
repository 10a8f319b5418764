/**
 * Opening a device (CUDA GPU or the CPU stand-in), allocating memory and
 * making streams. Files (`device.openFile`) and KV caches
 * (`device.allocKvCache`) are made by the io and layout layers, which add
 * those methods to Device.
 */
import { loadBinding } from '../binding/load.js';
import type { NativeDevice, NativeDeviceInfo } from '../binding/types.js';
import { readConfig, type BackendRequest, type CudaGateRequest, type KvflowDefaults } from '../defaults.js';
import { fail } from '../errors.js';
import { choice, type Choice } from '../util/choice.js';
import { channels } from '../util/diagnostics.js';
import { Disposable, DisposeOrder, type AsyncDisposableLike, type Detach } from '../util/disposable.js';
import { checkAddress, checkChoice, checkKnownOptions, checkOptions, checkPositiveSize, checkSize } from '../util/validate.js';
import { DeviceBuffer, HostBuffer, PinnedBuffer } from './buffer.js';
import { Completions } from './completions.js';
import { RecordedEvents } from './recorded.js';
import { Stream, type StreamOptions } from './stream.js';

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

/** Which backend was chosen, and why; `backend` repeats `chosen`. */
export interface BackendSelection extends Choice<Backend, BackendRequest> {
  readonly backend: Backend;
}

/** How CUDA streams of a device wait on gates, and why; `chosen` is `none` on the CPU backend. */
export type CudaGateChoice = Choice<'host' | 'wait-value' | 'none', CudaGateRequest>;

/** What `device.info()` reports. Fields that do not apply are 0 or empty. */
export interface DeviceInfo extends NativeDeviceInfo {
  selection: BackendSelection;
  /** Pinned pool usage. */
  pinned: PinnedPoolStats;
  /** The addon in use. */
  addon: { path: string; build: string; cudaCompiled: boolean };
  /** The configuration the device runs with (`device.config`). */
  config: KvflowDefaults;
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
const BACKENDS: readonly BackendRequest[] = ['auto', 'cuda', 'cpu'];

function selection(requested: BackendRequest, backend: Backend, reason: string): BackendSelection {
  return Object.freeze({ ...choice(requested, backend, reason), backend });
}

/** Decides the backend for a request; `auto` never throws for a missing GPU. */
export function selectBackend(requested: BackendRequest): BackendSelection {
  checkChoice(requested, 'backend', BACKENDS);
  const { binding } = loadBinding();
  if (requested === 'cpu') return selection(requested, 'cpu', 'the CPU backend was requested');
  const probe = binding.probeCuda();
  if (requested === 'cuda') {
    if (!probe.available) fail('ERR_UNSUPPORTED', `the CUDA backend cannot be used: ${probe.reason}`);
    return selection(requested, 'cuda', 'the CUDA backend was requested');
  }
  if (probe.available) {
    return selection(requested, 'cuda', `a CUDA device is available (${probe.deviceCount} visible)`);
  }
  return selection(requested, 'cpu', `no usable CUDA device: ${probe.reason}`);
}

/** Native gate modes, by index. */
const CUDA_GATE_MODES: readonly CudaGateRequest[] = ['host', 'wait-value', 'auto'];

/**
 * Opens a device. Synchronous: creating a CUDA context takes a moment once.
 * The environment (`KVFLOW_*`) is read and validated here, once: a bad
 * variable throws ERR_INVALID_ARG naming it, and the device runs with the
 * frozen result (`device.config`), options winning over it. Close the
 * device with `dispose()` (or `await using`).
 */
export function openDevice(options: OpenDeviceOptions = {}): Device {
  options = checkKnownOptions(options, 'options', ['backend', 'ordinal', 'maxPinnedBytes', 'cudaGate']) as OpenDeviceOptions;
  const env = readConfig(process.env);
  const backend = checkChoice(options.backend ?? env.backend, 'backend', BACKENDS);
  const ordinal = checkSize(options.ordinal ?? env.ordinal, 'ordinal');
  const maxPinnedBytes = checkSize(options.maxPinnedBytes ?? env.maxPinnedBytes, 'maxPinnedBytes');
  const cudaGate = checkChoice(options.cudaGate ?? env.cudaGate, 'cudaGate', CUDA_GATE_MODES);
  const config: KvflowDefaults = Object.freeze({ ...env, backend, ordinal, maxPinnedBytes, cudaGate });
  const selection = selectBackend(backend);
  if (selection.requested === 'auto' && selection.backend === 'cpu' && channels.fallback.hasSubscribers) channels.fallback.publish({ what: 'backend', requested: 'auto', chosen: 'cpu', reason: selection.reason });
  if (selection.backend === 'cpu' && options.ordinal !== undefined && options.ordinal !== 0) {
    fail('ERR_OUT_OF_RANGE', `expected ordinal 0 for the CPU backend (it has one device), got ${options.ordinal}`);
  }
  return new Device(selection, config);
}

/**
 * A GPU (or the CPU stand-in). Owns what is made on it: disposing the device
 * disposes, in order, objects adopted with {@link Device.adopt} (stores), KV
 * caches and prepared transfers, files, streams (after their work) and
 * buffers, then the device itself.
 */
export class Device extends Disposable {
  #native: NativeDevice | undefined;
  /** @internal */
  readonly completions = new Completions();
  /** @internal The events recorded on its streams (their ids in the addon, wrapped). */
  readonly recorded: RecordedEvents;
  protected readonly resourceName = 'device';
  /** The backend in use. */
  readonly backend: Backend;
  /** What was asked for, what was chosen, and why. */
  readonly selection: BackendSelection;
  /**
   * The configuration this device runs with: built-in defaults, the
   * `KVFLOW_*` environment read once when the device opened, and the
   * options of {@link openDevice} over both. Frozen. Objects made on the
   * device (files, caches, stores) take their defaults from it; their own
   * options win for them.
   */
  readonly config: KvflowDefaults;

  /** @internal Use {@link openDevice}. */
  constructor(selection: BackendSelection, config: KvflowDefaults) {
    super();
    const { binding } = loadBinding();
    this.selection = selection;
    this.backend = selection.backend;
    this.config = config;
    const gate = CUDA_GATE_MODES.indexOf(config.cudaGate);
    this.#native = new binding.Device(selection.backend, config.ordinal, config.maxPinnedBytes, this.completions.onBatch, gate, config.completionSpinUs);
    this.completions.attach(this.#native, config.completionSpinUs, config.shortWaitUs);
    this.recorded = new RecordedEvents(this.#native);
  }

  /** @internal The native device, or ERR_DISPOSED (for the io and layout layers). */
  get native(): NativeDevice {
    this.assertLive();
    if (!this.#native) fail('ERR_DISPOSED', 'device is disposed');
    return this.#native;
  }

  /** Device facts: name, memory, compute capability, PCIe link, versions (CPU: cores, memory). */
  info(): DeviceInfo {
    const native = this.native;
    const { path, build, binding } = loadBinding();
    return {
      ...native.info(),
      selection: this.selection,
      pinned: native.poolStats(),
      addon: { path, build, cudaCompiled: binding.cudaCompiled },
      config: this.config,
    };
  }

  /** How this device's CUDA streams wait on gates: what was asked for, what is used, and why. */
  cudaGate(): CudaGateChoice {
    const info = this.native.info();
    if (info.cudaGate === '') return choice(this.config.cudaGate, 'none', 'the CPU backend waits on gates on its own threads');
    return choice(this.config.cudaGate, info.cudaGate, info.cudaGateReason);
  }

  /** Device memory of `bytes` bytes (contents undefined). ERR_OUT_OF_MEMORY when it cannot be had. */
  allocDevice(bytes: number): DeviceBuffer {
    checkPositiveSize(bytes, 'bytes');
    return this.#buffer(new DeviceBuffer(this.native.alloc(0, bytes), this, true));
  }

  /** Pinned host memory from the pool (reused across dispose/alloc; contents undefined). */
  allocPinned(bytes: number): PinnedBuffer {
    checkPositiveSize(bytes, 'bytes');
    return this.#buffer(new PinnedBuffer(this.native.alloc(1, bytes), this, true));
  }

  /** Pageable host memory, 4 KiB aligned (contents undefined). */
  allocHost(bytes: number): HostBuffer {
    checkPositiveSize(bytes, 'bytes');
    return this.#buffer(new HostBuffer(this.native.alloc(2, bytes), this, true));
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
    return this.#buffer(new DeviceBuffer(this.native.wrap(address, bytes), this, false));
  }

  /** A new stream owned by kvflow. */
  createStream(options: StreamOptions = {}): Stream {
    options = checkKnownOptions(options, 'options', ['priority']) as StreamOptions;
    const priority = checkChoice(options.priority ?? 'normal', 'priority', ['normal', 'high'] as const);
    const stream = new Stream(this.native.createStream(priority === 'high' ? 1 : 0), this, priority, true);
    this.own(stream, DisposeOrder.streams);
    return stream;
  }

  /**
   * Wraps a runtime's own CUDA stream (a cudaStream_t as a bigint) so kvflow's
   * events order its kernels. kvflow never destroys it. CUDA backend only.
   */
  wrapStreamUnsafe(handle: bigint): Stream {
    checkAddress(handle, 'handle');
    const stream = new Stream(this.native.wrapStream(handle), this, 'normal', false);
    // Disposed before the device's own streams: it may wrap the handle of
    // one, which must not be destroyed while the wrap still waits on it.
    this.own(stream, DisposeOrder.wrappedStreams);
    return stream;
  }

  /** Pinned pool usage. */
  pinnedStats(): PinnedPoolStats {
    return this.native.poolStats();
  }

  /** Releases pinned memory the pool keeps for reuse. */
  trimPinned(): void {
    this.native.trimPool();
  }

  /** @internal Test hook (see device/testing.ts). */
  holdCompletions(): () => void {
    return this.native.holdCompletions();
  }

  /**
   * Makes `child` part of this device: `device.dispose()` disposes it
   * (`child[Symbol.asyncDispose]()`, or `dispose()` for kvflow objects)
   * before anything else of the device, and waits for it. Call the returned
   * function when the child closes on its own, so the device lets go of it.
   * A KvStore registers itself this way. ERR_DISPOSED once the device is
   * disposed.
   */
  adopt(child: AsyncDisposableLike): Detach {
    if (typeof child !== 'object' || child === null || typeof child[Symbol.asyncDispose] !== 'function') {
      fail('ERR_INVALID_ARG', 'expected an object with a [Symbol.asyncDispose]() method for child');
    }
    this.assertLive();
    return this.own(child, DisposeOrder.adopted);
  }

  /**
   * @internal Registers a child made on this device by another layer (a
   * file, a KV cache) at its rank in {@link DisposeOrder}.
   */
  attach(child: AsyncDisposableLike, order: number): Detach {
    this.assertLive();
    return this.own(child, order);
  }

  #buffer<T extends DeviceBuffer | PinnedBuffer | HostBuffer>(buffer: T): T {
    this.own(buffer, DisposeOrder.buffers);
    return buffer;
  }

  /**
   * Closes the native device once every child is disposed (see the class
   * comment for the order): with `wait: false`, `dispose()` rejects with
   * ERR_BUSY and disposes nothing when work is in flight.
   */
  protected disposeSelf(): void {
    this.#native?.close(false);
    this.#native = undefined;
  }
}
