// Host time of stream.record() in a loop: 50k records per round, six rounds,
// ns per record: of the calls alone (GCs that fall inside them included), and
// of the whole round up to its last event's done() (the stream's work, the
// callbacks of collected events and their release in the addon included).
// With ROUNDS=30 PER=100000 in the environment, the process's resident
// memory after each round says whether recorded events pile up.
// A development-machine probe for the CPU backend (no GPU needed):
//   node bench/tools/record-loop.mjs     (from a checkout's root, after npm run build)
import path from 'node:path';
import { pathToFileURL } from 'node:url';

// The build of the working directory's checkout (run it from another checkout's root to compare builds).
const root = process.cwd();
const { openDevice } = await import(pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href);
const dev = openDevice({ backend: process.env.KVFLOW_BACKEND ?? 'cpu' });
const s = dev.createStream();
const rounds = Number(process.env.ROUNDS ?? 6);
const n = Number(process.env.PER ?? 50_000);
const perRecord = [];
const perRound = [];
const rssMb = [];
for (let round = 0; round < rounds; round++) {
  const t0 = process.hrtime.bigint();
  let last;
  for (let i = 0; i < n; i++) last = s.record();
  const t1 = process.hrtime.bigint();
  await last.done();
  await new Promise((resolve) => setImmediate(resolve));
  perRecord.push(Number(t1 - t0) / n);
  perRound.push(Number(process.hrtime.bigint() - t0) / n);
  rssMb.push(process.memoryUsage().rss / 1e6);
}
const fmt = (xs) => xs.map((x) => x.toFixed(0)).join(' ');
console.log(`record ${fmt(perRecord)} ns per call; ${fmt(perRound)} ns per record, whole round; ${fmt(rssMb)} MB resident`);
await dev.dispose();
