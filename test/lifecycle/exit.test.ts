// kvflow objects left open never keep a process alive (issue #17 item 4):
// only work still in flight does, so an awaited call completes before the
// process exits. Each case runs a child Node process against the built
// package (dist/, made by `npm test`'s pretest step) that leaves its objects
// open and ends its script; the child must then exit by itself with code 0.
// A child still running after 60 s is killed and the test fails (a hang).
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { KvLayout, KvStore, openDevice } from '../../src/index.js';
import { randomBytes } from '../helpers/backends.js';
import { fillCache, readCache } from '../helpers/cache.js';
import { CHUNK, FP, SPEC } from '../helpers/store.js';

const root = path.resolve(import.meta.dirname, '..', '..');
const dist = (p: string): string => pathToFileURL(path.join(root, 'dist', 'src', p)).href;
const base = mkdtempSync(path.join(os.tmpdir(), 'kvflow-exit-'));

afterAll(() => rmSync(base, { recursive: true, force: true }));

interface Exit {
  status: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `code` (an ES module with `kv`, the package, `io` and `dev` testing hooks, and `SPEC`, `CHUNK`, `FP` in scope) in a child. */
function child(code: string): Exit {
  const script = `const kv = await import(${JSON.stringify(dist('index.js'))});
const io = await import(${JSON.stringify(dist('io/testing.js'))});
const devHooks = await import(${JSON.stringify(dist('device/testing.js'))});
const SPEC = ${JSON.stringify(SPEC)}, CHUNK = ${CHUNK}, FP = ${JSON.stringify(FP)};
process.on('unhandledRejection', (e) => { console.log('UNHANDLED', e && e.code, e && e.message); process.exitCode = 3; });
${code}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 60_000,
    killSignal: 'SIGKILL',
    env: { ...process.env, KVFLOW_BACKEND: 'cpu' },
  });
  return { status: r.status, signal: r.signal, stdout: r.stdout, stderr: r.stderr };
}

function expectExited(r: Exit, lastLine: string): void {
  expect(r.signal, `the child hung (killed): ${r.stderr}`).toBeNull();
  expect(r.status, r.stderr).toBe(0);
  expect(r.stdout.trim().split('\n').pop()).toBe(lastLine);
}

describe('objects left open do not keep the process alive', () => {
  it('a store left open after an awaited durable put: the put completes, the process exits, the chunk is there on a reopen', async () => {
    const dir = path.join(base, 'store');
    const layout = new KvLayout(SPEC);
    const tokens = Array.from({ length: CHUNK }, (_, i) => 1000 + i * 7);
    const blocks = Array.from({ length: CHUNK / SPEC.blockTokens }, (_, b) => b);
    const data = layout.bufferBytes;
    const pattern = Array.from({ length: layout.bufferCount }, () => randomBytes(data));
    const patternFile = path.join(base, 'pattern.bin');
    writeFileSync(patternFile, Buffer.concat(pattern));
    const r = child(`const { readFileSync } = await import('node:fs');
const dev = kv.openDevice();
const layout = new kv.KvLayout(SPEC);
const store = await kv.KvStore.open({ device: dev, layout, fingerprint: FP, dir: ${JSON.stringify(dir)}, chunkTokens: CHUNK, nvmeBytes: 8 * 12288, dramBytes: 4 * 12288 });
const stream = dev.createStream();
const cache = dev.allocKvCache(layout);
const all = readFileSync(${JSON.stringify(patternFile)});
cache.buffers.forEach((b, i) => {
  const host = dev.allocPinned(b.byteLength);
  host.array.set(all.subarray(i * b.byteLength, (i + 1) * b.byteLength));
  stream.copy(b, 0, host, 0, b.byteLength);
});
const put = await store.put(${JSON.stringify(tokens)}, cache, ${JSON.stringify(blocks)}, stream, { durable: true });
// A use recorded but not written yet, a lookup's lease held: still nothing keeps the process.
store.lookup(${JSON.stringify(tokens)});
console.log('durable', put.durable.length);`);
    expectExited(r, 'durable 1');

    await using dev = openDevice({ backend: 'cpu' });
    const stream = dev.createStream();
    const cache = dev.allocKvCache(layout);
    await fillCache(dev, stream, cache, pattern.map((p) => p.map((x) => x ^ 0xff)));
    const store = await KvStore.open({ device: dev, layout, fingerprint: FP, dir, chunkTokens: CHUNK, nvmeBytes: 8 * 12288, dramBytes: 4 * 12288 });
    try {
      const hit = store.lookup(tokens);
      expect(hit.tokens).toBe(CHUNK);
      expect(hit.chunks[0]!.tier).toBe('nvme');
      for (let l = 0; l < SPEC.layers; l++) await store.loadLayer(hit.chunks, l, cache, blocks, stream).done();
      hit.release();
      const back = await readCache(dev, stream, cache);
      for (let l = 0; l < SPEC.layers; l++) {
        for (const kv of [0, 1] as const) {
          for (const b of blocks) {
            const at = layout.piece(l, kv, b);
            const piece = (arr: Uint8Array[]): Uint8Array => arr[at.buffer]!.subarray(at.offset, at.offset + layout.pieceBytes);
            expect(Buffer.from(piece(back)).equals(Buffer.from(piece(pattern)))).toBe(true);
          }
        }
      }
    } finally {
      await store.close();
    }
  });

  it('a store left open right after it was opened (index thread idle), and one with a temporary directory, removed at exit', () => {
    const r = child(`const dev = kv.openDevice();
const layout = new kv.KvLayout(SPEC);
await kv.KvStore.open({ device: dev, layout, fingerprint: FP, dir: ${JSON.stringify(path.join(base, 'idle'))}, chunkTokens: CHUNK, nvmeBytes: 4 * 12288, dramBytes: 2 * 12288 });
const temp = await kv.KvStore.open({ device: dev, layout, fingerprint: FP, chunkTokens: CHUNK, nvmeBytes: 4 * 12288, dramBytes: 2 * 12288 });
console.log(temp.dir);
console.log('open');`);
    expectExited(r, 'open');
    const temp = r.stdout.trim().split('\n')[0]!;
    expect(temp).toContain('kvflow-store-');
    expect(existsSync(temp)).toBe(false);
    expect(existsSync(path.join(base, 'idle', 'index.mdb'))).toBe(true);
  });

  it('a device, an idle stream, a synchronized stream, buffers and open files (posix, io_uring)', () => {
    const file = path.join(base, 'file.bin');
    const r = child(`const dev = kv.openDevice();
const idle = dev.createStream();
const used = dev.createStream();
const a = dev.allocPinned(1 << 16), d = dev.allocDevice(1 << 16);
used.copy(d, 0, a, 0, 1 << 16);
await used.synchronize();
const f = await dev.openFile(${JSON.stringify(file)}, { create: true });
await f.write(0, a, 0, 1 << 16);
await f.read(a, 0, 0, 1 << 16);
// An io_uring file too, where the kernel allows it.
const g = await dev.openFile(${JSON.stringify(file)} + '.uring', { create: true, engine: 'io_uring' }).catch((e) => {
  if (e.code !== 'ERR_UNSUPPORTED') throw e;
});
if (g) await g.write(0, a, 0, 1 << 16);
console.log('idle');`);
    expectExited(r, 'idle');
  });

  it('a pipeline, a connector and a reference model left open after a prefill', () => {
    const r = child(`const dev = kv.openDevice();
const layout = new kv.KvLayout(SPEC);
const store = await kv.KvStore.open({ device: dev, layout, fingerprint: FP, dir: ${JSON.stringify(path.join(base, 'pipe'))}, chunkTokens: CHUNK, nvmeBytes: 8 * 12288, dramBytes: 8 * 12288 });
const cache = dev.allocKvCache(layout);
const pipe = new kv.LayerPipeline({ store, cache });
const tokens = Array.from({ length: 2 * CHUNK + 3 }, (_, i) => i * 3);
const blocks = Array.from({ length: 8 }, (_, b) => b);
const r = await pipe.prefill({ tokens, blocks, compute: () => undefined, policy: 'recompute' });
const conn = new kv.KvConnector({ store, cache });
conn.lookup(tokens);
const { ReferenceModel } = await import(${JSON.stringify(dist('reference/index.js'))});
ReferenceModel.create(dev, { layers: 1, hidden: 16, heads: 2, kvHeads: 2, headDim: 8, intermediate: 32, vocab: 64, maxTokens: 8 });
console.log('saved', r.saved);`);
    expectExited(r, 'saved 2');
  });

  it('work in flight keeps the process until it completes: an awaited file read held by the engine, an event held on its stream', () => {
    const file = path.join(base, 'held.bin');
    const r = child(`const dev = kv.openDevice();
const a = dev.allocPinned(4096);
a.array.fill(7);
const f = await dev.openFile(${JSON.stringify(file)}, { create: true });
await f.write(0, a, 0, 4096);
a.array.fill(0);
const release = io.holdIo(f);
// Unreferenced timers: only the IO (and the stream's work) in flight can keep the process until they fire.
setTimeout(release, 50).unref();
await f.read(a, 0, 0, 4096);
const s = dev.createStream();
const open = devHooks.holdStream(s);
const b = dev.allocPinned(4096);
s.copy(b, 0, a, 0, 4096);
const ev = s.record();
setTimeout(() => open(), 50).unref();
await ev.done();
console.log('held', b.array.every((x) => x === 7));`);
    expectExited(r, 'held true');
  });
});
