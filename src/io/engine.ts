/**
 * The IO engines of one device and the files opened on them: engines are
 * made on first use with the defaults in force then, shared by every file of
 * the device, and closed with it.
 */
import type { NativeDevice, NativeDirectMode, NativeIoEngine } from '../binding/types.js';
import { defaults, type DirectRequest, type IoEngineRequest } from '../defaults.js';
import { KvflowError, describe, fail } from '../errors.js';
import type { Completions } from '../device/completions.js';
import { checkSize } from '../device/validate.js';
import { KvFile, type IoEngineKind, type OpenFileOptions } from './file.js';

const DIRECT_MODES: Record<DirectRequest, NativeDirectMode> = { auto: 0, on: 1, off: 2 };

/** An engine made for this device, with the settings it was made with. */
interface EngineEntry {
  native: NativeIoEngine;
  kind: IoEngineKind;
  threads: number;
  queueDepth: number;
}

/** Which engine a file uses, and why. */
interface EngineChoice {
  entry: EngineEntry;
  reason: string;
}

interface OpenArgs {
  path: string;
  create: boolean;
  direct: DirectRequest;
  engine: IoEngineRequest;
  size: number;
  gds: DirectRequest;
}

function checkOpenArgs(path: unknown, options: unknown): OpenArgs {
  if (typeof path !== 'string' || path.length === 0) {
    fail('ERR_INVALID_ARG', `expected a non-empty string for path, got ${describe(path)}`);
  }
  if (path.includes('\0')) fail('ERR_INVALID_ARG', 'expected a path without NUL bytes for path');
  if (typeof options !== 'object' || options === null) {
    fail('ERR_INVALID_ARG', `expected an options object for options, got ${describe(options)}`);
  }
  const o = options as OpenFileOptions;
  const d = defaults();
  const create = o.create ?? false;
  if (typeof create !== 'boolean') fail('ERR_INVALID_ARG', `expected a boolean for create, got ${describe(create)}`);
  const direct = o.direct ?? d.ioDirect;
  if (direct !== 'auto' && direct !== 'on' && direct !== 'off') {
    fail('ERR_INVALID_ARG', `expected 'auto', 'on' or 'off' for direct, got ${describe(direct)}`);
  }
  const engine = o.engine ?? d.ioEngine;
  if (engine !== 'auto' && engine !== 'posix' && engine !== 'io_uring') {
    fail('ERR_INVALID_ARG', `expected 'auto', 'posix' or 'io_uring' for engine, got ${describe(engine)}`);
  }
  const size = checkSize(o.size ?? 0, 'size');
  const gds = o.gds ?? d.gds;
  if (gds !== 'auto' && gds !== 'on' && gds !== 'off') {
    fail('ERR_INVALID_ARG', `expected 'auto', 'on' or 'off' for gds, got ${describe(gds)}`);
  }
  return { path, create, direct, engine, size, gds };
}

/** @internal Owned by a Device: its engines and open files. */
export class DeviceIo {
  readonly #device: NativeDevice;
  readonly completions: Completions;
  readonly #engines = new Map<IoEngineKind, EngineEntry>();
  readonly #files = new Set<KvFile>();
  readonly #opening = new Set<Promise<KvFile>>();
  #uringRefusal: string | undefined;

  readonly #backend: 'cuda' | 'cpu';

  constructor(device: NativeDevice, completions: Completions, backend: 'cuda' | 'cpu') {
    this.#device = device;
    this.completions = completions;
    this.#backend = backend;
  }

  /** Opens (or creates) a file; rejects with the engine's or the filesystem's reason. */
  open(path: string, options: OpenFileOptions): Promise<KvFile> {
    const opening = this.#open(path, options);
    this.#opening.add(opening);
    const forget = (): void => {
      this.#opening.delete(opening);
    };
    opening.then(forget, forget);
    return opening;
  }

  async #open(path: string, options: OpenFileOptions): Promise<KvFile> {
    const args = checkOpenArgs(path, options);
    // cuFile moves device memory: on the CPU backend there is none to move.
    const cpuGds = 'GPUDirect Storage needs the CUDA backend; the CPU backend moves files through host memory';
    if (this.#backend === 'cpu' && args.gds === 'on') fail('ERR_UNSUPPORTED', cpuGds);
    const gdsMode = this.#backend === 'cpu' ? DIRECT_MODES.off : DIRECT_MODES[args.gds];
    const { entry, reason } = this.#choose(args.engine);
    const [nativeFile, opened] = entry.native.open(args.path, args.create, DIRECT_MODES[args.direct], args.size, gdsMode);
    try {
      await this.completions.settle(opened);
    } catch (e) {
      nativeFile.close();
      throw e;
    }
    const n = nativeFile.info();
    const file = new KvFile(nativeFile, entry.native, this, {
      path: n.path,
      direct: n.direct,
      directRequested: args.direct,
      directReason: n.directReason,
      gds: n.gds,
      gdsRequested: args.gds,
      gdsReason: this.#backend === 'cpu' ? cpuGds : n.gdsReason,
      engine: entry.kind,
      engineRequested: args.engine,
      engineReason: reason,
      taskSize: entry.native.taskSize,
      threads: entry.threads,
      queueDepth: entry.queueDepth,
    });
    this.#files.add(file);
    return file;
  }

  #choose(requested: IoEngineRequest): EngineChoice {
    if (requested === 'posix') return { entry: this.#engine('posix'), reason: 'the posix engine was requested' };
    if (requested === 'io_uring') {
      try {
        return { entry: this.#engine('io_uring'), reason: 'the io_uring engine was requested' };
      } catch (e) {
        if (e instanceof KvflowError && e.code === 'ERR_UNSUPPORTED') {
          fail('ERR_UNSUPPORTED', `the io_uring engine cannot be used: ${e.message}`);
        }
        throw e;
      }
    }
    if (this.#uringRefusal === undefined) {
      try {
        return { entry: this.#engine('io_uring'), reason: 'io_uring works here (auto prefers it)' };
      } catch (e) {
        if (!(e instanceof KvflowError && e.code === 'ERR_UNSUPPORTED')) throw e;
        this.#uringRefusal = e.message;
      }
    }
    return { entry: this.#engine('posix'), reason: `io_uring cannot be used: ${this.#uringRefusal}` };
  }

  /** The device's engine of this kind, made with the defaults in force at first use. */
  #engine(kind: IoEngineKind): EngineEntry {
    const existing = this.#engines.get(kind);
    if (existing) return existing;
    const d = defaults();
    const native = this.#device.createIoEngine(kind, d.ioThreads, d.ioTaskSize, d.ioQueueDepth);
    const entry: EngineEntry =
      kind === 'posix'
        ? { native, kind, threads: d.ioThreads, queueDepth: d.ioThreads }
        : { native, kind, threads: 1, queueDepth: d.ioQueueDepth };
    this.#engines.set(kind, entry);
    return entry;
  }

  /** @internal */
  forget(child: object): void {
    this.#files.delete(child as KvFile);
  }

  /** True while a file is being opened or has IO in flight. */
  busy(): boolean {
    return this.#opening.size > 0 || [...this.#files].some((f) => f.inFlight());
  }

  /** Waits for opens, disposes every file (after its IO), then closes the engines. */
  async dispose(): Promise<void> {
    await Promise.allSettled([...this.#opening]);
    await Promise.all([...this.#files].map((f) => f.dispose()));
    for (const entry of this.#engines.values()) entry.native.close(false);
    this.#engines.clear();
  }
}
