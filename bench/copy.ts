/**
 * Copy benchmark: kvflow's pinned <-> device copies against bare
 * cudaMemcpyAsync (bench/native/copy_baseline.cu, run earlier in the same
 * call), as DESIGN.md section 5 asks: each figure with its same-run baseline
 * and a ratio, because boxes differ from one another.
 *
 *   node dist/bench/copy.js [--json out.json] [--baseline copy_baseline.json]
 *                           [--backend auto|cuda|cpu] [--quick]
 *
 * The method mirrors the C++ program on purpose (same sizes, directions,
 * offset rotation, calibration), so that the ratio measures kvflow's cost and
 * not a difference between two benchmarks. One difference is inherent: kvflow
 * is timed on the host clock from the first enqueue to the resolution of the
 * last event's promise, because that is what a JS caller waits for; the
 * baseline's bandwidth is timed with CUDA events.
 *
 * The CPU backend runs it too (no baseline), so it can be smoke-tested without
 * a GPU; its figures measure memcpy, not a link.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import type { NativeDevice } from '../src/binding/types.js';
import { openDevice, type DeviceBuffer, type PinnedBuffer, type Stream } from '../src/index.js';
import { fillRandom, measure, median, since, spreadPct, type Run } from './lib/measure.js';
import { printTable, ratioOf, writeResult, type Result } from './lib/results.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const SIZES = [4 * KiB, 64 * KiB, MiB, 16 * MiB, 256 * MiB, GiB];
const OPS_BYTES = 64 * KiB;
const DIRS = ['h2d', 'd2h', 'bidir'] as const;
type Dir = (typeof DIRS)[number];

/** `4KiB`, `1MiB`, `1GiB`: the size part of a metric name, as the C++ program prints it. */
function label(bytes: number): string {
  if (bytes >= GiB) return `${bytes / GiB}GiB`;
  if (bytes >= MiB) return `${bytes / MiB}MiB`;
  return `${bytes / KiB}KiB`;
}

/** Buffers and streams shared by every run: H2D reads hA into dA, D2H reads dB into hB. */
interface Rig {
  hA: PinnedBuffer;
  hB: PinnedBuffer;
  dA: DeviceBuffer;
  dB: DeviceBuffer;
  s1: Stream;
  s2: Stream;
  cap: number;
}

/** A timed run of `reps` operations, returning seconds. */
/** Copy i starts at another offset, walking the whole buffer, so small copies do not sit in one cached spot. */
function offsetOf(i: number, bytes: number, cap: number): number {
  return (i % Math.floor(cap / bytes)) * bytes;
}

/** Enqueue every copy, then await the last event of each stream used: what a caller moving a batch waits for. */
function copyRun(r: Rig, dir: Dir, bytes: number): Run {
  return async (reps) => {
    const t0 = process.hrtime.bigint();
    const d2h = dir === 'bidir' ? r.s2 : r.s1;
    for (let i = 0; i < reps; i++) {
      const off = offsetOf(i, bytes, r.cap);
      // Interleaved, so both copy engines get work from the start in bidir.
      if (dir !== 'd2h') r.s1.copy(r.dA, off, r.hA, off, bytes);
      if (dir !== 'h2d') d2h.copy(r.hB, off, r.dB, off, bytes);
    }
    const last = [r.s1.record().done()];
    if (dir === 'bidir') last.push(r.s2.record().done());
    await Promise.all(last);
    return since(t0);
  };
}

/**
 * One 64 KiB copy at a time, each awaited through its event: JS-to-completion
 * cost per copy. `fused`: `copyAndRecord()`, the call made for this;
 * otherwise `copy()` then `record()`.
 */
function latencyRun(r: Rig, perOp: number[], fused: boolean): Run {
  return async (reps) => {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < reps; i++) {
      const off = offsetOf(i, OPS_BYTES, r.cap);
      const a = process.hrtime.bigint();
      if (fused) {
        await r.s1.copyAndRecord(r.dA, off, r.hA, off, OPS_BYTES).done();
      } else {
        r.s1.copy(r.dA, off, r.hA, off, OPS_BYTES);
        await r.s1.record().done();
      }
      perOp.push(Number(process.hrtime.bigint() - a) / 1e3);
    }
    return since(t0);
  };
}

/**
 * The host cost of each call on the awaited copy's path, in us per call:
 * `ops` calls in runs of 256 timed as one (no clock read per call), the
 * stream drained between runs outside the timing (so a full launch queue
 * never turns an enqueue into a wait). `napi` is a call into the addon that
 * does nothing but read a completed event's status (by its id): what any
 * crossing costs. The native record and copyRecord hand out bare ids (no JS
 * object: that is the stream's record()), released outside the timing.
 */
async function callCosts(r: Rig, ops: number, device: NativeDevice): Promise<Record<string, number>> {
  const native = r.s1.native;
  // The addon's own calls hand out event ids that no JS object holds: they
  // are kept here and released after each run, outside its timing.
  const ids: number[] = [];
  const settledId = native.record(false);
  await r.s1.synchronize();
  const dA = r.dA.native;
  const hA = r.hA.native;
  const block = async (body: (i: number) => unknown): Promise<number> => {
    let ns = 0n;
    for (let i = 0; i < ops; ) {
      const end = Math.min(ops, i + 256);
      const t0 = process.hrtime.bigint();
      for (; i < end; i++) body(i);
      ns += process.hrtime.bigint() - t0;
      await r.s1.synchronize();
      device.releaseEvents(ids.splice(0));
    }
    return Number(ns) / 1e3 / ops;
  };
  const costs: Record<string, number> = {};
  // Twice each, the second kept: the first warms the path up.
  for (let round = 0; round < 2; round++) {
    costs.napi_call_us = await block(() => device.eventStatus(settledId));
    costs.native_record_us = await block(() => ids.push(native.record(false)));
    costs.record_us = await block(() => r.s1.record());
    costs.native_copy_us = await block((i) => native.copy(dA, offsetOf(i, OPS_BYTES, r.cap), hA, offsetOf(i, OPS_BYTES, r.cap), OPS_BYTES));
    costs.copy_us = await block((i) => r.s1.copy(r.dA, offsetOf(i, OPS_BYTES, r.cap), r.hA, offsetOf(i, OPS_BYTES, r.cap), OPS_BYTES));
    costs.native_copy_record_us = await block((i) =>
      ids.push(native.copyRecord(dA, offsetOf(i, OPS_BYTES, r.cap), hA, offsetOf(i, OPS_BYTES, r.cap), OPS_BYTES, false)),
    );
    costs.copy_and_record_us = await block((i) =>
      r.s1.copyAndRecord(r.dA, offsetOf(i, OPS_BYTES, r.cap), r.hA, offsetOf(i, OPS_BYTES, r.cap), OPS_BYTES),
    );
  }
  device.releaseEvents([settledId]);
  return costs;
}

/**
 * Where one awaited copy's time goes, outside the timed runs (the clock reads
 * cost time of their own): medians over `ops` copies of the copy call, the
 * record call and the wait until done() resolved, in us.
 */
async function latencyParts(r: Rig, ops: number): Promise<{ copy: number; record: number; wait: number }> {
  const copy: number[] = [];
  const record: number[] = [];
  const wait: number[] = [];
  const us = (from: bigint, to: bigint): number => Number(to - from) / 1e3;
  for (let i = 0; i < ops; i++) {
    const off = offsetOf(i, OPS_BYTES, r.cap);
    const a = process.hrtime.bigint();
    r.s1.copy(r.dA, off, r.hA, off, OPS_BYTES);
    const b = process.hrtime.bigint();
    const event = r.s1.record();
    const c = process.hrtime.bigint();
    await event.done();
    const d = process.hrtime.bigint();
    copy.push(us(a, b));
    record.push(us(b, c));
    wait.push(us(c, d));
  }
  return { copy: percentile(copy, 0.5), record: percentile(record, 0.5), wait: percentile(wait, 0.5) };
}

/** The `p` quantile of `xs` (nearest rank; NaN for none). */
function percentile(xs: number[], p: number): number {
  const sorted = [...xs].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
}

/** Baseline figures keyed by the metric names this file reports. */
function loadBaseline(file: string): { device: string | undefined; values: Map<string, number> } {
  const raw: unknown = JSON.parse(readFileSync(file, 'utf8'));
  const obj = raw as { device?: unknown; results?: unknown };
  if (typeof raw !== 'object' || raw === null || !Array.isArray(obj.results)) {
    throw new Error(`${file}: expected {"results": [...]} from copy_baseline`);
  }
  const values = new Map<string, number>();
  for (const entry of obj.results as Array<Record<string, unknown>>) {
    const { metric, bytes } = entry;
    if (typeof metric !== 'string' || typeof bytes !== 'number') throw new Error(`${file}: bad entry ${JSON.stringify(entry)}`);
    const [name, value] =
      metric === 'ops'
        ? [`ops_${label(bytes)}`, entry.ops_per_s]
        : metric === 'latency'
          ? [`latency_${label(bytes)}_us`, entry.us]
          : [`${metric}_${label(bytes)}`, entry.gbps];
    if (typeof value !== 'number') throw new Error(`${file}: no figure in ${JSON.stringify(entry)}`);
    values.set(name, value);
  }
  return { device: typeof obj.device === 'string' ? obj.device : undefined, values };
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      json: { type: 'string' },
      baseline: { type: 'string' },
      backend: { type: 'string' },
      quick: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const quick = args.quick ?? false;
  const minSeconds = quick ? 0.02 : 0.2;
  const samples = quick ? 3 : 5;
  const sizes = quick ? SIZES.slice(0, 4) : SIZES;
  const base = args.baseline === undefined ? undefined : loadBaseline(args.baseline);
  // A baseline only means something against the GPU: never fall back to the CPU silently then.
  const backend = args.backend ?? (base ? 'cuda' : undefined);
  if (backend !== undefined && backend !== 'auto' && backend !== 'cuda' && backend !== 'cpu') {
    throw new Error(`--backend: expected auto, cuda or cpu, got ${backend}`);
  }

  const dev = openDevice(backend === undefined ? {} : { backend });
  try {
    const info = dev.info();
    if (base?.device !== undefined && base.device !== info.name) {
      console.error(`warning: baseline ran on ${base.device}, kvflow on ${info.name}`);
    }
    const cap = sizes[sizes.length - 1] ?? GiB;
    const r: Rig = {
      hA: dev.allocPinned(cap),
      hB: dev.allocPinned(cap),
      dA: dev.allocDevice(cap),
      dB: dev.allocDevice(cap),
      s1: dev.createStream(),
      s2: dev.createStream(),
      cap,
    };
    // Random data, and one round trip checked byte for byte: a copy that does
    // nothing must not pass for a fast one.
    fillRandom(r.hA.array);
    fillRandom(r.hB.array);
    r.s1.copy(r.dA, 0, r.hA, 0, cap);
    r.s1.copy(r.hB, 0, r.dA, 0, cap);
    await r.s1.synchronize();
    if (Buffer.compare(r.hA.array, r.hB.array) !== 0) throw new Error(`round trip of ${cap} bytes came back different`);
    fillRandom(r.hB.array);
    r.s1.copy(r.dB, 0, r.hB, 0, cap);
    await r.s1.synchronize();

    const results: Result[] = [];
    /** A figure against the baseline's figure `baselineMetric`. */
    const addAs = (metric: string, baselineMetric: string, value: number, unit: string, extra: Record<string, unknown>): void => {
      const baseline = base?.values.get(baselineMetric) ?? null;
      if (base && baseline === null) console.error(`warning: no baseline for ${baselineMetric}`);
      results.push({ metric, value, unit, baseline, ratio: ratioOf(value, baseline), ...extra });
      console.error(`${metric} ${value.toPrecision(4)} ${unit}`); // progress, on stderr: stdout ends with the table
    };
    const add = (metric: string, value: number, unit: string, extra: Record<string, unknown>): void =>
      addAs(metric, metric, value, unit, extra);

    for (const bytes of sizes) {
      for (const dir of DIRS) {
        const m = await measure(copyRun(r, dir, bytes), minSeconds, samples);
        // bidir counts the bytes of both directions (aggregate link traffic), as the baseline does.
        const moved = bytes * m.reps * (dir === 'bidir' ? 2 : 1);
        add(`${dir}_${label(bytes)}`, moved / m.median / 1e9, 'GB/s', { bytes, reps: m.reps, spread_pct: m.spreadPct });
      }
    }

    const ops = await measure(copyRun(r, 'h2d', OPS_BYTES), minSeconds, samples);
    add(`ops_${label(OPS_BYTES)}`, ops.reps / ops.median, 'ops/s', {
      bytes: OPS_BYTES,
      direction: 'h2d',
      reps: ops.reps,
      spread_pct: ops.spreadPct,
    });

    // The two ways of awaiting one copy, alternated run by run so drift hits
    // both alike: copyAndRecord() (one call) and copy() then record().
    const perOp: number[] = [];
    const perOpTwo: number[] = [];
    const fusedRun = latencyRun(r, perOp, true);
    const twoRun = latencyRun(r, perOpTwo, false);
    // measure() sets the reps on the one call (and warms it up); then both
    // run `samples` times, alternating.
    const lat = await measure(fusedRun, minSeconds, samples);
    await twoRun(lat.reps);
    perOp.length = 0; // percentiles over the alternating samples only, as for the two calls
    perOpTwo.length = 0;
    const fusedS: number[] = [];
    const twoS: number[] = [];
    for (let i = 0; i < samples; i++) {
      fusedS.push(await fusedRun(lat.reps));
      twoS.push(await twoRun(lat.reps));
    }
    const fusedPer = (1e6 * median(fusedS)) / lat.reps;
    const twoPer = (1e6 * median(twoS)) / lat.reps;
    const parts = await latencyParts(r, 2000);
    const calls = await callCosts(r, 2000, dev.native);
    add(`latency_${label(OPS_BYTES)}_us`, fusedPer, 'us', {
      bytes: OPS_BYTES,
      direction: 'h2d',
      call: 'copyAndRecord',
      reps: lat.reps,
      spread_pct: spreadPct(fusedS),
      p50_us: percentile(perOp, 0.5),
      p99_us: percentile(perOp, 0.99),
      call_costs_us: calls,
    });
    addAs(`latency_${label(OPS_BYTES)}_two_calls_us`, `latency_${label(OPS_BYTES)}_us`, twoPer, 'us', {
      bytes: OPS_BYTES,
      direction: 'h2d',
      call: 'copy + record',
      reps: lat.reps,
      spread_pct: spreadPct(twoS),
      p50_us: percentile(perOpTwo, 0.5),
      p99_us: percentile(perOpTwo, 0.99),
      // medians of each part over 2,000 more copies (they need not add up to the total's median)
      copy_call_p50_us: parts.copy,
      record_call_p50_us: parts.record,
      wait_p50_us: parts.wait,
    });

    if (args.json !== undefined) {
      writeResult(args.json, {
        bench: 'copy',
        device: info.name,
        config: {
          backend: dev.backend,
          sizes,
          quick,
          min_seconds: minSeconds,
          samples,
          timing: 'host clock, first enqueue to last event resolved; median of samples',
          ratio: 'kvflow / baseline: above 1 is better for GB/s and ops/s, worse for us',
          bidir: 'bytes of both directions counted',
          baseline_file: args.baseline ?? null,
          baseline_device: base?.device ?? null,
          pcie: info.pcieGen > 0 ? `Gen${info.pcieGen} x${info.pcieWidth}` : null,
          driver_version: info.driverVersion,
          runtime_version: info.runtimeVersion,
          node: process.version,
        },
        results,
      });
    }
    console.log(`copy benchmark on ${info.name} (${dev.backend})${quick ? ', quick' : ''}`);
    printTable(results);
  } finally {
    await dev.dispose();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
