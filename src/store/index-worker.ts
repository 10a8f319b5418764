/**
 * A store directory's index thread: runs every write transaction of the
 * indexes its open stores name (each flushed to disk before it returns) off
 * the JS thread. One thread serves the stores of one directory
 * (index-thread.ts): each store's index is an environment opened here by an
 * `open` request and given up by its `close`. Requests and replies are plain
 * messages; see Catalog (catalog.ts).
 *
 * A closed store's environment is kept (one per file) for the next open of
 * the same file, until the thread is released (`release`, when it lingered
 * with no store): lmdb-js keeps ~3 KiB of every LMDB environment that
 * really closes, so a store closed and opened again in a loop grew without
 * bound (bench/results "soak"). lmdb-js shares one environment per file
 * between the threads of a process, matched by device and inode
 * (`checkExistingEnvs` in its env.cpp), so the JS thread's open of the same
 * file joins the kept one; a kept environment is taken again only when the
 * path still names the file it has open, the match lmdb-js makes.
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
  /** The store's index: a number its client gave at `open` (0 for `release`). */
  index: number;
  op: WriteOp | 'open' | 'close' | 'release';
  args: unknown[];
}

/** A file's device and inode: what lmdb-js matches an open environment by. */
interface FileId {
  dev: bigint;
  ino: bigint;
}

/** An environment and its tables, with the identity of the file it has open (when known, it may be kept). */
interface Env {
  root: RootDatabase;
  tables: IndexTables;
  id: FileId | undefined;
}

/** An index opened here: its environment and tables, or why it could not be opened. */
interface Index {
  file: string;
  env?: Env;
  /** The environment this index opened, kept apart from `env` so that it is closed even when its tables failed. */
  root?: RootDatabase;
  failed?: KvflowError;
}

/**
 * What a request did to environments here, reported with its reply (test
 * hooks, through index-thread.ts): opened, taken again from those kept,
 * really closed, and the change in how many are kept.
 */
interface EnvCounts {
  opened: number;
  reused: number;
  closed: number;
  kept: number;
}

const indexes = new Map<number, Index>();
/** Environments of closed stores, one per file, kept for the next open of that file. */
const kept = new Map<string, Env>();
/**
 * Files an index write failed on: their environment is never kept or taken
 * again while this thread lives (LMDB may have marked it unusable, and
 * lmdb-js shares one environment among every store open on the file, so a
 * failure seen by one store taints the others' too).
 */
const tainted = new Set<string>();
const port = parentPort!;

// The write transactions, each synchronous on this thread (see IndexTables).
const WRITES: ReadonlySet<string> = new Set<WriteOp>(['reserve', 'commit', 'drop', 'record']);

const noCounts = (): EnvCounts => ({ opened: 0, reused: 0, closed: 0, kept: 0 });

/** The identity of the file `file` names now, or undefined when it names none. */
function fileId(file: string): FileId | undefined {
  try {
    const s = statSync(file, { bigint: true });
    return s.isFile() ? { dev: s.dev, ino: s.ino } : undefined;
  } catch {
    return undefined;
  }
}

/** Whether `file` still names the file `id` is of (deleted, replaced, renamed aside: no). */
function stillNames(file: string, id: FileId): boolean {
  const now = fileId(file);
  return now !== undefined && now.dev === id.dev && now.ino === id.ino;
}

/** Really closes an environment (its cached cursors first: closeCachedCursor): lmdb-js frees LMDB's once no thread of the process has it open. */
function closeEnv(root: RootDatabase, tables: IndexTables | undefined, counts: EnvCounts): Promise<void> {
  counts.closed++;
  tables?.releaseCursors();
  return root.close();
}

/**
 * The environment kept for `file`, when the path still names the file it
 * has open; one kept for a file since deleted, replaced or set aside (a
 * reset) is closed instead, and undefined returned.
 */
function takeKept(file: string, counts: EnvCounts): Env | undefined {
  const env = kept.get(file);
  if (env === undefined) return undefined;
  kept.delete(file);
  counts.kept--;
  if (env.id !== undefined && !tainted.has(file) && stillNames(file, env.id)) {
    counts.reused++;
    return env;
  }
  void closeEnv(env.root, env.tables, counts).catch(() => undefined);
  return undefined;
}

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
function failure(id: number, k: KvflowError, envs?: EnvCounts): object {
  return { id, ok: false, message: k.message, code: k.code, errno: k.errno, damage: isIndexDamage(k), envs };
}

/** Replies with what `run` returns or throws (and, for requests that open or close environments, what they did to them). */
function reply(id: number, run: () => unknown, what: string, file: string, envs?: EnvCounts): boolean {
  try {
    port.postMessage({ id, ok: true, value: run(), envs });
    return true;
  } catch (e) {
    port.postMessage(failure(id, e instanceof KvflowError ? e : catalogError(e, what, file), envs));
    return false;
  }
}

/** Opens `index.file`'s environment, or takes the one kept for it. */
function openIndex(index: Index, counts: EnvCounts): void {
  const file = index.file;
  const env = takeKept(file, counts);
  if (env !== undefined) {
    index.env = env;
    return;
  }
  try {
    const root = open({ path: file, ...INDEX_OPTIONS });
    counts.opened++;
    index.root = root;
    // The file as this open found it (lmdb-js made it if missing): one replaced since is never kept.
    const id = fileId(file);
    index.env = { root, tables: new IndexTables(root, file), id };
  } catch (e) {
    index.failed = e instanceof KvflowError ? e : catalogError(e, 'opening the index', file);
    throw index.failed;
  }
}

/**
 * Gives up a closed store's environment: kept for the next open of the same
 * file when it is sound (opened, no failed write, the path still names its
 * file, none kept for the file yet), else closed.
 */
function closeIndex(id: number, index: Index): void {
  const counts = noCounts();
  const env = index.env;
  if (env?.id !== undefined && !tainted.has(index.file) && !kept.has(index.file) && stillNames(index.file, env.id)) {
    let parked = true;
    try {
      // A kept environment pins no snapshot: other writers of the file may reuse its freed pages.
      env.root.resetReadTxn();
    } catch {
      parked = false;  // closed below instead
    }
    if (parked) {
      kept.set(index.file, env);
      counts.kept++;
      port.postMessage({ id, ok: true, envs: counts });
      return;
    }
  }
  const root = env?.root ?? index.root;
  if (root === undefined) {
    port.postMessage({ id, ok: true, envs: counts });
    return;
  }
  closeEnv(root, env?.tables, counts).then(
    () => port.postMessage({ id, ok: true, envs: counts }),
    (e: unknown) => port.postMessage(failure(id, catalogError(e, 'closing the index', index.file), counts)),
  );
}

/** Closes every kept environment (the thread is about to end). */
function release(id: number): void {
  const counts = noCounts();
  const envs = [...kept.values()];
  kept.clear();
  tainted.clear();  // no store is open here: the next open of any file opens it afresh
  counts.kept -= envs.length;
  void Promise.allSettled(envs.map((env) => closeEnv(env.root, env.tables, counts))).then(() => port.postMessage({ id, ok: true, envs: counts }));
}

port.on('message', (m: Request) => {
  if (m.op === 'release') {
    release(m.id);
    return;
  }
  if (m.op === 'open') {
    const index: Index = { file: m.args[0] as string };
    indexes.set(m.index, index);
    const counts = noCounts();
    reply(m.id, () => openIndex(index, counts), 'opening the index', index.file, counts);
    return;
  }
  const index = indexes.get(m.index);
  if (index === undefined) {
    port.postMessage(failure(m.id, new KvflowError('the store index is not open on its thread', 'ERR_DISPOSED')));
    return;
  }
  if (m.op === 'close') {
    indexes.delete(m.index);
    closeIndex(m.id, index);
    return;
  }
  if (index.failed !== undefined || index.env === undefined) {
    port.postMessage(failure(m.id, index.failed ?? new KvflowError('the store index is not open on its thread', 'ERR_DISPOSED')));
    return;
  }
  if (!WRITES.has(m.op)) {
    port.postMessage(failure(m.id, new KvflowError(`unknown store index request '${String(m.op)}'`, 'ERR_INVALID_ARG')));
    return;
  }
  const tables = index.env.tables;
  const done = reply(m.id, () => {
    roomLeft(index.file, m.op, m.args);
    return (tables[m.op as WriteOp] as (...args: unknown[]) => unknown).apply(tables, m.args);
  }, m.op, index.file);
  if (!done) tainted.add(index.file);
});
