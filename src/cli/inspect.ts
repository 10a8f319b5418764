/** `kvflow inspect <dir>`: what a store directory holds, read without changing it. */
import { Catalog, type StoreReport } from '../store/catalog.js';
import { parseCommand, type Command } from './args.js';

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

export const INSPECT_USAGE = `usage: kvflow inspect <store dir> [--json]

What a store directory holds, read without changing it: capacity, chunks on
NVMe, slots being written, counters shared by every process of the
directory, fingerprints, and reservations (with whether their process still
runs).

options:
  --json      the same as one JSON object on stdout
  -h, --help  this text
`;

/** `kvflow inspect <dir> [--json]`. */
export async function runInspect(args: string[]): Promise<number> {
  const { values, positionals, help } = parseCommand<{ json?: boolean }>(args, { json: { type: 'boolean' } }, { min: 1, max: 1, name: 'a store directory' });
  if (help) {
    process.stdout.write(INSPECT_USAGE);
    return 0;
  }
  const report = Catalog.inspect(positionals[0]!);
  process.stdout.write(values.json ? `${JSON.stringify(report, null, 2)}\n` : formatReport(report));
  return 0;
}

export const inspectCommand: Command = {
  name: 'inspect',
  summary: 'what a store directory holds: capacity, chunks, counters, fingerprints',
  usage: INSPECT_USAGE,
  run: runInspect,
};
