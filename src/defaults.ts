/**
 * Every default in one place. Options passed to an API win over `KVFLOW_*`
 * environment variables, which win over these values; `kvflow doctor` and
 * `device.info()` echo what is in force.
 */
import { describe, fail } from './errors.js';

/** The requested backend: `auto` picks CUDA when a device can be opened, else the CPU backend. */
export type BackendRequest = 'auto' | 'cuda' | 'cpu';

/** The requested file IO engine: `auto` picks io_uring where the kernel allows it, else posix. */
export type IoEngineRequest = 'auto' | 'posix' | 'io_uring';

/**
 * Direct IO (O_DIRECT, bypassing the page cache): `auto` uses it where a probe
 * in the file's directory succeeds and says why not elsewhere, `on` fails with
 * ERR_UNSUPPORTED where it cannot work, `off` never uses it.
 */
export type DirectRequest = 'auto' | 'on' | 'off';

/**
 * How a CUDA stream waits for a host-side gate (a file read landing, say):
 * `host` blocks a CUDA host function until the gate opens; `wait-value` has
 * the GPU wait on a flag in mapped host memory (cuStreamWaitValue32) that
 * opening the gate sets, so no CUDA host thread is held and enqueuing never
 * blocks on pending host functions; `auto` uses wait-value where the device
 * takes it, else host. The CPU backend ignores it.
 */
export type CudaGateRequest = 'host' | 'wait-value' | 'auto';

/** Defaults in force, after environment overrides. */
export interface KvflowDefaults {
  /** `KVFLOW_BACKEND`: backend that {@link openDevice} uses when none is given. */
  backend: BackendRequest;
  /** `KVFLOW_DEVICE`: CUDA device ordinal. */
  ordinal: number;
  /** `KVFLOW_MAX_PINNED_BYTES`: cap on pinned host memory per device, 0 for none but the system's. */
  maxPinnedBytes: number;
  /**
   * `KVFLOW_IO_ENGINE`: engine of files opened without one. `posix` by
   * default: it works on every kernel and in every container, and with
   * large tasks it is disk-bound, not syscall-bound; io_uring saves threads
   * and syscalls (ask for it, or `auto`).
   */
  ioEngine: IoEngineRequest;
  /** `KVFLOW_IO_DIRECT`: direct IO of files opened without a `direct` option. */
  ioDirect: DirectRequest;
  /**
   * `KVFLOW_IO_THREADS` (1-1024): threads of the posix engine, i.e. tasks in
   * flight. 8 x 4 MiB keeps 32 MiB queued; the kernel splits each task into
   * many device requests, so that is a deep queue for one drive, while the
   * threads sleep in the kernel and cost no CPU. Not yet tuned on the GPU box.
   */
  ioThreads: number;
  /**
   * `KVFLOW_IO_TASK_SIZE` (a multiple of 4096 up to 1 GiB): the largest piece
   * of a request one task moves. 4 MiB (kvikio's default too): a syscall's
   * few microseconds are about 1% of the 420 us such a task takes at 10 GB/s,
   * and a layer's extent of a few chunks still spreads over several threads.
   */
  ioTaskSize: number;
  /** `KVFLOW_IO_QUEUE_DEPTH` (1-4096): io_uring tasks in flight; 32 x 4 MiB = 128 MiB queued at most. */
  ioQueueDepth: number;
  /**
   * `KVFLOW_IO_BOUNCE_CHUNK` (a multiple of 4096): bytes per pinned bounce
   * buffer of `stream.readFile`/`writeFile`. 8 MiB: two engine tasks, large
   * enough that the per-chunk hop costs under 1% at disk speed.
   */
  ioBounceChunk: number;
  /** `KVFLOW_IO_BOUNCE_SLOTS` (1-64): bounce buffers in the ring; 4 keeps disk and copies both busy. */
  ioBounceSlots: number;
  /** `KVFLOW_GDS`: GPUDirect Storage of files opened without a `gds` option. */
  gds: DirectRequest;
  /** `KVFLOW_PAGED_ENGINE`: how paged gathers and scatters move on CUDA (see KvCache). */
  pagedEngine: 'dma' | 'kernel';
  /**
   * `KVFLOW_CUDA_GATE`: how CUDA streams of devices opened without a
   * `cudaGate` option wait on gates. `host` until wait-value has been
   * measured on the GPU box; `wait-value` fails to open a device that cannot
   * take it, `auto` says in `info().cudaGateReason` why it fell back.
   */
  cudaGate: CudaGateRequest;
}

const MiB = 1 << 20;

const BUILT_IN: KvflowDefaults = {
  backend: 'auto',
  ordinal: 0,
  maxPinnedBytes: 0,
  ioEngine: 'posix',
  ioDirect: 'auto',
  ioThreads: 8,
  ioTaskSize: 4 * MiB,
  ioQueueDepth: 32,
  ioBounceChunk: 8 * MiB,
  ioBounceSlots: 4,
  gds: 'auto',
  pagedEngine: 'dma',
  cudaGate: 'host',
};

function envInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) {
    fail('ERR_INVALID_ARG', `expected a non-negative integer for ${name}, got ${describe(raw)}`);
  }
  return value;
}

function envCount(name: string, fallback: number, max: number): number {
  const value = envInteger(name, fallback);
  if (value < 1 || value > max) fail('ERR_INVALID_ARG', `expected an integer from 1 to ${max} for ${name}, got ${value}`);
  return value;
}

function envChoice<T extends string>(name: string, fallback: T, choices: readonly T[]): T {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!(choices as readonly string[]).includes(raw)) {
    fail('ERR_INVALID_ARG', `expected ${choices.map((c) => `'${c}'`).join(', ')} for ${name}, got ${describe(raw)}`);
  }
  return raw as T;
}

/** A task size the engines accept: a positive multiple of 4096 up to 1 GiB. */
function checkTaskSize(value: number, name: string): number {
  if (value < 4096 || value > 1024 * MiB || value % 4096 !== 0) {
    fail('ERR_INVALID_ARG', `expected a multiple of 4096 from 4096 to 1073741824 for ${name}, got ${value}`);
  }
  return value;
}

/** The defaults in force now (environment read at each call). */
export function defaults(): KvflowDefaults {
  const backend = process.env.KVFLOW_BACKEND ?? BUILT_IN.backend;
  if (backend !== 'auto' && backend !== 'cuda' && backend !== 'cpu') {
    fail('ERR_INVALID_ARG', `expected 'auto', 'cuda' or 'cpu' for KVFLOW_BACKEND, got ${describe(backend)}`);
  }
  const pagedEngine = process.env.KVFLOW_PAGED_ENGINE || BUILT_IN.pagedEngine;
  if (pagedEngine !== 'dma' && pagedEngine !== 'kernel') {
    fail('ERR_INVALID_ARG', `expected 'dma' or 'kernel' for KVFLOW_PAGED_ENGINE, got ${describe(pagedEngine)}`);
  }
  return {
    backend,
    pagedEngine,
    ordinal: envInteger('KVFLOW_DEVICE', BUILT_IN.ordinal),
    maxPinnedBytes: envInteger('KVFLOW_MAX_PINNED_BYTES', BUILT_IN.maxPinnedBytes),
    ioEngine: envChoice('KVFLOW_IO_ENGINE', BUILT_IN.ioEngine, ['auto', 'posix', 'io_uring'] as const),
    ioDirect: envChoice('KVFLOW_IO_DIRECT', BUILT_IN.ioDirect, ['auto', 'on', 'off'] as const),
    ioThreads: envCount('KVFLOW_IO_THREADS', BUILT_IN.ioThreads, 1024),
    ioTaskSize: checkTaskSize(envInteger('KVFLOW_IO_TASK_SIZE', BUILT_IN.ioTaskSize), 'KVFLOW_IO_TASK_SIZE'),
    ioQueueDepth: envCount('KVFLOW_IO_QUEUE_DEPTH', BUILT_IN.ioQueueDepth, 4096),
    ioBounceChunk: checkTaskSize(envInteger('KVFLOW_IO_BOUNCE_CHUNK', BUILT_IN.ioBounceChunk), 'KVFLOW_IO_BOUNCE_CHUNK'),
    ioBounceSlots: envCount('KVFLOW_IO_BOUNCE_SLOTS', BUILT_IN.ioBounceSlots, 64),
    gds: envChoice('KVFLOW_GDS', BUILT_IN.gds, ['auto', 'on', 'off'] as const),
    cudaGate: envChoice('KVFLOW_CUDA_GATE', BUILT_IN.cudaGate, ['host', 'wait-value', 'auto'] as const),
  };
}
