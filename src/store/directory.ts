/**
 * The store directory is the user's data: a store is opened only in a new
 * directory (made 0700), an empty one, or one a store made. A non-empty
 * directory holding anything else is refused, and an existing directory's
 * mode is never changed (a mode open to others gets a warning instead).
 */
import { mkdirSync, mkdtempSync, readdirSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { KvflowError, describe, fail } from '../errors.js';

/** The code of the warning about a store directory that others may read (process.emitWarning). */
export const DIR_MODE_WARNING = 'KVFLOW_STORE_DIR_MODE';

/**
 * What a store puts in its directory: the index and its lock file, the
 * writers and leases folders, slab files, damaged indexes set aside, and the
 * O_DIRECT probe file that opening a slab file makes and unlinks at once
 * (another process may be opening the store right now).
 */
const STORE_ENTRY = /^(index\.mdb(-lock)?|writers|leases|slab-\d{4,}\.kv|(index\.mdb|writers)\.damaged-.+|\.kvflow-direct-probe-.+)$/;

/** Directories warned about already in this process: a warning is emitted once per directory. */
const warned = new Set<string>();

function dirError(resolved: string, why: string, e?: NodeJS.ErrnoException): KvflowError {
  const k = new KvflowError(`cannot create the store directory ${resolved}: ${why}`, e?.code === 'ENOSPC' ? 'ERR_NO_SPACE' : 'ERR_IO');
  if (typeof e?.errno === 'number') k.errno = Math.abs(e.errno);
  return k;
}

/** Whether `p` is a directory (false: absent); throws for anything else there. */
function isDir(p: string, resolved: string): boolean {
  let st;
  try {
    st = statSync(p);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    // ENOTDIR: a component above is a file, which the walk up reports.
    if (err.code === 'ENOENT' || err.code === 'ENOTDIR') return false;
    throw dirError(resolved, `${p}: ${err.message}`, err);
  }
  if (!st.isDirectory()) throw dirError(resolved, `${p} exists and is not a directory`);
  return true;
}

/**
 * Refuses an existing directory that holds anything a store did not put
 * there (ERR_INVALID_ARG naming one such entry); warns, once per directory,
 * when its mode lets others in.
 */
function checkExisting(resolved: string): void {
  let names: string[];
  try {
    names = readdirSync(resolved);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    const k = new KvflowError(`cannot read the store directory ${resolved}: ${err.message}`, 'ERR_IO');
    if (typeof err.errno === 'number') k.errno = Math.abs(err.errno);
    throw k;
  }
  const foreign = names.filter((n) => !STORE_ENTRY.test(n)).sort();
  if (foreign.length > 0) {
    const others = foreign.length > 1 ? ` and ${foreign.length - 1} other entr${foreign.length > 2 ? 'ies' : 'y'}` : '';
    fail('ERR_INVALID_ARG', `expected an empty directory or a kvflow store for dir, but ${resolved} holds ${JSON.stringify(foreign[0])}${others} ` +
      'that no store made; a store writes slab files and an index there, so give it a directory of its own (a new path is created)');
  }
  const mode = statSync(resolved).mode & 0o777;
  if ((mode & 0o077) !== 0 && !warned.has(resolved)) {
    warned.add(resolved);
    process.emitWarning(`the store directory ${resolved} has mode 0${mode.toString(8)}: other users may list it; ` +
      'its files are created 0600, and kvflow leaves the directory\'s mode as it is (chmod 700 it to keep them out)', {
      code: DIR_MODE_WARNING,
    });
  }
}

/**
 * Creates (0700) the store directory `dir`, or a temporary one when it is
 * undefined; `created` says whether this call made it. Missing parents are
 * made one at a time from the nearest existing one, never with a recursive
 * mkdir: on procfs and sysfs that loops forever, because mkdir answers
 * ENOENT under a parent that exists. An existing directory is checked, never
 * changed: see checkExisting.
 */
export function createStoreDir(dir: unknown): { dir: string; temporary: boolean; created: boolean } {
  if (dir === undefined) {
    const made = mkdtempSync(path.join(os.tmpdir(), 'kvflow-store-'));
    return { dir: made, temporary: true, created: true };
  }
  if (typeof dir !== 'string' || dir.length === 0) fail('ERR_INVALID_ARG', `expected a directory path for dir, got ${describe(dir)}`);
  const resolved = path.resolve(dir);
  const missing: string[] = [];
  let at = resolved;
  while (!isDir(at, resolved)) {
    missing.unshift(at);
    at = path.dirname(at);
  }
  if (missing.length === 0) checkExisting(resolved);
  for (const p of missing) {
    try {
      mkdirSync(p, { mode: 0o700 });
    } catch (e) {
      const err = e as NodeJS.ErrnoException;
      if (err.code === 'EEXIST' && isDir(p, resolved)) {
        // Made meanwhile by another opener: the store's own directory is then checked as an existing one.
        if (p === resolved) checkExisting(resolved);
        continue;
      }
      const why = err.code === 'ENOENT'
        ? `its parent ${path.dirname(p)} exists but refuses new directories (${err.message}): a virtual filesystem such as /proc?`
        : err.message;
      throw dirError(resolved, why, err);
    }
  }
  return { dir: resolved, temporary: false, created: missing.length > 0 };
}
