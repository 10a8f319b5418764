// Host time of stream.record() alone, in a loop: 50k records per round, six
// rounds (GC and the release of collected events included), ns per record.
// A development-machine probe for the CPU backend (no GPU needed):
//   node bench/tools/record-loop.mjs     (from a checkout's root, after npm run build)
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// The build of the working directory's checkout (run it from another checkout's root to compare builds).
const root = process.cwd();
const { openDevice } = await import(pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href);
const dev = openDevice({ backend: process.env.KVFLOW_BACKEND ?? 'cpu' });
const s = dev.createStream();
const perRecord = [];
for (let round = 0; round < 6; round++) {
  const n = 50_000;
  const t0 = process.hrtime.bigint();
  let last;
  for (let i = 0; i < n; i++) last = s.record();
  const t1 = process.hrtime.bigint();
  await last.done();
  perRecord.push(Number(t1 - t0) / n);
}
console.log(`record ${perRecord.map((x) => x.toFixed(0)).join(' ')} ns per call`);
await dev.dispose();
