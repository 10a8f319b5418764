/**
 * The store's index thread: runs every write transaction of one store's
 * index (flushed to disk before it returns) off the JS thread. Requests and
 * replies are plain messages; see Catalog (catalog.ts).
 */
import { statSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { parentPort, workerData } from 'node:worker_threads';

import { open } from 'lmdb';

import { KvflowError } from '../errors.js';
import { isIndexDamage } from './index-check.js';
import { INDEX_OPTIONS, IndexTables, catalogError, indexRoomNeeded } from './tables.js';

interface Request {
  id: number;
  op: 'reserve' | 'commit' | 'drop' | 'record' | 'close';
  args: unknown[];
}

const { file } = workerData as { file: string };
const root = open({ path: file, ...INDEX_OPTIONS });
const tables = new IndexTables(root, file);
const port = parentPort!;

// The write transactions, each synchronous on this thread (see IndexTables).
const ops: Record<Exclude<Request['op'], 'close'>, (...args: never[]) => unknown> = {
  reserve: tables.reserve.bind(tables),
  commit: tables.commit.bind(tables),
  drop: tables.drop.bind(tables),
  record: tables.record.bind(tables),
};

/**
 * Refuses a write transaction that may not fit on the disk, before LMDB
 * tries it: LMDB's failed page write prints to the process's stderr (the
 * user's output), which a thread cannot redirect, and reports a short one as
 * a bare EIO. The room a transaction needs is over-estimated from the keys
 * it changes (indexRoomNeeded); a disk that another program fills meanwhile
 * can still meet it inside LMDB, which is then mapped from its errno
 * (catalogError).
 */
function roomLeft(op: string, args: readonly unknown[]): void {
  let free: number;
  let need: number;
  try {
    const s = statfsSync(path.dirname(file));
    free = (process.getuid?.() === 0 ? s.bfree : s.bavail) * s.bsize;
    need = indexRoomNeeded(op, args, statSync(file).size);
  } catch {
    return; // no statfs here: LMDB reports what happens
  }
  if (free < need) {
    const k = new KvflowError(`store index: ${op} failed: the disk is full (${free} bytes free, fewer than the ${need} this index write may need)`, 'ERR_NO_SPACE');
    k.errno = 28;
    throw k;
  }
}

/** A failed request's reply: the error's code, errno and damage mark cross the thread with it (a structured clone keeps none of them). */
function failure(id: number, k: KvflowError): object {
  return { id, ok: false, message: k.message, code: k.code, errno: k.errno, damage: isIndexDamage(k) };
}

port.on('message', (m: Request) => {
  if (m.op === 'close') {
    void root.close().then(
      () => port.postMessage({ id: m.id, ok: true }),
      (e: unknown) => port.postMessage(failure(m.id, catalogError(e, 'closing the index', file))),
    );
    return;
  }
  try {
    roomLeft(m.op, m.args);
    const value = (ops[m.op] as (...args: unknown[]) => unknown)(...m.args);
    port.postMessage({ id: m.id, ok: true, value });
  } catch (e) {
    port.postMessage(failure(m.id, e instanceof KvflowError ? e : catalogError(e, m.op, file)));
  }
});
