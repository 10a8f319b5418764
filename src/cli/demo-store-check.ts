/**
 * `kvflow demo --store-check`: the store's job end to end on this host. A
 * prompt's KV (a Llama-3-8B-shaped cache: 32 layers x 8 KV heads x 128 x
 * bf16) is stored, the store is reopened as after a restart, and a longer prompt sharing the
 * prefix is looked up and loaded layer by layer from NVMe, then from DRAM;
 * every byte is checked. A temporary store and the CPU backend when there is
 * no GPU, unless told otherwise.
 */
import { randomFillSync } from 'node:crypto';

import { KvflowError } from '../errors.js';
import { openDevice } from '../index.js';
import type { Device } from '../device/device.js';
import type { Stream } from '../device/stream.js';
import type { KvCache } from '../layout/kvcache.js';
import { KvLayout } from '../layout/layout.js';
import { KvStore, type StoreHit } from '../store/store.js';
import { formatReport } from './inspect.js';
import { Catalog } from '../store/catalog.js';

/** What the store check takes (see `kvflow demo --help`). */
export interface StoreCheckOptions {
  tokens: number;
  /** The store directory (the caller creates and removes a temporary one). */
  dir: string;
  backend: 'auto' | 'cuda' | 'cpu' | undefined;
  /** Stops the check between its steps (it then rejects with ERR_ABORTED). */
  signal?: AbortSignal;
}

/** KV bytes per token of the Llama-3-8B shape the check stores: 32 layers x K and V x 8 heads x 128 x bf16. */
export const STORE_CHECK_BYTES_PER_TOKEN = 32 * 2 * 8 * 128 * 2;

const say = (line: string): void => {
  process.stdout.write(`${line}\n`);
};

async function copyAll(dev: Device, stream: Stream, cache: KvCache, host: Uint8Array[] | undefined): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (let i = 0; i < cache.buffers.length; i++) {
    const b = cache.buffers[i]!;
    const p = dev.allocPinned(b.byteLength);
    if (host) {
      p.array.set(host[i]!);
      stream.copy(b, 0, p, 0, b.byteLength);
    } else {
      stream.copy(p, 0, b, 0, b.byteLength);
    }
    await stream.synchronize();
    out.push(host ? host[i]! : p.array.slice());
    await p.dispose();
  }
  return out;
}

async function loadAll(store: KvStore, hit: StoreHit, cache: KvCache, blocks: number[], stream: Stream, compute: Stream): Promise<number> {
  const t0 = performance.now();
  for (let layer = 0; layer < cache.layout.layers; layer++) {
    compute.waitEvent(store.loadLayer(hit.chunks, layer, cache, blocks, stream));
  }
  await compute.record().done();
  return performance.now() - t0;
}

export async function runStoreCheck(o: StoreCheckOptions): Promise<number> {
  const dev = openDevice(o.backend ? { backend: o.backend } : {});
  const dir = o.dir;
  const step = (): void => {
    if (o.signal?.aborted) throw new KvflowError('the store check was stopped', 'ERR_ABORTED');
  };
  try {
    say(`device       ${dev.backend}: ${dev.selection.reason}`);
    const layout = new KvLayout({ layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens: 16, numBlocks: 2 * Math.ceil(o.tokens / 16) + 64 });
    const chunkTokens = 256;
    const chunks = Math.floor(o.tokens / chunkTokens);
    const bpc = chunkTokens / layout.blockTokens;
    const cache = dev.allocKvCache(layout);
    const stream = dev.createStream();
    const compute = dev.createStream({ priority: 'high' });
    const tokens = Array.from({ length: o.tokens }, () => Math.floor(Math.random() * 128000));
    const perm = Array.from({ length: layout.numBlocks }, (_, i) => i).sort(() => Math.random() - 0.5);
    const first = perm.slice(0, chunks * bpc);
    const second = perm.slice(chunks * bpc, 2 * chunks * bpc);
    say(`prompt       ${o.tokens} tokens: ${chunks} chunks of ${chunkTokens}, ${(layout.bytesPerToken / 1024).toFixed(0)} KiB of KV per token`);

    const data = cache.buffers.map((b) => {
      const a = new Uint8Array(b.byteLength);
      for (let off = 0; off < a.byteLength; off += 65536) randomFillSync(a, off, Math.min(65536, a.byteLength - off));
      return a;
    });
    await copyAll(dev, stream, cache, data);
    step();

    const record = layout.stagingBytes(chunkTokens);
    const options = {
      device: dev, layout, fingerprint: { model: 'kvflow/demo-llama-3-8b-shape' }, dir, chunkTokens,
      nvmeBytes: (chunks + 4) * record, dramBytes: (chunks + 2) * record,
    };
    let store = await KvStore.open(options);
    let t0 = performance.now();
    await store.put(tokens, cache, first, stream, { durable: true });
    const putMs = performance.now() - t0;
    const bytes = chunks * store.recordBytes;
    say(`stored       ${chunks} chunks (${(bytes / 2 ** 20).toFixed(0)} MiB) to DRAM and NVMe in ${putMs.toFixed(0)} ms (${(bytes / putMs / 1e6).toFixed(2)} GB/s, fsync included)`);
    await store.close();
    step();

    store = await KvStore.open(options); // as after a restart: the DRAM tier is empty
    const next = [...tokens, ...Array.from({ length: 300 }, () => Math.floor(Math.random() * 128000))];
    let hit = store.lookup(next);
    say(`next turn    ${next.length} tokens: ${hit.tokens} cached (${hit.nvme} chunks on NVMe, ${hit.dram} in DRAM), ${next.length - hit.tokens} to compute`);
    const coldMs = await loadAll(store, hit, cache, second, stream, compute);
    hit.release();
    say(`load NVMe    ${hit.chunks.length} chunks x 32 layers in ${coldMs.toFixed(0)} ms (${(bytes / coldMs / 1e6).toFixed(2)} GB/s; the page cache may serve part of it)`);
    const differing = async (): Promise<number> => {
      const after = await copyAll(dev, stream, cache, undefined);
      let wrong = 0;
      for (let layer = 0; layer < layout.layers; layer++) {
        for (let i = 0; i < second.length; i++) {
          for (const kv of [0, 1] as const) {
            const a = layout.piece(layer, kv, first[i]!);
            const b = layout.piece(layer, kv, second[i]!);
            const want = data[a.buffer]!.subarray(a.offset, a.offset + layout.pieceBytes);
            const have = after[b.buffer]!.subarray(b.offset, b.offset + layout.pieceBytes);
            if (Buffer.compare(want, have) !== 0) wrong++;
          }
        }
      }
      return wrong;
    };
    const scrub = async (): Promise<void> => {
      // Overwrite the target blocks, so the next load must bring every byte again.
      await copyAll(dev, stream, cache, cache.buffers.map((_, i) => {
        const a = data[i]!.slice();
        for (let layer = 0; layer < layout.layers; layer++) {
          for (const blk of second) {
            for (const kv of [0, 1] as const) {
              const at = layout.piece(layer, kv, blk);
              if (at.buffer === i) a.fill(0x5a, at.offset, at.offset + layout.pieceBytes);
            }
          }
        }
        return a;
      }));
    };
    step();
    let wrong = await differing();
    step();
    await scrub();
    hit = store.lookup(next);
    const warmMs = await loadAll(store, hit, cache, second, stream, compute);
    say(`load DRAM    ${hit.dram} chunks x 32 layers in ${warmMs.toFixed(0)} ms (${(bytes / warmMs / 1e6).toFixed(2)} GB/s)`);
    hit.release();
    wrong += await differing();
    say(`verified     ${wrong === 0 ? 'every byte of both loads equals the byte stored' : `${wrong} pieces differ`}`);
    await store.flush();
    await store.close();
    say(formatReport(Catalog.inspect(dir)).trimEnd().replace(/^/gm, '  '));
    return wrong === 0 ? 0 : 1;
  } finally {
    await dev.dispose();
  }
}
