/**
 * The store's persistent index: which chunk lives in which NVMe slot, its
 * per-layer checksums and last use, free and reserved slots, counters. LMDB
 * (through the `lmdb` package): crash-safe, and safe for several processes
 * of one host sharing one store directory (one writer at a time, readers
 * never block). Only complete, durable chunks are ever entered.
 */
import { chmodSync, existsSync } from 'node:fs';
import path from 'node:path';

import { open, type Database, type RootDatabase } from 'lmdb';

import { KvflowError, describe, fail } from '../errors.js';
import { safeRank, lruRank, type EvictionRank } from './dram.js';
import { STORE_FORMAT_VERSION } from './keys.js';

/** The geometry a store directory is created with; fixed for its life. */
export interface StoreGeometry {
  version: number;
  /** Bytes per NVMe slot (one chunk record), a multiple of 4096. */
  slotBytes: number;
  /** Slots in the NVMe tier. */
  slotCount: number;
  /** Slots per slab file. */
  slotsPerFile: number;
  /** Layer extents per record the checksums cover. */
  layers: number;
  /** Bytes of one layer extent (4 KiB aligned). */
  extentBytes: number;
}

/** An NVMe-tier chunk as the index records it. */
export interface CatalogEntry {
  slot: number;
  /** Fingerprint the chunk was stored under. */
  fp: string;
  /** CRC32C per layer extent, seeded per chunk and layer. */
  crc: number[];
  /** Last use, ms since the epoch (updated in batches). */
  t: number;
  /** Loads served from NVMe. */
  hits: number;
  /** Entered, ms since the epoch. */
  at: number;
  /** Eviction rank (lowest first), the key of its by-use record. */
  r: number;
}

interface Reservation {
  pid: number;
  inst: string;
  at: number;
}

/** What `Catalog.inspect` reports. */
export interface StoreReport {
  dir: string;
  geometry: StoreGeometry;
  chunks: number;
  reserved: number;
  free: number;
  nextSlot: number;
  fingerprints: Record<string, number>;
  reservations: { slot: number; pid: number; alive: boolean; at: number }[];
  counters: CatalogCounters;
  /** Slot accounting problems (none: []). */
  problems: string[];
}

/** Counters shared by the processes of a store. */
export interface CatalogCounters {
  [name: string]: number;
}

/** Instances of stores open in this process (reservations of others in this process are stale). */
const liveInstances = new Set<string>();

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Maps an lmdb failure to a KvflowError (a full disk is ERR_NO_SPACE). */
export function catalogError(e: unknown, what: string): KvflowError {
  if (e instanceof KvflowError) return e;
  const message = e instanceof Error ? e.message : String(e);
  const full = /MDB_MAP_FULL|ENOSPC|No space left/i.test(message);
  const err = new KvflowError(`store index: ${what} failed: ${message}`, full ? 'ERR_NO_SPACE' : 'ERR_IO');
  return err;
}

export class Catalog {
  readonly root: RootDatabase;
  readonly #entries: Database<CatalogEntry, string>;
  readonly #byUse: Database<number, [number, string]>;
  readonly #free: Database<boolean, number>;
  readonly #reserved: Database<Reservation, number>;
  readonly #meta: Database<unknown, string>;
  readonly #counters: Database<number, string>;
  readonly geometry: StoreGeometry;
  readonly instance: string;
  /** Last-use updates not yet written: key -> time. */
  readonly #touched = new Map<string, number>();
  readonly #counterDelta = new Map<string, number>();
  readonly #rank: EvictionRank;
  #closed = false;

  private constructor(root: RootDatabase, geometry: StoreGeometry, instance: string, rank: EvictionRank = lruRank) {
    this.#rank = rank;
    this.root = root;
    this.#entries = root.openDB<CatalogEntry, string>({ name: 'entries' });
    this.#byUse = root.openDB<number, [number, string]>({ name: 'by-use' });
    this.#free = root.openDB<boolean, number>({ name: 'free' });
    this.#reserved = root.openDB<Reservation, number>({ name: 'reserved' });
    this.#meta = root.openDB<unknown, string>({ name: 'meta' });
    this.#counters = root.openDB<number, string>({ name: 'counters' });
    this.geometry = geometry;
    this.instance = instance;
  }

  /**
   * Opens (creating with `wanted` where new) the index in `dir`. An existing
   * store keeps its geometry; `wanted` must then agree on the record shape.
   */
  static open(dir: string, wanted: StoreGeometry, rank: EvictionRank = lruRank): Catalog {
    const file = path.join(dir, 'index.mdb');
    let root: RootDatabase;
    try {
      // overlappingSync off: a write transaction returns once it is on disk,
      // so a chunk reported durable survives a power loss too.
      root = open({ path: file, maxDbs: 12, noSubdir: true, overlappingSync: false });
    } catch (e) {
      throw catalogError(e, `opening ${file}`);
    }
    for (const f of [file, `${file}-lock`]) if (existsSync(f)) chmodSync(f, 0o600);
    const meta = root.openDB<unknown, string>({ name: 'meta' });
    let geometry: StoreGeometry;
    try {
      geometry = root.transactionSync(() => {
        const existing = meta.get('geometry') as StoreGeometry | undefined;
        if (existing) return existing;
        meta.putSync('geometry', wanted);
        return wanted;
      });
    } catch (e) {
      void root.close();
      throw catalogError(e, 'reading the store geometry');
    }
    if (geometry.version !== STORE_FORMAT_VERSION) {
      void root.close();
      fail('ERR_UNSUPPORTED', `store at ${dir} has format version ${geometry.version}; this kvflow reads version ${STORE_FORMAT_VERSION}`);
    }
    if (geometry.layers !== wanted.layers || geometry.extentBytes !== wanted.extentBytes || geometry.slotBytes < wanted.slotBytes) {
      void root.close();
      fail('ERR_INVALID_ARG', `expected records of ${wanted.layers} layer extents of ${wanted.extentBytes} bytes for the store at ${dir}, ` +
        `but it holds ${geometry.layers} extents of ${geometry.extentBytes} bytes (open it with the layout and chunkTokens it was created with)`);
    }
    const instance = `${process.pid}-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
    liveInstances.add(instance);
    const catalog = new Catalog(root, geometry, instance, rank);
    catalog.recover();
    return catalog;
  }

  /**
   * What a store directory holds, read without changing it (no recovery, no
   * geometry needed): for `kvflow inspect`.
   */
  static inspect(dir: string): StoreReport {
    const file = path.join(dir, 'index.mdb');
    if (!existsSync(file)) fail('ERR_INVALID_ARG', `expected a kvflow store directory, but ${dir} has no index.mdb`);
    let root: RootDatabase;
    try {
      root = open({ path: file, maxDbs: 12, noSubdir: true, readOnly: true });
    } catch (e) {
      throw catalogError(e, `opening ${file}`);
    }
    try {
      const geometry = root.openDB<unknown, string>({ name: 'meta' }).get('geometry') as StoreGeometry | undefined;
      if (!geometry) fail('ERR_INVALID_ARG', `the index at ${file} has no store geometry`);
      const c = new Catalog(root, geometry, 'inspect');
      const summary = c.summary();
      const reservations: { slot: number; pid: number; alive: boolean; at: number }[] = [];
      for (const { key, value } of c.#reserved.getRange()) reservations.push({ slot: key, pid: value.pid, alive: pidAlive(value.pid), at: value.at });
      const counters: CatalogCounters = {};
      for (const { key, value } of c.#counters.getRange()) counters[key] = value;
      return { dir, geometry, ...summary, reservations, counters, problems: c.check() };
    } finally {
      void root.close();
    }
  }

  /** Frees slots reserved by writers that died (or by stores of this process since closed). */
  recover(): number {
    let freed = 0;
    this.#write('recovering reserved slots', () => {
      for (const { key, value } of this.#reserved.getRange()) {
        const stale = value.pid === process.pid ? !liveInstances.has(value.inst) : !pidAlive(value.pid);
        if (stale) {
          this.#reserved.removeSync(key);
          this.#free.putSync(key, true);
          freed++;
        }
      }
    });
    return freed;
  }

  #write<T>(what: string, action: () => T): T {
    if (this.#closed) fail('ERR_DISPOSED', 'the store is closed');
    try {
      return this.root.transactionSync(action);
    } catch (e) {
      throw catalogError(e, what);
    }
  }

  get(key: string): CatalogEntry | undefined {
    if (this.#closed) fail('ERR_DISPOSED', 'the store is closed');
    return this.#entries.get(key);
  }

  has(key: string): boolean {
    return this.get(key) !== undefined;
  }

  /**
   * Reserves up to `count` slots for writing: free ones first, then the
   * never-used tail, then the least recently used entries (removed from the
   * index in the same transaction, so no entry points at a slot being
   * rewritten), skipping slots in `busy`. Fewer come back when the rest are
   * reserved by writers. Durable across crashes only as far as `recover` needs.
   */
  reserve(count: number, busy: ReadonlySet<number>): { slots: number[]; evicted: string[] } {
    this.flushTouches();
    return this.#write('reserving slots', () => {
      const slots: number[] = [];
      const evicted: string[] = [];
      const take = (slot: number): void => {
        this.#reserved.putSync(slot, { pid: process.pid, inst: this.instance, at: Date.now() });
        slots.push(slot);
      };
      for (const slot of this.#free.getKeys({ limit: count })) {
        this.#free.removeSync(slot);
        take(slot);
      }
      let next = (this.#meta.get('next-slot') as number | undefined) ?? 0;
      while (slots.length < count && next < this.geometry.slotCount) take(next++);
      this.#meta.putSync('next-slot', next);
      if (slots.length < count) {
        for (const { key, value: slot } of this.#byUse.getRange()) {
          if (slots.length >= count) break;
          if (busy.has(slot)) continue;
          const [, chunk] = key;
          this.#byUse.removeSync(key);
          this.#entries.removeSync(chunk);
          this.#touched.delete(chunk);
          evicted.push(chunk);
          take(slot);
        }
        if (evicted.length > 0) this.#bump('evictions', evicted.length);
      }
      this.#flushCountersLocked();
      return { slots, evicted };
    });
  }

  /**
   * Enters written chunks (their slots were reserved by this instance) and
   * releases `unused` reservations, in one durable transaction. A key another
   * writer entered meanwhile keeps its slot; ours goes back to the free list.
   * Returns the keys entered.
   */
  commit(written: { key: string; slot: number; fp: string; crc: number[]; index: number }[], unused: number[] = []): string[] {
    const now = Date.now();
    return this.#write('entering chunks', () => {
      const entered: string[] = [];
      for (const w of written) {
        if (!this.#owns(w.slot)) {
          // Our reservation was taken back (recovery by a process that
          // thought us dead): the slot is someone else's now.
          this.#bump('lostReservations', 1);
          continue;
        }
        this.#reserved.removeSync(w.slot);
        if (this.#entries.get(w.key) !== undefined) {
          this.#free.putSync(w.slot, true);
          entered.push(w.key); // present: written by another process meanwhile
          continue;
        }
        const t = now - w.index;
        const r = safeRank(this.#rank, { lastUse: t, hits: 0, created: now });
        this.#entries.putSync(w.key, { slot: w.slot, fp: w.fp, crc: w.crc, t, hits: 0, at: now, r });
        this.#byUse.putSync([r, w.key], w.slot);
        entered.push(w.key);
      }
      for (const slot of unused) {
        if (!this.#owns(slot)) continue;
        this.#reserved.removeSync(slot);
        this.#free.putSync(slot, true);
      }
      if (entered.length > 0) this.#bump('writes', entered.length);
      this.#flushCountersLocked();
      return entered;
    });
  }

  #owns(slot: number): boolean {
    const r = this.#reserved.get(slot);
    return r !== undefined && r.inst === this.instance;
  }

  /** Drops `key` if it still maps to `slot` (a checksum failure): its slot becomes free. */
  drop(key: string, slot: number): boolean {
    return this.#write('dropping a chunk', () => {
      const e = this.#entries.get(key);
      if (e === undefined || e.slot !== slot) return false;
      this.#entries.removeSync(key);
      this.#byUse.removeSync([e.r, key]);
      this.#free.putSync(slot, true);
      this.#touched.delete(key);
      return true;
    });
  }

  /**
   * Records a use of `key` (written with the next batch). Chunk `index` of a
   * prompt counts as used `index` ms earlier, so that among chunks used
   * together the tail of a prefix goes first and its head stays usable.
   */
  touch(key: string, hit: boolean, index = 0): void {
    this.#touched.set(key, Date.now() - index);
    if (hit) this.count('nvmeHits');
  }

  /** Adds to a shared counter (written with the next batch). */
  count(name: string, n = 1): void {
    this.#counterDelta.set(name, (this.#counterDelta.get(name) ?? 0) + n);
  }

  #bump(name: string, n: number): void {
    this.count(name, n);
  }

  #flushCountersLocked(): void {
    for (const [name, n] of this.#counterDelta) this.#counters.putSync(name, (this.#counters.get(name) ?? 0) + n);
    this.#counterDelta.clear();
  }

  /** Writes batched last-use updates and counters in one transaction. */
  flushTouches(): void {
    if (this.#closed || (this.#touched.size === 0 && this.#counterDelta.size === 0)) return;
    const touched = [...this.#touched];
    this.#touched.clear();
    this.#write('recording uses', () => {
      for (const [key, t] of touched) {
        const e = this.#entries.get(key);
        if (e === undefined || e.t >= t) continue;
        this.#byUse.removeSync([e.r, key]);
        const hits = e.hits + 1;
        const r = safeRank(this.#rank, { lastUse: t, hits, created: e.at });
        this.#entries.putSync(key, { ...e, t, hits, r });
        this.#byUse.putSync([r, key], e.slot);
      }
      this.#flushCountersLocked();
    });
  }

  counters(): CatalogCounters {
    const out: CatalogCounters = {};
    for (const { key, value } of this.#counters.getRange()) out[key] = value;
    for (const [k, n] of this.#counterDelta) out[k] = (out[k] ?? 0) + n;
    return out;
  }

  /** Chunks, used slots and fingerprints present (for inspect). */
  summary(): { chunks: number; reserved: number; free: number; nextSlot: number; fingerprints: Record<string, number> } {
    const fingerprints: Record<string, number> = {};
    let chunks = 0;
    for (const { value } of this.#entries.getRange()) {
      chunks++;
      fingerprints[value.fp] = (fingerprints[value.fp] ?? 0) + 1;
    }
    return {
      chunks,
      reserved: this.#reserved.getCount(),
      free: this.#free.getCount(),
      nextSlot: (this.#meta.get('next-slot') as number | undefined) ?? 0,
      fingerprints,
    };
  }

  /**
   * Slot accounting: every slot below the never-used tail is in exactly one
   * of entries, free and reserved. Returns the problems found (none: []).
   */
  check(): string[] {
    const problems: string[] = [];
    const owner = new Map<number, string>();
    const claim = (slot: number, by: string): void => {
      const prev = owner.get(slot);
      if (prev !== undefined) problems.push(`slot ${slot} is both ${prev} and ${by}`);
      else owner.set(slot, by);
    };
    for (const { key, value } of this.#entries.getRange()) claim(value.slot, `chunk ${key.slice(0, 12)}`);
    for (const slot of this.#free.getKeys()) claim(slot, 'free');
    for (const slot of this.#reserved.getKeys()) claim(slot, 'reserved');
    const next = (this.#meta.get('next-slot') as number | undefined) ?? 0;
    for (let slot = 0; slot < next; slot++) if (!owner.has(slot)) problems.push(`slot ${slot} is lost (in no table)`);
    for (const slot of owner.keys()) if (slot >= next) problems.push(`slot ${slot} is beyond the used range ${next}`);
    let uses = 0;
    for (const { key, value: slot } of this.#byUse.getRange()) {
      uses++;
      const e = this.#entries.get(key[1]);
      if (e === undefined || e.slot !== slot || e.r !== key[0]) problems.push(`by-use record of ${key[1].slice(0, 12)} is stale`);
    }
    const entries = this.#entries.getCount();
    if (uses !== entries) problems.push(`${entries} entries but ${uses} by-use records`);
    return problems;
  }

  /** Every entry (for checks and inspect). */
  *entries(): Generator<[string, CatalogEntry]> {
    for (const { key, value } of this.#entries.getRange()) yield [key, value];
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    try {
      this.flushTouches();
    } finally {
      this.#closed = true;
      liveInstances.delete(this.instance);
      await this.root.close();
    }
  }
}

/** Describes a geometry for messages. */
export function describeGeometry(g: StoreGeometry): string {
  return `${g.slotCount} slots of ${g.slotBytes} bytes (${g.layers} extents of ${g.extentBytes}), ${g.slotsPerFile} per slab file`;
}

export { describe };
