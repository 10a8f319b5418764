// A store whose index is large (6,400 chunks of a one-layer layout), on a
// filesystem then filled to <left> free bytes, records a use of every chunk
// in one index write transaction (one batch of use records): big enough to
// meet the full disk inside LMDB. Prints one JSON line:
// { ok, indexBytes, code, errno, message } for the batch's outcome.
// Usage: node big-txn-child.mjs <dist index url> <dist store/testing url> <dir> <left | none>
import { closeSync, openSync, statSync, truncateSync, writeSync } from 'node:fs';
import path from 'node:path';

const [entry, testing, dir, left] = process.argv.slice(2);
const { openDevice, KvStore, KvLayout } = await import(entry);
const { storeIndex } = await import(testing);

const SPEC = { layers: 1, kvHeads: 1, headDim: 8, dtype: 'f16', blockTokens: 4, numBlocks: 64 };
const CHUNK = 4;
const PROMPTS = 100;
const CHUNKS = 64;
const dev = openDevice({ backend: 'cpu' });
const layout = new KvLayout(SPEC);
const stream = dev.createStream();
const cache = dev.allocKvCache(layout);
const store = await KvStore.open({ device: dev, layout, fingerprint: { model: 'test/big-txn' }, dir, chunkTokens: CHUNK,
  nvmeBytes: PROMPTS * CHUNKS * 4096, dramBytes: 4 * 4096, admit: 'never' });
const blocks = Array.from({ length: CHUNKS }, (_, b) => b);
const keys = [];
for (let j = 0; j < PROMPTS; j++) {
  const tokens = Array.from({ length: CHUNKS * CHUNK }, (_, i) => (j * 100_003 + i * 7) % 128_000);
  await store.put(tokens, cache, blocks, stream, { durable: true });
  keys.push(...store.keys(tokens));
}
const indexBytes = statSync(path.join(dir, 'index.mdb')).size;
if (left !== 'none') {
  const filler = path.join(path.dirname(dir), 'filler');
  const fd = openSync(filler, 'w');
  try {
    for (;;) writeSync(fd, new Uint8Array(4096));
  } catch (e) {
    if (e.code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
  truncateSync(filler, Math.max(0, statSync(filler).size - Number(left)));
}
const index = storeIndex(store);
keys.forEach((k, i) => index.touch(k, false, i));
let out;
try {
  await index.flushTouches();
  out = { ok: true, indexBytes };
} catch (e) {
  out = { ok: false, indexBytes, code: e?.code ?? null, errno: e?.errno ?? null, message: String(e?.message ?? e) };
}
await store.close();
await dev.dispose();
console.log(JSON.stringify(out));
