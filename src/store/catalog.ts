/**
 * The store's persistent index: which chunk lives in which NVMe slot, its
 * per-layer checksums and last use, free and reserved slots, counters. LMDB
 * (through the `lmdb` package): crash-safe, and safe for several processes
 * of one host sharing one store directory (one writer at a time, readers
 * never block). Only complete, durable chunks are ever entered.
 *
 * Reads run on the JS thread (memory-mapped, no system call); writes run on
 * the store's index thread (index-worker.ts), since each is flushed to disk
 * before it returns and may wait for another process's write lock.
 */
import { chmodSync, existsSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';

import type { RootDatabase } from 'lmdb';

import { loadBinding } from '../binding/load.js';
import { KvflowError, fail } from '../errors.js';
import { lruRank, safeRank, type EvictionRank } from './eviction.js';
import { inspectIndex, openIndex, removeCreated, resetIndex, withFile, type StoreReport } from './index-dir.js';
import { IndexThread } from './index-thread.js';
import { STORE_FORMAT_VERSION } from './keys.js';
import {
  IndexTables,
  catalogError,
  type CatalogEntry,
  type CounterDeltas,
  type Entering,
  type Reservation,
  type StoreGeometry,
  type TouchUpdate,
} from './tables.js';
import { lockPath, makeWritersDir, sweepLocks, writerAlive } from './writers.js';

export type { CatalogEntry, StoreGeometry } from './tables.js';
export type { StoreReport } from './index-dir.js';

export class Catalog {
  readonly root: RootDatabase;
  readonly tables: IndexTables;
  readonly geometry: StoreGeometry;
  readonly instance: string;
  readonly #thread: IndexThread;
  readonly #rank: EvictionRank;
  readonly #dir: string;
  readonly #lockFd: number;
  /** Uses not yet written: key -> time. */
  readonly #touched = new Map<string, number>();
  #deltas: CounterDeltas = {};
  #closed = false;

  private constructor(root: RootDatabase, tables: IndexTables, geometry: StoreGeometry, dir: string, instance: string, lockFd: number, rank: EvictionRank) {
    this.root = root;
    this.tables = tables;
    this.geometry = geometry;
    this.#rank = rank;
    this.#dir = dir;
    this.instance = instance;
    this.#lockFd = lockFd;
    this.#thread = new IndexThread(path.join(dir, 'index.mdb'));
  }

  /**
   * Opens (creating with `wanted` where new) the index in `dir`. An existing
   * store keeps its geometry; `wanted` must then agree on the record shape.
   * Slots held by writers that died are freed.
   */
  static open(dir: string, wanted: StoreGeometry, rank: EvictionRank = lruRank): Catalog {
    const file = path.join(dir, 'index.mdb');
    makeWritersDir(dir);
    const root = openIndex(file, false);
    let tables: IndexTables | undefined;
    try {
      for (const f of [file, `${file}-lock`]) if (existsSync(f)) chmodSync(f, 0o600);
      tables = new IndexTables(root, file);
      const geometry = tables.geometry(wanted)!;
      if (geometry.version !== STORE_FORMAT_VERSION) {
        fail('ERR_UNSUPPORTED', `store at ${dir} has format version ${geometry.version}; this kvflow reads version ${STORE_FORMAT_VERSION}`);
      }
      if (geometry.layers !== wanted.layers || geometry.extentBytes !== wanted.extentBytes || geometry.slotBytes < wanted.slotBytes) {
        fail('ERR_INVALID_ARG', `expected records of ${wanted.layers} layer extents of ${wanted.extentBytes} bytes for the store at ${dir}, ` +
          `but it holds ${geometry.layers} extents of ${geometry.extentBytes} bytes (open it with the layout and chunkTokens it was created with)`);
      }
      const instance = `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
      const lockFd = loadBinding().binding.holdLock(lockPath(dir, instance));
      try {
        tables.recover((r: Reservation) => !writerAlive(dir, r.inst));
        sweepLocks(dir);
        return new Catalog(root, tables, geometry, dir, instance, lockFd, rank);
      } catch (e) {
        loadBinding().binding.releaseLock(lockFd);
        throw e;
      }
    } catch (e) {
      try {
        tables?.releaseCursors();
      } finally {
        void root.close();
      }
      throw withFile(e, file);
    }
  }

  /** Whether `dir` has no index yet (opening it creates one). */
  static isNew(dir: string): boolean {
    try {
      return statSync(path.join(dir, 'index.mdb')).size === 0;
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ENOENT';
    }
  }

  /**
   * Sets a damaged index of `dir` aside and removes the slab files it
   * described (see index-dir.ts); returns what was lost.
   */
  static reset(dir: string, why: string): string {
    return resetIndex(dir, why);
  }

  /** Removes what a failed first open of `dir` made (see index-dir.ts). */
  static removeCreated(dir: string, removeDir: boolean): void {
    removeCreated(dir, removeDir);
  }

  /** What a store directory holds, read without changing it (see index-dir.ts). */
  static inspect(dir: string): StoreReport {
    return inspectIndex(dir);
  }

  #live(): void {
    if (this.#closed) fail('ERR_DISPOSED', 'the store is closed');
  }

  /** A read of the index on this thread, its failures typed (a page damaged while mapped reads as ERR_IO). */
  #read<T>(what: string, read: () => T): T {
    try {
      return read();
    } catch (e) {
      throw withFile(catalogError(e, what, path.join(this.#dir, 'index.mdb')), path.join(this.#dir, 'index.mdb'));
    }
  }

  get(key: string): CatalogEntry | undefined {
    this.#live();
    return this.#read('reading an entry', () => this.tables.entries.get(key));
  }

  /** Up to `limit` entries in key order, from the first key after `after` (from the start when undefined). */
  entriesAfter(after: string | undefined, limit: number): { key: string; entry: CatalogEntry }[] {
    this.#live();
    return this.#read('reading the index', () => {
      const out: { key: string; entry: CatalogEntry }[] = [];
      for (const { key, value } of this.tables.entries.getRange(after === undefined ? { limit } : { start: after, limit: limit + 1 })) {
        if (key === after) continue;
        if (out.length === limit) break;
        out.push({ key, entry: value });
      }
      return out;
    });
  }

  /** Whether `key` is in the index, without decoding its entry. */
  has(key: string): boolean {
    this.#live();
    return this.#read('reading an entry', () => this.tables.entries.doesExist(key));
  }

  /** Writes on the index thread; reads here then see them at once (not only from the next event turn). */
  #write<T>(op: string, args: unknown[]): Promise<T> {
    return this.#thread.call<T>(op, args, () => {
      if (!this.#closed) this.root.resetReadTxn();
    });
  }

  #takeDeltas(): CounterDeltas {
    const d = this.#deltas;
    this.#deltas = {};
    return d;
  }

  /**
   * Reserves up to `count` slots for this instance (see IndexTables.reserve),
   * skipping `busy` ones; with `evict` false, free and never-used slots only
   * (no entry leaves the index). Fewer come back when the rest are reserved
   * or busy.
   */
  async reserve(count: number, busy: ReadonlySet<number>, evict = true): Promise<{ slots: number[]; evicted: string[] }> {
    this.#live();
    await this.flushTouches();
    const owner: Reservation = { pid: process.pid, inst: this.instance, at: Date.now() };
    const r = await this.#write<{ slots: number[]; evicted: string[] }>('reserve', [count, [...busy], owner, this.geometry.slotCount, this.#takeDeltas(), evict]);
    for (const key of r.evicted) this.#touched.delete(key);
    return r;
  }

  /** Whether a slot is free or never used, as this thread's snapshot of the index shows it (another writer may take it first). */
  hasFreeSlots(): boolean {
    this.#live();
    return this.#read('reading the index', () => {
      const next = (this.tables.meta.get('next-slot') as number | undefined) ?? 0;
      if (next < this.geometry.slotCount) return true;
      for (const _ of this.tables.free.getKeys({ limit: 1 })) return true;
      return false;
    });
  }

  /**
   * Enters written chunks (chunk `index` of its prompt ranks as used `index`
   * ms earlier: a prefix's tail goes first) and releases `unused`
   * reservations, in one durable transaction. Returns the keys present.
   */
  async commit(written: readonly { key: string; slot: number; fp: string; crc: number[]; index: number }[], unused: readonly number[] = []): Promise<string[]> {
    this.#live();
    const now = Date.now();
    const entering: Entering[] = written.map((w) => {
      const t = now - w.index;
      return { key: w.key, slot: w.slot, fp: w.fp, crc: w.crc, t, at: now, r: safeRank(this.#rank, { lastUse: t, hits: 0, created: now }) };
    });
    return this.#write<string[]>('commit', [entering, unused, this.instance, this.#takeDeltas()]);
  }

  /** Drops `key` if it still maps to `slot` (a checksum failure): its slot becomes free. */
  async drop(key: string, slot: number): Promise<boolean> {
    this.#live();
    this.#touched.delete(key);
    return this.#write<boolean>('drop', [key, slot, this.#takeDeltas()]);
  }

  /**
   * Records a use of `key` (written with the next batch). Chunk `index` of a
   * prompt counts as used `index` ms before `at` (the hit's lookup), so that
   * among chunks used together the tail of a prefix goes first and its head
   * stays usable.
   */
  touch(key: string, hit: boolean, index = 0, at = Date.now()): void {
    this.#touched.set(key, at - index);
    if (hit) this.count('nvmeHits');
  }

  /** Adds to a shared counter (written with the next batch). */
  count(name: string, n = 1): void {
    this.#deltas[name] = (this.#deltas[name] ?? 0) + n;
  }

  /** Writes batched uses and counters in one transaction. */
  async flushTouches(): Promise<void> {
    if (this.#closed || (this.#touched.size === 0 && Object.keys(this.#deltas).length === 0)) return;
    const updates: TouchUpdate[] = [];
    for (const [key, t] of this.#touched) {
      const e = this.#read('reading an entry', () => this.tables.entries.get(key));
      if (e === undefined || e.t >= t) continue;
      updates.push({ key, t, r: safeRank(this.#rank, { lastUse: t, hits: e.hits + 1, created: e.at }) });
    }
    this.#touched.clear();
    await this.#write('record', [updates, this.#takeDeltas()]);
  }

  /** Shared counters, with this instance's not yet written. */
  counters(): CounterDeltas {
    const out = this.#read('reading the counters', () => this.tables.counters());
    for (const [k, n] of Object.entries(this.#deltas)) out[k] = (out[k] ?? 0) + n;
    return out;
  }

  summary(): ReturnType<IndexTables['summary']> {
    return this.#read('reading the index', () => this.tables.summary());
  }

  check(): string[] {
    return this.#read('checking the index', () => this.tables.check());
  }

  /**
   * Writes what is batched, then closes the index and releases the writer
   * lock. Uses and counters are hints: when their last batch cannot be
   * written (a full disk), the close still succeeds and says what was lost
   * with a process warning (code KVFLOW_USE_RECORDS_LOST); only a failure to
   * close the index itself rejects.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    const uses = this.#touched.size;
    const counters = Object.keys(this.#deltas).length;
    try {
      await this.flushTouches();
    } catch (e) {
      const why = e instanceof Error ? e.message : String(e);
      process.emitWarning(`kvflow: closing the store at ${this.#dir} lost ${uses} batched chunk use(s) and ${counters} counter update(s): ${why}`,
        { type: 'KvflowWarning', code: 'KVFLOW_USE_RECORDS_LOST' });
    } finally {
      this.#closed = true;
      await this.#thread.close().catch(() => undefined);
      let failed: KvflowError | undefined;
      this.tables.releaseCursors();
      await this.root.close().catch((e: unknown) => {
        failed = catalogError(e, 'closing the index');
      });
      // Reservations still held (writes abandoned by close) become stale with the lock.
      loadBinding().binding.releaseLock(this.#lockFd);
      try {
        unlinkSync(lockPath(this.#dir, this.instance));
      } catch {
        // Swept already.
      }
      if (failed) throw failed;
    }
  }
}
