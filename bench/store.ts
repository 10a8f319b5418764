/**
 * Store benchmark (issue: KvStore): a 3,500-token prefix of a
 * Llama-3-8B-shaped cache (32 layers x 8 KV heads x 128 x bf16; 13 chunks of
 * 256 tokens, 416 MiB) loaded layer by layer into HBM
 * - from the DRAM tier, against one contiguous pinned -> HBM copy of the same
 *   bytes measured in the same run (goal: >= 50 GB/s effective);
 * - from the NVMe tier, cold (page cache dropped where root), against the raw
 *   O_DIRECT read rate of the same disk (bench/native/raw_io.cc, run earlier
 *   in the same call: --baseline raw_io.json; goal >= 0.95);
 * and the durable put of the prefix to NVMe (gather, write with checksums,
 * fsync, index commit): into slots written before (a full store evicting)
 * against raw O_DIRECT overwrites of that baseline, and into a fresh
 * store's never-written slots against raw_io's first write of its file.
 * Every load is checked byte for byte.
 *
 *   node dist/bench/store.js [--json out.json] [--baseline raw_io.json] [--backend auto|cuda|cpu]
 *                            [--dir DIR] [--tokens N] [--samples N] [--raw-io PATH]
 *
 * The disk's rate drifts by tens of percent over minutes, so each cold load
 * is also paired with a raw O_DIRECT read of the same bytes of the store's
 * slab file (`raw_io --pass read` at the baseline's best setting, its own
 * cache drop first; --raw-io, default build-bench/raw_io), and each
 * overwriting put with a raw O_DIRECT overwrite of as many bytes (a file
 * beside --dir, written once untimed first), each taken right before or
 * after its kvflow sample in alternating order: load_nvme_cold_*_paired and
 * put_nvme_durable_paired, whose ratio is the median of the per-pair ratios.
 *
 * Loads run with each paged engine (`dma`, the default, as
 * load_*_3500_tokens; `kernel` as load_*_3500_tokens_kernel).
 *
 * Timing: host clock from the first loadLayer call (all 32 layers are
 * enqueued at once, as a pipeline with full lookahead does) to the last
 * layer's event; the put from the call to its resolution. The host time
 * of the 32 loadLayer calls alone is reported as load_dram_*_enqueue (ms):
 * when it comes near the whole load's time, the load is bound by the CPU;
 * that of the first call as load_dram_*_first_layer (ms): no copy starts
 * before it returns.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

import { KvLayout, KvStore, openDevice, type Device, type KvCache, type Stream } from '../src/index.js';
import { fillRandom, median, now, since } from './lib/measure.js';
import { loadBaseline, pairedFigure, rawPass, RawIoError, type RawPass } from './lib/raw-baseline.js';
import { printTable, ratioOf, writeResult, type Result } from './lib/results.js';

/** DRAM-tier loads timed per sample and engine, after the cold load that promotes the prefix. */
const WARM_LOADS = 4;

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

function dropCaches(): boolean {
  spawnSync('sync');
  try {
    writeFileSync('/proc/sys/vm/drop_caches', '3');
    return true;
  } catch {
    return false;
  }
}

async function hostToCache(dev: Device, stream: Stream, cache: KvCache, data: Uint8Array[], back: boolean): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (let i = 0; i < cache.buffers.length; i++) {
    const b = cache.buffers[i]!;
    const p = dev.allocPinned(b.byteLength);
    if (back) stream.copy(p, 0, b, 0, b.byteLength);
    else {
      p.array.set(data[i]!);
      stream.copy(b, 0, p, 0, b.byteLength);
    }
    await stream.synchronize();
    out.push(back ? p.array.slice() : data[i]!);
    await p.dispose();
  }
  return out;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      json: { type: 'string' },
      baseline: { type: 'string' },
      backend: { type: 'string', default: 'auto' },
      dir: { type: 'string', default: path.join(root, 'bench-out', 'store-data') },
      tokens: { type: 'string', default: '3500' },
      samples: { type: 'string', default: '4' },
      'raw-io': { type: 'string', default: path.join(root, 'build-bench', 'raw_io') },
    },
  });
  const tokensCount = Number(values.tokens);
  const samples = Number(values.samples);
  const backend = values.backend as 'auto' | 'cuda' | 'cpu';
  const dev = openDevice({ backend });
  const info = dev.info();
  const layout = new KvLayout({ layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens: 16, numBlocks: 2 * Math.ceil(tokensCount / 16) + 32 });
  const chunkTokens = 256;
  const chunks = Math.floor(tokensCount / chunkTokens);
  const bpc = chunkTokens / layout.blockTokens;
  const dir = values.dir!;
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const cache = dev.allocKvCache(layout);
  const stream = dev.createStream();
  const compute = dev.createStream({ priority: 'high' });
  const data = cache.buffers.map((b) => {
    const a = new Uint8Array(b.byteLength);
    fillRandom(a);
    return a;
  });
  await hostToCache(dev, stream, cache, data, false);
  const perm = Array.from({ length: layout.numBlocks }, (_, i) => i).sort(() => Math.random() - 0.5);
  const from = perm.slice(0, chunks * bpc);
  const to = perm.slice(chunks * bpc, 2 * chunks * bpc);
  const randomTokens = (): number[] => Array.from({ length: tokensCount }, () => Math.floor(Math.random() * 128000));
  const tokens = randomTokens();
  const recordBytes = layout.extentBytes(chunkTokens) * layout.layers;
  const bytes = chunks * recordBytes;
  const options = {
    device: dev, layout, fingerprint: { model: 'bench/llama-3-8b-shape' }, dir, chunkTokens,
    nvmeBytes: chunks * recordBytes, dramBytes: (chunks + 2) * recordBytes, admit: 'never' as const,
  };

  const check = async (): Promise<void> => {
    const got = await hostToCache(dev, stream, cache, data, true);
    for (let layer = 0; layer < layout.layers; layer++) {
      for (let i = 0; i < to.length; i++) {
        for (const kv of [0, 1] as const) {
          const a = layout.piece(layer, kv, from[i]!);
          const b = layout.piece(layer, kv, to[i]!);
          if (Buffer.compare(data[a.buffer]!.subarray(a.offset, a.offset + layout.pieceBytes), got[b.buffer]!.subarray(b.offset, b.offset + layout.pieceBytes)) !== 0) {
            throw new Error(`store bench: layer ${layer} block ${i} differs after a load`);
          }
        }
      }
    }
  };
  // Seconds of a whole load, and of enqueuing it (host time spent in the 32 loadLayer calls).
  const enqueued = new Map<string, number[]>();
  const firstLayer = new Map<string, number[]>(); // host ms of the first loadLayer call (the GPU idles until it returns)
  const loadAll = async (store: KvStore, engine: string): Promise<number> => {
    const hit = store.lookup(tokens);
    if (hit.chunks.length !== chunks) throw new Error(`store bench: expected ${chunks} chunks cached, found ${hit.chunks.length}`);
    const t0 = now();
    let first = 0;
    for (let layer = 0; layer < layout.layers; layer++) {
      compute.waitEvent(store.loadLayer(hit.chunks, layer, cache, to, stream));
      if (layer === 0) first = since(t0);
    }
    const e = since(t0);
    await compute.record().done();
    const s = since(t0);
    hit.release();
    if (!enqueued.has(engine)) enqueued.set(engine, []);
    enqueued.get(engine)!.push(e * 1e3);
    if (!firstLayer.has(engine)) firstLayer.set(engine, []);
    firstLayer.get(engine)!.push(first * 1e3);
    return s;
  };

  // Contiguous pinned -> HBM copy of the same bytes: the DRAM tier's ceiling.
  const pinned = dev.allocPinned(bytes);
  fillRandom(pinned.array);
  const target = dev.allocDevice(bytes);
  const contiguous: number[] = [];
  for (let i = 0; i < samples + 1; i++) {
    const t0 = now();
    stream.copy(target, 0, pinned, 0, bytes);
    await stream.record().done();
    if (i > 0) contiguous.push(bytes / since(t0) / 1e9);
  }
  await pinned.dispose();
  await target.dispose();

  // Durable put (fresh store each sample), then per paged engine: cold NVMe
  // loads (page cache dropped; a fresh process-local DRAM tier), then DRAM loads.
  const engines = ['dma', 'kernel'] as const;
  const raw = values.baseline ? loadBaseline(values.baseline) : undefined;
  // Cold loads paired with raw reads of the slab file, overwriting puts with
  // raw overwrites of a file of the same size (see the header).
  const rawIo = values['raw-io']!;
  let pairedSkip: string | null = null;
  if (raw?.readBest === undefined || raw.writeBest === undefined) pairedSkip = 'no --baseline (raw_io.json): no raw setting';
  else {
    try {
      accessSync(rawIo, constants.X_OK);
    } catch (e) {
      pairedSkip = `no raw_io program at ${rawIo}: ${(e as Error).message}`;
    }
  }
  let pairedError: string | null = null;
  interface Pairs { kv: number[]; raw: RawPass[]; order: string[]; rawBytes: number }
  const pairs = new Map<string, Pairs>();
  const pairsOf = (metric: string): Pairs => {
    if (!pairs.has(metric)) pairs.set(metric, { kv: [], raw: [], order: [], rawBytes: 0 });
    return pairs.get(metric)!;
  };
  const rawWriteFile = path.join(path.dirname(path.resolve(dir)), 'store-raw-write.bin');
  /** One raw pass for the pair of `metric`: a read of the store's first slab file, or an overwrite of rawWriteFile. */
  const rawTake = async (metric: string, pass: 'read' | 'write'): Promise<void> => {
    if (pairedSkip !== null || pairedError !== null) return;
    let file = rawWriteFile;
    let n = bytes;
    if (pass === 'read') {
      const slab = readdirSync(dir, { recursive: true, encoding: 'utf8' }).filter((f) => /slab-\d+\.kv$/.test(f)).sort()[0];
      if (slab === undefined) {
        pairedError = `no slab file under ${dir}`;
        return;
      }
      file = path.join(dir, slab);
      n = Math.min(bytes, statSync(file).size);
    }
    try {
      pairsOf(metric).raw.push(await rawPass(rawIo, pass, file, pass === 'read' ? raw!.readBest! : raw!.writeBest!, n));
      pairsOf(metric).rawBytes = n;
    } catch (e) {
      if (!(e instanceof RawIoError)) throw e;
      pairedError = e.message;
    }
  };
  /** `kvflow` (GB/s) and a raw pass, in the order given; the pair's kvflow figure is what `kvflow` returned. */
  const paired = async (metric: string, pass: 'read' | 'write', rawFirst: boolean, kvflow: () => Promise<number>): Promise<number> => {
    const p = pairsOf(metric);
    p.order.push(rawFirst ? 'raw first' : 'kvflow first');
    if (rawFirst) await rawTake(metric, pass);
    const gbps = await kvflow();
    p.kv.push(gbps);
    if (!rawFirst) await rawTake(metric, pass);
    return gbps;
  };
  if (pairedSkip === null) {
    // Written once untimed, so that no timed raw write allocates blocks (the puts it pairs with overwrite slots).
    try {
      await rawPass(rawIo, 'write', rawWriteFile, raw!.writeBest!, bytes);
    } catch (e) {
      if (!(e instanceof RawIoError)) throw e;
      pairedError = e.message;
    }
  }
  const puts: number[] = [];
  const firstPuts: number[] = [];
  const cold = new Map<string, number[]>(engines.map((e) => [e, []]));
  const warm = new Map<string, number[]>(engines.map((e) => [e, []]));
  let dropped = false;
  // Each sample: a fresh store with exactly one slot per chunk; prompt A is
  // put first (blocks never written: the filesystem converts unwritten
  // extents, as raw_io's first write of its file does), then prompt B, which
  // evicts A and overwrites its slots (the steady state of a full store).
  for (let i = 0; i < samples; i++) {
    rmSync(dir, { recursive: true, force: true });
    let store = await KvStore.open(options);
    spawnSync('sync');
    const t0 = now();
    await store.put(randomTokens(), cache, from, stream, { durable: true });
    firstPuts.push(bytes / since(t0) / 1e9);
    puts.push(await paired('put_nvme_durable_paired', 'write', i % 2 === 0, async () => {
      spawnSync('sync');
      const t = now();
      await store.put(tokens, cache, from, stream, { durable: true });
      return bytes / since(t) / 1e9;
    }));
    await store.close();
    for (const [e, engine] of engines.entries()) {
      // Per engine, raw first in every other sample (the engines start on opposite sides).
      const metric = `load_nvme_cold_${tokensCount}_tokens${engine === 'dma' ? '' : `_${engine}`}_paired`;
      cold.get(engine)!.push(await paired(metric, 'read', (i + e) % 2 === 0, async () => {
        dropped = dropCaches();
        store = await KvStore.open({ ...options, pagedEngine: engine });
        return bytes / (await loadAll(store, `${engine}_cold`)) / 1e9;
      }));
      await check();
      for (let w = 0; w < WARM_LOADS; w++) warm.get(engine)!.push(bytes / (await loadAll(store, engine)) / 1e9);
      await check();
      await store.close();
    }
  }
  rmSync(dir, { recursive: true, force: true });
  rmSync(rawWriteFile, { force: true });

  const contiguousGbs = median(contiguous);
  const rawRead = raw?.readBest?.value ?? null;
  const results: Result[] = [];
  for (const engine of engines) {
    const suffix = engine === 'dma' ? '' : `_${engine}`;
    const w = warm.get(engine)!;
    const c = cold.get(engine)!;
    results.push(
      { metric: `load_dram_${tokensCount}_tokens${suffix}`, value: median(w), unit: 'GB/s', baseline: contiguousGbs, ratio: ratioOf(median(w), contiguousGbs), samples: w, engine, goal_gbs: 50, enqueue_ms: enqueued.get(engine) },
      { metric: `load_nvme_cold_${tokensCount}_tokens${suffix}`, value: median(c), unit: 'GB/s', baseline: rawRead, ratio: ratioOf(median(c), rawRead), samples: c, engine, goal_ratio: 0.95, enqueue_ms: enqueued.get(`${engine}_cold`) },
      { metric: `load_dram_${tokensCount}_tokens${suffix}_enqueue`, value: median(enqueued.get(engine)!), unit: 'ms', baseline: null, ratio: null, samples: enqueued.get(engine)!, engine },
      { metric: `load_dram_${tokensCount}_tokens${suffix}_first_layer`, value: median(firstLayer.get(engine)!), unit: 'ms', baseline: null, ratio: null, samples: firstLayer.get(engine)!, engine },
    );
  }
  for (const [metric, p] of pairs) {
    const f = pairedFigure(p.kv, p.raw.map((r) => r.gbps));
    if (f === undefined) continue;
    results.push({
      metric, value: f.value, unit: 'GB/s', baseline: f.baseline, ratio: f.ratio,
      ratio_is: 'median of per-pair ratios (kvflow / raw_io pass of the same pair)', samples: f.kv, baseline_samples: f.raw,
      pair_ratios: f.ratios, order: p.order.slice(0, f.n), raw_bytes: p.rawBytes, raw_direct: p.raw.map((r) => r.direct),
      raw_cache_dropped: p.raw.map((r) => r.cacheDropped), ...(metric.startsWith('load') ? { goal_ratio: 0.95 } : {}),
    });
  }
  results.push(
    { metric: 'put_nvme_durable', value: median(puts), unit: 'GB/s', baseline: raw?.writeBest?.value ?? null, ratio: ratioOf(median(puts), raw?.writeBest?.value ?? null), samples: puts, slots: 'overwritten' },
    { metric: 'put_nvme_durable_fresh_slots', value: median(firstPuts), unit: 'GB/s', baseline: raw?.createGbps ?? null, ratio: ratioOf(median(firstPuts), raw?.createGbps ?? null), samples: firstPuts, slots: 'never written' },
    { metric: 'contiguous_h2d_same_bytes', value: contiguousGbs, unit: 'GB/s', baseline: null, ratio: null, samples: contiguous },
  );
  const config = {
    backend: info.backend, tokens: tokensCount, chunks, chunk_tokens: chunkTokens, bytes, record_bytes: recordBytes,
    layout: layout.toJSON(), samples, page_cache_dropped: dropped, dir,
    raw_baseline: values.baseline ?? null,
    paired: {
      raw_io: rawIo, skipped: pairedSkip, error: pairedError, raw_write_file: rawWriteFile,
      raw_read_setting: raw?.readBest ? { threads: raw.readBest.threads, io_bytes: raw.readBest.ioBytes } : null,
      raw_write_setting: raw?.writeBest ? { threads: raw.writeBest.threads, io_bytes: raw.writeBest.ioBytes } : null,
    },
  };
  if (values.json) writeResult(values.json, { bench: 'store', device: info.name, config, results });
  printTable(results);
  await dev.dispose();
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
