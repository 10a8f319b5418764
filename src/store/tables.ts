/**
 * The index's tables and every transaction on them, synchronous, on one
 * LMDB environment. The JS thread uses it for reads (and the recovery at
 * open); the store's index thread (index-worker.ts) for every write, so that
 * write transactions, flushed to disk before they return, never block the
 * event loop.
 *
 * Tables: entries (key -> slot, fingerprint, CRC32C per layer extent, last
 * use, hits, rank), by-use ([rank, key] -> slot: the eviction order), free
 * (slot), reserved (slot -> the writer holding it), meta (geometry, the
 * never-used tail), counters (shared by the processes of the directory).
 */
import { statfsSync } from 'node:fs';
import path from 'node:path';

import type { Database, RootDatabase } from 'lmdb';

import { KvflowError } from '../errors.js';
import type { StoreGeometry } from './geometry.js';
import { markDamage } from './index-check.js';

export type { StoreGeometry } from './geometry.js';

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

/** Who holds a reserved slot. */
export interface Reservation {
  pid: number;
  inst: string;
  at: number;
}

/** A chunk to enter, with its rank computed by the caller. */
export interface Entering {
  key: string;
  slot: number;
  fp: string;
  crc: number[];
  t: number;
  at: number;
  r: number;
}

/** A use to record: applied where the entry's last use is older than `t`. */
export interface TouchUpdate {
  key: string;
  t: number;
  /** Rank after the use (hits + 1). */
  r: number;
}

export type CounterDeltas = Record<string, number>;

const ENOSPC = 28;
const EDQUOT = 122;
const EIO = 5;
const MDB_MAP_FULL = -30792;
/** LMDB's codes for a file that is not a sound index: corrupted, page not found, invalid, version mismatch. */
const MDB_DAMAGE = new Set([-30796, -30797, -30793, -30794]);
/** Below this much free space, an EIO from a write transaction is taken for a full disk (see catalogError). */
const NEARLY_FULL = 1 << 20;

/** The numeric cause of an lmdb or Node failure: an errno (> 0) or an LMDB code (< 0). */
function causeOf(e: unknown): number | undefined {
  if (typeof e !== 'object' || e === null) return undefined;
  const { code, errno } = e as { code?: unknown; errno?: unknown };
  if (typeof code === 'number') return code;
  if (typeof errno === 'number') return Math.abs(errno);
  return undefined;
}

/**
 * Maps an lmdb failure to a KvflowError from its cause (the errno or LMDB
 * code lmdb sets as `code`), never from its text: a full disk or map is
 * ERR_NO_SPACE, a damaged file ERR_IO marked as damage (index-check.ts),
 * anything else ERR_IO; `errno` is kept. LMDB turns a short page write (the
 * disk filled during it) into EIO, so for `file` an EIO with less than 1 MiB
 * free on its filesystem counts as a full disk.
 */
export function catalogError(e: unknown, what: string, file?: string): KvflowError {
  if (e instanceof KvflowError) return e;
  const message = e instanceof Error ? e.message : String(e);
  const cause = causeOf(e);
  let code: KvflowError['code'] = 'ERR_IO';
  let errno = cause !== undefined && cause > 0 ? cause : undefined;
  if (cause === ENOSPC || cause === EDQUOT || cause === MDB_MAP_FULL) code = 'ERR_NO_SPACE';
  else if (cause === EIO && file !== undefined && freeBytes(file) < NEARLY_FULL) {
    code = 'ERR_NO_SPACE';
    errno = ENOSPC;
  }
  const k = new KvflowError(`store index: ${what} failed: ${message}${code === 'ERR_NO_SPACE' && cause === EIO ? ' (the disk is full)' : ''}`, code);
  if (errno !== undefined) k.errno = errno;
  if (cause !== undefined && MDB_DAMAGE.has(cause)) markDamage(k);
  return k;
}

function freeBytes(file: string): number {
  try {
    const s = statfsSync(path.dirname(file));
    return s.bavail * s.bsize;
  } catch {
    return Infinity;
  }
}

/** Free bytes below which no index write transaction starts, whatever its size. */
export const MIN_INDEX_FREE = 64 * 1024;
/** Pages one changed key may dirty: its leaf, the branch pages above it, a page of the free list. */
const PAGES_PER_KEY = 4;
const INDEX_PAGE = 4096;

/**
 * Free bytes an index write transaction (`op` with `args`, as the index
 * thread receives them) may need on an index of `indexBytes`: LMDB writes
 * every page it changes to a new place, so each key changed costs its leaf
 * and the branches above it, never more than the whole index again, plus
 * room for what it adds and MIN_INDEX_FREE to spare. An over-estimate: a
 * write that may not fit is refused with ERR_NO_SPACE before LMDB starts
 * it, because LMDB prints to the process's stderr when a page write fails
 * (and reports a short one as a bare EIO).
 */
export function indexRoomNeeded(op: string, args: readonly unknown[], indexBytes: number): number {
  const count = (v: unknown): number => (Array.isArray(v) ? v.length : 0);
  const deltas = (v: unknown): number => (v !== null && typeof v === 'object' ? Object.keys(v).length : 0);
  let keys: number;
  if (op === 'record') keys = count(args[0]) + deltas(args[1]);
  else if (op === 'commit') keys = 2 * count(args[0]) + count(args[1]) + deltas(args[3]);
  else if (op === 'reserve') keys = 3 * (typeof args[0] === 'number' ? args[0] : 0) + deltas(args[4]);
  else keys = 2 + deltas(args[2]);
  return MIN_INDEX_FREE + Math.min(indexBytes, keys * PAGES_PER_KEY * INDEX_PAGE) + keys * 512;
}

/** LMDB options every opener of a store index uses. */
export const INDEX_OPTIONS = {
  maxDbs: 12,
  noSubdir: true,
  // A write transaction returns once it is on disk, so a chunk reported
  // durable survives a power loss too.
  overlappingSync: false,
} as const;

/**
 * Closes the cursor lmdb-js keeps on a database for its next read outside a
 * write transaction (`availableCursor` on the database's native handle,
 * `db.db`, lmdb 3.x). lmdb-js never closes it: not when the root closes, and
 * not when the cursor is collected (its CursorWrap leaves LMDB's cursor
 * open, since the environment may be gone by then), so each store opened and
 * closed leaked LMDB's cursors of the databases it read (about 350 bytes
 * each; bench/results "soak: LMDB's cached cursors"). Safe while nothing
 * iterates: the cached cursor is one no iteration holds. Must run before
 * the root closes.
 */
export function closeCachedCursor(db: object | undefined): void {
  // A read-only root's openDB gives undefined for a table the file lacks.
  const handle = (db as { db?: { availableCursor?: { close(): void } | null } } | undefined)?.db;
  const cursor = handle?.availableCursor;
  if (!handle || !cursor) return;
  handle.availableCursor = null;
  try {
    cursor.close();
  } catch {
    // The environment is already closed: nothing left to free here.
  }
}

export class IndexTables {
  readonly root: RootDatabase;
  readonly entries: Database<CatalogEntry, string>;
  readonly byUse: Database<number, [number, string]>;
  readonly free: Database<boolean, number>;
  readonly reserved: Database<Reservation, number>;
  readonly meta: Database<unknown, string>;
  readonly counterTable: Database<number, string>;
  /** The index file, to tell a full disk from other write failures. */
  readonly #file: string | undefined;

  constructor(root: RootDatabase, file?: string) {
    this.root = root;
    this.#file = file;
    this.entries = root.openDB<CatalogEntry, string>({ name: 'entries' });
    this.byUse = root.openDB<number, [number, string]>({ name: 'by-use' });
    this.free = root.openDB<boolean, number>({ name: 'free' });
    this.reserved = root.openDB<Reservation, number>({ name: 'reserved' });
    this.meta = root.openDB<unknown, string>({ name: 'meta' });
    this.counterTable = root.openDB<number, string>({ name: 'counters' });
  }

  /**
   * Closes the cursor lmdb-js keeps on each database for its next read
   * (see closeCachedCursor). Call before the root closes.
   */
  releaseCursors(): void {
    for (const db of [this.root, this.entries, this.byUse, this.free, this.reserved, this.meta, this.counterTable]) closeCachedCursor(db);
  }

  tx<T>(what: string, action: () => T): T {
    try {
      return this.root.transactionSync(action);
    } catch (e) {
      throw catalogError(e, what, this.#file);
    }
  }

  #addCounters(deltas: CounterDeltas): void {
    for (const [name, n] of Object.entries(deltas)) {
      if (n !== 0) this.counterTable.putSync(name, (this.counterTable.get(name) ?? 0) + n);
    }
  }

  /** The geometry, written by the first opener. */
  geometry(wanted: StoreGeometry | undefined): StoreGeometry | undefined {
    return this.tx('reading the store geometry', () => {
      const existing = this.meta.get('geometry') as StoreGeometry | undefined;
      if (existing || !wanted) return existing;
      this.meta.putSync('geometry', wanted);
      return wanted;
    });
  }

  /** Frees the reservations `stale` says belong to dead writers. */
  recover(stale: (r: Reservation) => boolean): number {
    return this.tx('recovering reserved slots', () => {
      let freed = 0;
      for (const { key, value } of this.reserved.getRange()) {
        if (stale(value)) {
          this.reserved.removeSync(key);
          this.free.putSync(key, true);
          freed++;
        }
      }
      return freed;
    });
  }

  /**
   * Reserves up to `count` slots for `owner`: free ones first, then the
   * never-used tail, then (when `evict`) the lowest-ranked entries (removed
   * from the index in the same transaction, so no entry points at a slot
   * being rewritten), skipping `busy` slots.
   */
  reserve(count: number, busy: readonly number[], owner: Reservation, slotCount: number, deltas: CounterDeltas, evict = true): { slots: number[]; evicted: string[] } {
    return this.tx('reserving slots', () => {
      const skip = new Set(busy);
      const slots: number[] = [];
      const evicted: string[] = [];
      const take = (slot: number): void => {
        this.reserved.putSync(slot, owner);
        slots.push(slot);
      };
      for (const slot of this.free.getKeys({ limit: count })) {
        this.free.removeSync(slot);
        take(slot);
      }
      let next = (this.meta.get('next-slot') as number | undefined) ?? 0;
      while (slots.length < count && next < slotCount) take(next++);
      this.meta.putSync('next-slot', next);
      if (evict && slots.length < count) {
        for (const { key, value: slot } of this.byUse.getRange()) {
          if (slots.length >= count) break;
          if (skip.has(slot)) continue;
          this.byUse.removeSync(key);
          this.entries.removeSync(key[1]);
          evicted.push(key[1]);
          take(slot);
        }
      }
      this.#addCounters({ ...deltas, evictions: (deltas.evictions ?? 0) + evicted.length });
      return { slots, evicted };
    });
  }

  #owns(slot: number, inst: string): boolean {
    const r = this.reserved.get(slot);
    return r !== undefined && r.inst === inst;
  }

  /**
   * Enters written chunks whose slots `inst` still holds and releases its
   * `unused` reservations, in one transaction. A key entered by another
   * writer meanwhile keeps its slot; ours goes back to the free list. Returns
   * the keys present afterwards.
   */
  commit(entering: readonly Entering[], unused: readonly number[], inst: string, deltas: CounterDeltas): string[] {
    return this.tx('entering chunks', () => {
      const entered: string[] = [];
      let lost = 0;
      let writes = 0;
      for (const w of entering) {
        if (!this.#owns(w.slot, inst)) {
          lost++; // taken back by a recovery that thought this writer dead
          continue;
        }
        this.reserved.removeSync(w.slot);
        if (this.entries.get(w.key) !== undefined) {
          this.free.putSync(w.slot, true);
          entered.push(w.key);
          continue;
        }
        this.entries.putSync(w.key, { slot: w.slot, fp: w.fp, crc: w.crc, t: w.t, hits: 0, at: w.at, r: w.r });
        this.byUse.putSync([w.r, w.key], w.slot);
        entered.push(w.key);
        writes++;
      }
      for (const slot of unused) {
        if (!this.#owns(slot, inst)) continue;
        this.reserved.removeSync(slot);
        this.free.putSync(slot, true);
      }
      this.#addCounters({ ...deltas, writes: (deltas.writes ?? 0) + writes, lostReservations: (deltas.lostReservations ?? 0) + lost });
      return entered;
    });
  }

  /** Drops `key` if it still maps to `slot`: its slot becomes free. */
  drop(key: string, slot: number, deltas: CounterDeltas): boolean {
    return this.tx('dropping a chunk', () => {
      this.#addCounters(deltas);
      const e = this.entries.get(key);
      if (e === undefined || e.slot !== slot) return false;
      this.entries.removeSync(key);
      this.byUse.removeSync([e.r, key]);
      this.free.putSync(slot, true);
      return true;
    });
  }

  /** Records uses (newer than the entry's) and counters in one transaction. */
  record(touches: readonly TouchUpdate[], deltas: CounterDeltas): void {
    this.tx('recording uses', () => {
      for (const u of touches) {
        const e = this.entries.get(u.key);
        if (e === undefined || e.t >= u.t) continue;
        this.byUse.removeSync([e.r, u.key]);
        this.entries.putSync(u.key, { ...e, t: u.t, hits: e.hits + 1, r: u.r });
        this.byUse.putSync([u.r, u.key], e.slot);
      }
      this.#addCounters(deltas);
    });
  }

  counters(): CounterDeltas {
    const out: CounterDeltas = {};
    for (const { key, value } of this.counterTable.getRange()) out[key] = value;
    return out;
  }

  summary(): { chunks: number; reserved: number; free: number; nextSlot: number; fingerprints: Record<string, number> } {
    const fingerprints: Record<string, number> = {};
    let chunks = 0;
    for (const { value } of this.entries.getRange()) {
      chunks++;
      fingerprints[value.fp] = (fingerprints[value.fp] ?? 0) + 1;
    }
    return {
      chunks,
      reserved: this.reserved.getCount(),
      free: this.free.getCount(),
      nextSlot: (this.meta.get('next-slot') as number | undefined) ?? 0,
      fingerprints,
    };
  }

  /**
   * Slot accounting: every slot below the never-used tail is in exactly one
   * of entries, free and reserved, and by-use mirrors entries. Returns the
   * problems found (none: []).
   */
  check(): string[] {
    const problems: string[] = [];
    const owner = new Map<number, string>();
    const claim = (slot: number, by: string): void => {
      const prev = owner.get(slot);
      if (prev !== undefined) problems.push(`slot ${slot} is both ${prev} and ${by}`);
      else owner.set(slot, by);
    };
    for (const { key, value } of this.entries.getRange()) claim(value.slot, `chunk ${key.slice(0, 12)}`);
    for (const slot of this.free.getKeys()) claim(slot, 'free');
    for (const slot of this.reserved.getKeys()) claim(slot, 'reserved');
    const next = (this.meta.get('next-slot') as number | undefined) ?? 0;
    for (let slot = 0; slot < next; slot++) if (!owner.has(slot)) problems.push(`slot ${slot} is lost (in no table)`);
    for (const slot of owner.keys()) if (slot >= next) problems.push(`slot ${slot} is beyond the used range ${next}`);
    let uses = 0;
    for (const { key, value: slot } of this.byUse.getRange()) {
      uses++;
      const e = this.entries.get(key[1]);
      if (e === undefined || e.slot !== slot || e.r !== key[0]) problems.push(`by-use record of ${key[1].slice(0, 12)} is stale`);
    }
    const entries = this.entries.getCount();
    if (uses !== entries) problems.push(`${entries} entries but ${uses} by-use records`);
    return problems;
  }
}
