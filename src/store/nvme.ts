/**
 * The NVMe tier: chunk records in fixed-size slots of preallocated slab
 * files, shared by the processes of a host and indexed in LMDB (catalog.ts).
 * Reads are checked on the IO thread (CRC32C per layer extent, seeded by key
 * and layer); writes enter a chunk in the index only once its slot is
 * written and fsynced.
 */
import path from 'node:path';

import type { Device } from '../device/device.js';
import type { PinnedBuffer } from '../device/buffer.js';
import { KvflowError } from '../errors.js';
import type { KvFile, OpenFileOptions } from '../io/file.js';
import { channels } from '../util/diagnostics.js';
import { throwIfAborted } from '../util/abort.js';
import { Catalog, type CatalogEntry, type StoreGeometry } from './catalog.js';
import { extentSeed } from './keys.js';
import { LeaseTable } from './leases.js';
import { RefCount } from './refcount.js';
import type { ReadBatch, ReadOutcome, Tier, TierRead, TierWrite, WriteResult } from './tier.js';

interface SlotPlace {
  file: KvFile;
  fileIndex: number;
  offset: number;
}

interface ReadGroup {
  file: KvFile;
  buffer: PinnedBuffer;
  pieces: { dstOffset: number; fileOffset: number; bytes: number; seed: number; crc: number }[];
  slots: number[];
  reads: number[];
}

export class NvmeTier implements Tier<CatalogEntry> {
  readonly name = 'nvme';
  readonly catalog: Catalog;
  readonly files: readonly KvFile[];
  readonly geometry: StoreGeometry;
  readonly #fingerprint: string;
  /** NVMe slots of unreleased hits, leased against eviction by every process of the directory (leases.ts). */
  readonly leases: LeaseTable;
  /** Slots being read by this process: never evicted by it either. */
  readonly #reading = new RefCount<number>();
  readonly #pending = new Set<Promise<unknown>>();
  readonly #timer: NodeJS.Timeout;

  private constructor(catalog: Catalog, files: KvFile[], fingerprint: string, leases: LeaseTable, touchFlushMs: number) {
    this.catalog = catalog;
    this.leases = leases;
    this.files = files;
    this.geometry = catalog.geometry;
    this.#fingerprint = fingerprint;
    this.#timer = setInterval(() => {
      // Uses are hints: a failed batch is not retried.
      this.#track(this.catalog.flushTouches());
    }, touchFlushMs);
    this.#timer.unref();
  }

  /** Opens (creating where new) the index and slab files of `dir`, whose geometry wins over `wanted`. */
  static async open(device: Device, dir: string, wanted: StoreGeometry, fingerprint: string,
    file: Pick<OpenFileOptions, 'engine' | 'direct'> | undefined, leaseMs: number, touchFlushMs = 1000, signal?: AbortSignal): Promise<NvmeTier> {
    const catalog = Catalog.open(dir, wanted);
    const g = catalog.geometry;
    const files: KvFile[] = [];
    let leases: LeaseTable | undefined;
    try {
      leases = LeaseTable.open(dir, catalog.instance, leaseMs);
      const count = Math.ceil(g.slotCount / g.slotsPerFile);
      for (let i = 0; i < count; i++) {
        throwIfAborted(signal, 'opening the store');
        const slots = Math.min(g.slotsPerFile, g.slotCount - i * g.slotsPerFile);
        files.push(await device.openFile(path.join(dir, `slab-${String(i).padStart(4, '0')}.kv`), {
          create: true, size: slots * g.slotBytes, ...file,
        }));
      }
    } catch (e) {
      leases?.close();
      await Promise.all(files.map((f) => f.dispose()));
      await catalog.close();
      throw e;
    }
    return new NvmeTier(catalog, files, fingerprint, leases, touchFlushMs);
  }

  #track(p: Promise<unknown>): void {
    const q = p.catch(() => undefined).finally(() => this.#pending.delete(q));
    this.#pending.add(q);
  }

  /** Where a slot lives: its slab file and offset. */
  place(slot: number): SlotPlace {
    const g = this.geometry;
    const fileIndex = Math.floor(slot / g.slotsPerFile);
    return { file: this.files[fileIndex]!, fileIndex, offset: (slot % g.slotsPerFile) * g.slotBytes };
  }

  /** The index entry of `key` as it is now, when it holds this store's bytes (another process may have rewritten or evicted it). */
  contains(key: string): CatalogEntry | undefined {
    const e = this.catalog.get(key);
    if (e === undefined || e.fp !== this.#fingerprint || e.crc.length !== this.geometry.layers) return undefined;
    return e;
  }

  /** True when the index maps `key` to a chunk of this store's fingerprint (puts skip it). */
  has(key: string): boolean {
    return this.catalog.get(key)?.fp === this.#fingerprint;
  }

  pin(chunk: CatalogEntry): void {
    this.leases.add(chunk.slot);
  }

  unpin(chunk: CatalogEntry): void {
    this.leases.release(chunk.slot);
  }

  /**
   * Leases a hit's chunks, in order, against eviction by any process (see
   * leases.ts for the ordering): returns how many leading ones are held;
   * the others are not (they left the index, or an eviction is under way).
   */
  lease(chunks: readonly { key: string; chunk: CatalogEntry }[]): number {
    for (const c of chunks) this.leases.add(c.chunk.slot);
    let held = chunks.length;
    if (this.leases.evicting()) held = 0;
    else {
      this.catalog.root.resetReadTxn(); // see other processes' evictions committed until now
      held = chunks.findIndex((c) => this.contains(c.key)?.slot !== c.chunk.slot);
      if (held < 0) held = chunks.length;
    }
    for (const c of chunks.slice(held)) this.leases.release(c.chunk.slot);
    return held;
  }

  readLayer(reads: readonly TierRead<CatalogEntry>[], li: number): ReadBatch[] {
    const extent = this.geometry.extentBytes;
    // One checked read per slab file and destination buffer (a DRAM segment or a temporary buffer).
    const groups = new Map<KvFile, Map<PinnedBuffer, ReadGroup>>();
    reads.forEach((r, i) => {
      const place = this.place(r.chunk.slot);
      let byBuffer = groups.get(place.file);
      if (!byBuffer) groups.set(place.file, (byBuffer = new Map()));
      let g = byBuffer.get(r.dst.buffer);
      if (!g) byBuffer.set(r.dst.buffer, (g = { file: place.file, buffer: r.dst.buffer, pieces: [], slots: [], reads: [] }));
      g.pieces.push({ dstOffset: r.dst.offset, fileOffset: place.offset + li * extent, bytes: extent, seed: extentSeed(r.key, li), crc: r.chunk.crc[li]! });
      g.slots.push(r.chunk.slot);
      g.reads.push(i);
    });
    const batches: ReadBatch[] = [];
    for (const byBuffer of groups.values()) {
      for (const g of byBuffer.values()) {
        const read = g.file.readChecked(g.buffer, g.pieces);
        for (const slot of g.slots) this.#reading.add(slot);
        const done = (): void => {
          for (const slot of g.slots) this.#reading.release(slot);
        };
        const outcome = read.verified.then(
          (failed) => {
            done();
            const bad = new Set(failed);
            return g.reads.map((_, i): ReadOutcome => (bad.has(i) ? 'checksum' : 'ok'));
          },
          () => {
            done();
            return g.reads.map((): ReadOutcome => 'error');
          },
        );
        batches.push({ event: read.event, reads: g.reads, outcome });
      }
    }
    return batches;
  }

  touch(key: string, index: number, served: boolean, at?: number): boolean {
    if (!served && !this.catalog.has(key)) return false;
    this.catalog.touch(key, served, index, at);
    return true;
  }

  remove(key: string, chunk: CatalogEntry): Promise<boolean> {
    return this.catalog.drop(key, chunk.slot);
  }

  /**
   * Reserves `count` slots: free and never-used ones without the eviction
   * lock (no chunk leaves the index, so no lease can be broken and lookups
   * meanwhile count what they find); only when those do not suffice, the
   * rest under the lock, evicting (never a slot this process reads, nor one
   * any process holds a live lease on).
   */
  async #reserve(count: number): Promise<{ slots: number[]; evicted: string[] }> {
    const slots: number[] = [];
    if (this.catalog.hasFreeSlots()) {
      const free = this.catalog.reserve(count, new Set(), false);
      this.reserving?.(false);
      slots.push(...(await free).slots);
      if (slots.length === count) return { slots, evicted: [] };
    }
    // Lookups meeting the eviction lock count no NVMe chunk, so the batched use records are written before taking it.
    await this.catalog.flushTouches();
    const more = await this.leases.exclusive(() => {
      const busy = new Set([...this.#reading.keys(), ...this.leases.busy()]);
      const r = this.catalog.reserve(count - slots.length, busy, true);
      this.reserving?.(true);
      return r;
    });
    return { slots: [...slots, ...more.slots], evicted: more.evicted };
  }

  /** Test hook (store/testing.ts): called while a reservation is in flight, with whether it may evict (the eviction lock is held then). */
  reserving: ((evicting: boolean) => void) | undefined;

  /**
   * Writes chunks to NVMe slots and enters them: reserve (never a slot this
   * process reads or a hit holds), write with checksums, fsync, commit.
   * Every write is settled before any slot is released or entered.
   */
  async write(chunks: readonly TierWrite[]): Promise<WriteResult> {
    const failed = new Map<number, unknown>();
    const todo = chunks.map((c, i) => ({ c, i })).filter(({ c }) => !this.has(c.key));
    if (todo.length === 0) return { failed, written: 0, evicted: [] };
    const { slots, evicted } = await this.#reserve(todo.length);
    if (evicted.length > 0 && channels.evict.hasSubscribers) channels.evict.publish({ tier: 'nvme', keys: [...evicted] });
    const placed = todo.slice(0, slots.length);
    if (slots.length < todo.length) {
      const short = new KvflowError(this.#shortOfSlots(todo.length, slots.length), 'ERR_NO_SPACE');
      for (const { i } of todo.slice(slots.length)) failed.set(i, short);
    }
    const extent = this.geometry.extentBytes;
    const results = await Promise.allSettled(placed.map(async ({ c }, n) => {
      const place = this.place(slots[n]!);
      const pieces = [];
      for (let li = 0; li < this.geometry.layers; li++) {
        pieces.push({ srcOffset: c.src.offset + li * extent, fileOffset: place.offset + li * extent, bytes: extent, seed: extentSeed(c.key, li) });
      }
      return { place, sums: await place.file.writeSummed(c.src.buffer, pieces) };
    }));
    const written: { key: string; slot: number; fp: string; crc: number[]; index: number }[] = [];
    const at: number[] = [];
    const unused: number[] = [];
    const files = new Set<KvFile>();
    results.forEach((r, n) => {
      const { c, i } = placed[n]!;
      if (r.status === 'fulfilled') {
        files.add(r.value.place.file);
        written.push({ key: c.key, slot: slots[n]!, fp: this.#fingerprint, crc: [...r.value.sums], index: c.index });
        at.push(i);
      } else {
        failed.set(i, r.reason);
        unused.push(slots[n]!);
      }
    });
    const synced = await Promise.allSettled([...files].map((f) => f.sync()));
    const syncError = synced.find((r) => r.status === 'rejected');
    if (syncError) {
      written.forEach((w, n) => {
        failed.set(at[n]!, (syncError as PromiseRejectedResult).reason);
        unused.push(w.slot);
      });
      written.length = 0;
    }
    const entered = new Set(await this.catalog.commit(written, unused));
    for (const { c, i } of placed) {
      if (!entered.has(c.key) && !failed.has(i)) failed.set(i, new KvflowError('the chunk\'s NVMe slot was taken back before it was entered', 'ERR_IO'));
    }
    const sums = new Map<number, number[]>();
    written.forEach((w, n) => sums.set(at[n]!, w.crc));
    return { failed, written: entered.size, evicted, sums };
  }

  /** Why a write of `wanted` chunk records got only `got` slots: the capacity (fixed when the directory was created) and the request, in bytes. */
  #shortOfSlots(wanted: number, got: number): string {
    const g = this.geometry;
    const capacity = `capacity fixed at creation: ${sizeText(g.slotCount * g.slotBytes)}, ${g.slotCount} slot(s) of ${sizeText(g.slotBytes)}`;
    const request = `${wanted} chunk record(s), ${sizeText(wanted * g.slotBytes)}`;
    if (wanted > g.slotCount) {
      return `the store's NVMe tier is too small for this write of ${request} (${capacity}; nvmeBytes applies only when a store directory is created)`;
    }
    return `no NVMe slot could be taken for ${wanted - got} of ${request}: every other slot is being read, written or leased (${capacity})`;
  }

  stats(): { capacityBytes: number; slotBytes: number; slots: number; chunks: number } {
    const g = this.geometry;
    return { capacityBytes: g.slotCount * g.slotBytes, slotBytes: g.slotBytes, slots: g.slotCount, chunks: this.catalog.summary().chunks };
  }

  async flush(): Promise<void> {
    await Promise.all([...this.#pending]);
    await this.catalog.flushTouches();
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
    await Promise.all([...this.#pending]);
    this.leases.close();
    try {
      await this.catalog.close();
    } finally {
      await Promise.all(this.files.map((f) => f.dispose()));
    }
  }
}

/** Bytes as a short figure: "224 MiB", "1.5 GiB", "12 KiB", "100 bytes". */
export function sizeText(bytes: number): string {
  const units = ['bytes', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : Number(v.toFixed(v < 10 ? 2 : 1))} ${units[u]}`;
}
