/**
 * Soak (issue #13 item 8): does kvflow's resident memory level off when a
 * store is used for a long time? Loops, for `--minutes`, over: open a store
 * on one directory, put prompts (some durable), look them up and load every
 * layer (bytes checked on a sample of loads), put more than the tiers hold
 * (DRAM and NVMe evictions), close; every `--device-every` cycles the device
 * is disposed and opened again. `--store-every N` keeps a store open for N
 * cycles (at most until the device is reopened): each open starts an index
 * thread with its own LMDB environment, and LMDB keeps ~4 KiB of each after
 * close, so a large N takes that out of the figures. Every `--sample-seconds` it samples RSS,
 * V8 heap, external and array-buffer memory, the pinned pool, open
 * descriptors and threads. The result's headline is the slope of RSS over
 * the last half of the run (MiB per minute): near zero when it levels off.
 *
 *   node dist/bench/soak.js [--minutes 60] [--sample-seconds 10] [--backend cpu]
 *                           [--device-every 20] [--store-every 1]
 *                           [--json bench/results/soak-cpu.json] [--dir DIR]
 *
 * Besides the slope of every sample over the last half, the slope of the
 * floor (each minute's lowest resident size, over the last half of the
 * minutes): device reopens swing resident size by tens of MiB, the floor
 * shows memory that is never given back.
 *
 * Run off CI (an hour by default); a short run proves it works but says
 * little about a slope.
 */
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

import { KvLayout, KvStore, openDevice, type Device, type KvCache, type Stream } from '../src/index.js';
import { fillRandom } from './lib/measure.js';
import { printTable, writeResult, type Result } from './lib/results.js';

const MiB = 1 << 20;

/** 8 layers x 4 KV heads x 64 x f16, 16-token blocks, 64-token chunks: 512 KiB records. */
const SPEC = { layers: 8, kvHeads: 4, headDim: 64, dtype: 'f16' as const, blockTokens: 16, numBlocks: 512 };
const CHUNK = 64;
const BPC = CHUNK / SPEC.blockTokens;

interface Sample {
  /** Seconds since the start. */
  t: number;
  cycles: number;
  rssMiB: number;
  heapUsedMiB: number;
  heapTotalMiB: number;
  externalMiB: number;
  arrayBuffersMiB: number;
  pinnedInUseMiB: number;
  pinnedCachedMiB: number;
  fds: number;
  threads: number;
  /** Resident anonymous memory and resident file pages (mapped files: the index's, among others), from /proc/self/status. */
  rssAnonMiB: number;
  rssFileMiB: number;
}

/** A field of /proc/self/status (`Threads`, or a size in kB as `RssAnon`), NaN where the kernel gives none. */
function procStatus(status: string, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+)`, 'm').exec(status);
  return m ? Number(m[1]) : Number.NaN;
}

/** Least-squares slope of y over x. */
function slope(xs: readonly number[], ys: readonly number[]): number {
  const n = xs.length;
  if (n < 2) return Number.NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? Number.NaN : num / den;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      minutes: { type: 'string', default: '60' },
      'sample-seconds': { type: 'string', default: '10' },
      'device-every': { type: 'string', default: '20' },
      'store-every': { type: 'string', default: '1' },
      backend: { type: 'string', default: 'cpu' },
      json: { type: 'string', default: path.join('bench', 'results', 'soak-cpu.json') },
      dir: { type: 'string' },
    },
  });
  const minutes = Number(values.minutes);
  const sampleMs = Number(values['sample-seconds']) * 1000;
  const deviceEvery = Number(values['device-every']);
  const storeEvery = Number(values['store-every']);
  for (const [flag, v] of [['--device-every', deviceEvery], ['--store-every', storeEvery]] as const) {
    if (!Number.isSafeInteger(v) || v < 1) throw new Error(`expected an integer >= 1 for ${flag}, got ${v}`);
  }
  const backend = values.backend as 'cpu' | 'cuda' | 'auto';
  const base = values.dir ?? mkdtempSync(path.join(os.tmpdir(), 'kvflow-soak-'));
  const dir = path.join(base, 'store');
  const layout = new KvLayout(SPEC);
  const recordBytes = layout.stagingBytes(CHUNK);

  let dev: Device = openDevice({ backend });
  const deviceName = dev.info().name;
  const start = Date.now();
  const samples: Sample[] = [];
  let cycles = 0;
  const counts = { puts: 0, durablePuts: 0, loads: 0, checkedLoads: 0, mismatches: 0, failedLoads: 0, dramEvictions: 0 };
  const sample = (): void => {
    const m = process.memoryUsage();
    let pinned = { inUseBytes: Number.NaN, cachedBytes: Number.NaN };
    try {
      pinned = dev.pinnedStats();
    } catch {
      // Between a device's dispose and the next open.
    }
    const status = readFileSync('/proc/self/status', 'utf8');
    samples.push({
      t: (Date.now() - start) / 1000,
      cycles,
      rssMiB: m.rss / MiB,
      heapUsedMiB: m.heapUsed / MiB,
      heapTotalMiB: m.heapTotal / MiB,
      externalMiB: m.external / MiB,
      arrayBuffersMiB: m.arrayBuffers / MiB,
      pinnedInUseMiB: pinned.inUseBytes / MiB,
      pinnedCachedMiB: pinned.cachedBytes / MiB,
      fds: readdirSync('/proc/self/fd').length,
      threads: procStatus(status, 'Threads'),
      rssAnonMiB: procStatus(status, 'RssAnon') / 1024,
      rssFileMiB: procStatus(status, 'RssFile') / 1024,
    });
    const s = samples[samples.length - 1]!;
    console.error(`[soak] ${s.t.toFixed(0)} s, ${cycles} cycles: rss ${s.rssMiB.toFixed(1)} MiB (anon ${s.rssAnonMiB.toFixed(1)}, file ${s.rssFileMiB.toFixed(1)}), heap ${s.heapUsedMiB.toFixed(1)}, ` +
      `external ${s.externalMiB.toFixed(1)}, pinned ${s.pinnedInUseMiB.toFixed(1)}/${s.pinnedCachedMiB.toFixed(1)}, fds ${s.fds}, threads ${s.threads}`);
  };
  sample();
  const timer = setInterval(sample, sampleMs);

  /** Prompt p's block table in the source cache (distinct ids: at most 24 of 512). */
  const blocksOf = (p: number, n: number): number[] => Array.from({ length: n }, (_, i) => (p * 37 + i) % SPEC.numBlocks);
  let seed = 1;
  const prompt = (chunks: number): number[] => {
    const b = seed++ * 100_003;
    return Array.from({ length: chunks * CHUNK }, (_, i) => (b + i * 31) % 128_000);
  };
  let store: KvStore | undefined;
  let storeCycles = 0;
  const closeStore = async (): Promise<void> => {
    if (!store) return;
    counts.dramEvictions += store.stats().dram.evictions;
    await store.flush();
    await store.close();
    store = undefined;
  };
  try {
    while (Date.now() - start < minutes * 60_000) {
      if (cycles > 0 && cycles % deviceEvery === 0) {
        await closeStore();
        await dev.dispose();
        dev = openDevice({ backend });
      }
      const stream: Stream = dev.createStream();
      const src: KvCache = dev.allocKvCache(layout);
      const dst: KvCache = dev.allocKvCache(layout);
      // Random KV in the source cache (never zeros: a load of zeros would pass unnoticed).
      const host = dev.allocPinned(src.buffers[0]!.byteLength);
      for (const b of src.buffers) {
        fillRandom(host.array);
        stream.copy(b, 0, host, 0, b.byteLength);
      }
      await stream.synchronize();
      if (!store) {
        store = await KvStore.open({
          device: dev, layout, dir, fingerprint: { model: 'soak' }, chunkTokens: CHUNK,
          dramBytes: 24 * recordBytes, nvmeBytes: 48 * recordBytes, admit: 'always',
        });
        storeCycles = 0;
      }
      const prompts: number[][] = [];
      for (let p = 0; p < 12; p++) {
        const chunks = 1 + (p % 6);
        const tokens = prompt(chunks);
        const durable = p % 3 === 0;
        await store.put(tokens, src, blocksOf(p, chunks * BPC), stream, { durable });
        counts.puts++;
        if (durable) counts.durablePuts++;
        prompts.push(tokens);
      }
      // Look every prompt up and load it; check the bytes of one in four.
      for (const [p, tokens] of prompts.entries()) {
        const hit = store.lookup(tokens);
        const table = Array.from({ length: hit.chunks.length * BPC }, (_, i) => i);
        for (let l = 0; l < SPEC.layers; l++) await store.loadLayer(hit.chunks, l, dst, table, stream).done().catch(() => undefined);
        const outcome = await hit.settled();
        counts.loads++;
        if (!outcome.ok) counts.failedLoads++;
        if (p % 4 === 0 && hit.chunks.length > 0 && outcome.ok) {
          counts.checkedLoads++;
          // The put read blocksOf(p) of src; the load wrote blocks 0..n-1 of dst.
          const n = hit.chunks.length * BPC;
          const used = blocksOf(p, n);
          const a = dev.allocPinned(layout.pieceBytes);
          const b = dev.allocPinned(layout.pieceBytes);
          for (let l = 0; l < SPEC.layers; l++) {
            for (const kv of [0, 1] as const) {
              for (let i = 0; i < n; i++) {
                const pa = layout.piece(l, kv, used[i]!);
                const pb = layout.piece(l, kv, i);
                stream.copy(a, 0, src.buffers[pa.buffer]!, pa.offset, layout.pieceBytes);
                stream.copy(b, 0, dst.buffers[pb.buffer]!, pb.offset, layout.pieceBytes);
                await stream.synchronize();
                if (Buffer.compare(a.array, b.array) !== 0) counts.mismatches++;
              }
            }
          }
          await Promise.all([a.dispose(), b.dispose()]);
        }
        hit.release();
      }
      if (++storeCycles >= storeEvery) await closeStore();
      else await store.flush();
      await Promise.all([host.dispose(), src.dispose(), dst.dispose(), stream.dispose()]);
      cycles++;
    }
  } finally {
    clearInterval(timer);
    await closeStore();
    sample();
    await dev.dispose();
    if (values.dir === undefined) rmSync(base, { recursive: true, force: true });
  }

  const half = samples.filter((s) => s.t >= samples[samples.length - 1]!.t / 2);
  const perMinute = (key: keyof Sample): number => slope(half.map((s) => s.t / 60), half.map((s) => s[key] as number));
  // Each whole minute's lowest resident size, and its slope over the last half of the minutes.
  const floors: { minute: number; rssMiB: number }[] = [];
  for (const s of samples) {
    const m = Math.floor(s.t / 60);
    if (m >= minutes) break;
    const f = floors.find((x) => x.minute === m);
    if (!f) floors.push({ minute: m, rssMiB: s.rssMiB });
    else f.rssMiB = Math.min(f.rssMiB, s.rssMiB);
  }
  const lateFloors = floors.filter((f) => f.minute >= minutes / 2);
  const first = samples[0]!;
  const last = samples[samples.length - 1]!;
  const fig = (metric: string, value: number, unit: string, extra: Record<string, unknown> = {}): Result => ({ metric, value, unit, baseline: null, ratio: null, ...extra });
  const results: Result[] = [
    fig('rss_slope_last_half', perMinute('rssMiB'), 'MiB/min', { samples: half.length }),
    fig('rss_floor_slope_last_half', slope(lateFloors.map((f) => f.minute), lateFloors.map((f) => f.rssMiB)), 'MiB/min', { floors }),
    fig('heap_used_slope_last_half', perMinute('heapUsedMiB'), 'MiB/min'),
    fig('external_slope_last_half', perMinute('externalMiB'), 'MiB/min'),
    fig('rss_start', first.rssMiB, 'MiB'),
    fig('rss_end', last.rssMiB, 'MiB'),
    fig('rss_max', Math.max(...samples.map((s) => s.rssMiB)), 'MiB'),
    fig('heap_used_end', last.heapUsedMiB, 'MiB'),
    fig('external_end', last.externalMiB, 'MiB'),
    fig('pinned_cached_end', last.pinnedCachedMiB, 'MiB'),
    fig('fds_start', first.fds, 'count'),
    fig('fds_end', last.fds, 'count'),
    fig('threads_start', first.threads, 'count'),
    fig('threads_end', last.threads, 'count'),
    fig('cycles', cycles, 'count'),
    fig('byte_mismatches', counts.mismatches, 'count', { checkedLoads: counts.checkedLoads }),
  ];
  const out = writeResult(values.json!, {
    bench: 'soak',
    device: deviceName,
    config: { backend, minutes, sampleSeconds: sampleMs / 1000, deviceEvery, storeEvery, spec: SPEC, chunkTokens: CHUNK, recordBytes, counts, samples },
    results,
  });
  printTable(out.results);
}

await main();
