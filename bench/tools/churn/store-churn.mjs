// Open/close churn of a KvStore on one directory: `node bench/tools/churn/store-churn.mjs PKGDIR SECONDS [--put]`,
// PKGDIR a built kvflow package (its dist/ and addon; copy it aside so a rebuild cannot change it mid-run).
// Each cycle: KvStore.open, (optionally one durable put of one chunk and a lookup), close.
// Prints per-30 s resident floors and cycle counts, and the growth per cycle of the floor
// (least squares over the 30 s floors after the first, which holds the warm-up).
import os from 'node:os';
import path from 'node:path';
import { mkdtempSync, rmSync, readdirSync, readFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
const [pkg, secsArg, flag] = process.argv.slice(2);
const secs = Number(secsArg ?? 120);
const put = flag === '--put';
const { KvLayout, KvStore, openDevice } = await import(pathToFileURL(path.join(pkg, 'dist', 'src', 'index.js')).href);
const SPEC = { layers: 2, kvHeads: 2, headDim: 32, dtype: 'f16', blockTokens: 16, numBlocks: 64 };
const CHUNK = 32;
const layout = new KvLayout(SPEC);
const rec = layout.stagingBytes(CHUNK);
const dev = openDevice({ backend: 'cpu' });
const stream = dev.createStream();
const cache = dev.allocKvCache(layout);
const base = mkdtempSync(path.join(os.tmpdir(), 'kvflow-store-churn-'));
const dir = path.join(base, 'store');
const threads = () => Number(/^Threads:\s+(\d+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))[1]);
const t0 = Date.now(); let n = 0; let win = -1; let floor = Infinity; const rows = [];
let seed = 1;
while (Date.now() - t0 < secs * 1000) {
  const store = await KvStore.open({ device: dev, layout, dir, fingerprint: { model: 'churn' }, chunkTokens: CHUNK, dramBytes: 8 * rec, nvmeBytes: 16 * rec });
  if (put) {
    const b = seed++ * 7919;
    const tokens = Array.from({ length: CHUNK }, (_, i) => (b + i * 31) % 128000);
    await store.put(tokens, cache, [0, 1], stream, { durable: true });
    const hit = store.lookup(tokens); if (hit.tokens !== CHUNK) throw new Error('lost a durable chunk'); hit.release();
  }
  await store.close();
  n++;
  const rss = process.memoryUsage().rss / 2 ** 20;
  const w = Math.floor((Date.now() - t0) / 30000);
  // A sample belongs to the window it was taken in: close the last one first.
  if (w !== win) { if (win >= 0) rows.push({ cycles: n - 1, floor }); floor = Infinity; win = w; }
  floor = Math.min(floor, rss);
}
if (Date.now() - t0 - win * 30000 >= 20000) rows.push({ cycles: n, floor }); // a last window of 20 s or more
// Growth of the floor per cycle: least squares over the windows after the first (warm-up).
const fit = rows.slice(1);
const mx = fit.reduce((t, r) => t + r.cycles, 0) / fit.length, my = fit.reduce((t, r) => t + r.floor, 0) / fit.length;
const slope = fit.reduce((t, r) => t + (r.cycles - mx) * (r.floor - my), 0) / fit.reduce((t, r) => t + (r.cycles - mx) ** 2, 0);
console.log(JSON.stringify({ pkg, secs, put, cycles: n, floorsMiB: rows.map((r) => +r.floor.toFixed(2)), cyclesAt: rows.map((r) => r.cycles),
  kibPerCycle: +(slope * 1024).toFixed(3), fds: readdirSync('/proc/self/fd').length, threads: threads() }));
await dev.dispose();
rmSync(base, { recursive: true, force: true });
