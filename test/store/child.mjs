// A store client run as a child process by the crash and multi-process
// tests: puts single-chunk prompts j = first .. first + count - 1 with
// durable writes, printing "durable j" after each put resolved; with
// --verify, also loads the chunks of other writers that it finds and prints
// "mismatch j" for any whose bytes differ from what chunk j must hold; with
// --try, a put that fails prints "put-error j CODE" instead of throwing.
// With --lease, it looks the prompts up and holds the hits until killed.
// Usage: node child.mjs <dist index url> <dir> <first> <count> [--verify a b | --check | --try | --lease]
const [entry, dir, firstArg, countArg, flag, vFirst, vCount] = process.argv.slice(2);
const { openDevice, KvStore, KvLayout } = await import(entry);
const { storeFiles, indexProblems } = await import(new URL('store/testing.js', entry).href);

const { SPEC, CHUNK, BPC, FINGERPRINT, NVME_BYTES, tokensOf, pieceBytes: bytesOf } = await import('./chunks.mjs');
const layout = new KvLayout(SPEC);
const pieceBytes = (j, l, kv, b) => bytesOf(j, l, kv, b, layout.pieceBytes);

const dev = openDevice({ backend: 'cpu' });
const stream = dev.createStream();
const cache = dev.allocKvCache(layout);
const host = cache.buffers.map((b) => dev.allocPinned(b.byteLength));
const store = await KvStore.open({
  device: dev, layout, fingerprint: FINGERPRINT, dir, chunkTokens: CHUNK,
  nvmeBytes: NVME_BYTES, dramBytes: 8 * 12288,
});
console.log('ready');
// With KVFLOW_TEST_BARRIER, start only once that file exists (writers start together).
if (process.env.KVFLOW_TEST_BARRIER) {
  const { existsSync } = await import('node:fs');
  while (!existsSync(process.env.KVFLOW_TEST_BARRIER)) await new Promise((r) => setTimeout(r, 2));
}

async function writeChunk(j) {
  for (let l = 0; l < SPEC.layers; l++) {
    for (const kv of [0, 1]) {
      for (let b = 0; b < BPC; b++) {
        const at = layout.piece(l, kv, b);
        host[at.buffer].array.set(pieceBytes(j, l, kv, b), at.offset);
      }
    }
  }
  for (let i = 0; i < host.length; i++) stream.copy(cache.buffers[i], 0, host[i], 0, host[i].byteLength);
  const blocks = Array.from({ length: BPC }, (_, b) => b);
  await store.put(tokensOf(j), cache, blocks, stream, { durable: true });
}

async function verifyChunk(j) {
  const hit = store.lookup(tokensOf(j));
  if (hit.chunks.length === 0) return false;
  const blocks = Array.from({ length: BPC }, (_, b) => BPC + b);
  try {
    for (let l = 0; l < SPEC.layers; l++) await store.loadLayer(hit.chunks, l, cache, blocks, stream).done();
  } catch (e) {
    console.log(`load-error ${j} ${e.code}`);
    return false;
  } finally {
    hit.release();
  }
  for (let i = 0; i < host.length; i++) stream.copy(host[i], 0, cache.buffers[i], 0, host[i].byteLength);
  await stream.synchronize();
  for (let l = 0; l < SPEC.layers; l++) {
    for (const kv of [0, 1]) {
      for (let b = 0; b < BPC; b++) {
        const at = layout.piece(l, kv, BPC + b);
        const have = host[at.buffer].array.subarray(at.offset, at.offset + layout.pieceBytes);
        if (Buffer.compare(have, pieceBytes(j, l, kv, b)) !== 0) {
          console.log(`mismatch ${j}`);
          return false;
        }
      }
    }
  }
  return true;
}

const first = Number(firstArg);
const count = Number(countArg);
if (flag === '--hold') {
  // A writer stuck mid-put: its slot stays reserved until it dies.
  const { holdIo } = await import(new URL('io/testing.js', entry).href);
  holdIo(storeFiles(store)[0]);
  void writeChunk(first).catch(() => undefined);
  console.log('holding');
  await new Promise(() => setInterval(() => undefined, 1000));
}
if (flag === '--lease') {
  // Looks up prompts first .. first + count - 1 and holds the hits (their leases) until killed.
  const hits = [];
  for (let j = first; j < first + count; j++) hits.push(store.lookup(tokensOf(j)));
  console.log(`leased ${hits.reduce((n, h) => n + h.nvme, 0)}`);
  await new Promise(() => setInterval(() => undefined, 1000));
}
if (flag === '--check') {
  // Verify mode: "ok j" / "miss j" for each j.
  for (let j = first; j < first + count; j++) console.log(`${(await verifyChunk(j)) ? 'ok' : 'miss'} ${j}`);
  const problems = indexProblems(store);
  console.log(problems.length === 0 ? 'accounting ok' : `accounting: ${problems.join('; ')}`);
} else if (flag === '--try') {
  for (let j = first; j < first + count; j++) {
    try {
      await writeChunk(j);
      console.log(`durable ${j}`);
    } catch (e) {
      console.log(`put-error ${j} ${e.code}`);
    }
  }
} else {
  for (let j = first; j < first + count; j++) {
    await writeChunk(j);
    console.log(`durable ${j}`);
    if (flag === '--verify') {
      const k = Number(vFirst) + (j % Number(vCount));
      if (await verifyChunk(k)) console.log(`verified ${k}`);
    }
  }
}
await store.close();
await dev.dispose();
console.log('exit');
