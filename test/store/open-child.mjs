// Opens a store in a child process, so that a crash (a signal) is seen by the
// parent instead of killing the test runner. Prints one JSON line:
// { ok: true, warning, chunks } or { ok: false, name, code, errno, message }.
// --put n: durable puts of prompts 0 .. n-1 after opening. --fill n: fill the
// filesystem of <dir> up to n bytes left, then make durable puts until one fails.
// Usage: node open-child.mjs <dist index url> <dir> [options as JSON] [--put n | --fill n]
const [entry, dir, json, flag, count] = process.argv.slice(2);
const { openDevice, KvStore, KvLayout } = await import(entry);
const { SPEC, CHUNK, BPC, FINGERPRINT, tokensOf } = await import('./chunks.mjs');

const extra = json ? JSON.parse(json) : {};
const dev = openDevice({ backend: 'cpu' });
const layout = new KvLayout(SPEC);
let out;
try {
  const store = await KvStore.open({ device: dev, layout, fingerprint: FINGERPRINT, dir, chunkTokens: CHUNK, nvmeBytes: 64 * 12288, dramBytes: 8 * 12288, ...extra });
  if (flag === '--put') {
    const stream = dev.createStream();
    const cache = dev.allocKvCache(layout);
    const blocks = Array.from({ length: BPC }, (_, b) => b);
    for (let j = 0; j < Number(count); j++) await store.put(tokensOf(j), cache, blocks, stream, { durable: true });
  }
  if (flag === '--fill') {
    const { closeSync, openSync, statSync, truncateSync, writeSync } = await import('node:fs');
    const path = await import('node:path');
    const filler = path.join(path.dirname(dir), 'filler');
    const fd = openSync(filler, 'w');
    try {
      for (;;) writeSync(fd, new Uint8Array(4096));
    } catch (e) {
      if (e.code !== 'ENOSPC') throw e;
    } finally {
      closeSync(fd);
    }
    truncateSync(filler, Math.max(0, statSync(filler).size - Number(count)));
    const stream = dev.createStream();
    const cache = dev.allocKvCache(layout);
    const blocks = Array.from({ length: BPC }, (_, b) => b);
    for (let j = 0; j < 64; j++) await store.put(tokensOf(j), cache, blocks, stream, { durable: true });
  }
  let found = 0;
  for (let j = 0; j < 64; j++) {
    const hit = store.lookup(tokensOf(j));
    found += hit.chunks.length;
    hit.release();
  }
  out = { ok: true, warning: store.warning ?? null, chunks: found };
  await store.close();
} catch (e) {
  out = { ok: false, name: e?.name, code: e?.code ?? null, errno: e?.errno ?? null, message: String(e?.message ?? e) };
}
await dev.dispose();
console.log(JSON.stringify(out));
