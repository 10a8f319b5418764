/** Whole-cache copies between host arrays and a KvCache, for tests that check bytes. */
import type { Device, KvCache, Stream } from '../../src/index.js';

/** Writes `data[i]` into cache buffer i. */
export async function fillCache(dev: Device, stream: Stream, cache: KvCache, data: Uint8Array[]): Promise<void> {
  for (let i = 0; i < cache.buffers.length; i++) {
    const b = cache.buffers[i]!;
    const host = dev.allocPinned(b.byteLength);
    host.array.set(data[i]!);
    stream.copy(b, 0, host, 0, b.byteLength);
    await stream.synchronize();
    await host.dispose();
  }
}

/** A host copy of every cache buffer. */
export async function readCache(dev: Device, stream: Stream, cache: KvCache): Promise<Uint8Array[]> {
  const out: Uint8Array[] = [];
  for (const b of cache.buffers) {
    const host = dev.allocPinned(b.byteLength);
    stream.copy(host, 0, b, 0, b.byteLength);
    await stream.synchronize();
    out.push(host.array.slice());
    await host.dispose();
  }
  return out;
}
