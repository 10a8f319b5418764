// Driver of bench/native/napi_objects.cc (see its header): us per object,
// best of 7 runs of 200,000, objects kept in batches of 1,024 so the
// collector and the finalizers run as they do for a stream's events.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const x = require('../../build-bench/napi_objects.node');

class Holder {
  constructor(id) {
    this.id = id;
  }
}
const registry = new FinalizationRegistry(() => {});
const N = 200_000;

function bench(name, make) {
  let best = Infinity;
  for (let run = 0; run < 7; run++) {
    let keep = [];
    const t0 = process.hrtime.bigint();
    for (let i = 0; i < N; i++) {
      if ((i & 1023) === 0) keep = [];
      keep.push(make(i));
    }
    best = Math.min(best, Number(process.hrtime.bigint() - t0) / N / 1e3);
  }
  console.log(`${name.padEnd(34)} ${best.toFixed(3)} us`);
}

bench('number (a crossing, no object)', () => x.number());
bench('ObjectWrap, Constructor.New()', () => x.objectWrapNew());
bench('object + napi_wrap', () => x.objectAndWrap());
bench('napi_create_external', () => x.external());
bench('JS object, napi_wrap', (i) => {
  const h = new Holder(i);
  x.wrapGiven(h);
  return h;
});
bench('number + JS object + registry', (i) => {
  const h = new Holder(x.number() + i);
  registry.register(h, i);
  return h;
});
bench('JS object alone', (i) => new Holder(i));
