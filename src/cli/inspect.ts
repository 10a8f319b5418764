/** `kvflow inspect <dir>`: what a store directory holds, read without changing it. */
import { openDevice } from '../device/device.js';
import { KvLayout } from '../layout/layout.js';
import { Catalog, type StoreReport } from '../store/catalog.js';
import { KvStore } from '../store/store.js';
import type { VerifyReport } from '../store/verify.js';
import { parseCommand, type Command } from './args.js';
import { Progress } from './progress.js';

function size(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

export function formatReport(r: StoreReport): string {
  const g = r.geometry;
  const used = r.chunks * g.slotBytes;
  const lines = [
    `store        ${r.dir} (format ${g.version})`,
    `capacity     ${size(g.slotCount * g.slotBytes)}: ${g.slotCount} slots of ${size(g.slotBytes)} (${g.layers} layer extents of ${size(g.extentBytes)}), ${g.slotsPerFile} per slab file`,
    `used         ${size(used)}: ${r.chunks} chunks on NVMe, ${r.reserved} slots being written, ${r.free} free and ${g.slotCount - r.nextSlot} never used`,
    'dram         per process: not visible from here (see store.stats())',
  ];
  const c = r.counters;
  const hits = c.hitChunks ?? 0;
  const misses = c.missChunks ?? 0;
  const rate = hits + misses > 0 ? ` (${((100 * hits) / (hits + misses)).toFixed(1)}% of chunks looked up)` : '';
  lines.push(`lookups      ${c.lookups ?? 0}: ${hits} chunks hit, ${misses} missed${rate}`);
  lines.push(`nvme         ${c.writes ?? 0} chunks written, ${c.nvmeHits ?? 0} loads, ${c.evictions ?? 0} evictions, ${c.checksumFailures ?? 0} checksum failures`);
  const fps = Object.entries(r.fingerprints).sort((a, b) => b[1] - a[1]);
  lines.push(fps.length === 0 ? 'fingerprints none' : 'fingerprints');
  for (const [fp, n] of fps) lines.push(`  ${fp.slice(0, 16)}  ${n} chunks`);
  for (const s of r.reservations) {
    lines.push(`reserved     slot ${s.slot} by pid ${s.pid} (${s.alive ? 'running' : 'gone: freed when the store is next opened'}) since ${new Date(s.at).toISOString()}`);
  }
  return `${lines.join('\n')}\n`;
}

export const INSPECT_USAGE = `usage: kvflow inspect <store dir> [--json] [--verify [--keep-bad]]

What a store directory holds, read without changing it: capacity, chunks on
NVMe, slots being written, counters shared by every process of the
directory, fingerprints, and reservations (with whether their process still
runs).

options:
  --json      the same as one JSON object on stdout
  --verify    then read every chunk on NVMe and check each layer extent
              against its checksum (store.verify()); bad chunks are dropped
              from the index. Opens the store as a writer (beside any
              process using it); exits 1 when a bad chunk was found
  --keep-bad  with --verify: report bad chunks, drop nothing
  -h, --help  this text
`;

/**
 * Scrubs the store at `dir` without knowing its model: a layout of one KV
 * head of fp8 whose chunk record has the directory's layer count and
 * extent size (all a record's checksum covers), and a fingerprint of its
 * own (verify reads every fingerprint's chunks).
 */
async function verifyDir(dir: string, geometry: StoreReport['geometry'], drop: boolean): Promise<VerifyReport> {
  const chunkTokens = geometry.extentBytes / 4096;
  const layout = new KvLayout({ layers: geometry.layers, kvHeads: 1, headDim: 2048, dtype: 'fp8_e4m3', blockTokens: 1, numBlocks: chunkTokens });
  const device = openDevice({ backend: 'cpu' });
  const progress = new Progress();
  try {
    const store = await KvStore.open({ device, layout, dir, chunkTokens, dramBytes: layout.stagingBytes(chunkTokens), fingerprint: { model: 'kvflow inspect --verify' } });
    try {
      progress.step('verifying', true);
      return await store.verify({
        drop,
        onProgress: (p) => progress.step(`verifying: ${p.chunks} of ${p.totalChunks} chunks`),
      });
    } finally {
      progress.done();
      await store.close();
    }
  } finally {
    await device.dispose();
  }
}

function formatVerify(v: VerifyReport, drop: boolean): string {
  const lines = [`verify       ${v.chunks} chunks, ${v.layers} layer extents, ${size(v.bytes)} read: ${v.bad.length === 0 ? 'all good' : `${v.bad.length} bad extents`}` +
    `${v.skipped > 0 ? `, ${v.skipped} left before they were read` : ''}`];
  for (const b of v.bad) lines.push(`  bad        ${b.tier} chunk ${b.key.slice(0, 16)} layer ${b.layer}: ${b.code}`);
  if (v.bad.length > 0) lines.push(drop ? `  dropped    ${v.dropped} chunks (a later put stores them again)` : '  kept       nothing dropped (--keep-bad)');
  return `${lines.join('\n')}\n`;
}

/** `kvflow inspect <dir> [--json]`. */
export async function runInspect(args: string[]): Promise<number> {
  const { values, positionals, help } = parseCommand<{ json?: boolean; verify?: boolean; 'keep-bad'?: boolean }>(args,
    { json: { type: 'boolean' }, verify: { type: 'boolean' }, 'keep-bad': { type: 'boolean' } }, { min: 1, max: 1, name: 'a store directory' });
  if (help) {
    process.stdout.write(INSPECT_USAGE);
    return 0;
  }
  if (values['keep-bad'] && !values.verify) {
    process.stderr.write('kvflow inspect: --keep-bad goes with --verify\n');
    return 2;
  }
  const report = Catalog.inspect(positionals[0]!);
  const drop = !values['keep-bad'];
  const verified = values.verify ? await verifyDir(positionals[0]!, report.geometry, drop) : undefined;
  if (values.json) process.stdout.write(`${JSON.stringify(verified ? { ...report, verify: verified } : report, null, 2)}\n`);
  else process.stdout.write(formatReport(report) + (verified ? formatVerify(verified, drop) : ''));
  return verified && verified.bad.length > 0 ? 1 : 0;
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'what a store directory holds: capacity, chunks, counters, fingerprints',
  usage: INSPECT_USAGE,
  run: runInspect,
};
