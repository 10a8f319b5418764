// What one open and close keeps: `node bench/tools/churn/churn.mjs MODE SECONDS`, MODE env (an LMDB environment
// opened, written and closed on this thread), worker (a Node worker started and terminated) or worker-lmdb (the
// same with lmdb opening an environment in it). Prints the lowest resident size of each 30 s (bench/results "soak").
import os from 'node:os';
import path from 'node:path';
import { Worker } from 'node:worker_threads';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
const mode = process.argv[2]; const secs = Number(process.argv[3] ?? 180);
const lmdbPath = createRequire(new URL('../../../package.json', import.meta.url)).resolve('lmdb');
const { open } = await import(lmdbPath);
const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-churn-'));
const t0 = Date.now(); let n = 0; let lastMin = -1; let floor = Infinity; const floors = [];
while (Date.now() - t0 < secs * 1000) {
  if (mode === 'env') { const r = open({ path: dir + '/x.mdb' }); r.putSync('k', n); await r.close(); }
  else {
    const w = new Worker(new URL('./worker.mjs', import.meta.url), { workerData: { lmdb: mode === 'worker-lmdb', lmdbPath, file: dir + '/y.mdb' } });
    await new Promise((res) => { w.once('message', res); w.once('online', () => w.postMessage('go')); });
    await w.terminate();
  }
  n++;
  const rss = process.memoryUsage().rss / 2 ** 20; floor = Math.min(floor, rss);
  const min = Math.floor((Date.now() - t0) / 30000);
  if (min !== lastMin) { if (lastMin >= 0) floors.push(floor.toFixed(1)); floor = Infinity; lastMin = min; }
}
console.log(mode, 'iterations', n, 'per-30s rss floors', floors.join(' '));
rmSync(dir, { recursive: true, force: true });
