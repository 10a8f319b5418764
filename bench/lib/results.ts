/**
 * Benchmark result files in the one shape DESIGN.md section 5 fixes for
 * everything under `bench/results/`, and a short table for the terminal (the
 * GPU box's reply only carries the end of the output, so the table goes last).
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';

/** One measured figure, compared with its same-run peer when there is one. */
export interface Result {
  /** Name, e.g. `h2d_1GiB`, `latency_64KiB_us`. */
  metric: string;
  value: number;
  /** E.g. `GB/s` (1e9 bytes/s), `ops/s`, `us`. */
  unit: string;
  /** The peer's figure from the same run (`null` when none was measured). */
  baseline: number | null;
  /** `value / baseline` (`null` without a baseline). */
  ratio: number | null;
  /** Anything else worth keeping: reps, spread, percentiles. */
  [extra: string]: unknown;
}

/** What a benchmark hands to {@link writeResult}; date and commit are filled in. */
export interface ResultInput {
  bench: string;
  /** The device's name as the box reported it (e.g. `NVIDIA H100 80GB HBM3`). */
  device: string;
  config: Record<string, unknown>;
  results: Result[];
}

/** The file's full shape. */
export interface ResultFile extends ResultInput {
  /** ISO 8601. */
  date: string;
  commit: string;
}

/**
 * The commit measured: `KVFLOW_COMMIT` where the caller passes it (the GPU
 * box gets a copy of the working tree whose `.git`, if any, is not the one
 * built: it reported an older commit there), else `git rev-parse HEAD`, else
 * `unknown`.
 */
export function currentCommit(): string {
  const env = process.env.KVFLOW_COMMIT;
  if (env !== undefined && env !== '') return env;
  try {
    const out = execFileSync('git', ['rev-parse', 'HEAD'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    const hash = out.trim();
    if (/^[0-9a-f]{40}$/.test(hash)) return hash;
  } catch {
    // No git, or not a checkout.
  }
  return 'unknown';
}

/** `value / baseline`, or `null` when there is nothing sensible to divide by. */
export function ratioOf(value: number, baseline: number | null): number | null {
  if (baseline === null || !Number.isFinite(baseline) || baseline === 0) return null;
  return value / baseline;
}

/**
 * Writes a result file (creating its directory) and returns what was written.
 * Written to a temporary name and renamed, so a run cut off midway never
 * leaves half a JSON file where a result is expected.
 */
export function writeResult(file: string, input: ResultInput): ResultFile {
  const data: ResultFile = {
    bench: input.bench,
    device: input.device,
    date: new Date().toISOString(),
    commit: currentCommit(),
    config: input.config,
    results: input.results,
  };
  mkdirSync(dirname(file), { recursive: true });
  const tmp = `${file}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(data, null, 2)}\n`);
  renameSync(tmp, file);
  return data;
}

/** Three significant digits for the table; the JSON keeps full precision. */
function fmt(n: number | null): string {
  if (n === null) return '-';
  if (!Number.isFinite(n)) return String(n);
  const abs = Math.abs(n);
  if (abs >= 1000) return Math.round(n).toString();
  return n.toPrecision(3);
}

/** Prints `metric  value unit  baseline  ratio` as an aligned table on stdout. */
export function printTable(results: readonly Result[]): void {
  const rows = [
    ['metric', 'value', 'unit', 'baseline', 'ratio'],
    ...results.map((r) => [r.metric, fmt(r.value), r.unit, fmt(r.baseline), r.ratio === null ? '-' : r.ratio.toFixed(2)]),
  ];
  const widths = [0, 1, 2, 3, 4].map((c) => Math.max(...rows.map((row) => (row[c] ?? '').length)));
  for (const row of rows) {
    const cells = row.map((cell, c) => (c === 0 || c === 2 ? cell.padEnd(widths[c] ?? 0) : cell.padStart(widths[c] ?? 0)));
    console.log(cells.join('  '));
  }
}
