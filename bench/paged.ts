/**
 * Paged-transfer benchmark: kvflow's gather (HBM -> staging) and scatter
 * (staging -> HBM) of one layer of a Llama-3-8B-shaped paged KV cache (8 KV
 * heads x 128 x bf16; 220 random distinct 16-token blocks out of 4096, K and
 * V: 440 pieces of 32 KiB, 14.4 MB) against bench/native/paged_baseline.cu,
 * run earlier in the same call with the same seed, as DESIGN.md section 5 asks.
 * Every bandwidth figure is divided by the baseline's one contiguous
 * cudaMemcpyAsync of the same bytes in the same direction.
 *
 *   node dist/bench/paged.js [--json out.json] [--baseline paged_baseline.json]
 *                            [--backend auto|cuda|cpu] [--seed N] [--quick]
 *
 * Measured, both engines ('dma': one cudaMemcpyBatchAsync; 'kernel': gather
 * kernel into device scratch + one contiguous copy):
 * - gather / scatter of one layer at 16, 32, 64, 128 and 256 tokens per block
 *   (about 14.4 MB each time), and a contiguous block table at 16 (blocks
 *   merge into 2 pieces); at 16 also with each table's transfer planned once
 *   by KvCache.prepare and moved per rep (`*_16tok_prepared`);
 * - duplex: a scatter into layer 1 on `load` while a gather of layer 0 runs on
 *   `store` (sum of both directions), planned per call with one engine, and
 *   prepared with every pairing of engines (`duplex_prepared_<load>_<save>`);
 * - contention: the busy kernel of src/device/testing.ts on `compute`, alone
 *   and while gathers (then scatters) loop on another stream (`dma` also
 *   through prepared transfers: `*_dma_prepared_*`); one launch of
 *   ~80 ms, and the same work as 25 launches (a model's stream of kernels),
 *   where a copy kernel can slip in between launches; and as long a run of
 *   cuBLAS bf16 GEMMs of 8192 x 8192 x 8192 (`contention_gemm_*`; cuBLAS is
 *   loaded at run time, KVFLOW_CUBLAS names it when the loader cannot find
 *   it; skipped, and said so in the config, without it). The GEMM figures
 *   have no C++ baseline: their slowdown is against the GEMMs alone,
 *   interleaved, as for every load.
 *
 * The method mirrors the C++ program on purpose (same shapes, block tables,
 * rotation over 4 tables and staging regions, calibration), so the ratio
 * measures kvflow's cost and not a difference between two benchmarks. One
 * difference is inherent: kvflow has no timing events, so it is timed on the
 * host clock up to the resolution of an event's promise (what a JS caller
 * waits for); the baseline uses CUDA events. The config says how each figure
 * is timed.
 *
 * The CPU backend runs it too (--quick: 1/8 of the sizes, no contention), so
 * it can be smoke-tested without a GPU; its figures measure memcpy.
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { KvflowError, KvLayout, openDevice, planPieces, type KvCache, type PinnedBuffer, type PreparedTransfer, type Stream } from '../src/index.js';
import { busyKernel, gemmLoad } from '../src/device/testing.js';
import { fillRandom, measure, median, now, since, type Run } from './lib/measure.js';
import { printTable, ratioOf, writeResult, type Result } from './lib/results.js';

const MiB = 1024 * 1024;
const KV_HEADS = 8;
const HEAD_DIM = 128;
/** K (or V) of one token in one layer: 8 heads x 128 dims x 2 bytes (bf16). */
const TOKEN_BYTES = KV_HEADS * HEAD_DIM * 2;
const BLOCK_TOKENS = [16, 32, 64, 128, 256] as const;
/** Op i of a timed loop uses block table i % TABLES and staging region i % TABLES. */
const TABLES = 4;
const SPLIT_LAUNCHES = 25;
/** GEMM size of the cuBLAS load (n x n x n, bf16). */
const GEMM_N = 8192;
const COMPUTE_TARGET_S = 0.08;
const CONTENTION_SAMPLES = 7;
/** Transfers kept in flight by the contention loop (~1 ms of copying at 14.4 MB). */
const DEPTH = 4;
/** "kvflow"; paged_baseline.cu has the same default. */
const DEFAULT_SEED = 0x6b76666c6f77;
const ENGINES = ['dma', 'kernel'] as const;
type Engine = (typeof ENGINES)[number];
type Dir = 'gather' | 'scatter';

/** One point of the block-size sweep; the same as Shape in paged_baseline.cu. */
interface Shape {
  blockTokens: number;
  /** Blocks in the cache: cacheTokens / blockTokens (the layer is the same bytes at every size). */
  numBlocks: number;
  /** Blocks moved: round(tokens / blockTokens). */
  n: number;
  pieceBytes: number;
  /** Payload of one transfer: K and V of n blocks. */
  bytes: number;
  tables: number[][];
  hash: number;
}

const MASK64 = (1n << 64n) - 1n;

/**
 * `count` tables of `n` distinct ids out of `numBlocks`: one splitmix64 stream
 * from `seed`, each table a partial Fisher-Yates shuffle of 0..numBlocks-1
 * (j = i + next() % (numBlocks - i)). Exactly blockTables() of paged_baseline.cu.
 */
function blockTables(seed: number, numBlocks: number, n: number, count: number): number[][] {
  let x = BigInt(seed) & MASK64;
  const next = (): bigint => {
    x = (x + 0x9e3779b97f4a7c15n) & MASK64;
    let z = x;
    z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
    z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
    return z ^ (z >> 31n);
  };
  const out: number[][] = [];
  const perm = new Int32Array(numBlocks);
  for (let t = 0; t < count; t++) {
    for (let i = 0; i < numBlocks; i++) perm[i] = i;
    for (let i = 0; i < n; i++) {
      const j = i + Number(next() % BigInt(numBlocks - i));
      const a = perm[i]!;
      perm[i] = perm[j]!;
      perm[j] = a;
    }
    out.push(Array.from(perm.subarray(0, n)));
  }
  return out;
}

/** FNV-1a over the ids, as tableHash() in paged_baseline.cu. */
function tableHash(tables: readonly number[][]): number {
  let h = 2166136261;
  for (const t of tables) for (const id of t) h = Math.imul(h ^ id, 16777619) >>> 0;
  return h;
}

function makeShape(blockTokens: number, cacheTokens: number, tokens: number, seed: number): Shape {
  const numBlocks = Math.floor(cacheTokens / blockTokens);
  const n = Math.max(1, Math.round(tokens / blockTokens));
  const pieceBytes = TOKEN_BYTES * blockTokens;
  const tables = blockTables(seed, numBlocks, n, TABLES);
  return { blockTokens, numBlocks, n, pieceBytes, bytes: 2 * pieceBytes * n, tables, hash: tableHash(tables) };
}

function layoutOf(s: Shape, layers: number): KvLayout {
  return new KvLayout({
    layers,
    kvHeads: KV_HEADS,
    headDim: HEAD_DIM,
    dtype: 'bf16',
    blockTokens: s.blockTokens,
    numBlocks: s.numBlocks,
    arrangement: 'layer-major',
  });
}

// ---------------------------------------------------------------- timing

/** A timed run of `reps` operations, returning seconds. */
// ---------------------------------------------------------------- the rig

/** Buffers and streams shared by every run. */
interface Rig {
  /** Random contents of one cache layer; every cache layer is loaded from it. */
  image: PinnedBuffer;
  /** A layer read back for checks. */
  readback: PinnedBuffer;
  /** Gather destinations: TABLES staging records, `stride` apart. */
  out: PinnedBuffer;
  /** Scatter sources (random): TABLES staging records. */
  in: PinnedBuffer;
  stride: number;
  layerBytes: number;
  /** High priority: scatters (a prefill's loads) and the contention copies. */
  load: Stream;
  /** Normal priority: gathers (a store's saves). */
  store: Stream;
  compute: Stream;
}

/** Enqueues one transfer of `blocks` between layer `layer` and staging region `region`. */
function transfer(r: Rig, cache: KvCache, dir: Dir, engine: Engine, stream: Stream, blocks: number[], region: number, layer = 0): void {
  const op = { blocks, staging: dir === 'gather' ? r.out : r.in, stagingOffset: region * r.stride, layers: layer, engine };
  if (dir === 'gather') cache.gather(stream, op);
  else cache.scatter(stream, op);
}

function streamOf(r: Rig, dir: Dir): Stream {
  return dir === 'gather' ? r.store : r.load;
}

/** `reps` transfers back to back, rotating tables and staging regions, then one awaited event. */
function pagedRun(r: Rig, cache: KvCache, dir: Dir, engine: Engine, tables: readonly number[][]): Run {
  const stream = streamOf(r, dir);
  return async (reps) => {
    const t0 = now();
    for (let i = 0; i < reps; i++) transfer(r, cache, dir, engine, stream, tables[i % TABLES]!, i % TABLES);
    await stream.record().done();
    return since(t0);
  };
}

/** The transfers of `tables` (one per staging region) and `layer`, each planned once by KvCache.prepare. */
function prepareTables(r: Rig, cache: KvCache, dir: Dir, engine: Engine, tables: readonly number[][], layer: number): PreparedTransfer[] {
  return tables.slice(0, TABLES).map((blocks, t) =>
    cache.prepare(dir, [{ blocks, staging: dir === 'gather' ? r.out : r.in, stagingOffset: t * r.stride }], layer, engine));
}

/** As pagedRun, with each table's transfer planned once and moved per rep. */
function preparedRun(r: Rig, cache: KvCache, dir: Dir, engine: Engine, tables: readonly number[][]): { run: Run; dispose: () => void } {
  const stream = streamOf(r, dir);
  const plans = prepareTables(r, cache, dir, engine, tables, 0);
  return {
    run: async (reps) => {
      const t0 = now();
      for (let i = 0; i < reps; i++) plans[i % TABLES]!.move(stream, 0);
      await stream.record().done();
      return since(t0);
    },
    dispose: () => plans.forEach((p) => p.dispose()),
  };
}

/** Copies `image` into every layer of `cache`. */
async function loadImage(r: Rig, cache: KvCache): Promise<void> {
  for (const b of cache.buffers) r.load.copy(b, 0, r.image, 0, r.layerBytes);
  await r.load.synchronize();
}

function pieceOf(a: Uint8Array, index: number, pieceBytes: number): Uint8Array {
  return a.subarray(index * pieceBytes, (index + 1) * pieceBytes);
}

/**
 * Checks one gather and one scatter of `blocks` with `engine` on layer 0 of
 * `cache`, loaded with `image` first: the gather's staging is poisoned first
 * and must equal the cache's pieces; after the scatter every piece of the
 * layer is read back, the written ones must equal the staging and all others
 * must be untouched.
 */
async function verify(r: Rig, cache: KvCache, s: Shape, blocks: number[], engine: Engine): Promise<void> {
  await loadImage(r, cache);
  const region = 1 % TABLES;
  const what = `${engine} at ${s.blockTokens} tokens per block`;
  const image = r.image.array;
  const out = r.out.array.subarray(region * r.stride, region * r.stride + s.bytes);
  out.fill(0xa5);
  transfer(r, cache, 'gather', engine, r.store, blocks, region);
  await r.store.synchronize();
  for (let kv = 0; kv < 2; kv++) {
    for (let i = 0; i < blocks.length; i++) {
      const want = pieceOf(image, kv * s.numBlocks + blocks[i]!, s.pieceBytes);
      if (Buffer.compare(pieceOf(out, kv * blocks.length + i, s.pieceBytes), want) !== 0) {
        throw new Error(`gather (${what}): staging piece ${kv ? 'V' : 'K'}[${i}] differs from block ${blocks[i]}`);
      }
    }
  }
  const src = r.in.array.subarray(region * r.stride, region * r.stride + s.bytes);
  transfer(r, cache, 'scatter', engine, r.load, blocks, region);
  const layer = cache.buffers[0]!;
  r.readback.array.fill(0x5a);
  r.load.copy(r.readback, 0, layer, 0, r.layerBytes);
  await r.load.synchronize();
  const at = new Map(blocks.map((b, i) => [b, i]));
  const back = r.readback.array;
  for (let kv = 0; kv < 2; kv++) {
    for (let b = 0; b < s.numBlocks; b++) {
      const i = at.get(b);
      const want = i === undefined ? pieceOf(image, kv * s.numBlocks + b, s.pieceBytes) : pieceOf(src, kv * blocks.length + i, s.pieceBytes);
      if (Buffer.compare(pieceOf(back, kv * s.numBlocks + b, s.pieceBytes), want) !== 0) {
        throw new Error(`scatter (${what}): ${kv ? 'V' : 'K'} of block ${b} ${i === undefined ? 'was touched' : 'differs from the staging'}`);
      }
    }
  }
}

// ---------------------------------------------------------------- contention

interface Load {
  /** one: a single FMA launch; split: the same in SPLIT_LAUNCHES launches; gemm: cuBLAS bf16 GEMMs. */
  name: 'one' | 'split' | 'gemm';
  /** FMA rounds per launch; for gemm, the GEMM size n (n x n x n). */
  iterations: number;
  launches: number;
}

/** Enqueues the load on the compute stream. */
function enqueueLoad(r: Rig, l: Load): void {
  if (l.name === 'gemm') gemmLoad(r.compute, l.launches, l.iterations);
  else for (let k = 0; k < l.launches; k++) busyKernel(r.compute, l.iterations);
}

/** The load alone: host clock from its enqueue to its event's done(). */
async function computeOnce(r: Rig, l: Load): Promise<number> {
  const t0 = now();
  enqueueLoad(r, l);
  await r.compute.record().done();
  return since(t0);
}

/** GEMMs of GEMM_N for about as long as the FMA load (~80 ms), or why there are none (no cuBLAS). */
async function gemmLoadFor(r: Rig, seconds: number): Promise<Load | string> {
  const probe: Load = { name: 'gemm', iterations: GEMM_N, launches: 4 };
  try {
    await computeOnce(r, probe);
  } catch (e) {
    if (e instanceof KvflowError && e.code === 'ERR_UNSUPPORTED') return e.message;
    throw e;
  }
  const t = Math.min(...[await computeOnce(r, probe), await computeOnce(r, probe)]);
  return { ...probe, launches: Math.max(1, Math.round((seconds / t) * probe.launches)) };
}

interface WithCopies {
  seconds: number;
  gbps: number;
  inWindow: number;
}

/**
 * The load while transfers loop on `stream`, DEPTH in flight, each with its
 * own event: the load is enqueued once the first transfer completed (copies
 * are flowing), and the loop tops up until the load's event resolves. Copy
 * GB/s is taken between the first and the last completion inside the load's
 * window [enqueue, done], as the baseline does with CUDA events.
 */
async function computeWithCopies(r: Rig, l: Load, bytes: number, op: (i: number) => void, stream: Stream): Promise<WithCopies> {
  const times: bigint[] = [];
  const pending: Array<Promise<void>> = [];
  const issue = (): void => {
    op(pending.length);
    pending.push(stream.record().done().then(() => void times.push(now())));
  };
  let oldest = 0;
  for (let k = 0; k < DEPTH; k++) issue();
  await pending[oldest++];
  issue();
  let t1: bigint | undefined;
  const t0 = now();
  enqueueLoad(r, l);
  const computed = r.compute.record().done().then(() => {
    t1 = now();
  });
  while (t1 === undefined) {
    await Promise.race([pending[oldest++]!, computed]);
    if (t1 === undefined) issue();
  }
  await Promise.all(pending);
  const end: bigint = t1;
  const inside = times.filter((t) => t > t0 && t <= end).sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  const seconds = Number(end - t0) / 1e9;
  let gbps: number;
  if (inside.length >= 3) {
    gbps = ((inside.length - 1) * bytes) / (Number(inside[inside.length - 1]! - inside[0]!) / 1e9) / 1e9;
  } else {
    gbps = (inside.length * bytes) / seconds / 1e9;
  }
  return { seconds, gbps, inWindow: inside.length };
}

/** Iterations of one launch for ~80 ms (only without a baseline, which fixes them). */
async function calibrate(r: Rig): Promise<number> {
  const probe: Load = { name: 'one', iterations: 1 << 16, launches: 1 };
  await computeOnce(r, probe);
  let t = await computeOnce(r, probe);
  while (t < 0.01) {
    if (probe.iterations >= 2 ** 40) throw new Error('the busy kernel takes no time: is it running?');
    probe.iterations *= 2;
    t = await computeOnce(r, probe);
  }
  const it = Math.floor((probe.iterations * COMPUTE_TARGET_S) / t);
  return Math.max(SPLIT_LAUNCHES, Math.floor(it / SPLIT_LAUNCHES) * SPLIT_LAUNCHES);
}

// ---------------------------------------------------------------- baseline

interface Baseline {
  device: string | undefined;
  seed: number;
  quick: boolean;
  cacheTokens: number;
  tokens: number;
  busyIterations: number;
  hashes: Map<number, number>;
  /** `contig_d2h:<bytes>`, `batch_h2d:<blockTokens>`, `bidir_contig`, `compute_alone:<load>`, ... */
  values: Map<string, number>;
}

function num(obj: Record<string, unknown>, key: string, file: string): number {
  const v = obj[key];
  if (typeof v !== 'number') throw new Error(`${file}: expected a number for ${key} in ${JSON.stringify(obj)}`);
  return v;
}

function loadBaseline(file: string): Baseline {
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  const config = raw.config as Record<string, unknown> | undefined;
  if (raw.bench !== 'paged_baseline' || !config || !Array.isArray(raw.shapes) || !Array.isArray(raw.results)) {
    throw new Error(`${file}: expected the JSON of paged_baseline`);
  }
  if (num(config, 'token_bytes', file) !== TOKEN_BYTES || num(config, 'tables', file) !== TABLES) {
    throw new Error(`${file}: made for another shape (token_bytes ${String(config.token_bytes)}, tables ${String(config.tables)})`);
  }
  const hashes = new Map<number, number>();
  for (const s of raw.shapes as Array<Record<string, unknown>>) hashes.set(num(s, 'block_tokens', file), num(s, 'table_hash', file));
  const values = new Map<string, number>();
  for (const e of raw.results as Array<Record<string, unknown>>) {
    const m = e.metric;
    if (m === 'contig_d2h' || m === 'contig_h2d') values.set(`${m}:${num(e, 'bytes', file)}`, num(e, 'gbps', file));
    else if (m === 'batch_d2h' || m === 'batch_h2d') values.set(`${m}:${num(e, 'block_tokens', file)}`, num(e, 'gbps', file));
    else if (m === 'bidir_contig' || m === 'bidir_batch') values.set(m, num(e, 'gbps', file));
    else if (m === 'compute_alone') values.set(`compute_alone:${String(e.load)}`, num(e, 'ms', file));
    else if (m === 'contention') {
      const key = `contention:${String(e.load)}:${String(e.direction)}`;
      values.set(`${key}:slowdown_pct`, num(e, 'slowdown_pct', file));
      values.set(`${key}:gbps`, num(e, 'gbps', file));
    } else throw new Error(`${file}: unknown metric in ${JSON.stringify(e)}`);
  }
  return {
    device: typeof raw.device === 'string' ? raw.device : undefined,
    seed: num(config, 'seed', file),
    quick: config.quick === true,
    cacheTokens: num(config, 'cache_tokens', file),
    tokens: num(config, 'tokens', file),
    busyIterations: num(config, 'busy_iterations', file),
    hashes,
    values,
  };
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      json: { type: 'string' },
      baseline: { type: 'string' },
      backend: { type: 'string' },
      seed: { type: 'string' },
      quick: { type: 'boolean', default: false },
    },
    strict: true,
  });
  const quick = args.quick ?? false;
  const minSeconds = quick ? 0.02 : 0.1;
  const samples = quick ? 3 : 5;
  const cacheTokens = quick ? 8192 : 65536;
  const tokens = quick ? 880 : 3520;
  const base = args.baseline === undefined ? undefined : loadBaseline(args.baseline);
  const seed = args.seed !== undefined ? Number(args.seed) : (base?.seed ?? DEFAULT_SEED);
  if (!Number.isSafeInteger(seed) || seed < 0) throw new Error(`--seed: expected a non-negative integer, got ${args.seed}`);
  if (base) {
    if (base.seed !== seed) throw new Error(`--seed ${seed}, but the baseline ran with seed ${base.seed}`);
    if (base.cacheTokens !== cacheTokens || base.tokens !== tokens) {
      throw new Error(`the baseline ran ${base.quick ? 'with' : 'without'} --quick, this run ${quick ? 'with' : 'without'}`);
    }
  }
  // A baseline only means something against the GPU: never fall back to the CPU silently then.
  const backend = args.backend ?? (base ? 'cuda' : undefined);
  if (backend !== undefined && backend !== 'auto' && backend !== 'cuda' && backend !== 'cpu') {
    throw new Error(`--backend: expected auto, cuda or cpu, got ${backend}`);
  }

  const shapes = BLOCK_TOKENS.map((bt) => makeShape(bt, cacheTokens, tokens, seed));
  for (const s of shapes) {
    const want = base?.hashes.get(s.blockTokens);
    if (base && want !== s.hash) {
      throw new Error(`block tables at ${s.blockTokens} tokens differ from the baseline's (hash ${s.hash}, baseline ${String(want)})`);
    }
  }
  const s16 = shapes[0]!;

  const dev = openDevice(backend === undefined ? {} : { backend });
  try {
    const info = dev.info();
    if (base?.device !== undefined && base.device !== info.name) {
      console.error(`warning: baseline ran on ${base.device}, kvflow on ${info.name}`);
    }
    const maxExtent = Math.max(...shapes.map((s) => layoutOf(s, 1).stagingBytes(s.n * s.blockTokens, 1)));
    const stride = Math.ceil(maxExtent / MiB) * MiB;
    const layerBytes = 2 * TOKEN_BYTES * cacheTokens;
    const r: Rig = {
      image: dev.allocPinned(layerBytes),
      readback: dev.allocPinned(layerBytes),
      out: dev.allocPinned(stride * TABLES),
      in: dev.allocPinned(stride * TABLES),
      stride,
      layerBytes,
      load: dev.createStream({ priority: 'high' }),
      store: dev.createStream(),
      compute: dev.createStream(),
    };
    fillRandom(r.image.array);
    fillRandom(r.in.array);
    fillRandom(r.out.array);

    const results: Result[] = [];
    const add = (metric: string, value: number, unit: string, baseline: number | null, extra: Record<string, unknown>, ratio = true): void => {
      if (base && baseline === null) console.error(`warning: no baseline for ${metric}`);
      results.push({ metric, value, unit, baseline, ratio: ratio ? ratioOf(value, baseline) : null, ...extra });
      console.error(`${metric} ${value.toPrecision(4)} ${unit}`); // progress, on stderr: stdout ends with the table
    };
    const val = (key: string): number | null => (base ? (base.values.get(key) ?? null) : null);
    const contigOf = (dir: Dir, bytes: number): number | null => val(`contig_${dir === 'gather' ? 'd2h' : 'h2d'}:${bytes}`);

    const measurePaged = async (cache: KvCache, s: Shape, dir: Dir, engine: Engine, tables: number[][], name: string, contiguous: boolean): Promise<void> => {
      const m = await measure(pagedRun(r, cache, dir, engine, tables), minSeconds, samples);
      const pieces = planPieces(cache.layout, tables[0]!, { first: 0, count: 1 }).count;
      add(name, (s.bytes * m.reps) / m.median / 1e9, 'GB/s', contigOf(dir, s.bytes), {
        bytes: s.bytes,
        block_tokens: s.blockTokens,
        blocks: s.n,
        pieces,
        stream: streamOf(r, dir) === r.load ? 'high' : 'normal',
        cuda_batch_gbps: contiguous ? null : val(`batch_${dir === 'gather' ? 'd2h' : 'h2d'}:${s.blockTokens}`),
        reps: m.reps,
        spread_pct: m.spreadPct,
      });
    };

    // Block-size sweep (16 first: the headline), each checked before it is timed.
    for (const s of shapes) {
      const cache = dev.allocKvCache(layoutOf(s, 1));
      for (const engine of ENGINES) await verify(r, cache, s, s.tables[1]!, engine);
      for (const dir of ['gather', 'scatter'] as const) {
        for (const engine of ENGINES) await measurePaged(cache, s, dir, engine, s.tables, `${dir}_${engine}_${s.blockTokens}tok`, false);
      }
      if (s.blockTokens === 16) {
        // The same transfers planned once each (what a runtime moving a block table layer by layer does).
        for (const dir of ['gather', 'scatter'] as const) {
          for (const engine of ENGINES) {
            const p = preparedRun(r, cache, dir, engine, s.tables);
            const m = await measure(p.run, minSeconds, samples);
            p.dispose();
            add(`${dir}_${engine}_${s.blockTokens}tok_prepared`, (s.bytes * m.reps) / m.median / 1e9, 'GB/s', contigOf(dir, s.bytes), {
              bytes: s.bytes, block_tokens: s.blockTokens, blocks: s.n, reps: m.reps, spread_pct: m.spreadPct,
            });
          }
        }
        // Contiguous block tables: table r is blocks r*n .. r*n+n-1, which merge into one K and one V piece.
        const runs = Array.from({ length: TABLES }, (_, t) => Array.from({ length: s.n }, (_, i) => t * s.n + i));
        for (const engine of ENGINES) await verify(r, cache, s, runs[1]!, engine);
        for (const dir of ['gather', 'scatter'] as const) {
          for (const engine of ENGINES) await measurePaged(cache, s, dir, engine, runs, `${dir}_${engine}_${s.blockTokens}tok_contig`, true);
        }
      }
      await cache.dispose();
    }

    // Duplex and contention on a two-layer cache at 16 tokens per block.
    const cache = dev.allocKvCache(layoutOf(s16, 2));
    await loadImage(r, cache);
    for (const engine of ENGINES) {
      const m = await measure(async (reps) => {
        const t0 = now();
        for (let i = 0; i < reps; i++) {
          // Scatter of the next layer on `load`, gather of the previous one on `store`.
          transfer(r, cache, 'scatter', engine, r.load, s16.tables[i % TABLES]!, i % TABLES, 1);
          transfer(r, cache, 'gather', engine, r.store, s16.tables[i % TABLES]!, i % TABLES, 0);
        }
        await Promise.all([r.load.record().done(), r.store.record().done()]);
        return since(t0);
      }, minSeconds, samples);
      add(`duplex_${engine}`, (2 * s16.bytes * m.reps) / m.median / 1e9, 'GB/s', val('bidir_contig'), {
        bytes: s16.bytes,
        direction: 'both (sum)',
        cuda_batch_gbps: val('bidir_batch'),
        reps: m.reps,
        spread_pct: m.spreadPct,
      });
    }

    // Duplex through prepared transfers, each direction with either engine
    // (a load on copy engines beside a save by kernel, and the other way).
    const plansOf = (dir: Dir, engine: Engine, layer: number): PreparedTransfer[] => prepareTables(r, cache, dir, engine, s16.tables, layer);
    for (const loadEngine of ENGINES) {
      for (const saveEngine of ENGINES) {
        const loadPlans = plansOf('scatter', loadEngine, 1);
        const savePlans = plansOf('gather', saveEngine, 0);
        const m = await measure(async (reps) => {
          const t0 = now();
          for (let i = 0; i < reps; i++) {
            loadPlans[i % TABLES]!.move(r.load, 1);
            savePlans[i % TABLES]!.move(r.store, 0);
          }
          await Promise.all([r.load.record().done(), r.store.record().done()]);
          return since(t0);
        }, minSeconds, samples);
        [...loadPlans, ...savePlans].forEach((p) => p.dispose());
        add(`duplex_prepared_${loadEngine}_${saveEngine}`, (2 * s16.bytes * m.reps) / m.median / 1e9, 'GB/s', val('bidir_contig'), {
          bytes: s16.bytes, direction: 'both (sum)', load_engine: loadEngine, save_engine: saveEngine, reps: m.reps, spread_pct: m.spreadPct,
        });
      }
    }

    let loads: Load[] = [];
    let gemmSkipped: string | null = null;
    if (!quick) {
      const iterations = base?.busyIterations ?? (await calibrate(r));
      loads = [
        { name: 'one', iterations, launches: 1 },
        { name: 'split', iterations: Math.floor(iterations / SPLIT_LAUNCHES), launches: SPLIT_LAUNCHES },
      ];
      const fma = await computeOnce(r, loads[0]!);
      const gemm = await gemmLoadFor(r, fma);
      if (typeof gemm === 'string') {
        gemmSkipped = gemm;
        console.error(`paged: no GEMM load: ${gemm}`);
      } else {
        loads.push(gemm);
      }
      const variants = [
        { engine: 'dma', stream: r.load, suffix: '', prepared: false },
        { engine: 'dma', stream: r.load, suffix: '_prepared', prepared: true },
        { engine: 'kernel', stream: r.load, suffix: '', prepared: false },
        { engine: 'kernel', stream: r.store, suffix: '_normalprio', prepared: false },
      ] as const;
      for (const l of loads) {
        const prefix = l.name === 'one' ? 'contention' : `contention_${l.name}`;
        await computeOnce(r, l);
        const alone: number[] = [];
        for (let i = 0; i < CONTENTION_SAMPLES; i++) alone.push(await computeOnce(r, l));
        add(`compute_alone${l.name === 'one' ? '' : `_${l.name}`}_ms`, 1e3 * median(alone), 'ms', val(`compute_alone:${l.name}`), {
          iterations: l.iterations,
          launches: l.launches,
          min_ms: 1e3 * Math.min(...alone),
          max_ms: 1e3 * Math.max(...alone),
        });
        for (const dir of ['gather', 'scatter'] as const) {
          const key = `contention:${l.name}:${dir === 'gather' ? 'd2h' : 'h2d'}`;
          for (const v of variants) {
            const plans = v.prepared ? plansOf(dir, v.engine, 0) : [];
            const op = v.prepared
              ? (i: number): void => plans[i % TABLES]!.move(v.stream, 0)
              : (i: number): void => transfer(r, cache, dir, v.engine, v.stream, s16.tables[i % TABLES]!, i % TABLES);
            await computeWithCopies(r, l, s16.bytes, op, v.stream); // warm-up
            const al: number[] = [];
            const wc: number[] = [];
            const gb: number[] = [];
            let minIn = Infinity;
            // Alone and with copies interleaved, so drifting clocks hit both alike.
            for (let i = 0; i < CONTENTION_SAMPLES; i++) {
              al.push(await computeOnce(r, l));
              const w = await computeWithCopies(r, l, s16.bytes, op, v.stream);
              wc.push(w.seconds);
              gb.push(w.gbps);
              minIn = Math.min(minIn, w.inWindow);
            }
            const name = `${prefix}_${dir}_${v.engine}${v.suffix}`;
            const extra = {
              load: l.name,
              engine: v.engine,
              stream: v.stream === r.load ? 'high' : 'normal',
              compute_alone_ms: 1e3 * median(al),
              compute_ms: 1e3 * median(wc),
              samples: CONTENTION_SAMPLES,
            };
            add(`${name}_slowdown_pct`, 100 * (median(wc) / median(al) - 1), '%', val(`${key}:slowdown_pct`), extra, false);
            add(`${name}_gbps`, median(gb), 'GB/s', val(`${key}:gbps`), { ...extra, min_transfers_in_window: minIn });
            plans.forEach((p) => p.dispose());
          }
        }
      }
    }
    await cache.dispose();

    if (args.json !== undefined) {
      writeResult(args.json, {
        bench: 'paged',
        device: info.name,
        config: {
          backend: dev.backend,
          quick,
          seed,
          kv_heads: KV_HEADS,
          head_dim: HEAD_DIM,
          dtype: 'bf16',
          token_bytes: TOKEN_BYTES,
          arrangement: 'layer-major',
          cache_tokens_per_layer: cacheTokens,
          tokens_per_transfer: tokens,
          shapes: shapes.map((s) => ({ block_tokens: s.blockTokens, num_blocks: s.numBlocks, blocks: s.n, piece_bytes: s.pieceBytes, bytes: s.bytes, table_hash: s.hash })),
          block_tables: `${TABLES} random tables of distinct blocks per shape (splitmix64 from the seed, partial Fisher-Yates; ` +
            'checked against the baseline\'s hash); op i uses table i % 4 and staging region i % 4; _contig: blocks t*n .. t*n+n-1',
          streams: 'gathers on store (normal priority), scatters on load (high priority); duplex: both at once, ' +
            'scatter into layer 1 and gather of layer 0; contention: copies on load (high) unless _normalprio (store)',
          min_seconds: minSeconds,
          samples,
          timing: {
            bandwidth: 'host clock (process.hrtime) from the first enqueue of a sample to the resolution of the event ' +
              'recorded after its last transfer; reps for >= min_seconds, median of samples. GB/s = payload bytes ' +
              '(2 x blocks x block_tokens x token_bytes, no padding) / time; duplex counts both directions',
            contention: 'compute: host clock from the enqueue of the busy load to its event\'s done() (kvflow has no ' +
              `timing events), ${CONTENTION_SAMPLES} samples each paired with a compute-alone run timed the same way; ` +
              'slowdown_pct = 100 x (median with / median alone - 1). Copies: a loop keeping ' +
              `${DEPTH} transfers in flight, each with its own event; the load starts once the first completed; GB/s ` +
              'between the first and last completions (host clock at done()) inside the load\'s window',
            baseline: 'paged_baseline (C++, same shapes, tables, rotation and calibration) times with CUDA events; its ' +
              'contention figures are contiguous cudaMemcpyAsync copies of the same bytes (D2H for gather, H2D for ' +
              'scatter) looping under the same load, timed with events around the load and after every copy',
          },
          loads: loads.map((l) => ({ name: l.name, iterations: l.iterations, launches: l.launches })),
          load_source: quick ? null : base ? 'baseline busy_iterations' : 'calibrated here',
          load: 'busyKernel (src/device/testing.ts): SMs x 8 blocks of 256 threads of dependent FMAs: 2048 threads per ' +
            'SM, all a Hopper SM holds, in one wave; "one": one launch of ~80 ms, during which a copy kernel finds no ' +
            'free SM slot; "split": the same work as 25 launches, between which one can slip in; "gemm": cuBLAS ' +
            'bf16 GEMMs of 8192^3 (gemmLoad, src/device/testing.ts), as many as take as long as "one" (iterations: n)',
          gemm_skipped: gemmSkipped,
          ratio: 'kvflow / baseline (same direction, same bytes, contiguous cudaMemcpyAsync); null for _slowdown_pct, ' +
            'whose baseline is the slowdown contiguous copies cause; cuda_batch_gbps: the baseline\'s cudaMemcpyBatchAsync ' +
            'of the unmerged pieces, for context',
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
    console.log(`paged benchmark on ${info.name} (${dev.backend})${quick ? ', quick' : ''}: one layer, ` +
      `${s16.n} x ${s16.blockTokens}-token blocks of ${s16.numBlocks}, ${(s16.bytes / 1e6).toFixed(1)} MB`);
    printTable(results);
  } finally {
    await dev.dispose();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
