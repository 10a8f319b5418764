/**
 * The IO engines of one device and the files opened on them: engines are
 * made on first use with the device's config, shared by every file of the
 * device, and closed with it (after its files and streams).
 */
import { stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';

import type { NativeDevice, NativeDirectMode, NativeIoEngine } from '../binding/types.js';
import type { DirectRequest, IoEngineRequest, KvflowDefaults } from '../defaults.js';
import { KvflowError, fail } from '../errors.js';
import type { Completions } from '../device/completions.js';
import { choice, type Choice } from '../util/choice.js';
import { channels, publishFileFallbacks } from '../util/diagnostics.js';
import { Disposable, DisposeOrder, type AsyncDisposableLike } from '../util/disposable.js';
import { checkBoolean, checkChoice, checkKnownOptions, checkOptions, checkSize, invalidParameterError, is } from '../util/validate.js';
import { KvFile, type IoEngineKind, type OpenFileOptions } from './file.js';

const DIRECT_MODES: Record<DirectRequest, NativeDirectMode> = { auto: 0, on: 1, off: 2 };
const DIRECT_REQUESTS: readonly DirectRequest[] = ['auto', 'on', 'off'];
const ENGINE_REQUESTS: readonly IoEngineRequest[] = ['auto', 'posix', 'io_uring'];

/** An engine made for this device, with the settings it was made with. */
interface EngineEntry {
  native: NativeIoEngine;
  kind: IoEngineKind;
  threads: number;
  queueDepth: number;
}

interface OpenArgs {
  path: string;
  create: boolean;
  direct: DirectRequest;
  engine: IoEngineRequest;
  size: number;
  gds: DirectRequest;
}

/** statfs magic numbers of the kernel's pseudo filesystems: their "files" are not storage. */
const PSEUDO_FS = new Map<number, string>([
  [0x9fa0, 'procfs'], [0x62656572, 'sysfs'], [0x1cd1, 'devpts'], [0x64626720, 'debugfs'], [0x74726163, 'tracefs'],
  [0x27e0eb, 'cgroup'], [0x63677270, 'cgroup2'], [0x73636673, 'securityfs'], [0xcafe4a11, 'bpf'],
]);

/** ERR_INVALID_ARG when `path` is a device or special file, or on a filesystem that stores no data (procfs, sysfs...). */
async function checkStorable(path: string): Promise<void> {
  let at = path;
  try {
    const st = await stat(path);
    // A directory is left to the open, which reports EISDIR as ERR_IO with its errno.
    if (!st.isFile() && !st.isDirectory()) fail('ERR_INVALID_ARG', `expected a regular file for path, got ${path} (a device or special file)`);
  } catch (e) {
    if (e instanceof KvflowError) throw e;
    at = dirname(path); // not there yet: judged by the directory it would be created in
  }
  try {
    const fs = await statfs(at);
    const pseudo = PSEUDO_FS.get(Number(fs.type));
    if (pseudo) fail('ERR_INVALID_ARG', `expected a file on a filesystem that stores data for path, got ${path} (on ${pseudo})`);
  } catch (e) {
    if (e instanceof KvflowError) throw e;
    // statfs unavailable or the directory missing: the open reports it.
  }
}

function checkOpenArgs(path: unknown, options: unknown, config: KvflowDefaults): OpenArgs {
  if (!is.nonEmptyString(path)) throw invalidParameterError('path', 'a non-empty string', path);
  if (path.includes('\0')) fail('ERR_INVALID_ARG', 'expected a path without NUL bytes for path');
  const o = checkKnownOptions(checkOptions(options), 'options', ['create', 'direct', 'engine', 'size', 'gds']) as OpenFileOptions;
  return {
    path,
    create: checkBoolean(o.create ?? false, 'create'),
    direct: checkChoice(o.direct ?? config.ioDirect, 'direct', DIRECT_REQUESTS),
    engine: checkChoice(o.engine ?? config.ioEngine, 'engine', ENGINE_REQUESTS),
    size: checkSize(o.size ?? 0, 'size'),
    gds: checkChoice(o.gds ?? config.gds, 'gds', DIRECT_REQUESTS),
  };
}

/** What a DeviceIo needs from its device. */
export interface IoDevice {
  readonly native: NativeDevice;
  readonly completions: Completions;
  readonly backend: 'cuda' | 'cpu';
  readonly config: KvflowDefaults;
}

/** @internal Owned by a Device (disposed with its files): its engines and open files. */
export class DeviceIo extends Disposable {
  readonly #device: NativeDevice;
  readonly completions: Completions;
  readonly #config: KvflowDefaults;
  readonly #engines = new Map<IoEngineKind, EngineEntry>();
  readonly #opening = new Set<Promise<KvFile>>();
  #uringRefusal: string | undefined;
  readonly #backend: 'cuda' | 'cpu';
  protected readonly resourceName = 'device IO';

  constructor(device: IoDevice) {
    super();
    this.#device = device.native;
    this.completions = device.completions;
    this.#backend = device.backend;
    this.#config = device.config;
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
    const args = checkOpenArgs(path, options, this.#config);
    await checkStorable(args.path);
    // cuFile moves device memory: on the CPU backend there is none to move.
    const cpuGds = 'GPUDirect Storage needs the CUDA backend; the CPU backend moves files through host memory';
    if (this.#backend === 'cpu' && args.gds === 'on') fail('ERR_UNSUPPORTED', cpuGds);
    const gdsMode = this.#backend === 'cpu' ? DIRECT_MODES.off : DIRECT_MODES[args.gds];
    const engine = this.#choose(args.engine);
    const entry = this.#engine(engine.chosen);
    const [nativeFile, opened] = entry.native.open(args.path, args.create, DIRECT_MODES[args.direct], args.size, gdsMode);
    try {
      await this.completions.settle(opened);
    } catch (e) {
      nativeFile.close();
      throw e;
    }
    const n = nativeFile.info();
    const direct = choice(args.direct, n.direct, n.directReason);
    const gds = choice(args.gds, n.gds, this.#backend === 'cpu' ? cpuGds : n.gdsReason);
    if (channels.fallback.hasSubscribers) publishFileFallbacks(n.path, engine, direct, this.#backend === 'cuda' ? gds : undefined);
    const file = new KvFile(nativeFile, entry.native, this, {
      path: n.path,
      direct: direct.chosen,
      directRequested: direct.requested,
      directReason: direct.reason,
      gds: gds.chosen,
      gdsRequested: gds.requested,
      gdsReason: gds.reason,
      engine: engine.chosen,
      engineRequested: engine.requested,
      engineReason: engine.reason,
      taskSize: entry.native.taskSize,
      threads: entry.threads,
      queueDepth: entry.queueDepth,
      choices: Object.freeze({ engine, direct, gds }),
    });
    try {
      this.own(file, 0);
    } catch (e) {
      nativeFile.close();
      throw e;
    }
    return file;
  }

  /** The engine a request gets, and why; makes the engines it tries. */
  #choose(requested: IoEngineRequest): Choice<IoEngineKind, IoEngineRequest> {
    if (requested === 'posix') return choice(requested, 'posix', 'the posix engine was requested');
    if (requested === 'io_uring') {
      try {
        this.#engine('io_uring');
      } catch (e) {
        if (e instanceof KvflowError && e.code === 'ERR_UNSUPPORTED') {
          fail('ERR_UNSUPPORTED', `the io_uring engine cannot be used: ${e.message}`);
        }
        throw e;
      }
      return choice(requested, 'io_uring', 'the io_uring engine was requested');
    }
    if (this.#uringRefusal === undefined) {
      try {
        this.#engine('io_uring');
        return choice(requested, 'io_uring', 'io_uring works here (auto prefers it)');
      } catch (e) {
        if (!(e instanceof KvflowError && e.code === 'ERR_UNSUPPORTED')) throw e;
        this.#uringRefusal = e.message;
      }
    }
    return choice(requested, 'posix', `io_uring cannot be used: ${this.#uringRefusal}`);
  }

  /** The device's engine of this kind, made with the device's config at first use. */
  #engine(kind: IoEngineKind): EngineEntry {
    const existing = this.#engines.get(kind);
    if (existing) return existing;
    const c = this.#config;
    const native = this.#device.createIoEngine(kind, c.ioThreads, c.ioTaskSize, c.ioQueueDepth);
    const entry: EngineEntry =
      kind === 'posix'
        ? { native, kind, threads: c.ioThreads, queueDepth: c.ioThreads }
        : { native, kind, threads: 1, queueDepth: c.ioQueueDepth };
    this.#engines.set(kind, entry);
    return entry;
  }

  /** True while a file is being opened. */
  protected override busySelf(): boolean {
    return this.#opening.size > 0;
  }

  /** Opens in flight finish (their files join the ones disposed). */
  protected override prepareDispose(): Promise<unknown> | undefined {
    return this.#opening.size === 0 ? undefined : Promise.allSettled([...this.#opening]);
  }

  /** Nothing of its own: the engines close later, after the device's streams (see {@link deviceIo}). */
  protected disposeSelf(): void {}

  /** Closes the engines, waiting for the tasks they have queued. */
  closeEngines(): void {
    for (const entry of this.#engines.values()) entry.native.close(false);
    this.#engines.clear();
  }
}

const ios = new WeakMap<object, DeviceIo>();

/** The IO of `device` (made at first use, then disposed with the device before its streams). */
export function deviceIo(device: IoDevice & { attach(child: AsyncDisposableLike, order: number): unknown }): DeviceIo {
  let io = ios.get(device);
  if (!io || io.disposed) {
    const made = new DeviceIo(device);
    // Files go before the streams; the engines after them, since a stream's
    // readFile/writeFile in flight still runs on them.
    device.attach(made, DisposeOrder.files);
    device.attach({ [Symbol.asyncDispose]: async () => made.closeEngines() }, DisposeOrder.engines);
    ios.set(device, made);
    io = made;
  }
  return io;
}
