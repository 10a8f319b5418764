import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { KvConnector, KvLayout, KvStore, LayerPipeline, openDevice } from '../../src/index.js';
import { FP } from '../helpers/store.js';

const SPEC = { layers: 2, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 64 };
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('device.dispose() with a store, a pipeline and a connector open', () => {
  it('closes them before the device, and a prefill after it fails with ERR_DISPOSED', async () => {
    const dev = openDevice({ backend: 'cpu' });
    const layout = new KvLayout(SPEC);
    const cache = dev.allocKvCache(layout);
    const store = await KvStore.open({ device: dev, layout, fingerprint: FP, chunkTokens: 8, nvmeBytes: 8 * 8192, dramBytes: 8 * 8192 });
    const dir = store.dir;
    const pipe = new LayerPipeline({ store, cache });
    const conn = new KvConnector({ store, cache });
    const req = conn.lookup([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    await pipe.prefill({ tokens: Array.from({ length: 17 }, (_, i) => i), blocks: [0, 1, 2, 3, 4], compute: () => undefined });
    await dev.dispose();
    expect(store.closed).toBe(true);
    expect(req.finished).toBe(true);
    expect(() => store.lookup([1])).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    expect(() => pipe.prefill({ tokens: [1], blocks: [0], compute: () => undefined })).toThrow(expect.objectContaining({ code: 'ERR_DISPOSED' }));
    const { existsSync } = await import('node:fs');
    expect(existsSync(dir)).toBe(false); // the temporary store directory went with it
  });

  it('the process exits by itself once the device is disposed', () => {
    const script = `
      const k = await import(${JSON.stringify(path.join(root, 'dist/src/index.js'))});
      const dev = k.openDevice({ backend: 'cpu' });
      const layout = new k.KvLayout(${JSON.stringify(SPEC)});
      const cache = dev.allocKvCache(layout);
      const store = await k.KvStore.open({ device: dev, layout, fingerprint: { model: 'm' }, chunkTokens: 8, nvmeBytes: 8 * 8192, dramBytes: 8 * 8192 });
      const pipe = new k.LayerPipeline({ store, cache });
      await pipe.prefill({ tokens: Array.from({ length: 17 }, (_, i) => i), blocks: [0, 1, 2, 3, 4], compute: () => undefined });
      await dev.dispose();
      console.log('disposed');
    `;
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-exit-'));
    const file = path.join(dir, 'child.mjs');
    writeFileSync(file, script);
    const r = spawnSync(process.execPath, [file], { encoding: 'utf8', timeout: 60_000 });
    rmSync(dir, { recursive: true, force: true });
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe('disposed');
    expect(r.signal).toBeNull();
    expect(r.status).toBe(0);
  });
});
