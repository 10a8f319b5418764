// Drives kvflow's public entry points with adversarial arguments for a
// bounded time (fuzz.test.ts runs it in a child process, so a crash is a
// signal the parent sees instead of a dead test runner). Each call gets, per
// argument, either a valid value or an adversarial one (null, undefined,
// NaN, negative, huge, wrong types, foreign objects, disposed objects). A
// call must succeed or fail with a KvflowError carrying an ERR_ code, settle
// within a bound, and, when rejected, leave the store as it was.
// Prints one JSON line: { calls, rejected, accepted, codes, problems, acceptedCalls }.
// Usage: node fuzz-child.mjs <dist index url> <seed> <milliseconds>
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import fc from 'fast-check';

const [entry, seedArg, msArg] = process.argv.slice(2);
const kv = await import(entry);
const { openDevice, KvStore, KvLayout, KvflowError, LayerPipeline, KvConnector } = kv;

const SPEC = { layers: 3, kvHeads: 2, headDim: 8, dtype: 'f16', blockTokens: 4, numBlocks: 64 };
const CHUNK = 8;
const BPC = CHUNK / SPEC.blockTokens;
const FP = { model: 'test/fuzz' };
const CALL_MS = 15_000;
const tmp = mkdtempSync(path.join(os.tmpdir(), 'kvflow-fuzz-'));

const layout = new KvLayout(SPEC);
const otherLayout = new KvLayout({ ...SPEC, headDim: 16 });
const dev = openDevice({ backend: 'cpu' });
const other = openDevice({ backend: 'cpu' });
const gone = openDevice({ backend: 'cpu' });
const storeOptions = (device, extra = {}) => ({ device, layout, fingerprint: FP, chunkTokens: CHUNK, dramBytes: 32 * 12288, nvmeBytes: 32 * 12288, admit: 'never', ...extra });

// Valid objects.
const stream = dev.createStream();
const cache = dev.allocKvCache(layout);
const pinned = dev.allocPinned(1 << 16);
const host = dev.allocHost(1 << 16);
const devbuf = dev.allocDevice(1 << 16);
const store = await KvStore.open(storeOptions(dev, { dir: path.join(tmp, 'store') }));
const file = await dev.openFile(path.join(tmp, 'file.bin'), { create: true, size: 1 << 16 });
const connector = new KvConnector({ store, cache });
const pipeline = new LayerPipeline({ store, cache });

// Foreign objects: another device's, another store's, another layout's.
const otherStream = other.createStream();
const otherCache = other.allocKvCache(layout);
const otherPinned = other.allocPinned(4096);
const otherStore = await KvStore.open(storeOptions(other));
const wideCache = dev.allocKvCache(otherLayout);
const otherConnector = new KvConnector({ store: otherStore, cache: otherCache });

let tokenSeed = 1;
function tokens(chunks = 2) {
  const base = tokenSeed++ * 1000;
  return Array.from({ length: chunks * CHUNK }, (_, i) => (base + i * 7) % 128000);
}
const blocks = (n = 2 * BPC) => Array.from({ length: n }, (_, i) => i);

// Something put, so that lookups hit.
const kept = tokens(2);
await store.put(kept, cache, blocks(), stream);
const keptOther = tokens(2);
await otherStore.put(keptOther, otherCache, blocks(), otherStream);
const foreignHit = otherStore.lookup(keptOther);
const foreignPut = otherStore.beginPut(tokens(1));
const foreignRequest = otherConnector.lookup(keptOther);

// Disposed objects.
const goneStream = dev.createStream();
await goneStream.dispose();
const gonePinned = dev.allocPinned(4096);
await gonePinned.dispose();
const goneCache = dev.allocKvCache(layout);
await goneCache.dispose();
const goneFile = await dev.openFile(path.join(tmp, 'gone.bin'), { create: true });
await goneFile.dispose();
const closedStore = await KvStore.open(storeOptions(dev));
await closedStore.close();
const goneDevStream = gone.createStream();
const goneDevBuffer = gone.allocPinned(4096);
await gone.dispose();
const releasedHit = store.lookup(kept);
releasedHit.release();
const abortedPut = store.beginPut(tokens(1));
await store.abort(abortedPut);

const nullProto = Object.create(null);
const throwingToString = { toString() { throw new Error('toString called'); }, [Symbol.toPrimitive]() { throw new Error('coerced'); } };
const ADVERSARIAL = [
  null, undefined, NaN, -1, -0, 0.5, 1.5, 2 ** 31, 2 ** 53, 2 ** 64, Infinity, -Infinity, 0, 1, 7,
  '', 'x', '0', 'high', 'durable', '/proc/self/mem', true, false, 10n, -5n,
  Symbol('s'), nullProto, throwingToString, () => 1, {}, [], [null], [-1], [NaN], [1.5], ['a'], [2 ** 32], [0, 0, 0, 0],
  { length: 2 ** 40 }, { length: -1 }, new Uint8Array(4), new Float64Array(3), new ArrayBuffer(8), new Date(0), /x/, new Map(), Promise.resolve(1),
  { durable: 'yes' }, { tenant: 5 }, { priority: 'urgent' }, { engine: 'warp' }, { layers: -1 }, { blocks: null, staging: null },
  otherStream, otherCache, otherPinned, otherStore, wideCache, foreignHit, foreignHit.chunks, foreignPut, foreignRequest, otherConnector,
  goneStream, gonePinned, goneCache, goneFile, closedStore, goneDevStream, goneDevBuffer, gone, releasedHit, releasedHit.chunks, abortedPut,
  dev, stream, cache, pinned, host, devbuf, store, file, layout,
];
const bad = fc.oneof(
  { arbitrary: fc.constantFrom(...ADVERSARIAL), weight: 4 },
  { arbitrary: fc.anything({ maxDepth: 2, withNullPrototype: true, withBigInt: true, withTypedArray: true, withSparseArray: true, withBoxedValues: true }), weight: 1 },
);

/** Things made by a run, undone after it. */
let cleanup = [];
const later = (fn) => cleanup.push(fn);
const pending = () => {
  const p = store.beginPut(tokens(2));
  later(() => store.abort(p));
  return p;
};
/** A pending put whose every layer was put: commit may be called on it. */
const filled = () => {
  const p = pending();
  for (let l = 0; l < SPEC.layers; l++) store.putLayer(p, l, cache, blocks(), stream);
  return p;
};
const hitChunks = () => {
  const h = store.lookup(kept);
  later(() => h.release());
  return h.chunks;
};
const request = () => {
  const r = connector.lookup(kept);
  later(() => connector.requestFinished(r));
  return r;
};
const dispose = (x) => {
  later(() => x?.dispose?.());
  return x;
};

const V = Symbol('valid');
/** [name, valid argument makers, call, touches the store]. */
const CALLS = [
  ['openDevice', [() => ({ backend: 'cpu' })], (o) => dispose(openDevice(o))],
  ['createStream', [() => ({})], (o) => dispose(dev.createStream(o))],
  ['allocPinned', [() => 4096], (n) => dispose(dev.allocPinned(n))],
  ['allocHost', [() => 4096], (n) => dispose(dev.allocHost(n))],
  ['allocDevice', [() => 4096], (n) => dispose(dev.allocDevice(n))],
  ['allocKvCache', [() => layout], (l) => dispose(dev.allocKvCache(l))],
  ['stream.copy', [() => pinned, () => 0, () => devbuf, () => 0, () => 4096], (...a) => stream.copy(...a)],
  ['stream.waitEvent', [() => stream.record()], (e) => stream.waitEvent(e)],
  ['cache.gather', [() => stream, () => ({ blocks: blocks(2), staging: pinned })], (s, t) => cache.gather(s, t)],
  ['cache.scatter', [() => stream, () => ({ blocks: blocks(2), staging: pinned })], (s, t) => cache.scatter(s, t)],
  ['cache.moveRecords', [() => stream, () => 'gather', () => [{ blocks: blocks(2), staging: pinned, stagingOffset: 0 }], () => undefined, () => 'auto'],
    (...a) => cache.moveRecords(...a)],
  ['cache.prepare', [() => 'scatter', () => [{ blocks: blocks(2), staging: pinned }], () => 0], (...a) => dispose(cache.prepare(...a))],
  ['openFile', [() => path.join(tmp, `f-${tokenSeed++}.bin`), () => ({ create: true })], async (p, o) => dispose(await dev.openFile(p, o))],
  ['file.read', [() => pinned, () => 0, () => 0, () => 4096, () => ({})], (...a) => file.read(...a)],
  ['file.write', [() => 0, () => pinned, () => 0, () => 4096, () => ({})], (...a) => file.write(...a)],
  ['file.readChecked', [() => pinned, () => [{ dstOffset: 0, fileOffset: 0, bytes: 64, seed: 0, crc: 0 }]], (d, p) => file.readChecked(d, p).verified],
  ['file.writeSummed', [() => pinned, () => [{ srcOffset: 0, fileOffset: 0, bytes: 64, seed: 0 }]], (s, p) => file.writeSummed(s, p)],
  ['stream.readFile', [() => devbuf, () => 0, () => file, () => 0, () => 4096], (...a) => stream.readFile(...a)],
  ['KvStore.open', [() => storeOptions(dev)], async (o) => { const s = await KvStore.open(o); later(() => s.close()); return s; }],
  ['store.keys', [() => kept, () => ({})], (t, o) => store.keys(t, o), true],
  ['store.lookup', [() => kept, () => ({})], (t, o) => { const h = store.lookup(t, o); later(() => h.release()); }, true],
  ['store.put', [tokens, () => cache, blocks, () => stream, () => ({})], (...a) => store.put(...a), true],
  ['store.beginPut', [tokens, () => ({})], (t, o) => { const p = store.beginPut(t, o); later(() => store.abort(p)); }, true],
  ['store.putLayer', [pending, () => 0, () => cache, blocks, () => stream, () => ({})], (...a) => store.putLayer(...a), true],
  ['store.loadLayer', [hitChunks, () => 0, () => cache, blocks, () => stream, () => ({})], (...a) => store.loadLayer(...a), true],
  ['store.commit', [filled, () => ({})], (p, o) => store.commit(p, o), true],
  ['store.abort', [pending], (p) => store.abort(p), true],
  ['store.flush', [], () => store.flush(), true],
  ['store.close', [() => ({})], async (o) => { const s = await KvStore.open(storeOptions(dev)); later(() => s.close()); return s.close(o); }],
  ['store.stats', [], () => store.stats(), true],
  ['new LayerPipeline', [() => ({ store, cache })], (o) => dispose(new LayerPipeline(o))],
  ['pipeline.prefill', [() => ({ tokens: tokens(2), blocks: blocks(), compute: () => undefined })], (r) => pipeline.prefill(r), true],
  ['new KvConnector', [() => ({ store, cache })], (o) => dispose(new KvConnector(o))],
  ['connector.lookup', [() => kept], (t) => { const r = connector.lookup(t); later(() => connector.requestFinished(r)); }, true],
  ['connector.startLoad', [request, () => blocks(), () => ({})], (...a) => connector.startLoad(...a), true],
  ['connector.loadResult', [request], (r) => connector.loadResult(r), true],
  ['connector.waitForLayerLoad', [request, () => 0, () => stream], (...a) => connector.waitForLayerLoad(...a), true],
  ['connector.saveLayer', [request, () => 0, () => stream, () => blocks()], (...a) => connector.saveLayer(...a), true],
  ['connector.waitForSave', [request], (r) => connector.waitForSave(r), true],
  ['connector.requestFinished', [request], (r) => connector.requestFinished(r), true],
];

function storeState() {
  const s = store.stats();
  const hit = store.lookup(kept);
  const found = hit.chunks.length;
  hit.release();
  return JSON.stringify({ used: s.dram.usedBytes, dram: s.dram.chunks, nvme: s.nvme.chunks, found });
}

function show(v) {
  try {
    if (typeof v === 'symbol') return v.toString();
    if (typeof v === 'bigint') return `${v}n`;
    if (typeof v === 'function') return 'a function';
    if (v === null || typeof v !== 'object') return String(v);
    const name = Object.getPrototypeOf(v)?.constructor?.name ?? 'null-prototype object';
    return name === 'Object' || name === 'Array' ? JSON.stringify(v)?.slice(0, 80) ?? name : name;
  } catch {
    return 'an object';
  }
}

const withTimeout = (p) => {
  let timer;
  return Promise.race([
    Promise.resolve(p).finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error('HANG')), CALL_MS); }),
  ]);
};

const problems = [];
/** Adversarial calls that succeeded (some are documented: null options mean defaults; others are for a reader to judge). */
const accepted = [];
const counts = { calls: 0, rejected: 0, accepted: 0 };
const codes = {};

async function settleCleanup() {
  const fns = cleanup;
  cleanup = [];
  for (const fn of fns.reverse()) {
    try {
      await withTimeout(fn());
    } catch {
      // Undoing what a run made: its own failures are not the run's.
    }
  }
  // An accepted call's failure on the device (a read past the end of the
  // file) fails the stream's next event, as documented: that is its result.
  await stream.synchronize().catch((e) => {
    if (!(e instanceof KvflowError) || !String(e.code).startsWith('ERR_')) throw e;
  });
}

const callArb = fc.oneof(...CALLS.map(([name, valid], i) =>
  fc.tuple(fc.constant(i), fc.tuple(...valid.map(() => fc.oneof({ arbitrary: fc.constant(V), weight: 3 }, { arbitrary: bad, weight: 2 })))).map(([n, a]) => [n, a]),
));

const deadline = Date.now() + Number(msArg);
await fc.assert(
  fc.asyncProperty(callArb, async ([index, picks]) => {
    const [name, valid, call, touchesStore] = CALLS[index];
    const args = picks.map((p, k) => (p === V ? valid[k]() : p));
    const adversarial = picks.some((p) => p !== V);
    const before = touchesStore ? storeState() : undefined;
    counts.calls++;
    let outcome;
    let after;
    try {
      let r;
      try {
        r = call(...args);
      } catch (e) {
        // Thrown synchronously: compared at once, before any other work of the process can run.
        if (before !== undefined) after = storeState();
        throw e;
      }
      await withTimeout(r && typeof r.then === 'function' ? r : undefined);
      outcome = { ok: true };
    } catch (e) {
      outcome = { ok: false, e };
    }
    // A rejected call changed nothing: judged where the comparison is exact,
    // for calls that throw at once (nothing else of the process ran between the
    // two looks). An asynchronous rejection lets background work of earlier
    // calls (demotions, evictions) land in between, so it is not compared.
    await settleCleanup();
    const where = `${name}(${args.map(show).join(', ')})`;
    if (outcome.ok) {
      if (adversarial) {
        counts.accepted++;
        if (accepted.length < 200) accepted.push(where);
      }
      return;
    }
    const e = outcome.e;
    if (e instanceof Error && e.message === 'HANG') {
      problems.push({ call: where, problem: `did not settle within ${CALL_MS} ms` });
      return;
    }
    if (!(e instanceof KvflowError) || typeof e.code !== 'string' || !e.code.startsWith('ERR_')) {
      problems.push({ call: where, problem: `threw ${e?.name ?? typeof e}: ${String(e?.message ?? e).slice(0, 200)}` });
      return;
    }
    counts.rejected++;
    codes[e.code] = (codes[e.code] ?? 0) + 1;
    if (!adversarial && !['ERR_NO_SPACE', 'ERR_BUSY'].includes(e.code)) {
      problems.push({ call: where, problem: `valid arguments rejected: ${e.code}: ${e.message.slice(0, 200)}` });
    }
    if (before !== undefined && after !== undefined) {
      if (after !== before) problems.push({ call: where, problem: `rejected (${e.code}) but changed the store: ${before} -> ${after}` });
    }
  }),
  { seed: Number(seedArg), numRuns: 1_000_000, interruptAfterTimeLimit: Math.max(1, deadline - Date.now()), markInterruptAsFailure: false, endOnFailure: false },
).catch((e) => {
  const m = String(e?.message ?? e);
  problems.push({ call: 'fast-check', problem: m.length > 1200 ? `${m.slice(0, 400)} ... ${m.slice(-800)}` : m });
});

// The store still works after all that: a put and a load round-trip.
try {
  const t = tokens(2);
  await store.put(t, cache, blocks(), stream);
  const h = store.lookup(t);
  for (let l = 0; l < SPEC.layers; l++) await store.loadLayer(h.chunks, l, cache, blocks(), stream).done();
  if (h.chunks.length !== 2) problems.push({ call: 'final check', problem: `a fresh put is found as ${h.chunks.length} of 2 chunks` });
  h.release();
} catch (e) {
  problems.push({ call: 'final check', problem: String(e?.message ?? e) });
}

await connector.dispose();
await otherConnector.dispose();
await pipeline.dispose();
await store.close();
await otherStore.close();
await dev.dispose();
await other.dispose();
rmSync(tmp, { recursive: true, force: true });
console.log(JSON.stringify({ ...counts, codes, problems, acceptedCalls: accepted }));
