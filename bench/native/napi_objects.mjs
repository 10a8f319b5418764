// Driver of bench/native/napi_objects.cc (see its header): us per object for
// each way, each way in a process of its own (finalizers left over from one
// way must not land on the next), best of 7 runs of 200,000 objects made in
// batches of 1,024 with a turn of the event loop after each batch, inside
// the timing: Node-API finalizers and FinalizationRegistry callbacks run on
// such turns, so their cost is counted, as it is for a stream's events.
// The number-and-registry way leaves out the addon's table of states that
// such an id would index (a map insert and erase per object).
import { execFileSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const WAYS = {
  'number (a crossing, no object)': (x) => () => x.number(),
  'ObjectWrap, Constructor.New()': (x) => () => x.objectWrapNew(),
  'object + napi_wrap': (x) => () => x.objectAndWrap(),
  'napi_create_external': (x) => () => x.external(),
  'JS object, napi_wrap': (x) => (i) => {
    const h = new Holder(i);
    x.wrapGiven(h);
    return h;
  },
  'number + JS object + registry': (x) => (i) => {
    const h = new Holder(x.number() + i);
    registry.register(h, i);
    return h;
  },
  'JS object alone': () => (i) => new Holder(i),
};

class Holder {
  constructor(id) {
    this.id = id;
  }
}
const registry = new FinalizationRegistry(() => {});
const N = 200_000;
const BATCH = 1024;

async function run(name) {
  const x = createRequire(import.meta.url)('../../build-bench/napi_objects.node');
  const make = WAYS[name](x);
  let best = Infinity;
  for (let r = 0; r < 7; r++) {
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; ) {
      const keep = [];
      for (const end = Math.min(N, i + BATCH); i < end; i++) keep.push(make(i));
      await new Promise((resolve) => setImmediate(resolve));
    }
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / N / 1e3);
  }
  return best;
}

const way = process.argv[2];
if (way !== undefined) {
  console.log((await run(way)).toFixed(3));
} else {
  for (const name of Object.keys(WAYS)) {
    const us = execFileSync(process.execPath, [fileURLToPath(import.meta.url), name], { encoding: 'utf8' }).trim();
    console.log(`${name.padEnd(34)} ${us} us`);
  }
}
