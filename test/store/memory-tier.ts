/**
 * A test-only tier: chunk records in JS memory. It plugs into a store
 * through store/testing.ts's openStoreWithTiers, with no change to the
 * store's load path, and proves the Tier interface is enough for a tier.
 */
import type { ReadBatch, ReadOutcome, Tier, TierRead, TierWrite, WriteResult } from '../../src/store/testing.js';

export class MemoryTier implements Tier<Uint8Array> {
  readonly name = 'memory';
  readonly records = new Map<string, Uint8Array>();
  /** Pins held per record (hits' leases). */
  readonly pins = new Map<Uint8Array, number>();
  /** Keys whose next read fails its check (its destination gets zeros). */
  readonly corrupt = new Set<string>();
  /** readLayer calls, and chunk extents they read. */
  readCalls = 0;
  extentsRead = 0;
  closed = false;
  readonly #extentBytes: number;
  readonly #layers: number;

  constructor(extentBytes: number, layers: number) {
    this.#extentBytes = extentBytes;
    this.#layers = layers;
  }

  contains(key: string): Uint8Array | undefined {
    return this.records.get(key);
  }

  pin(chunk: Uint8Array): void {
    this.pins.set(chunk, (this.pins.get(chunk) ?? 0) + 1);
  }

  unpin(chunk: Uint8Array): void {
    const n = (this.pins.get(chunk) ?? 0) - 1;
    if (n < 0) throw new Error('unpin without a pin');
    if (n === 0) this.pins.delete(chunk);
    else this.pins.set(chunk, n);
  }

  readLayer(reads: readonly TierRead<Uint8Array>[], li: number): ReadBatch[] {
    this.readCalls++;
    const e = this.#extentBytes;
    const outcome = reads.map((r): ReadOutcome => {
      this.extentsRead++;
      const dst = r.dst.buffer.array.subarray(r.dst.offset, r.dst.offset + e);
      if (this.corrupt.has(r.key)) {
        dst.fill(0);
        return 'checksum';
      }
      dst.set(r.chunk.subarray(li * e, (li + 1) * e));
      return 'ok';
    });
    return [{ event: undefined, reads: reads.map((_, i) => i), outcome: Promise.resolve(outcome) }];
  }

  touch(key: string): boolean {
    return this.records.has(key);
  }

  async write(chunks: readonly TierWrite[]): Promise<WriteResult> {
    const bytes = this.#extentBytes * this.#layers;
    for (const c of chunks) this.records.set(c.key, c.src.buffer.array.slice(c.src.offset, c.src.offset + bytes));
    return { failed: new Map(), written: chunks.length, evicted: [] };
  }

  async remove(key: string, chunk: Uint8Array): Promise<boolean> {
    if (this.records.get(key) !== chunk) return false;
    this.records.delete(key);
    return true;
  }

  stats(): Record<string, number> {
    return { chunks: this.records.size, pins: this.pins.size };
  }

  async flush(): Promise<void> {}

  async close(): Promise<void> {
    this.closed = true;
  }
}
