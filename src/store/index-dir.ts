/**
 * The index file of a store directory, outside an open store: opening it
 * once its structure was checked, setting a damaged one aside, removing what
 * a failed first open made, and reading it for `kvflow inspect`.
 */
import { existsSync, lstatSync, readdirSync, renameSync, rmdirSync, statSync, unlinkSync } from 'node:fs';
import path from 'node:path';

import { open, type RootDatabase } from 'lmdb';

import { KvflowError, fail } from '../errors.js';
import { checkIndexFile, indexDamaged, isIndexDamage } from './index-check.js';
import { INDEX_OPTIONS, IndexTables, catalogError, type CounterDeltas, type StoreGeometry } from './tables.js';
import { liveWriters, writerAlive } from './writers.js';

/** What `Catalog.inspect` (inspectIndex) reports. */
export interface StoreReport {
  dir: string;
  geometry: StoreGeometry;
  chunks: number;
  reserved: number;
  free: number;
  nextSlot: number;
  fingerprints: Record<string, number>;
  reservations: { slot: number; pid: number; alive: boolean; at: number }[];
  counters: CounterDeltas;
  /** Slot accounting problems (none: []). */
  problems: string[];
}

/** Opens the LMDB file `file` once its structure was checked (index-check.ts): a damaged file is never mapped. */
export function openIndex(file: string, readOnly: boolean): RootDatabase {
  let checked;
  try {
    checked = checkIndexFile(file);
  } catch (e) {
    throw catalogError(e, `reading ${file}`);
  }
  if (checked.state === 'damaged') throw indexDamaged(file, checked.reason);
  try {
    return open({ path: file, ...INDEX_OPTIONS, ...(readOnly ? { readOnly: true } : {}) });
  } catch (e) {
    throw withFile(catalogError(e, `opening ${file}`), file);
  }
}

/** A damage error that names `file` and the way out. */
export function withFile(e: unknown, file: string): unknown {
  return isIndexDamage(e) ? indexDamaged(file, (e as Error).message) : e;
}

const SLAB = /^slab-\d{4}\.kv$/;

/**
 * Sets a damaged index of `dir` aside (`index.mdb.damaged-<time>`, and a
 * `writers` that is not a folder likewise), removes the slab files it
 * described, and returns what was lost, for the store's warning. Refused
 * with ERR_BUSY while another store has `dir` open.
 */
export function resetIndex(dir: string, why: string): string {
  const live = liveWriters(dir);
  if (live.length > 0) {
    fail('ERR_BUSY', `cannot reset the store index of ${dir}: ${live.length} other store(s) have it open (writer ${live[0]}); close them first (${why})`);
  }
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const aside: string[] = [];
  const setAside = (name: string): void => {
    const from = path.join(dir, name);
    try {
      renameSync(from, `${from}.damaged-${stamp}`);
      aside.push(`${name}.damaged-${stamp}`);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw catalogError(e, `setting ${from} aside`);
    }
  };
  setAside('index.mdb');
  try {
    unlinkSync(path.join(dir, 'index.mdb-lock'));
  } catch {
    // No lock file, or one already gone.
  }
  try {
    if (!lstatSync(path.join(dir, 'writers')).isDirectory()) setAside('writers');
  } catch {
    // No writers folder: made at open.
  }
  let files = 0;
  let bytes = 0;
  for (const name of readdirSync(dir)) {
    if (!SLAB.test(name)) continue;
    const p = path.join(dir, name);
    bytes += statSync(p).size;
    unlinkSync(p);
    files++;
  }
  return `the store index of ${dir} was damaged (${why}); it was set aside as ${aside.join(' and ') || 'nothing (already gone)'}, ` +
    `and the NVMe tier starts empty: every chunk it held is lost (${files} slab file(s), ${bytes} bytes, removed)`;
}

/**
 * Removes what a failed first open of `dir` made (index, its lock file,
 * slab files, the writers folder, and `dir` itself when `removeDir`),
 * unless another store has opened it meanwhile.
 */
export function removeCreated(dir: string, removeDir: boolean): void {
  if (liveWriters(dir).length > 0) return;
  for (const name of readdirSync(dir)) {
    if (name === 'index.mdb' || name === 'index.mdb-lock' || SLAB.test(name)) {
      try {
        unlinkSync(path.join(dir, name));
      } catch {
        // Gone already.
      }
    }
  }
  // The lease table (leases.ts) of the failed opener: no writer is alive, so no lease counts.
  const leases = path.join(dir, 'leases');
  try {
    for (const name of readdirSync(leases)) unlinkSync(path.join(leases, name));
  } catch {
    // None made, or gone already.
  }
  for (const d of [path.join(dir, 'writers'), leases, ...(removeDir ? [dir] : [])]) {
    try {
      rmdirSync(d);
    } catch {
      // Not empty (another opener's files) or gone: left as it is.
    }
  }
}

/**
 * What a store directory holds, read without changing it (no recovery, no
 * geometry needed): for `kvflow inspect`.
 */
export function inspectIndex(dir: string): StoreReport {
  const file = path.join(dir, 'index.mdb');
  if (!existsSync(file)) fail('ERR_INVALID_ARG', `expected a kvflow store directory, but ${dir} has no index.mdb`);
  const root = openIndex(file, true);
  let tables: IndexTables | undefined;
  try {
    tables = new IndexTables(root);
    const geometry = tables.meta.get('geometry') as StoreGeometry | undefined;
    if (!geometry) fail('ERR_INVALID_ARG', `the index at ${file} has no store geometry`);
    const reservations: StoreReport['reservations'] = [];
    for (const { key, value } of tables.reserved.getRange()) reservations.push({ slot: key, pid: value.pid, alive: writerAlive(dir, value.inst), at: value.at });
    return { dir, geometry, ...tables.summary(), reservations, counters: tables.counters(), problems: tables.check() };
  } catch (e) {
    throw withFile(e instanceof KvflowError ? e : catalogError(e, `reading ${file}`), file);
  } finally {
    try {
      tables?.releaseCursors();
    } finally {
      void root.close();
    }
  }
}
