/**
 * The writers of a store directory: each open store holds an exclusive lock
 * on a file of `writers/` for as long as it is open, so that slot
 * reservations and a reset can tell live writers from dead ones.
 */
import { lstatSync, mkdirSync, readdirSync, unlinkSync } from 'node:fs';
import path from 'node:path';

import { loadBinding } from '../binding/load.js';
import { indexDamaged } from './index-check.js';
import { catalogError } from './tables.js';

/**
 * Writers are told apart by instance: each open store holds an exclusive
 * flock on `writers/<instance>.lock` in the store directory, which the kernel
 * drops when its process dies, however it dies and in whatever PID
 * namespace it runs. A reservation whose instance's lock is not held is stale.
 */
export function lockPath(dir: string, instance: string): string {
  return path.join(dir, 'writers', `${instance}.lock`);
}

export function writerAlive(dir: string, instance: string): boolean {
  return loadBinding().binding.lockHeld(lockPath(dir, instance));
}

/** Removes lock files of writers that are gone. */
export function sweepLocks(dir: string): void {
  const writers = path.join(dir, 'writers');
  for (const name of readdirSync(writers)) {
    if (!name.endsWith('.lock')) continue;
    const instance = name.slice(0, -5);
    if (!writerAlive(dir, instance)) {
      try {
        unlinkSync(path.join(writers, name));
      } catch {
        // Another process swept it first.
      }
    }
  }
}

/** Instances holding `dir` open now (none where there is no writers folder). */
export function liveWriters(dir: string): string[] {
  const writers = path.join(dir, 'writers');
  let names: string[];
  try {
    if (!lstatSync(writers).isDirectory()) return [];
    names = readdirSync(writers);
  } catch {
    return [];
  }
  return names.filter((n) => n.endsWith('.lock') && writerAlive(dir, n.slice(0, -5))).map((n) => n.slice(0, -5));
}

/** Makes the writers folder of `dir` where it is missing; anything else in its place is damage. */
export function makeWritersDir(dir: string): void {
  const writers = path.join(dir, 'writers');
  try {
    mkdirSync(writers, { mode: 0o700 });
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    if (err.code === 'EEXIST') {
      if (lstatSync(writers).isDirectory()) return;
      throw indexDamaged(writers, 'it is not a directory');
    }
    throw catalogError(e, `creating ${writers}`);
  }
}
