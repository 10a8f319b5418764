/**
 * Reference-layer benchmark: the time of one decoder layer of kvflow's
 * reference model (`kvflow/reference`, CUDA: cuBLAS GEMMs and kvflow's own
 * kernels, attention reading the paged cache in place) against the same
 * layer in PyTorch bf16 (bench/peers/torch_layer.py, run earlier in the same
 * device call and passed with --peer), as DESIGN.md section 5 asks.
 *
 *   node dist/bench/reference.js [--json out.json] [--peer torch_layer.json]
 *                                [--backend cuda|cpu] [--cases a,b] [--quick]
 *
 * Cases (the peer has the same list):
 * - whole prompt, no cached prefix: Llama-3-8B at 1k, 4k, 8k and 16k tokens;
 *   Qwen3-14B (QK-norm) and Llama-3-70B at 4k;
 * - the suffix of a cached prefill: Llama-3-8B, 512 new tokens over a 4k
 *   context (3,584 cached) and 1,024 over 16k (15,360 cached). kvflow reads
 *   the cached K and V in place through the block table; the peer pays for
 *   concatenation, repeated KV heads and a masked attention.
 *
 * Each model runs with one layer (the time of one layer is what a prefill
 * multiplies; weights for one layer are made on the device from the seed),
 * its cache in 16-token blocks placed in a shuffled order (as a paged
 * runtime's blocks are), its input the embedding of random tokens. For a
 * suffix case the prefix's K and V are first written by the layer itself.
 * Timing: `reps` layers enqueued back to back, host clock from the first
 * enqueue to the resolution of an event recorded after the last, median of
 * `samples` runs (bench/lib/measure.ts). The peer times the same loop with
 * CUDA events.
 *
 * Reported per case: milliseconds per layer (ratio kvflow / PyTorch: below 1
 * is faster) and TFLOP/s of the layer's matrix work (projections plus causal
 * attention) with its share of the dense bf16 peak: the datasheet's (989.4
 * for H100 SXM and H200) and a large cuBLAS GEMM measured in the same run
 * (8192^3 bf16 through gemmLoad; its operands are one repeated value, which
 * can run a little faster than random data).
 */
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { openDevice, type Device, type Stream } from '../src/index.js';
import { gemmLoad } from '../src/device/testing.js';
import { ReferenceModel, presets, type PresetName } from '../src/reference/index.js';
import { measure, now, since } from './lib/measure.js';
import { printTable, ratioOf, writeResult, type Result } from './lib/results.js';

const BLOCK_TOKENS = 16;
/** Dense bf16 tensor-core peak of the datasheet (H100 SXM, H200), TFLOP/s. */
const DATASHEET_PEAK: Record<string, number> = { H100: 989.4, H200: 989.4 };

interface Case {
  name: string;
  model: PresetName;
  start: number;
  count: number;
}

const CASES: Case[] = [
  { name: 'llama-3-8b_whole_1k', model: 'llama-3-8b', start: 0, count: 1024 },
  { name: 'llama-3-8b_whole_4k', model: 'llama-3-8b', start: 0, count: 4096 },
  { name: 'llama-3-8b_whole_8k', model: 'llama-3-8b', start: 0, count: 8192 },
  { name: 'llama-3-8b_whole_16k', model: 'llama-3-8b', start: 0, count: 16384 },
  { name: 'llama-3-8b_suffix_512_of_4k', model: 'llama-3-8b', start: 3584, count: 512 },
  { name: 'llama-3-8b_suffix_1024_of_16k', model: 'llama-3-8b', start: 15360, count: 1024 },
  { name: 'qwen3-14b_whole_4k', model: 'qwen3-14b', start: 0, count: 4096 },
  { name: 'llama-3-70b_whole_4k', model: 'llama-3-70b', start: 0, count: 4096 },
];

interface PeerCase {
  case: string;
  ms: number;
  ms_min: number;
  ms_max: number;
  tflops: number;
}
interface Peer {
  device: string;
  torch: string;
  gqa_flash: boolean;
  cases: PeerCase[];
}

/** Matrix FLOPs of one layer: the projections and causal attention (the peer counts the same). */
function layerFlops(model: PresetName, start: number, count: number): number {
  const m = presets[model];
  const proj = 2 * count * m.hidden * ((m.heads + 2 * m.kvHeads) * m.headDim + m.heads * m.headDim + 3 * m.intermediate);
  const pairs = count * start + (count * (count + 1)) / 2;
  return proj + 4 * m.heads * m.headDim * pairs;
}

/** A shuffled block table of `n` distinct blocks out of `n + extra`. */
function shuffledBlocks(n: number, extra: number, seed: number): Int32Array {
  const all = Int32Array.from({ length: n + extra }, (_, i) => i);
  let s = seed >>> 0;
  for (let i = all.length - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    const t = all[i] as number;
    all[i] = all[j] as number;
    all[j] = t;
  }
  return all.subarray(0, n);
}

function randomTokens(n: number, vocab: number, seed: number): Int32Array {
  const out = new Int32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s % vocab;
  }
  return out;
}

/** TFLOP/s of 8192^3 bf16 GEMMs from cuBLAS, or null where it cannot run. */
async function gemmPeak(stream: Stream): Promise<number | null> {
  const n = 8192;
  try {
    gemmLoad(stream, 3, n);
    await stream.record().done();
    const reps = 30;
    const t0 = now();
    gemmLoad(stream, reps, n);
    await stream.record().done();
    return (2 * n ** 3 * reps) / since(t0) / 1e12;
  } catch (e) {
    console.error(`gemm peak not measured: ${(e as Error).message}`);
    return null;
  }
}

async function runModel(dev: Device, stream: Stream, model: PresetName, cases: Case[], minSeconds: number, samples: number,
  add: (c: Case, ms: number, extra: Record<string, unknown>) => void): Promise<void> {
  const maxTokens = Math.max(...cases.map((c) => Math.max(c.count, c.start)));
  const maxContext = Math.max(...cases.map((c) => c.start + c.count));
  const t0 = now();
  const ref = ReferenceModel.create(dev, { ...presets[model], layers: 1, weightLayers: 1, seed: 1, maxTokens });
  console.error(`${model}: weights made in ${since(t0).toFixed(2)} s`);
  const numBlocks = Math.ceil(maxContext / BLOCK_TOKENS);
  const cache = dev.allocKvCache(ref.kvLayout({ blockTokens: BLOCK_TOKENS, numBlocks: numBlocks + 64 }));
  const blocks = shuffledBlocks(numBlocks, 64, 7);
  const hidden = ref.allocHidden(maxTokens);
  try {
    for (const c of cases) {
      // Input: the embedding of random tokens; for a suffix, the prefix's K and V written by the layer.
      if (c.start > 0) {
        ref.embed(stream, hidden, randomTokens(c.start, presets[model].vocab, 11));
        ref.layer(stream, 0, { hidden, cache, blocks, start: 0, count: c.start });
      }
      ref.embed(stream, hidden, randomTokens(c.count, presets[model].vocab, 13));
      await stream.record().done();
      const call = { hidden, cache, blocks, start: c.start, count: c.count };
      const run = async (reps: number): Promise<number> => {
        const t = now();
        for (let i = 0; i < reps; i++) ref.layer(stream, 0, call);
        await stream.record().done();
        return since(t);
      };
      const m = await measure(run, minSeconds, samples);
      add(c, (1e3 * m.median) / m.reps, { reps: m.reps, spread_pct: m.spreadPct });
    }
  } finally {
    await hidden.dispose();
    await cache.dispose();
    await ref.dispose();
    await stream.record().done();
  }
}

async function main(): Promise<void> {
  const { values: args } = parseArgs({
    options: {
      json: { type: 'string' },
      peer: { type: 'string' },
      backend: { type: 'string' },
      cases: { type: 'string' },
      quick: { type: 'boolean', default: false },
    },
  });
  const quick = args.quick ?? false;
  const minSeconds = quick ? 0.05 : 0.3;
  const samples = quick ? 3 : 7;
  const peer: Peer | undefined = args.peer === undefined ? undefined : (JSON.parse(readFileSync(args.peer, 'utf8')) as Peer);
  const peerMs = new Map(peer?.cases.map((c) => [c.case, c]) ?? []);
  const wanted = new Set((args.cases ?? '').split(',').filter((s) => s !== ''));
  const cases = CASES.filter((c) => (wanted.size === 0 || wanted.has(c.name)) && (!quick || c.start + c.count <= 4096));
  const backend = args.backend ?? 'cuda';
  if (backend !== 'cuda' && backend !== 'cpu') throw new Error(`--backend: expected cuda or cpu, got ${backend}`);

  const dev = openDevice({ backend });
  const stream = dev.createStream();
  try {
    const info = dev.info();
    if (peer !== undefined && peer.device !== info.name) console.error(`warning: the peer ran on ${peer.device}, kvflow on ${info.name}`);
    const gemm = backend === 'cuda' ? await gemmPeak(stream) : null;
    const datasheet = Object.entries(DATASHEET_PEAK).find(([k]) => info.name.includes(k))?.[1] ?? null;
    const results: Result[] = [];
    const add = (c: Case, ms: number, extra: Record<string, unknown>): void => {
      const p = peerMs.get(c.name);
      if (peer !== undefined && p === undefined) console.error(`warning: no peer figure for ${c.name}`);
      const flops = layerFlops(c.model, c.start, c.count);
      const tflops = flops / (ms * 1e-3) / 1e12;
      results.push({
        metric: `layer_ms_${c.name}`, value: ms, unit: 'ms', baseline: p?.ms ?? null, ratio: ratioOf(ms, p?.ms ?? null),
        model: c.model, start: c.start, count: c.count, ...extra,
        peer_ms_min: p?.ms_min ?? null, peer_ms_max: p?.ms_max ?? null,
      });
      results.push({
        metric: `tflops_${c.name}`, value: tflops, unit: 'TFLOP/s', baseline: p?.tflops ?? null, ratio: ratioOf(tflops, p?.tflops ?? null),
        flops, pct_of_datasheet_peak: datasheet === null ? null : (100 * tflops) / datasheet,
        pct_of_measured_gemm: gemm === null ? null : (100 * tflops) / gemm,
        peer_pct_of_datasheet_peak: datasheet === null || p === undefined ? null : (100 * p.tflops) / datasheet,
      });
      console.error(`${c.name}: ${ms.toFixed(3)} ms (peer ${p?.ms.toFixed(3) ?? '-'}), ${tflops.toFixed(0)} TFLOP/s`);
    };
    const models = [...new Set(cases.map((c) => c.model))];
    for (const model of models) {
      await runModel(dev, stream, model, cases.filter((c) => c.model === model), minSeconds, samples, add);
    }
    if (gemm !== null) results.push({ metric: 'gemm_8192_tflops', value: gemm, unit: 'TFLOP/s', baseline: null, ratio: null });
    if (args.json !== undefined) {
      writeResult(args.json, {
        bench: 'reference',
        device: info.name,
        config: {
          backend: dev.backend,
          quick,
          block_tokens: BLOCK_TOKENS,
          block_table: 'shuffled distinct blocks',
          layers: 'one layer per model (weights made from seed 1)',
          min_seconds: minSeconds,
          samples,
          timing: 'host clock, first enqueue of reps back-to-back layers to the last event resolved; median of samples',
          ratio: 'layer_ms: kvflow / PyTorch (below 1 is faster); tflops: kvflow / PyTorch',
          flops: '2*count*hidden*(qkv + o + 3*intermediate widths) + 4*heads*headDim*(visible query-key pairs)',
          datasheet_peak_tflops: datasheet,
          measured_gemm_tflops: gemm,
          peer: peer === undefined ? null : { script: 'bench/peers/torch_layer.py', device: peer.device, torch: peer.torch, gqa_flash: peer.gqa_flash },
        },
        results,
      });
    }
    printTable(results);
  } finally {
    await stream.dispose();
    await dev.dispose();
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exitCode = 1;
});
