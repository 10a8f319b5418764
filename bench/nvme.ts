/**
 * NVMe benchmark: kvflow's file -> HBM (`stream.readFile`) and HBM -> file
 * (`stream.writeFile`) through its pinned bounce ring, and the host-side
 * `file.read` into pinned memory, against plain O_DIRECT pread/pwrite of the
 * same disk (bench/native/raw_io.cc, run earlier in the same call) and
 * against `torch.load(file).cuda()` (bench/peers/torch_load.py, same call),
 * as DESIGN.md section 5 asks. The goal it checks: file -> HBM and HBM ->
 * file at >= 0.95 of the raw best, and faster than torch.load().cuda().
 *
 *   node dist/bench/nvme.js [--json out.json] [--baseline raw_io.json] [--torch torch_load.json]
 *                           [--backend auto|cuda|cpu] [--gds auto|on|off] [--dir DIR] [--gib N]
 *                           [--sweep-gib N] [--samples N] [--pairs N] [--raw-io PATH] [--keep] [--quick]
 *
 * --dir: folder of the test file (default bench-out/nvme-data under the repo
 * root, as raw_io and torch_load.py); --gib: file size, 1-8 (default 4), moved
 * whole by the headline figures; --sweep-gib: bytes per sweep point (default
 * 1); --samples: timed samples of each headline figure (default 3); --pairs:
 * pairs of the paired figures below (default 5; 0: none); --raw-io: the
 * raw_io program they run (default build-bench/raw_io under the repo root);
 * --keep: leave the files behind; --quick: 64 MiB file, 16 MiB sweep points,
 * 2 samples, 2 pairs; --gds: the files' `gds` option (default auto: cuFile
 * where it registers the file, else the bounce path; off: the bounce path
 * always).
 *
 * What runs, in order:
 * - the file is written once (random bytes, file.write from host memory), and
 *   a warm-up file of up to 256 MiB beside it: warm-ups (engine threads,
 *   bounce slots from the pinned pool) never touch the measured file;
 * - sweep: engine (posix, io_uring) x tasks in flight (4, 8, 16: posix
 *   threads, io_uring queue depth) x task size (1, 4, 16 MiB), each on a fresh
 *   device (engines take their settings when made), one cold read into a
 *   device buffer and one write of it back to the same region; the bounce ring
 *   grows with the setting (chunk = max(8 MiB, task), slots = max(4,
 *   ceil(in flight x task / chunk))) so that it never caps the tasks in flight;
 * - headline, over the whole file: the fastest sweep point for reads and for
 *   writes, and kvflow's defaults (skipped where they equal the fastest point),
 *   each as the median of `samples`; reads also host-side into pinned memory;
 *   every headline read is checked byte for byte, every headline write read
 *   back and checked;
 * - paired (read_hbm_default_paired, write_hbm_default_paired), because the
 *   GPU box's disk drifts by +-30% over minutes, so raw_io's figures from the
 *   start of the call are a poor yardstick for kvflow's minutes later: P pairs
 *   over the whole file, each one `raw_io --pass` sample (with raw_io.json's
 *   raw_read_best / raw_write_best threads and IO size) and one sample of
 *   kvflow's defaults, back to back, in ABBA order (raw, kvflow, kvflow, raw,
 *   ...); reads of the measured file by both (the first kvflow read checked),
 *   writes by kvflow over it and by raw_io into nvme-raw-write.bin beside it
 *   (written once untimed first, deleted after unless --keep); value and
 *   baseline are the medians of the kvflow and raw samples, ratio the median
 *   of the per-pair ratios. Skipped, with the reason in the config, without
 *   --baseline, with --pairs 0 or where the raw_io program is missing.
 *
 * Timing: host clock; reads from an enqueue after `sync; echo 3 >
 * /proc/sys/vm/drop_caches` (root only: the config says whether it worked) to
 * the stream event's done(); writes from the enqueue (after a sync) to the
 * event's done() followed by file.sync() (fsync), inside the timed region, as
 * raw_io's writes end with an fsync. CPU: process.cpuUsage() user + system of
 * the whole process (its IO threads included) over the same region, per GB.
 * The paired section's raw samples are timed by raw_io itself, the same way
 * (its clock and getrusage, from its parked threads' release to the last join,
 * writes + fsync); process start-up is outside the timed region.
 *
 * Path: with --gds auto, device-memory transfers go through cuFile where it
 * registers the file, else through the bounce path (disk -> pinned ring ->
 * cudaMemcpyAsync); every result says which ran (path_used) and the config
 * why (gds_reason). On the GPU box cuFile refuses to register files (no
 * nvidia-fs, virtio disk), so the bounce path is what is measured there; the
 * bounce-ring settings of the sweep mean nothing for a cuFile run. The CPU
 * backend runs it too (no GPU: "HBM" is host memory, the bounce path always),
 * so it can be smoke-tested anywhere.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, readFileSync, realpathSync, rmSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import {
  KvflowError,
  defaults,
  openDevice,
  type Device,
  type DeviceBuffer,
  type DirectRequest,
  type FileInfo,
  type HostBuffer,
  type IoEngineKind,
  type KvFile,
  type OpenFileOptions,
  type PinnedBuffer,
  type Stream,
} from '../src/index.js';
import { fillRandom, median, now, since, spreadPct } from './lib/measure.js';
import { printTable, ratioOf, writeResult, type Result } from './lib/results.js';
import { loadBaseline, midpoint, pairedFigure, rawPass, RawIoError, type Baseline, type RawPass, type RawPoint } from './lib/raw-baseline.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const ENGINES: readonly IoEngineKind[] = ['posix', 'io_uring'];
const IN_FLIGHT = [4, 8, 16] as const;
const TASK_SIZES = [MiB, 4 * MiB, 16 * MiB] as const;
/** Largest piece of host memory a JS view covers (Node 20 caps typed arrays at 4 GiB). */
const PIECE = GiB;
/** Every variable the sweep sets; cleared for the whole run, so "default" means the built-in defaults. */
const IO_VARS = [
  'KVFLOW_GDS',
  'KVFLOW_IO_ENGINE',
  'KVFLOW_IO_DIRECT',
  'KVFLOW_IO_THREADS',
  'KVFLOW_IO_TASK_SIZE',
  'KVFLOW_IO_QUEUE_DEPTH',
  'KVFLOW_IO_BOUNCE_CHUNK',
  'KVFLOW_IO_BOUNCE_SLOTS',
] as const;

/** `4KiB`, `1MiB`, `1GiB`: the size part of a metric name, as raw_io prints it. */
function label(bytes: number): string {
  if (bytes >= GiB && bytes % GiB === 0) return `${bytes / GiB}GiB`;
  if (bytes >= MiB && bytes % MiB === 0) return `${bytes / MiB}MiB`;
  return `${bytes / KiB}KiB`;
}

// ---------------------------------------------------------------- page cache

/** `sync; echo 3 > /proc/sys/vm/drop_caches` before each cold read, counting failures (not root). */
class CacheDrop {
  attempts = 0;
  failures = 0;
  error: string | null = null;

  drop(): void {
    this.attempts++;
    const r = spawnSync('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches'], { encoding: 'utf8' });
    if (r.status !== 0) {
      this.failures++;
      if (this.error === null) {
        this.error = r.error?.message ?? (r.stderr.trim() || `exit ${String(r.status)}`);
        console.error(`warning: cannot drop the page cache (${this.error}): reads are not cold unless O_DIRECT`);
      }
    }
  }
}

/** Flushes dirty pages before a write sample, so its fsync only waits for its own. */
function syncDisk(): void {
  spawnSync('sync');
}

// ---------------------------------------------------------------- the disk

interface Mount {
  source: string;
  point: string;
  type: string;
}

/** The /proc/mounts entry whose mount point is the longest prefix of `dir` (what raw_io reports too). */
function mountOf(dir: string): Mount | null {
  let best: Mount | null = null;
  let text: string;
  try {
    text = readFileSync('/proc/mounts', 'utf8');
  } catch {
    return null;
  }
  for (const line of text.split('\n')) {
    const [source, point, type] = line.split(' ');
    if (source === undefined || point === undefined || type === undefined) continue;
    const under = dir === point || point === '/' || dir.startsWith(`${point}/`);
    if (under && (best === null || point.length >= best.point.length)) best = { source, point, type };
  }
  return best;
}

// ---------------------------------------------------------------- settings

/** One engine configuration: made on a fresh device with `env` in force. */
interface Setting {
  /** `posix_t8_4MiB`, `io_uring_qd16_1MiB`, or `default`. */
  name: string;
  /** undefined: openFile without an engine (the default). */
  engine: IoEngineKind | undefined;
  /** The engine that runs: `engine`, or the default one. */
  kind: IoEngineKind;
  /** Tasks in flight: posix threads, io_uring queue depth. */
  depth: number;
  task: number;
  chunk: number;
  slots: number;
  env: Record<string, string>;
}

function sweepSetting(engine: IoEngineKind, depth: number, task: number, base: Setting): Setting {
  const chunk = Math.max(base.chunk, task);
  const slots = Math.min(64, Math.max(base.slots, Math.ceil((depth * task) / chunk)));
  const name = `${engine}_${engine === 'posix' ? 't' : 'qd'}${depth}_${label(task)}`;
  return {
    name,
    engine,
    kind: engine,
    depth,
    task,
    chunk,
    slots,
    env: {
      [engine === 'posix' ? 'KVFLOW_IO_THREADS' : 'KVFLOW_IO_QUEUE_DEPTH']: String(depth),
      KVFLOW_IO_TASK_SIZE: String(task),
      KVFLOW_IO_BOUNCE_CHUNK: String(chunk),
      KVFLOW_IO_BOUNCE_SLOTS: String(slots),
    },
  };
}

/** The built-in defaults (read after the IO variables were cleared). */
function defaultSetting(): Setting {
  const d = defaults();
  // 'auto' would pick at open time; engine_used in the results says what ran.
  const engine = d.ioEngine === 'io_uring' ? 'io_uring' : 'posix';
  return {
    name: 'default',
    engine: undefined,
    kind: engine,
    depth: engine === 'posix' ? d.ioThreads : d.ioQueueDepth,
    task: d.ioTaskSize,
    chunk: d.ioBounceChunk,
    slots: d.ioBounceSlots,
    env: {},
  };
}

function sameIo(a: Setting, b: Setting): boolean {
  return (
    a.kind === b.kind &&
    a.depth === b.depth &&
    a.task === b.task &&
    a.chunk === b.chunk &&
    a.slots === b.slots
  );
}

function settingJson(s: Setting): Record<string, unknown> {
  return {
    setting: s.name,
    engine: s.engine ?? `${s.kind} (default)`,
    in_flight: s.depth,
    task_bytes: s.task,
    bounce_chunk: s.chunk,
    bounce_slots: s.slots,
  };
}

/** Runs `fn` on a fresh device with the setting's variables in force; disposes the device after. */
async function withSetting<T>(
  backend: 'auto' | 'cuda' | 'cpu',
  s: Setting,
  fn: (dev: Device) => Promise<T>,
  phases?: Record<string, number>,
): Promise<T> {
  Object.assign(process.env, s.env);
  let dev: Device | undefined;
  let t = now();
  try {
    dev = openDevice({ backend });
    if (phases) phases.open_device = since(t);
    t = now();
    return await fn(dev);
  } finally {
    if (phases) phases.work = since(t);
    t = now();
    await dev?.dispose();
    if (phases) phases.dispose_device = since(t);
    for (const v of IO_VARS) delete process.env[v];
  }
}

// ---------------------------------------------------------------- timing

interface Sample {
  seconds: number;
  /** Process CPU seconds (user + system, every thread) over the same region. */
  cpu: number;
}

async function timed(fn: () => Promise<void>): Promise<Sample> {
  const c0 = process.cpuUsage();
  const t0 = now();
  await fn();
  const seconds = since(t0);
  const c = process.cpuUsage(c0);
  return { seconds, cpu: (c.user + c.system) / 1e6 };
}

interface Figure {
  gbps: number[];
  cpuPerGb: number[];
  /** file.info of the run: the engine, path and direct IO actually used. */
  engine?: string;
  path?: string;
  direct?: boolean;
}

function addSample(f: Figure, s: Sample, bytes: number): void {
  f.gbps.push(bytes / s.seconds / 1e9);
  f.cpuPerGb.push(s.cpu / (bytes / 1e9));
}

/** Which way device-memory transfers of each file went ('gds' or 'bounce'), with cuFile's reason, for the config. */
const pathsSeen = new Map<string, string>();

/** What a run on one device shares. */
interface Rig {
  dev: Device;
  file: KvFile;
  /** A second file on the same engine, only for warm-ups (see warmUp). */
  warm: KvFile;
  warmBytes: number;
  /** How stream.readFile/writeFile of device memory move this file's bytes. */
  path: 'gds' | 'bounce';
  stream: Stream;
  dst: DeviceBuffer;
  drop: CacheDrop;
}

/** The measured file and the warm-up file, both in the benchmark's folder. */
interface Files {
  path: string;
  warmPath: string;
  warmBytes: number;
}

async function openRig(
  dev: Device,
  s: Setting,
  files: Files,
  bytes: number,
  gds: DirectRequest,
  drop: CacheDrop,
): Promise<Rig> {
  const options: OpenFileOptions = { direct: 'auto', gds };
  if (s.engine !== undefined) options.engine = s.engine;
  const file = await dev.openFile(files.path, options);
  const warm = await dev.openFile(files.warmPath, options);
  // file.info.gds is absent from an addon built before GPUDirect Storage: the bounce path then.
  const path = file.info.gds === true ? 'gds' : 'bounce';
  if (!pathsSeen.has(path)) pathsSeen.set(path, String(file.info.gdsReason));
  const dst = dev.allocDevice(bytes);
  return { dev, file, warm, warmBytes: files.warmBytes, path, stream: dev.createStream(), dst, drop };
}

async function closeRig(r: Rig): Promise<void> {
  await r.file.dispose();
  await r.warm.dispose();
}

/**
 * One ring's worth of bounce traffic, untimed, on the warm-up file (never on
 * the measured file, whose blocks a host-side cache of the virtual disk could
 * then serve faster): the ring's pinned slots come from the device's pool on
 * first use, and the engine's threads (or ring) start. 'both': a read into
 * the device buffer and a write of it back; 'write': only a write from the
 * device buffer (its contents are kept).
 */
async function warmUp(r: Rig, s: Setting, bytes: number, mode: 'both' | 'write'): Promise<void> {
  const n = Math.min(bytes, s.chunk * s.slots, r.warmBytes);
  if (mode === 'both') r.stream.readFile(r.dst, 0, r.warm, 0, n);
  r.stream.writeFile(r.warm, 0, r.dst, 0, n);
  await r.stream.record().done();
}

/** Cold file -> device buffer: drop caches, then enqueue and await the stream's event. */
async function readHbm(r: Rig, offset: number, bytes: number): Promise<Sample> {
  r.drop.drop();
  return timed(async () => {
    r.stream.readFile(r.dst, 0, r.file, offset, bytes);
    await r.stream.record().done();
  });
}

/** Device buffer -> file: enqueue, await the stream's event, then fsync, all timed. */
async function writeHbm(r: Rig, offset: number, bytes: number): Promise<Sample> {
  syncDisk();
  return timed(async () => {
    r.stream.writeFile(r.file, offset, r.dst, 0, bytes);
    await r.stream.record().done();
    await r.file.sync();
  });
}

/** Cold file -> pinned memory (host side), the pieces requested at once so the engine sees one queue. */
async function readPinned(r: Rig, pieces: readonly PinnedBuffer[]): Promise<Sample> {
  r.drop.drop();
  return timed(async () => {
    await Promise.all(pieces.map((p, i) => r.file.read(p, 0, i * PIECE, p.byteLength)));
  });
}

// ---------------------------------------------------------------- checks

/** Host buffers of at most PIECE bytes each covering `bytes`. */
function pieceSizes(bytes: number): number[] {
  const out: number[] = [];
  for (let off = 0; off < bytes; off += PIECE) out.push(Math.min(PIECE, bytes - off));
  return out;
}

function compare(got: Uint8Array, want: Uint8Array, what: string, offset: number): void {
  if (Buffer.compare(got, want) !== 0) {
    let at = 0;
    while (at < got.length && got[at] === want[at]) at++;
    throw new Error(`${what}: byte ${offset + at} of the file differs from what was written`);
  }
}

/** The device buffer, copied out through `staging` piece by piece, against `expected`. */
async function checkDevice(
  r: Rig,
  staging: readonly PinnedBuffer[],
  expected: readonly HostBuffer[],
  what: string,
): Promise<void> {
  for (let i = 0; i < expected.length; i++) {
    const p = staging[i]!;
    p.array.fill(0xa5);
    r.stream.copy(p, 0, r.dst, i * PIECE, p.byteLength);
    await r.stream.synchronize();
    compare(p.array, expected[i]!.array, what, i * PIECE);
  }
}

/** Overwrites the device buffer with a pattern, so a read that writes nothing cannot pass the check. */
async function poisonDevice(r: Rig, staging: readonly PinnedBuffer[]): Promise<void> {
  for (let i = 0; i < staging.length; i++) {
    const p = staging[i]!;
    p.array.fill(0x5a);
    r.stream.copy(r.dst, i * PIECE, p, 0, p.byteLength);
  }
  await r.stream.synchronize();
}

// ---------------------------------------------------------------- baselines

interface TorchPeer {
  device: string | undefined;
  bytes: number | undefined;
  values: Map<string, { value: number; call: string; cpuPerGb: number | null }>;
}

function loadTorch(file: string): TorchPeer {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  if (!Array.isArray(raw.results)) throw new Error(`${file}: expected {"results": [...]} from torch_load.py`);
  const config = (raw.config ?? {}) as Record<string, unknown>;
  const values = new Map<string, { value: number; call: string; cpuPerGb: number | null }>();
  for (const e of raw.results as Array<Record<string, unknown>>) {
    if (typeof e.metric !== 'string' || typeof e.value !== 'number') {
      throw new Error(`${file}: bad entry ${JSON.stringify(e)}`);
    }
    values.set(e.metric, {
      value: e.value,
      call: typeof e.call === 'string' ? e.call : e.metric,
      cpuPerGb: typeof e.cpu_s_per_gb === 'number' ? e.cpu_s_per_gb : null,
    });
  }
  return {
    device: typeof raw.device === 'string' ? raw.device : undefined,
    bytes: typeof config.bytes === 'number' ? config.bytes : undefined,
    values,
  };
}

// ---------------------------------------------------------------- main

function sizeArg(value: string | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  const gib = Number(value);
  if (!Number.isFinite(gib) || gib < 1 / 16 || gib > 64) {
    throw new Error(`${name}: expected GiB from 1/16 to 64 (1-8 intended), got ${value}`);
  }
  // Whole MiB, so every request stays 4 KiB aligned (as raw_io rounds).
  return Math.floor(gib * 1024) * MiB;
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      json: { type: 'string' },
      baseline: { type: 'string' },
      torch: { type: 'string' },
      backend: { type: 'string' },
      gds: { type: 'string' },
      dir: { type: 'string' },
      gib: { type: 'string' },
      'sweep-gib': { type: 'string' },
      samples: { type: 'string' },
      pairs: { type: 'string' },
      'raw-io': { type: 'string' },
      keep: { type: 'boolean', default: false },
      quick: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const quick = args.quick ?? false;
  const fileBytes = quick ? 64 * MiB : sizeArg(args.gib, 4 * GiB, '--gib');
  const sweepBytes = quick ? 16 * MiB : sizeArg(args['sweep-gib'], GiB, '--sweep-gib');
  if (sweepBytes > fileBytes) throw new Error('--sweep-gib: expected at most the file size');
  const samples = args.samples === undefined ? (quick ? 2 : 3) : Number(args.samples);
  if (!Number.isSafeInteger(samples) || samples < 1) {
    throw new Error(`--samples: expected a positive integer, got ${args.samples}`);
  }
  const pairs = args.pairs === undefined ? (quick ? 2 : 5) : Number(args.pairs);
  if (!Number.isSafeInteger(pairs) || pairs < 0) {
    throw new Error(`--pairs: expected an integer >= 0, got ${args.pairs}`);
  }
  const regions = Math.floor(fileBytes / sweepBytes);
  const base = args.baseline === undefined ? undefined : loadBaseline(args.baseline);
  const torch = args.torch === undefined ? undefined : loadTorch(args.torch);
  // A baseline only means something against the GPU: never fall back to the CPU silently then.
  const backend = args.backend ?? (base ? 'cuda' : 'auto');
  if (backend !== 'auto' && backend !== 'cuda' && backend !== 'cpu') {
    throw new Error(`--backend: expected auto, cuda or cpu, got ${backend}`);
  }
  const gds = args.gds ?? 'auto';
  if (gds !== 'auto' && gds !== 'on' && gds !== 'off') throw new Error(`--gds: expected auto, on or off, got ${gds}`);

  // The repo root: dist/bench/nvme.js -> ../..
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
  const rawIo = path.resolve(args['raw-io'] ?? path.join(root, 'build-bench', 'raw_io'));
  const dirArg = args.dir ?? path.join(root, 'bench-out', 'nvme-data');
  mkdirSync(dirArg, { recursive: true });
  const dir = realpathSync(dirArg);
  const filePath = path.join(dir, 'nvme.bin');
  const st = statfsSync(dir);
  const freeBytes = st.bavail * st.bsize;
  if (freeBytes < fileBytes + GiB / 4) {
    throw new Error(`not enough space in ${dir}: ${freeBytes} bytes free, ${fileBytes} needed`);
  }
  const mount = mountOf(dir);

  // The whole run ignores KVFLOW_IO_* from the caller: each setting says what it sets.
  const ignoredEnv: Record<string, string> = {};
  for (const v of IO_VARS) {
    const value = process.env[v];
    if (value !== undefined) ignoredEnv[v] = value;
    delete process.env[v];
  }
  const def = defaultSetting();

  if (base?.fileBytes !== undefined && base.fileBytes !== fileBytes) {
    console.error(`warning: raw_io moved a ${base.fileBytes}-byte file, this run ${fileBytes}`);
  }
  if (base?.mountPoint !== undefined && mount !== null && base.mountPoint !== mount.point) {
    console.error(`warning: raw_io ran on ${base.mountPoint}, this run on ${mount.point}: not the same disk`);
  }
  if (torch?.bytes !== undefined && torch.bytes !== fileBytes) {
    console.error(`warning: torch_load.py loaded ${torch.bytes} bytes, this run moves ${fileBytes}`);
  }

  const drop = new CacheDrop();
  const home = openDevice({ backend });
  try {
    const info = home.info();
    if (torch?.device !== undefined && torch.device !== info.name) {
      console.error(`warning: torch_load ran on ${torch.device}, kvflow on ${info.name}`);
    }

    // The file: random bytes, written once from host memory; `expected` mirrors it all run.
    const expected = pieceSizes(fileBytes).map((n) => home.allocHost(n));
    for (const p of expected) fillRandom(p.array);
    rmSync(filePath, { force: true });
    const created = await home.openFile(filePath, { create: true, direct: 'auto' });
    const fileInfo: FileInfo = created.info;
    if (!fileInfo.direct) console.error(`warning: ${fileInfo.directReason}`);
    syncDisk();
    const tc = now();
    await Promise.all(expected.map((p, i) => created.write(i * PIECE, p, 0, p.byteLength)));
    await created.sync();
    const createGbps = fileBytes / since(tc) / 1e9;
    await created.dispose();
    // The warm-up file: as large as the largest bounce ring of the sweep (16 x 16 MiB), at most the file's size.
    const files: Files = {
      path: filePath,
      warmPath: path.join(dir, 'nvme-warm.bin'),
      warmBytes: Math.min(fileBytes, 256 * MiB),
    };
    const warmFile = await home.openFile(files.warmPath, { create: true, direct: 'auto' });
    await warmFile.write(0, expected[0]!, 0, files.warmBytes);
    await warmFile.sync();
    await warmFile.dispose();
    const how = fileInfo.direct ? 'O_DIRECT' : 'buffered';
    console.error(`nvme: ${filePath}, ${label(fileBytes)}, ${how}, written at ${createGbps.toFixed(3)} GB/s`);

    const results: Result[] = [];
    const readBase = base?.readBest?.value ?? null;
    const writeBase = base?.writeBest?.value ?? null;
    type Extra = Record<string, unknown>;
    const add = (metric: string, value: number, unit: string, baseline: number | null, extra: Extra): void => {
      results.push({ metric, value, unit, baseline, ratio: ratioOf(value, baseline), ...extra });
      console.error(`${metric} ${value.toPrecision(4)} ${unit}`); // progress, on stderr: stdout ends with the table
    };

    // ---- sweep: one device per setting, one cold read then one write of sweepBytes at region i.
    interface Point {
      s: Setting;
      read: number;
      write: number;
    }
    const points: Point[] = [];
    const sweepReads: Result[] = [];
    const sweepWrites: Result[] = [];
    const unsupported: Record<string, string> = {};
    let index = 0;
    for (const engine of ENGINES) {
      for (const depth of IN_FLIGHT) {
        for (const task of TASK_SIZES) {
          const s = sweepSetting(engine, depth, task, def);
          if (unsupported[engine] !== undefined) continue;
          const offset = (index++ % regions) * sweepBytes;
          // Where a point's time goes (seconds), beyond the timed read and write:
          // kept in the JSON, since a point took far longer on the GPU box than its IO.
          const phases: Record<string, number> = {};
          try {
            await withSetting(backend, s, async (dev) => {
              let t = now();
              const r = await openRig(dev, s, files, sweepBytes, gds, drop);
              phases.open_rig = since(t);
              t = now();
              await warmUp(r, s, sweepBytes, 'both');
              phases.warm_up = since(t);
              const rd = await readHbm(r, offset, sweepBytes);
              const wr = await writeHbm(r, offset, sweepBytes); // writes back what it read: the file stays `expected`
              const common = {
                ...settingJson(s),
                bytes: sweepBytes,
                file_offset: offset,
                samples: 1,
                engine_used: r.file.info.engine,
                path_used: r.path,
                direct: r.file.info.direct,
                phases_s: phases,
              };
              const rg = sweepBytes / rd.seconds / 1e9;
              const wg = sweepBytes / wr.seconds / 1e9;
              points.push({ s, read: rg, write: wg });
              const same = (d: string): number | null => base?.sweep.get(`${d}:${depth}:${task}`) ?? null;
              sweepReads.push({
                metric: `read_hbm_${s.name}`,
                value: rg,
                unit: 'GB/s',
                baseline: readBase,
                ratio: ratioOf(rg, readBase),
                ...common,
                cpu_s_per_gb: rd.cpu / (sweepBytes / 1e9),
                raw_same_in_flight: same('read'),
                ratio_same_in_flight: ratioOf(rg, same('read')),
              });
              sweepWrites.push({
                metric: `write_hbm_${s.name}`,
                value: wg,
                unit: 'GB/s',
                baseline: writeBase,
                ratio: ratioOf(wg, writeBase),
                ...common,
                cpu_s_per_gb: wr.cpu / (sweepBytes / 1e9),
                raw_same_in_flight: same('write'),
                ratio_same_in_flight: ratioOf(wg, same('write')),
              });
              console.error(`${s.name.padEnd(20)} read ${rg.toFixed(3)} GB/s  write ${wg.toFixed(3)} GB/s`);
              t = now();
              await closeRig(r);
              phases.close_rig = since(t);
            }, phases);
            console.error(`  ${Object.entries(phases).map(([k, v]) => `${k} ${v.toFixed(2)} s`).join(', ')}`);
          } catch (e) {
            if (e instanceof KvflowError && e.code === 'ERR_UNSUPPORTED') {
              unsupported[engine] = e.message;
              console.error(`warning: ${engine} skipped: ${e.message}`);
              continue;
            }
            throw e;
          }
        }
      }
    }
    results.push(...sweepReads, ...sweepWrites);
    if (points.length === 0) throw new Error('no engine could open the file');
    const bestRead = points.reduce((a, b) => (b.read > a.read ? b : a)).s;
    const bestWrite = points.reduce((a, b) => (b.write > a.write ? b : a)).s;

    // ---- headline: the whole file, median of samples, checked.
    const torchPlain = torch?.values.get('torch_load_cuda');
    const readFigures = new Map<string, { fig: Figure; s: Setting }>();
    const headlineRead = async (tag: 'best' | 'default', s: Setting): Promise<void> => {
      if (tag === 'default' && sameIo(s, bestRead)) {
        const b = readFigures.get('best')!;
        readFigures.set('default', b);
        return;
      }
      const hbm: Figure = { gbps: [], cpuPerGb: [] };
      const pinned: Figure = { gbps: [], cpuPerGb: [] };
      await withSetting(backend, s, async (dev) => {
        const r = await openRig(dev, s, files, fileBytes, gds, drop);
        hbm.engine = pinned.engine = r.file.info.engine;
        hbm.direct = pinned.direct = r.file.info.direct;
        hbm.path = r.path;
        pinned.path = 'host (file.read)';
        const staging = pieceSizes(fileBytes).map((n) => dev.allocPinned(n));
        await warmUp(r, s, fileBytes, 'both');
        await r.warm.read(staging[0]!, 0, 0, Math.min(staging[0]!.byteLength, s.chunk * s.slots, files.warmBytes));
        for (let i = 0; i < samples; i++) {
          if (i === 0) await poisonDevice(r, staging);
          addSample(hbm, await readHbm(r, 0, fileBytes), fileBytes);
          if (i === 0) await checkDevice(r, staging, expected, `read_hbm_${tag} (${s.name})`);
        }
        for (let i = 0; i < samples; i++) {
          if (i === 0) for (const p of staging) p.array.fill(0xa5);
          addSample(pinned, await readPinned(r, staging), fileBytes);
          if (i === 0) {
            const what = `read_pinned_${tag} (${s.name})`;
            staging.forEach((p, k) => compare(p.array, expected[k]!.array, what, k * PIECE));
          }
        }
        await closeRig(r);
      });
      readFigures.set(tag, { fig: hbm, s });
      readFigures.set(`pinned_${tag}`, { fig: pinned, s });
    };
    await headlineRead('best', bestRead);
    await headlineRead('default', def);

    const writeFigures = new Map<string, { fig: Figure; s: Setting }>();
    const headlineWrite = async (tag: 'best' | 'default', s: Setting): Promise<void> => {
      if (tag === 'default' && sameIo(s, bestWrite)) {
        writeFigures.set('default', writeFigures.get('best')!);
        return;
      }
      const fig: Figure = { gbps: [], cpuPerGb: [] };
      await withSetting(backend, s, async (dev) => {
        const r = await openRig(dev, s, files, fileBytes, gds, drop);
        fig.engine = r.file.info.engine;
        fig.direct = r.file.info.direct;
        fig.path = r.path;
        const staging = pieceSizes(fileBytes).map((n) => dev.allocPinned(n));
        // New random bytes into the device buffer, so the check below tells this write from the file's old contents.
        for (const p of staging) fillRandom(p.array);
        staging.forEach((p, i) => r.stream.copy(r.dst, i * PIECE, p, 0, p.byteLength));
        await r.stream.synchronize();
        staging.forEach((p, i) => expected[i]!.array.set(p.array));
        await warmUp(r, s, fileBytes, 'write');
        for (let i = 0; i < samples; i++) addSample(fig, await writeHbm(r, 0, fileBytes), fileBytes);
        for (const p of staging) p.array.fill(0xa5);
        await Promise.all(staging.map((p, i) => r.file.read(p, 0, i * PIECE, p.byteLength)));
        staging.forEach((p, k) => compare(p.array, expected[k]!.array, `write_hbm_${tag} (${s.name})`, k * PIECE));
        await closeRig(r);
      });
      writeFigures.set(tag, { fig, s });
    };
    await headlineWrite('best', bestWrite);
    await headlineWrite('default', def);

    type Measured = { fig: Figure; s: Setting };
    const headline = (metric: string, f: Measured, baseline: number | null, extra: Extra = {}): number => {
      const v = median(f.fig.gbps);
      add(metric, v, 'GB/s', baseline, {
        ...settingJson(f.s),
        bytes: fileBytes,
        samples: f.fig.gbps.length,
        samples_gbps: f.fig.gbps,
        spread_pct: spreadPct(f.fig.gbps),
        cpu_s_per_gb: median(f.fig.cpuPerGb),
        engine_used: f.fig.engine,
        path_used: f.fig.path,
        direct: f.fig.direct,
        ...extra,
      });
      return v;
    };
    const vsTorch = (v: number): Extra =>
      torchPlain === undefined
        ? {}
        : { vs_torch_load: ratioOf(v, torchPlain.value), torch_load_gbps: torchPlain.value };
    const rb = readFigures.get('best')!;
    const rd = readFigures.get('default')!;
    const wb = writeFigures.get('best')!;
    const wd = writeFigures.get('default')!;
    const sameNote = (a: Setting, b: Setting): Extra =>
      a === b ? { same_as: 'best', note: 'the defaults are the fastest sweep point' } : {};
    const rbv = headline('read_hbm_best', rb, readBase, vsTorch(median(rb.fig.gbps)));
    const rdv = headline('read_hbm_default', rd, readBase, {
      ...vsTorch(median(rd.fig.gbps)),
      ...sameNote(rd.s, rb.s),
    });
    headline('write_hbm_best', wb, writeBase);
    headline('write_hbm_default', wd, writeBase, sameNote(wd.s, wb.s));
    headline('read_pinned_best', readFigures.get('pinned_best')!, readBase);
    const pinnedDefault = readFigures.get('pinned_default') ?? readFigures.get('pinned_best')!;
    headline('read_pinned_default', pinnedDefault, readBase, sameNote(rd.s, rb.s));

    // CPU seconds per GB moved, against raw_io's at its best point (above 1: kvflow spends more).
    const cpuRow = (metric: string, f: { fig: Figure; s: Setting }, raw: RawPoint | undefined): void => {
      const rawCpu = raw?.cpuPerGb ?? null;
      add(metric, median(f.fig.cpuPerGb), 's/GB', rawCpu, { setting: f.s.name, samples_s_per_gb: f.fig.cpuPerGb });
    };
    cpuRow('cpu_read_hbm_best', rb, base?.readBest);
    cpuRow('cpu_write_hbm_best', wb, base?.writeBest);

    if (base?.readBest && base.writeBest) {
      const raw = (metric: string, p: RawPoint): void => {
        const extra = { threads: p.threads, io_bytes: p.ioBytes, cpu_s_per_gb: p.cpuPerGb, from: args.baseline };
        add(metric, p.value, 'GB/s', null, extra);
      };
      raw('raw_read_best', base.readBest);
      raw('raw_write_best', base.writeBest);
    }
    if (torch !== undefined) {
      for (const [metric, t] of torch.values) {
        add(metric, t.value, 'GB/s', null, { call: t.call, cpu_s_per_gb: t.cpuPerGb, from: args.torch });
      }
      if (torchPlain !== undefined) {
        const peer = torchPlain.call;
        add('read_hbm_best_vs_torch_load', rbv, 'GB/s', torchPlain.value, { setting: rb.s.name, peer });
        add('read_hbm_default_vs_torch_load', rdv, 'GB/s', torchPlain.value, { setting: rd.s.name, peer });
      }
    }

    // ---- paired: raw_io --pass and kvflow's defaults in turns over the whole file, ABBA, ratio per pair.
    // The disk's throughput drifts by tens of percent over minutes: a raw figure from the start of the
    // call against a kvflow figure minutes later is mostly that drift. Each pair is two samples taken
    // back to back; alternating which goes first cancels a steady drift within the pairs.
    const rawWritePath = path.join(dir, 'nvme-raw-write.bin');
    const pairedConfig: Extra = {
      pairs,
      raw_io: rawIo,
      raw_write_file: rawWritePath,
      skipped: null,
      error: null,
    };
    let pairedSkip: string | null = null;
    if (pairs === 0) pairedSkip = '--pairs 0';
    else if (base?.readBest === undefined || base.writeBest === undefined) {
      pairedSkip = 'no --baseline (raw_io.json): no raw setting to run';
    } else {
      try {
        accessSync(rawIo, constants.X_OK);
      } catch (e) {
        const why = (e as Error).message;
        pairedSkip = `no raw_io program at ${rawIo} (bench/native/build.sh builds it; --raw-io PATH): ${why}`;
      }
    }
    const rawRead = base?.readBest;
    const rawWrite = base?.writeBest;
    if (pairedSkip !== null || rawRead === undefined || rawWrite === undefined) {
      pairedConfig.skipped = pairedSkip;
      console.error(`paired samples skipped: ${pairedSkip ?? 'no raw setting'}`);
    } else {
      const rawSetting = (p: RawPoint, metric: string): Extra => ({
        threads: p.threads,
        io_bytes: p.ioBytes,
        from: `${metric} of ${args.baseline ?? '--baseline'}`,
      });
      pairedConfig.raw_read_setting = rawSetting(rawRead, 'raw_read_best');
      pairedConfig.raw_write_setting = rawSetting(rawWrite, 'raw_write_best');
      type Side = 'raw' | 'kvflow';
      interface Paired {
        kv: Figure;
        raw: RawPass[];
        order: Side[];
      }
      const pairedRead: Paired = { kv: { gbps: [], cpuPerGb: [] }, raw: [], order: [] };
      const pairedWrite: Paired = { kv: { gbps: [], cpuPerGb: [] }, raw: [], order: [] };
      /** Pair i: raw then kvflow when i is even, kvflow then raw when odd (raw, kvflow, kvflow, raw, ...). */
      type Take = () => Promise<RawPass>;
      const runPairs = async (p: Paired, raw: Take, kv: (i: number) => Promise<void>): Promise<void> => {
        for (let i = 0; i < pairs; i++) {
          const sides: Side[] = i % 2 === 0 ? ['raw', 'kvflow'] : ['kvflow', 'raw'];
          for (const side of sides) {
            if (side === 'raw') p.raw.push(await raw());
            else await kv(i);
            p.order.push(side);
          }
          const k = p.kv.gbps[i]!;
          const w = p.raw[i]!.gbps;
          console.error(`  pair ${i + 1}/${pairs} (${sides[0]} first): kvflow ${k.toFixed(3)} GB/s, raw ` +
            `${w.toFixed(3)} GB/s, ratio ${(k / w).toFixed(3)}`);
        }
      };
      try {
        await withSetting(backend, def, async (dev) => {
          const r = await openRig(dev, def, files, fileBytes, gds, drop);
          const staging = pieceSizes(fileBytes).map((n) => dev.allocPinned(n));
          await warmUp(r, def, fileBytes, 'both');
          pairedRead.kv.engine = pairedWrite.kv.engine = r.file.info.engine;
          pairedRead.kv.direct = pairedWrite.kv.direct = r.file.info.direct;
          pairedRead.kv.path = pairedWrite.kv.path = r.path;

          console.error(`paired reads: ${pairs} pairs, raw_io T${rawRead.threads} x ${label(rawRead.ioBytes)} ` +
            `against kvflow's defaults (${def.kind}, ${def.depth} in flight x ${label(def.task)}), the same file`);
          await runPairs(
            pairedRead,
            () => rawPass(rawIo, 'read', filePath, rawRead, fileBytes),
            async (i) => {
              if (i === 0) await poisonDevice(r, staging);
              addSample(pairedRead.kv, await readHbm(r, 0, fileBytes), fileBytes);
              if (i === 0) await checkDevice(r, staging, expected, `read_hbm_default_paired (${def.name})`);
            },
          );

          // The raw writes' file: written once untimed first, so that no timed raw write allocates blocks
          // (kvflow's writes overwrite the measured file's, written long before).
          const prefill = await rawPass(rawIo, 'write', rawWritePath, rawWrite, fileBytes);
          pairedConfig.raw_write_prefill_gbps = prefill.gbps;
          console.error(`paired writes: ${pairs} pairs, raw_io T${rawWrite.threads} x ${label(rawWrite.ioBytes)} ` +
            `into ${path.basename(rawWritePath)} (written once untimed first at ${prefill.gbps.toFixed(3)} GB/s)`);
          // kvflow writes the device buffer, which holds the file's bytes after the reads: the file stays `expected`.
          await runPairs(
            pairedWrite,
            () => rawPass(rawIo, 'write', rawWritePath, rawWrite, fileBytes),
            async () => addSample(pairedWrite.kv, await writeHbm(r, 0, fileBytes), fileBytes),
          );
          await closeRig(r);
        });
      } catch (e) {
        if (!(e instanceof RawIoError)) throw e;
        pairedConfig.error = e.message;
        console.error(`paired samples abandoned: ${e.message}`);
      } finally {
        if (!(args.keep ?? false)) rmSync(rawWritePath, { force: true });
      }
      const pairedRow = (metric: string, p: Paired, raw: RawPoint): void => {
        const f = pairedFigure(p.kv.gbps, p.raw.map((x) => x.gbps));
        if (f === undefined) return;
        const { n, kv: kvGbps, raw: rawGbps, ratios, ratio, value, baseline } = f;
        add(metric, value, 'GB/s', baseline, {
          ratio,
          ratio_is: 'median of per-pair ratios (kvflow / raw_io of the same pair)',
          ratio_of_medians: ratioOf(value, baseline),
          goal_ratio: 0.95,
          ...settingJson(def),
          bytes: fileBytes,
          pairs: n,
          order: p.order.slice(0, 2 * n),
          samples_gbps: kvGbps,
          baseline_samples_gbps: rawGbps,
          pair_ratios: ratios,
          spread_pct: spreadPct(kvGbps),
          baseline_spread_pct: spreadPct(rawGbps),
          cpu_s_per_gb: midpoint(p.kv.cpuPerGb.slice(0, n)),
          baseline_cpu_s_per_gb: midpoint(p.raw.slice(0, n).map((x) => x.cpuPerGb)),
          engine_used: p.kv.engine,
          path_used: p.kv.path,
          direct: p.kv.direct,
          baseline_direct: p.raw.every((x) => x.direct),
          raw_setting: { threads: raw.threads, io_bytes: raw.ioBytes },
          ...(p.raw.some((x) => x.cacheDropped === false) ? { baseline_cache_dropped: false } : {}),
        });
        console.error(`  ${metric}: median of per-pair ratios ${ratio.toFixed(3)} (goal 0.95)`);
      };
      pairedRow('read_hbm_default_paired', pairedRead, rawRead);
      pairedRow('write_hbm_default_paired', pairedWrite, rawWrite);
    }

    if (!(args.keep ?? false)) rmSync(filePath, { force: true });
    rmSync(files.warmPath, { force: true });

    const bounceNote =
      'bounce: disk -> pinned bounce ring (KVFLOW_IO_BOUNCE_CHUNK x KVFLOW_IO_BOUNCE_SLOTS) -> cudaMemcpyAsync ' +
      'into HBM (writes the reverse)';
    const gdsNote =
      'gds: cuFile between the file and HBM, no bounce ring (the bounce settings of the sweep do nothing)';
    const pathNote = [...pathsSeen.keys()]
      .map((k) => (k === 'gds' ? gdsNote : `${bounceNote}; GPUDirect Storage not used: ${pathsSeen.get(k) ?? ''}`))
      .join(' | ');
    const pathShort = [...pathsSeen.keys()].map((k) => (k === 'gds' ? 'GDS (cuFile)' : 'bounce path')).join(' + ');

    if (args.json !== undefined) {
      writeResult(args.json, {
        bench: 'nvme',
        device: info.name,
        config: {
          backend: home.backend,
          cuda_gate: info.cudaGate,
          cuda_gate_reason: info.cudaGateReason,
          quick,
          dir,
          file: filePath,
          file_bytes: fileBytes,
          sweep_bytes: sweepBytes,
          samples,
          sweep_samples: 1,
          direct: fileInfo.direct,
          direct_reason: fileInfo.directReason,
          mount,
          free_bytes: freeBytes,
          create_gbps: createGbps,
          cache_drop: { attempts: drop.attempts, failures: drop.failures, error: drop.error },
          gds_requested: gds,
          paths_used: Object.fromEntries(pathsSeen),
          path: pathNote,
          sweep: {
            engines: ENGINES,
            unsupported,
            in_flight: IN_FLIGHT,
            task_sizes: TASK_SIZES,
            in_flight_means: 'posix: KVFLOW_IO_THREADS (_tN); io_uring: KVFLOW_IO_QUEUE_DEPTH (_qdN, one ' +
              'submitting thread)',
            bounce: 'chunk = max(default chunk, task size), slots = max(default slots, ceil(in_flight x task / ' +
              'chunk)) (at most 64), so the ring never holds fewer tasks than in_flight; each point on a fresh ' +
              'device, since ' +
              'engines take their settings when made',
            order: 'per point: warm-up (one ring of reads and writes on a separate file of up to 256 MiB), one ' +
              'cold read of sweep_bytes at region i % (file_bytes / sweep_bytes) into a device buffer, then one ' +
              'write of it back to the same region',
          },
          headline: 'the fastest sweep point (reads and writes picked apart) and the built-in defaults (skipped, and ' +
            'reported as same_as, where they equal it) over the whole file, median of samples; the first HBM read ' +
            'of each is checked byte for byte after the device buffer was poisoned; each headline write writes new ' +
            'random bytes and is read back and checked; read_pinned: file.read into pinned memory, requested in ' +
            `${label(PIECE)} pieces at once (one engine queue), first sample checked`,
          paired: {
            ...pairedConfig,
            method: 'read_hbm_default_paired / write_hbm_default_paired: `pairs` pairs over the whole file, each ' +
              'pair one raw_io --pass sample (build-bench/raw_io, a separate process: its T x S work queue and ' +
              'O_DIRECT handling, with the raw setting of raw_read_best / raw_write_best in --baseline) and one ' +
              'kvflow sample with the built-in defaults, back to back, in ABBA order (pair i: raw first when i is ' +
              'even, kvflow first when odd), so a steady drift of the disk within the run cancels; reads: both ' +
              'read the measured file (raw_io drops the page cache itself), kvflow into the device buffer of one ' +
              'device held for all pairs (warmed up once on the warm-up file), its first read checked byte for ' +
              'byte after the buffer was poisoned; writes: raw_io writes raw_write_file (same size, written once ' +
              'untimed first so no timed write allocates blocks; deleted after unless --keep), kvflow writes the ' +
              'device buffer back over the measured file; value / baseline: medians of the kvflow / raw samples; ' +
              'ratio: the median of the per-pair ratios (not value / baseline, kept as ratio_of_medians); ' +
              'medians of an even count are the mean of the two middle values',
          },
          defaults: settingJson(def),
          timing: {
            read: 'host clock from the enqueue of stream.readFile (after sync + drop_caches) to the done() of an ' +
              'event recorded after it; GB/s = bytes / time',
            write: 'host clock from the enqueue of stream.writeFile (after a sync) to its event\'s done() and then ' +
              'file.sync() (fsync) resolving: durable, as raw_io\'s pwrites end with an fsync',
            read_pinned: 'host clock from the file.read calls (after sync + drop_caches) to their promises resolving',
            paired: 'kvflow samples as read and write above; raw samples as raw_io times them: steady_clock from ' +
              'releasing its parked threads to the last join (writes: + fsync), after its own sync + drop_caches ' +
              '(reads) or sync (writes); process start-up is outside both',
            cpu: 'process.cpuUsage() user + system of the whole process (IO threads, CUDA threads) over the same ' +
              'region, per 1e9 bytes',
          },
          ratio: 'kvflow / raw_io best (raw_read_best for reads, raw_write_best for writes; the raw program\'s ' +
            'fastest T x S, remeasured over the whole file); ratio_same_in_flight: against raw_io\'s sweep point ' +
            'with T = in_flight and S = task size; vs_torch_load: against torch.load(file).cuda() of the same ' +
            'bytes; cpu_* rows: above 1 means kvflow spends more CPU per GB; *_paired rows: the median of the ' +
            'per-pair ratios kvflow / raw_io (see paired)',
          goal: 'read_hbm and write_hbm >= 0.95 of the raw best in the same run, and read_hbm > torch.load().cuda(); ' +
            'the *_paired rows give the drift-robust ratio (goal_ratio 0.95)',
          baseline_file: args.baseline ?? null,
          baseline_device: base?.device ?? null,
          baseline_direct: base?.direct ?? null,
          torch_file: args.torch ?? null,
          ignored_env: ignoredEnv,
          pcie: info.pcieGen > 0 ? `Gen${info.pcieGen} x${info.pcieWidth}` : null,
          driver_version: info.driverVersion,
          runtime_version: info.runtimeVersion,
          node: process.version,
        },
        results,
      });
    }
    console.log(
      `nvme benchmark on ${info.name} (${home.backend})${quick ? ', quick' : ''}: ${label(fileBytes)} file on ` +
        `${mount ? `${mount.source} (${mount.type})` : dir}, ${how}, ${pathShort}` +
        (drop.failures > 0 ? `, page cache NOT dropped (${drop.error ?? ''})` : ''),
    );
    printTable(results);
  } finally {
    await home.dispose();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
