// Lifetimes of files and their IO: dispose waits for IO in flight, buffers
// stay alive under it, devices close their files, and a process exits once
// its IO is done, or at once on process.exit() (held engines ordered by
// latches, not clocks).
import { spawnSync } from 'node:child_process';
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { Device } from '../../src/index.js';
import { holdIo } from '../../src/io/testing.js';
import { open, poison, randomBytes, ticks } from '../helpers/backends.js';
import { engines, tempDir } from '../helpers/io.js';

const MiB = 1 << 20;
const root = path.resolve(import.meta.dirname, '..', '..');
const entry = pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href;
const testing = pathToFileURL(path.join(root, 'dist', 'src', 'io', 'testing.js')).href;

let dir: string;
beforeAll(() => {
  dir = tempDir();
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

describe.each(engines)('file lifetimes on the $engine engine', ({ engine, skip }) => {
  let dev: Device;
  beforeAll(() => {
    if (!skip) dev = open('cpu');
  });
  afterAll(async () => {
    await dev?.dispose();
  });

  it.skipIf(skip)('dispose() waits for IO in flight, which still completes correctly', async () => {
    const f = await dev.openFile(path.join(dir, `d-${engine}.bin`), { create: true, engine });
    const src = dev.allocPinned(8 * MiB);
    const dst = dev.allocHost(8 * MiB);
    const data = randomBytes(8 * MiB);
    src.array.set(data);
    await f.write(0, src, 0, 8 * MiB);
    poison(dst.array);
    const release = holdIo(f);
    const reading = f.read(dst, 0, 0, 8 * MiB);
    expect(f.inFlight()).toBe(true);
    await expect(f.dispose({ wait: false })).rejects.toMatchObject({ code: 'ERR_BUSY' });
    expect(f.disposed).toBe(false);
    let closed = false;
    const disposing = f.dispose().then(() => {
      closed = true;
    });
    expect(f.disposed).toBe(true);
    // The destination's memory stays alive while the held read still needs it.
    let dstFreed = false;
    const dstDisposed = dst.dispose().then(() => {
      dstFreed = true;
    });
    await ticks(20);
    expect(closed).toBe(false);
    expect(dstFreed).toBe(false);
    release();
    await reading;
    await disposing;
    await dstDisposed;
    expect(closed && dstFreed).toBe(true);
    await src.dispose();
  });

  it.skipIf(skip)('a read that no longer uses its buffer lets it go before it settles', async () => {
    const f = await dev.openFile(path.join(dir, `b-${engine}.bin`), { create: true, engine, size: MiB });
    const dst = dev.allocPinned(MiB);
    await f.read(dst, 0, 0, MiB);
    expect(dst.inFlight()).toBe(false);
    await f.dispose();
  });

  it.skipIf(skip)('disposing the device disposes its files after their IO', async () => {
    const other = open('cpu');
    const f = await other.openFile(path.join(dir, `c-${engine}.bin`), { create: true, engine });
    const src = other.allocPinned(4 * MiB);
    src.array.set(randomBytes(4 * MiB));
    const release = holdIo(f);
    const writing = f.write(0, src, 0, 4 * MiB);
    await expect(other.dispose({ wait: false })).rejects.toMatchObject({ code: 'ERR_BUSY' });
    const closing = other.dispose();
    await ticks(10);
    expect(f.inFlight()).toBe(true);
    release();
    await writing;
    await closing;
    expect(f.disposed && src.disposed).toBe(true);
    await expect(other.openFile(path.join(dir, 'x.bin'), { create: true })).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
  });

  it.skipIf(skip)('Symbol.asyncDispose disposes', async () => {
    const f = await dev.openFile(path.join(dir, `s-${engine}.bin`), { create: true, engine });
    await f[Symbol.asyncDispose]();
    expect(f.disposed).toBe(true);
  });
});

function runChild(code: string, engine: string): { status: number | null; stdout: string; stderr: string } {
  const script = `import { openDevice } from ${JSON.stringify(entry)};
import { holdIo } from ${JSON.stringify(testing)};
process.on('unhandledRejection', (e) => { console.log('UNHANDLED', e && e.code); process.exitCode = 3; });
const engine = ${JSON.stringify(engine)};
const file = ${JSON.stringify(path.join(dir, `child-${engine}.bin`))};
${code}`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe.each(engines)('process behaviour on the $engine engine', ({ engine, skip }) => {
  it.skipIf(skip)('an awaited read keeps the process alive until it completes', () => {
    const r = runChild(
      `const dev = openDevice({ backend: 'cpu' });
const f = await dev.openFile(file, { create: true, engine });
const b = dev.allocPinned(64 << 20);
b.array.fill(7);
await f.write(0, b, 0, 64 << 20);
b.array.fill(0);
await f.read(b, 0, 0, 64 << 20);
console.log('read', b.array[12345]);
await dev.dispose();`,
      engine,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('read 7');
    expect(r.status).toBe(0);
  });

  it.skipIf(skip)('IO started without an await still completes before the process exits, as fs.promises does', () => {
    const r = runChild(
      `const dev = openDevice({ backend: 'cpu' });
const f = await dev.openFile(file, { create: true, engine });
const b = dev.allocPinned(64 << 20);
for (let i = 0; i < 4; i++) f.write(i * (64 << 20), b, 0, 64 << 20);
console.log('enqueued');`,
      engine,
    );
    expect(r.stdout.trim()).toBe('enqueued');
    expect(r.status).toBe(0);
    expect(statSync(path.join(dir, `child-${engine}.bin`)).size).toBe(256 * MiB);
  });

  it.skipIf(skip)('process.exit() with the engine held forever exits: teardown abandons the queued IO', () => {
    const r = runChild(
      `const dev = openDevice({ backend: 'cpu' });
const f = await dev.openFile(file, { create: true, engine });
holdIo(f);
const b = dev.allocPinned(4096);
f.write(0, b, 0, 4096).catch(() => {});
console.log('held');
process.exit(0);`,
      engine,
    );
    expect(r.stdout.trim()).toBe('held');
    expect(r.status).toBe(0);
  });

  it.skipIf(skip)('worker threads can do file IO and exit', () => {
    const r = runChild(
      `import { Worker } from 'node:worker_threads';
const src = \`
import { openDevice } from \${JSON.stringify(${JSON.stringify(entry)})};
import { parentPort } from 'node:worker_threads';
const dev = openDevice({ backend: 'cpu' });
const f = await dev.openFile(\${JSON.stringify(file)}, { create: true, engine: \${JSON.stringify(engine)} });
const b = dev.allocPinned(1 << 20);
b.array.fill(9);
await f.write(0, b, 0, 1 << 20);
b.array.fill(0);
await f.read(b, 0, 0, 1 << 20);
parentPort.postMessage(b.array[4321]);
f.write(0, b, 0, 1 << 20); // left in flight at exit
\`;
const w = new Worker(new URL('data:text/javascript,' + encodeURIComponent(src)));
w.on('message', (m) => console.log('worker says', m));
w.on('exit', (code) => console.log('worker exit', code));`,
      engine,
    );
    expect(r.stderr).toBe('');
    expect(r.stdout.trim().split('\n')).toEqual(['worker says 9', 'worker exit 0']);
    expect(r.status).toBe(0);
  });
});
