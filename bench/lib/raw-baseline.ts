/**
 * The raw O_DIRECT baseline (bench/native/raw_io.cc) as the NVMe-facing
 * benchmarks read it: its best read and write points and its sweep.
 */
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

