// One ownership chain: disposing a device disposes what was made on it, in
// order (adopted objects, caches and plans, files, streams, buffers), and
// the process exits.
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { describe, expect, it } from 'vitest';

import { KvLayout, openDevice, type Disposable } from '../../src/index.js';
import { codeOf } from '../helpers/backends.js';
import { scratchDirs } from '../helpers/io.js';

const tempDir = scratchDirs();

const layout = new KvLayout({ layers: 2, kvHeads: 2, headDim: 64, dtype: 'f16', blockTokens: 16, numBlocks: 8 });

/** Records when each object's dispose() is called. */
function spy(order: string[], name: string, object: Disposable): void {
  const dispose = object.dispose.bind(object);
  object.dispose = (options) => {
    order.push(name);
    return dispose(options);
  };
}

describe('device.dispose()', () => {
  it('disposes adopted objects, caches and plans, files, streams and buffers, in that order', async () => {
    const dev = openDevice({ backend: 'cpu' });
    const order: string[] = [];
    const cache = dev.allocKvCache(layout);
    const staging = dev.allocPinned(layout.stagingBytes(2 * layout.blockTokens));
    const plan = cache.prepare('gather', [{ blocks: [1, 2], staging }]);
    const file = await dev.openFile(path.join(tempDir(), 'f'), { create: true });
    const stream = dev.createStream();
    const host = dev.allocHost(4096);
    let storeClosed = false;
    dev.adopt({
      [Symbol.asyncDispose]: async () => {
        order.push('store');
        // An adopted store still uses the device's objects while it closes.
        expect(cache.disposed || file.disposed || stream.disposed || staging.disposed).toBe(false);
        storeClosed = true;
      },
    });
    spy(order, 'cache', cache);
    spy(order, 'plan', plan);
    spy(order, 'file', file);
    spy(order, 'stream', stream);
    spy(order, 'staging', staging);
    spy(order, 'host', host);
    plan.move(stream);
    await dev.dispose();
    expect(storeClosed).toBe(true);
    expect(order).toEqual(['store', 'cache', 'plan', 'file', 'stream', 'staging', 'host']);
    for (const o of [cache, plan, file, stream, staging, host, dev]) expect(o.disposed).toBe(true);
    expect(codeOf(() => dev.createStream())).toBe('ERR_DISPOSED');
    expect(codeOf(() => plan.move(stream))).toBe('ERR_DISPOSED');
    // Idempotent, and async-disposable.
    await dev.dispose();
    await dev[Symbol.asyncDispose]();
  });

  it('a child disposed on its own leaves its parent; an adopted object detaches itself', async () => {
    const dev = openDevice({ backend: 'cpu' });
    const stream = dev.createStream();
    await stream.dispose();
    let closes = 0;
    const detach = dev.adopt({ [Symbol.asyncDispose]: async () => void closes++ });
    detach();
    expect(codeOf(() => dev.adopt({} as never))).toBe('ERR_INVALID_ARG');
    await dev.dispose();
    expect(closes).toBe(0);
    expect(codeOf(() => dev.adopt({ [Symbol.asyncDispose]: async () => undefined }))).toBe('ERR_DISPOSED');
  });

  it('with wait: false rejects with ERR_BUSY and disposes nothing while a file opens', async () => {
    const dev = openDevice({ backend: 'cpu' });
    const opening = dev.openFile(path.join(tempDir(), 'g'), { create: true });
    await expect(dev.dispose({ wait: false })).rejects.toMatchObject({ code: 'ERR_BUSY' });
    const file = await opening;
    expect(file.disposed).toBe(false);
    await dev.dispose();
    expect(file.disposed).toBe(true);
  });

  it('the process exits after dispose() with caches, plans, files and streams open', () => {
    const root = path.resolve(import.meta.dirname, '..', '..');
    const entry = pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href;
    const dir = tempDir();
    const script = `import { openDevice, KvLayout } from ${JSON.stringify(entry)};
const dev = openDevice({ backend: 'cpu' });
const layout = new KvLayout({ layers: 2, kvHeads: 2, headDim: 64, dtype: 'f16', blockTokens: 16, numBlocks: 8 });
const cache = dev.allocKvCache(layout);
const staging = dev.allocPinned(layout.stagingBytes(32));
const plan = cache.prepare('gather', [{ blocks: [1, 2], staging }]);
const file = await dev.openFile(${JSON.stringify(path.join(dir, 'f'))}, { create: true });
const s = dev.createStream();
plan.move(s);
const big = dev.allocPinned(64 << 20);
s.writeFile(file, 0, big, 0, big.byteLength);
// Stream-ordered file IO in flight finishes: the engines close after the streams.
const written = s.record().done().then(() => 'ok', (e) => e.code);
const read = file.write(0, staging, 0, 4096).then(() => 'ok', (e) => e.code);
await dev.dispose();
console.log('disposed', [cache, plan, file, s, staging].every((o) => o.disposed), await written, await read);`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000 });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('disposed true ok ok');
    expect(r.status).toBe(0);
  });
});
