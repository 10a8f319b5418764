/**
 * The raw O_DIRECT baseline (bench/native/raw_io.cc) as the NVMe-facing
 * benchmarks read it: its best read and write points and its sweep.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';

export interface RawPoint {
  value: number;
  threads: number;
  ioBytes: number;
  cpuPerGb: number | null;
}

export interface Baseline {
  device: string | undefined;
  fileBytes: number | undefined;
  mountPoint: string | undefined;
  direct: boolean | undefined;
  readBest: RawPoint | undefined;
  writeBest: RawPoint | undefined;
  /** GB/s of raw_io's first write of its file (8 threads x 4 MiB + fsync): blocks never written before. */
  createGbps: number | undefined;
  /** `read:8:4194304` -> GB/s of that sweep point. */
  sweep: Map<string, number>;
}

export function loadBaseline(file: string): Baseline {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  if (!Array.isArray(raw.results)) throw new Error(`${file}: expected {"results": [...]} from raw_io`);
  const config = (raw.config ?? {}) as Record<string, unknown>;
  const mount = (config.mount ?? {}) as Record<string, unknown>;
  const b: Baseline = {
    device: typeof raw.device === 'string' ? raw.device : undefined,
    fileBytes: typeof config.file_bytes === 'number' ? config.file_bytes : undefined,
    mountPoint: typeof mount.point === 'string' ? mount.point : undefined,
    direct: typeof config.direct === 'boolean' ? config.direct : undefined,
    readBest: undefined,
    writeBest: undefined,
    createGbps: typeof config.create_gbps === 'number' ? config.create_gbps : undefined,
    sweep: new Map(),
  };
  for (const e of raw.results as Array<Record<string, unknown>>) {
    const { metric, value, threads, io_bytes: ioBytes, direction, cpu_s_per_gb: cpu } = e;
    const numbers = typeof value === 'number' && typeof threads === 'number' && typeof ioBytes === 'number';
    if (typeof metric !== 'string' || !numbers) {
      throw new Error(`${file}: bad entry ${JSON.stringify(e)}`);
    }
    const point: RawPoint = { value, threads, ioBytes, cpuPerGb: typeof cpu === 'number' ? cpu : null };
    if (metric === 'raw_read_best') b.readBest = point;
    else if (metric === 'raw_write_best') b.writeBest = point;
    else b.sweep.set(`${String(direction)}:${threads}:${ioBytes}`, value);
  }
  if (!b.readBest || !b.writeBest) throw new Error(`${file}: no raw_read_best / raw_write_best`);
  return b;
}

/** What one `raw_io --pass` printed. */
export interface RawPass {
  gbps: number;
  seconds: number;
  cpuPerGb: number;
  direct: boolean;
  /** Reads: whether raw_io could drop the page cache first (root only); writes: null. */
  cacheDropped: boolean | null;
}

/** raw_io --pass failed or printed something else: the paired section gives up, the run goes on. */
export class RawIoError extends Error {}

/**
 * One timed pass of raw_io (bench/native/raw_io.cc --pass) over the first
 * `bytes` of `file` with the raw setting `p` (T threads x S bytes): reads
 * after its own sync + drop_caches, writes timed up to its fsync, as its
 * figures in raw_io.json are taken. Run as a child process, so kvflow's
 * threads, idle meanwhile, share nothing with it.
 */
export function rawPass(rawIo: string, pass: 'read' | 'write', file: string, p: RawPoint, bytes: number): Promise<RawPass> {
  const argv = ['--pass', pass, '--file', file, '--threads', String(p.threads), '--io-bytes', String(p.ioBytes)];
  argv.push('--bytes', String(bytes));
  const what = `${rawIo} ${argv.join(' ')}`;
  return new Promise((resolve, reject) => {
    execFile(rawIo, argv, { encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) {
        const code = err.code;
        const why = typeof code === 'number' ? `exit ${code}` : err.signal ? `killed by ${err.signal}` : err.message;
        reject(new RawIoError(`${what}: ${stderr.trim() || why}`));
        return;
      }
      if (stderr.trim() !== '') process.stderr.write(stderr); // raw_io's warnings (e.g. O_DIRECT refused)
      let o: Record<string, unknown>;
      try {
        o = JSON.parse(stdout) as Record<string, unknown>;
      } catch {
        reject(new RawIoError(`${what}: expected one JSON object, got ${JSON.stringify(stdout.slice(0, 200))}`));
        return;
      }
      const { gbps, seconds, cpu_s_per_gb: cpu, direct, cache_dropped: dropped } = o;
      const numbers = typeof gbps === 'number' && typeof seconds === 'number' && typeof cpu === 'number';
      if (!numbers || typeof direct !== 'boolean') {
        reject(new RawIoError(`${what}: no gbps, seconds, cpu_s_per_gb, direct in ${stdout.trim()}`));
        return;
      }
      resolve({ gbps, seconds, cpuPerGb: cpu, direct, cacheDropped: typeof dropped === 'boolean' ? dropped : null });
    });
  });
}

/** The median proper: the mean of the two middle values for an even count (measure.ts's median takes the upper). */
export function midpoint(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 === 1 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

/** Pairs of kvflow and raw_io samples taken back to back, as the paired figures report them. */
export interface PairedFigure {
  /** Complete pairs. */
  n: number;
  kv: number[];
  raw: number[];
  /** kvflow / raw of each pair. */
  ratios: number[];
  /** midpoint of kv, of raw, and of the per-pair ratios (the figure's ratio). */
  value: number;
  baseline: number;
  ratio: number;
}

/** The paired figure of the first min(kv, raw) samples of each side; undefined without a pair. */
export function pairedFigure(kvGbps: readonly number[], rawGbps: readonly number[]): PairedFigure | undefined {
  const n = Math.min(kvGbps.length, rawGbps.length);
  if (n === 0) return undefined;
  const kv = kvGbps.slice(0, n);
  const raw = rawGbps.slice(0, n);
  const ratios = kv.map((k, i) => k / raw[i]!);
  return { n, kv, raw, ratios, value: midpoint(kv), baseline: midpoint(raw), ratio: midpoint(ratios) };
}
