// Whole-process behaviour: runs child Node processes against the built
// package (dist/, made by `npm test`'s pretest step).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { describe, expect, it } from 'vitest';

import { backends } from '../helpers/backends.js';

const root = path.resolve(import.meta.dirname, '..', '..');
const entry = pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href;
const testing = pathToFileURL(path.join(root, 'dist', 'src', 'device', 'testing.js')).href;

function runChild(
  code: string,
  backend: string,
  nodeArgs: string[] = [],
): { status: number | null; stdout: string; stderr: string } {
  const script = `import { openDevice } from ${JSON.stringify(entry)};
import { holdStream, injectFailure } from ${JSON.stringify(testing)};
process.on('unhandledRejection', (e) => { console.log('UNHANDLED', e && e.code); process.exitCode = 3; });
const backend = ${JSON.stringify(backend)};
${code}`;
  const r = spawnSync(process.execPath, [...nodeArgs, '--input-type=module', '-e', script], {
    encoding: 'utf8',
    timeout: 60_000,
    env: { ...process.env, KVFLOW_BACKEND: undefined },
  });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** The child printed `stdout`, exited with status 0 and, where `quiet`, wrote nothing to stderr. */
function expectExit(r: ReturnType<typeof runChild>, stdout: string, quiet: boolean): void {
  if (quiet) expect(r.stderr).toBe('');
  expect(r.stdout.trim()).toBe(stdout);
  expect(r.status).toBe(0);
}

/** The start of most child scripts: a device on the backend and a stream `s`. */
const OPEN = `const dev = openDevice({ backend });
const s = dev.createStream();`;

describe.each(backends)('process behaviour on $backend', ({ backend, skip }) => {
  it.skipIf(skip)('the process exits after dispose() with work in flight, once the work is done', () => {
    const r = runChild(
      `${OPEN}
const a = dev.allocPinned(64 << 20), d = dev.allocDevice(64 << 20);
for (let i = 0; i < 8; i++) s.copy(d, 0, a, 0, 64 << 20);
const last = s.record();
dev.dispose().then(() => console.log('disposed', last.status()));`,
      backend,
    );
    expectExit(r, 'disposed ok', true);
  });

  it.skipIf(skip)('the process exits after dispose() with large paged batches of both engines in flight', () => {
    // 800 pieces per batch: on CUDA a dma batch is enqueued by helper threads on
    // streams of their own, and kernel batches overlap on a side stream.
    const r = runChild(
      `const { KvLayout } = await import(${JSON.stringify(entry)});
const dev = openDevice({ backend });
const layout = new KvLayout({ layers: 4, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens: 16, numBlocks: 256 });
const cache = dev.allocKvCache(layout);
const s = dev.createStream({ priority: 'high' });
const blocks = Array.from({ length: 100 }, (_, i) => (i * 7) % 256);
const staging = dev.allocPinned(layout.stagingBytes(100 * 16));
for (let i = 0; i < 6; i++) cache.gather(s, { blocks, staging, engine: i % 2 === 1 ? 'kernel' : 'dma' });
for (let i = 0; i < 6; i++) cache.scatter(s, { blocks, staging, engine: i % 2 === 1 ? 'kernel' : 'dma' });
const last = s.record();
dev.dispose().then(() => console.log('disposed', last.status()));`,
      backend,
    );
    expectExit(r, 'disposed ok', true);
  });

  it.skipIf(skip || backend !== 'cuda')('dispose() closes a wrap of one of the device\'s own streams before that stream', () => {
    const r = runChild(
      `${OPEN}
const w = dev.wrapStreamUnsafe(s.handle);
const a = dev.allocPinned(16 << 20), d = dev.allocDevice(16 << 20);
for (let i = 0; i < 4; i++) { s.copy(d, 0, a, 0, 16 << 20); w.copy(a, 0, d, 0, 16 << 20); }
const last = w.record();
dev.dispose().then(() => console.log('disposed', last.status()));`,
      backend,
    );
    expectExit(r, 'disposed ok', true);
  });

  it.skipIf(skip)('the process exits when work is left in flight and nothing waits on it', () => {
    const r = runChild(
      `${OPEN}
const a = dev.allocPinned(64 << 20), d = dev.allocDevice(64 << 20);
for (let i = 0; i < 8; i++) s.copy(d, 0, a, 0, 64 << 20);
console.log('enqueued');`,
      backend,
    );
    expectExit(r, 'enqueued', false);
  });

  it.skipIf(skip)('the process exits even with a stream held forever (teardown abandons the wait)', () => {
    const r = runChild(
      `${OPEN}
holdStream(s);
const a = dev.allocPinned(4096), d = dev.allocDevice(4096);
s.copy(d, 0, a, 0, 4096);
console.log('held');`,
      backend,
    );
    expectExit(r, 'held', false);
  });

  it.skipIf(skip)('a device and its held stream collected by GC block neither the JS thread nor the exit', () => {
    // Everything goes out of scope with a copy queued behind a hold; the
    // finalizers run in whatever order GC picks and must not wait on the queue.
    const r = runChild(
      `(() => {
  const dev = openDevice({ backend });
  const s = dev.createStream();
  holdStream(s);
  const a = dev.allocPinned(4096), d = dev.allocDevice(4096);
  s.copy(d, 0, a, 0, 4096);
})();
for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
console.log('timer fired');`,
      backend,
      ['--expose-gc'],
    );
    expectExit(r, 'timer fired', true);
  });

  it.skipIf(skip)('recorded events are let go of in the addon once known to have succeeded or collected, and only then', () => {
    // The addon keeps a recorded event by id while JS may ask about it.
    const r = runChild(
      `${OPEN}
const native = dev.native;
const code = (id) => { try { native.eventStatus(id); return 'kept'; } catch (e) { return e.code; } };
const ids = [];
(() => { for (let i = 0; i < 2000; i++) ids.push(s.record().native.id); })();
const held = s.record(); // referenced, never awaited
await s.synchronize();
for (let i = 0; i < 5; i++) { globalThis.gc(); await new Promise((r) => setTimeout(r, 10)); }
const gone = ids.filter((id) => code(id) === 'ERR_INVALID_ARG').length;
console.log(gone === ids.length ? 'collected released' : 'collected released only ' + gone, code(held.native.id));
await held.done();
await new Promise((r) => setImmediate(r)); // the release runs at the loop's check phase
console.log('awaited', code(held.native.id), held.status());
const other = dev.createStream();
other.waitEvent(held); // nothing left to wait for: no call into the addon
await other.synchronize();
await dev.dispose();
console.log(held.status());`,
      backend,
      ['--expose-gc'],
    );
    expectExit(r, 'collected released kept\nawaited ERR_INVALID_ARG ok\nok', true);
  });

  it.skipIf(skip)('an awaited event keeps the process alive until it completes', () => {
    const r = runChild(
      `${OPEN}
const a = dev.allocPinned(256 << 20), d = dev.allocDevice(256 << 20);
a.array.fill(7);
s.copy(d, 0, a, 0, 256 << 20);
await s.record().done();
console.log('done');
await dev.dispose();`,
      backend,
    );
    expectExit(r, 'done', false);
  });

  it.skipIf(skip)('failures surface as handled rejections only: no unhandled rejection', () => {
    const r = runChild(
      `${OPEN}
const a = dev.allocPinned(64), d = dev.allocDevice(64);
injectFailure(s, 'ERR_IO', 'boom');
s.copy(d, 0, a, 0, 64);
const e = s.record();
try { await e.done(); } catch (err) { console.log('caught', err.code); }
s.copy(d, 0, a, 0, 64);
s.record(); // never awaited: completes silently
await dev.dispose();
await new Promise((r) => setTimeout(r, 50));`,
      backend,
    );
    expectExit(r, 'caught ERR_IO', false);
  });

  it.skipIf(skip)('worker threads can use a device and exit', () => {
    const r = runChild(
      `import { Worker } from 'node:worker_threads';
const src = \`
import { openDevice } from \${JSON.stringify(${JSON.stringify(entry)})};
import { parentPort } from 'node:worker_threads';
const dev = openDevice({ backend: \${JSON.stringify(backend)} });
const s = dev.createStream();
const a = dev.allocPinned(1 << 20), b = dev.allocPinned(1 << 20), d = dev.allocDevice(1 << 20);
a.array.fill(9);
s.copy(d, 0, a, 0, 1 << 20); s.copy(b, 0, d, 0, 1 << 20);
await s.synchronize();
parentPort.postMessage(b.array[12345]);
s.copy(d, 0, a, 0, 1 << 20); // left in flight at exit
\`;
const w = new Worker(new URL('data:text/javascript,' + encodeURIComponent(src)));
w.on('message', (m) => console.log('worker says', m));
w.on('exit', (code) => console.log('worker exit', code));`,
      backend,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['worker says 9', 'worker exit 0']);
    expect(r.status).toBe(0);
  });

  it.skipIf(skip || backend !== 'cuda')('a CUDA fault rejects the event with ERR_CUDA instead of hanging', () => {
    // In a child: a copy from device memory freed behind a wrap faults the
    // copy engine; the sticky error must surface as ERR_CUDA and the process must exit.
    const r = runChild(
      `${OPEN}
const bytes = 512 << 20;
const d = dev.allocDevice(bytes);
const w = dev.wrapUnsafe(d.address, bytes);
const p = dev.allocPinned(bytes);
await d.dispose();
// The runtime may refuse the copy at once or fault on the GPU later: both must be ERR_CUDA.
try { s.copy(p, 0, w, 0, bytes); await s.record().done(); console.log('no error'); } catch (e) { console.log(e.code); }`,
      backend,
    );
    expect(r.stdout.trim(), `stderr: ${r.stderr} status: ${r.status}`).toBe('ERR_CUDA');
    expect(r.status).toBe(0);
  });
});
