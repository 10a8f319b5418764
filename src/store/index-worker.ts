/**
 * A store directory's index thread: runs every write transaction of the
 * indexes its open stores name (each flushed to disk before it returns) off
 * the JS thread. One thread serves the stores of one directory
 * (index-thread.ts): each store's index is an environment opened here by an
 * `open` request and closed by its `close`. Requests and replies are plain
 * messages; see Catalog (catalog.ts).
 */
import { statSync, statfsSync } from 'node:fs';
import path from 'node:path';
import { parentPort } from 'node:worker_threads';

import { open, type RootDatabase } from 'lmdb';

import { KvflowError } from '../errors.js';
import { isIndexDamage } from './index-check.js';
import { INDEX_OPTIONS, IndexTables, catalogError, indexRoomNeeded } from './tables.js';

type WriteOp = 'reserve' | 'commit' | 'drop' | 'record';

interface Request {
  id: number;
  /** The store's index: a number its client gave at `open`. */
  index: number;
  op: WriteOp | 'open' | 'close';
  args: unknown[];
}

/** An index opened here: its environment and tables, or why it could not be opened. */
interface Index {
  file: string;
  root?: RootDatabase;
  tables?: IndexTables;
  failed?: KvflowError;
}

const indexes = new Map<number, Index>();
const port = parentPort!;

// The write transactions, each synchronous on this thread (see IndexTables).
const WRITES: ReadonlySet<string> = new Set<WriteOp>(['reserve', 'commit', 'drop', 'record']);

/**
 * Refuses a write transaction that may not fit on the disk, before LMDB
 * tries it: LMDB's failed page write prints to the process's stderr (the
 * user's output), which a thread cannot redirect, and reports a short one as
 * a bare EIO. The room a transaction needs is over-estimated from the keys
 * it changes (indexRoomNeeded); a disk that another program fills meanwhile
 * can still meet it inside LMDB, which is then mapped from its errno
 * (catalogError).
 */
function roomLeft(file: string, op: string, args: readonly unknown[]): void {
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

function reply(id: number, run: () => unknown, what: string, file: string): void {
  try {
    port.postMessage({ id, ok: true, value: run() });
  } catch (e) {
    port.postMessage(failure(id, e instanceof KvflowError ? e : catalogError(e, what, file)));
  }
}

port.on('message', (m: Request) => {
  if (m.op === 'open') {
    const file = m.args[0] as string;
    const index: Index = { file };
    indexes.set(m.index, index);
    reply(m.id, () => {
      try {
        index.root = open({ path: file, ...INDEX_OPTIONS });
        index.tables = new IndexTables(index.root, file);
      } catch (e) {
        index.failed = e instanceof KvflowError ? e : catalogError(e, 'opening the index', file);
        throw index.failed;
      }
      return true;
    }, 'opening the index', file);
    return;
  }
  const index = indexes.get(m.index);
  if (index === undefined) {
    port.postMessage(failure(m.id, new KvflowError('the store index is not open on its thread', 'ERR_DISPOSED')));
    return;
  }
  if (m.op === 'close') {
    indexes.delete(m.index);
    if (index.root === undefined) {
      port.postMessage({ id: m.id, ok: true });
      return;
    }
    void index.root.close().then(
      () => port.postMessage({ id: m.id, ok: true }),
      (e: unknown) => port.postMessage(failure(m.id, catalogError(e, 'closing the index', index.file))),
    );
    return;
  }
  if (index.failed !== undefined || index.tables === undefined) {
    port.postMessage(failure(m.id, index.failed ?? new KvflowError('the store index is not open on its thread', 'ERR_DISPOSED')));
    return;
  }
  if (!WRITES.has(m.op)) {
    port.postMessage(failure(m.id, new KvflowError(`unknown store index request '${String(m.op)}'`, 'ERR_INVALID_ARG')));
    return;
  }
  const tables = index.tables;
  reply(m.id, () => {
    roomLeft(index.file, m.op, m.args);
    return (tables[m.op as WriteOp] as (...args: unknown[]) => unknown).apply(tables, m.args);
  }, m.op, index.file);
});
