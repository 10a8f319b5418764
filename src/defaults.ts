/**
 * Every default in one place ({@link BUILT_IN_DEFAULTS}). The environment
 * (`KVFLOW_*`) is read and validated once per device, when it opens, into a
 * frozen config (`device.config`); options passed to an API win over it for
 * the object they make. `kvflow doctor` prints the config in force.
 */
import { checkBlockMultiple, checkChoice, checkInteger, invalidParameterError } from './util/validate.js';

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

/** Defaults of a KvStore (see `KvStoreOptions`); no variable sets them: options do, per store. */
export interface StoreDefaults {
  /** Tokens per chunk, a multiple of the layout's blockTokens. */
  readonly chunkTokens: number;
  /** Pinned DRAM tier capacity in bytes (grown on demand). */
  readonly dramBytes: number;
  readonly preallocateDram: boolean;
  /** NVMe tier capacity in bytes, used when the directory is created. */
  readonly nvmeBytes: number;
  /** Largest slab file, in bytes. */
  readonly slabFileBytes: number;
  /** Which chunks go to NVMe. */
  readonly admit: 'hit-or-twice' | 'always' | 'never';
  /** Chunks queued for NVMe at most; more are not written (counted as `demoteDropped`). */
  readonly demoteBacklog: number;
  /** Planned DRAM loads kept per store (each a prepared transfer of every layer), least recently used dropped first. */
  readonly preparedLoads: number;
  /** Loads of more chunks than this are planned per call (a plan's piece table grows with chunks x layers). */
  readonly preparedMaxChunks: number;
  /** Chunks written to NVMe in one batch (one fsync, one index commit) at most. */
  readonly writeBatchChunks: number;
  /** Bytes written to NVMe in one batch at most (at least one chunk is). */
  readonly writeBatchBytes: number;
  /** Milliseconds between flushes of chunk uses to the index (uses are hints). */
  readonly touchFlushMs: number;
  /** Seconds a hit's lease keeps its chunks from eviction by any process of the directory. */
  readonly leaseSeconds: number;
  /** What opening a damaged index does: fail, or set it aside and start empty. */
  readonly onCorruptIndex: 'fail' | 'reset';
}

/** The configuration in force: built-in values with `KVFLOW_*` variables over them. Frozen. */
export interface KvflowDefaults {
  /** `KVFLOW_BACKEND`: backend that {@link openDevice} uses when none is given. */
  readonly backend: BackendRequest;
  /** `KVFLOW_DEVICE`: CUDA device ordinal. */
  readonly ordinal: number;
  /** `KVFLOW_MAX_PINNED_BYTES`: cap on pinned host memory per device, 0 for none but the system's. */
  readonly maxPinnedBytes: number;
  /**
   * `KVFLOW_IO_ENGINE`: engine of files opened without one. `posix` by
   * default: it works on every kernel and in every container, and with
   * large tasks it is disk-bound, not syscall-bound; io_uring saves threads
   * and syscalls (ask for it, or `auto`).
   */
  readonly ioEngine: IoEngineRequest;
  /** `KVFLOW_IO_DIRECT`: direct IO of files opened without a `direct` option. */
  readonly ioDirect: DirectRequest;
  /**
   * `KVFLOW_IO_THREADS` (1-1024): threads of the posix engine, i.e. tasks in
   * flight. 8 x 4 MiB keeps 32 MiB queued; the kernel splits each task into
   * many device requests, so that is a deep queue for one drive, while the
   * threads sleep in the kernel and cost no CPU. Not yet tuned on the GPU box.
   */
  readonly ioThreads: number;
  /**
   * `KVFLOW_IO_TASK_SIZE` (a multiple of 4096 up to 1 GiB): the largest piece
   * of a request one task moves. 4 MiB (kvikio's default too): a syscall's
   * few microseconds are about 1% of the 420 us such a task takes at 10 GB/s,
   * and a layer's extent of a few chunks still spreads over several threads.
   */
  readonly ioTaskSize: number;
  /** `KVFLOW_IO_QUEUE_DEPTH` (1-4096): io_uring tasks in flight; 32 x 4 MiB = 128 MiB queued at most. */
  readonly ioQueueDepth: number;
  /**
   * `KVFLOW_IO_BOUNCE_CHUNK` (a multiple of 4096 up to 1 GiB): bytes per
   * pinned bounce buffer of `stream.readFile`/`writeFile`. 8 MiB: two engine
   * tasks, large enough that the per-chunk hop costs under 1% at disk speed.
   */
  readonly ioBounceChunk: number;
  /** `KVFLOW_IO_BOUNCE_SLOTS` (1-64): bounce buffers in the ring; 4 keeps disk and copies both busy. */
  readonly ioBounceSlots: number;
  /** `KVFLOW_GDS`: GPUDirect Storage of files opened without a `gds` option. */
  readonly gds: DirectRequest;
  /** `KVFLOW_PAGED_ENGINE`: how paged gathers and scatters move on CUDA (see KvCache). */
  readonly pagedEngine: 'dma' | 'kernel';
  /**
   * `KVFLOW_CUDA_GATE`: how CUDA streams of devices opened without a
   * `cudaGate` option wait on gates. `host` until wait-value has been
   * measured on the GPU box; `wait-value` fails to open a device that cannot
   * take it, `auto` says in `info().cudaGateReason` why it fell back.
   */
  readonly cudaGate: CudaGateRequest;
  /**
   * `KVFLOW_COMPLETION_SPIN_US` (0-10000): for this long after a wait on an
   * event begins, the event loop also checks it on each of its turns (a
   * short operation is seen done without waiting for the completion thread's
   * wake-up of the loop; the loop keeps turning, other work runs between the
   * checks); past it, only the completion thread's notice settles it. The
   * CUDA completion thread likewise keeps looking for new work this long
   * after its last completion before it sleeps. 0 turns both off.
   */
  readonly completionSpinUs: number;
  /**
   * `KVFLOW_SHORT_WAIT_US` (0-1000): how long `event.done()` looks for the
   * event's completion on the spot, blocking the JS thread, when nothing
   * else of the device is waited on (a short copy awaited alone then settles
   * without a turn of the event loop). After a look that ran out, the next
   * 64 such waits go without one. 0 turns it off.
   */
  readonly shortWaitUs: number;
  /** Defaults of a KvStore opened on the device. */
  readonly store: StoreDefaults;
}

const MiB = 1 << 20;
const GiB = 1 << 30;

/** Limits the native IO engines enforce too (`native/src/io/engine.cc`). */
export const IO_LIMITS = Object.freeze({ maxThreads: 1024, maxQueueDepth: 4096, maxTaskSize: GiB, maxBounceSlots: 64 });

/** Every built-in default, in one literal. */
export const BUILT_IN_DEFAULTS: KvflowDefaults = deepFreeze({
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
  completionSpinUs: 50,
  shortWaitUs: 20,
  store: {
    chunkTokens: 256,
    dramBytes: GiB,
    preallocateDram: false,
    nvmeBytes: 4 * GiB,
    slabFileBytes: 4 * GiB,
    admit: 'hit-or-twice',
    demoteBacklog: 64,
    preparedLoads: 8,
    preparedMaxChunks: 1024,
    writeBatchChunks: 64,
    writeBatchBytes: 512 * MiB,
    touchFlushMs: 1000,
    leaseSeconds: 60,
    onCorruptIndex: 'fail',
  },
});

function deepFreeze<T extends object>(value: T): T {
  for (const v of Object.values(value)) if (typeof v === 'object' && v !== null) deepFreeze(v as object);
  return Object.freeze(value);
}

/** The environment a config is read from. */
export type Environment = Readonly<Record<string, string | undefined>>;

/**
 * Reads and validates `KVFLOW_*` variables of `env` over the built-in
 * defaults into a frozen config. A bad variable is a KvflowError
 * (ERR_INVALID_ARG) that names it.
 */
export function readConfig(env: Environment = process.env): KvflowDefaults {
  const raw = (name: string): string | undefined => {
    const v = env[name];
    return v === undefined || v === '' ? undefined : v;
  };
  const integer = (name: string, fallback: number, min = 0, max = Number.MAX_SAFE_INTEGER): number => {
    const v = raw(name);
    if (v === undefined) return fallback;
    const n = /^[0-9]+$/.test(v.trim()) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n)) throw invalidParameterError(name, 'a non-negative integer', v);
    return checkInteger(n, name, min, max);
  };
  const choice = <T extends string>(name: string, fallback: T, choices: readonly T[]): T => {
    const v = raw(name);
    return v === undefined ? fallback : checkChoice(v, name, choices);
  };
  const b = BUILT_IN_DEFAULTS;
  return deepFreeze({
    backend: choice('KVFLOW_BACKEND', b.backend, ['auto', 'cuda', 'cpu'] as const),
    ordinal: integer('KVFLOW_DEVICE', b.ordinal),
    maxPinnedBytes: integer('KVFLOW_MAX_PINNED_BYTES', b.maxPinnedBytes),
    ioEngine: choice('KVFLOW_IO_ENGINE', b.ioEngine, ['auto', 'posix', 'io_uring'] as const),
    ioDirect: choice('KVFLOW_IO_DIRECT', b.ioDirect, ['auto', 'on', 'off'] as const),
    ioThreads: integer('KVFLOW_IO_THREADS', b.ioThreads, 1, IO_LIMITS.maxThreads),
    ioTaskSize: checkBlockMultiple(integer('KVFLOW_IO_TASK_SIZE', b.ioTaskSize), 'KVFLOW_IO_TASK_SIZE', IO_LIMITS.maxTaskSize),
    ioQueueDepth: integer('KVFLOW_IO_QUEUE_DEPTH', b.ioQueueDepth, 1, IO_LIMITS.maxQueueDepth),
    ioBounceChunk: checkBlockMultiple(integer('KVFLOW_IO_BOUNCE_CHUNK', b.ioBounceChunk), 'KVFLOW_IO_BOUNCE_CHUNK', IO_LIMITS.maxTaskSize),
    ioBounceSlots: integer('KVFLOW_IO_BOUNCE_SLOTS', b.ioBounceSlots, 1, IO_LIMITS.maxBounceSlots),
    gds: choice('KVFLOW_GDS', b.gds, ['auto', 'on', 'off'] as const),
    pagedEngine: choice('KVFLOW_PAGED_ENGINE', b.pagedEngine, ['dma', 'kernel'] as const),
    cudaGate: choice('KVFLOW_CUDA_GATE', b.cudaGate, ['host', 'wait-value', 'auto'] as const),
    completionSpinUs: integer('KVFLOW_COMPLETION_SPIN_US', b.completionSpinUs, 0, 10_000),
    shortWaitUs: integer('KVFLOW_SHORT_WAIT_US', b.shortWaitUs, 0, 1000), // the addon's bound too (EventWrap::Watch)
    store: { ...b.store },
  });
}

/**
 * The defaults the environment gives now (read and validated at each call;
 * ERR_INVALID_ARG names a bad variable). Devices read it once, when they
 * open: use `device.config` for what a device runs with.
 */
export function defaults(): KvflowDefaults {
  return readConfig(process.env);
}

