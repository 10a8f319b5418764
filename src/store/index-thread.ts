/**
 * The client of the stores' index thread (index-worker.ts): requests posted
 * in order, one reply each, failures rebuilt as the thread made them.
 */
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';

import { KvflowError } from '../errors.js';
import { markDamage } from './index-check.js';

/** The index thread's script: the compiled one beside this module (from sources, the one in dist/). */
function workerScript(): URL {
  const here = fileURLToPath(import.meta.url);
  if (here.endsWith('.ts')) {
    const root = path.resolve(path.dirname(here), '..', '..');
    return pathToFileURL(path.join(root, 'dist', 'src', 'store', 'index-worker.js'));
  }
  return new URL('./index-worker.js', import.meta.url);
}

/** What a request did to the thread's LMDB environments (index-worker.ts); `kept` is a change. */
interface EnvCounts {
  opened: number;
  reused: number;
  closed: number;
  kept: number;
}

interface Reply {
  id: number;
  ok: boolean;
  value?: unknown;
  message?: string;
  code?: KvflowError['code'];
  errno?: number;
  damage?: boolean;
  envs?: EnvCounts;
}

/** The KvflowError of a failed reply, as the index thread made it. */
function replyError(r: Reply): KvflowError {
  const k = new KvflowError(r.message ?? 'store index request failed', r.code ?? 'ERR_IO');
  if (typeof r.errno === 'number') k.errno = r.errno;
  return r.damage ? markDamage(k) : k;
}

/** How long the thread stays once no store uses it: a store opened again soon after reuses it. */
export const INDEX_THREAD_LINGER_MS = 5_000;

let lingerMs = INDEX_THREAD_LINGER_MS;
/** Threads started and ended, per index file (test hooks). */
const started = new Map<string, number>();
const ended = new Map<string, number>();
const bump = (m: Map<string, number>, file: string): void => void m.set(file, (m.get(file) ?? 0) + 1);
/** LMDB environments of each index file opened, taken again, closed and kept now on its threads (test hooks). */
const envCounts = new Map<string, EnvCounts>();

function countEnvs(file: string, d: EnvCounts): void {
  const c = envCounts.get(file) ?? { opened: 0, reused: 0, closed: 0, kept: 0 };
  envCounts.set(file, { opened: c.opened + d.opened, reused: c.reused + d.reused, closed: c.closed + d.closed, kept: c.kept + d.kept });
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: unknown) => void;
  after: (() => void) | undefined;
}

/**
 * The thread behind the open stores of one index file (made by the first
 * open): requests in order, one reply each; referenced only while a request
 * is out. Once no store used it for INDEX_THREAD_LINGER_MS, it closes the
 * environment it kept for a next open (index-worker.ts) and ends; a store
 * of that directory opened meanwhile keeps it. A thread per store
 * cost a Node worker's start and end at every open and close, and kept
 * about 8 KiB of each (bench/results "soak"); one per directory keeps the
 * stores of different directories from waiting on each other's writes.
 */
class SharedThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, Pending>();
  #next = 1;
  #nextIndex = 1;
  #users = 0;
  /** Environments the thread keeps now, as its replies said. */
  #kept = 0;
  #linger: NodeJS.Timeout | undefined;
  /** The latest request: replies come in order, so once it settled every earlier one has. */
  #last: Promise<unknown> = Promise.resolve();
  dead: KvflowError | undefined;

  constructor(readonly file: string) {
    // No inherited Node flags: the thread runs one compiled module, and flags of the
    // process's own entry (--input-type with --eval, say) fail a worker's start.
    this.#worker = new Worker(workerScript(), { execArgv: [] });
    bump(started, file);
    this.#worker.on('message', (r: Reply) => {
      const p = this.#pending.get(r.id);
      if (!p) return;
      this.#pending.delete(r.id);
      if (this.#pending.size === 0) this.#worker.unref();
      if (r.envs) {
        this.#kept += r.envs.kept;
        countEnvs(file, r.envs);
      }
      p.after?.();
      if (r.ok) p.resolve(r.value);
      else p.reject(replyError(r));
    });
    const die = (e: KvflowError): void => {
      this.dead ??= e;
      if (threads.get(this.file) === this) threads.delete(this.file);
      clearTimeout(this.#linger);
      for (const p of this.#pending.values()) p.reject(this.dead);
      this.#pending.clear();
    };
    this.#worker.on('error', (e) => die(new KvflowError(`the store index thread failed: ${e.message}`, 'ERR_IO')));
    this.#worker.on('exit', () => {
      bump(ended, file);
      // What it still kept (it died, or ended unreleased) was closed with it (lmdb-js's cleanup hook).
      if (this.#kept > 0) countEnvs(file, { opened: 0, reused: 0, closed: this.#kept, kept: -this.#kept });
      this.#kept = 0;
      die(new KvflowError('the store index thread has exited', 'ERR_DISPOSED'));
    });
    // Unreferenced once its listeners are in place (a listener added later references it again): an
    // open store whose index thread has nothing to do never keeps the process alive.
    this.#worker.unref();
  }

  /** A store starts using the thread: the number its requests name its index by. */
  enter(): number {
    this.#users++;
    clearTimeout(this.#linger);
    this.#linger = undefined;
    return this.#nextIndex++;
  }

  /**
   * A store stopped using the thread; the last one leaves it lingering.
   * When the linger ends, the thread closes the environment it kept, then
   * ends, unless a store came meanwhile (its open, posted after the
   * release, opens the index afresh).
   */
  leave(): void {
    if (--this.#users > 0 || this.dead) return;
    this.#linger = setTimeout(() => {
      if (this.#users > 0) return;
      const end = (): void => {
        if (this.#users > 0 || this.dead) return;
        if (threads.get(this.file) === this) threads.delete(this.file);
        void this.#worker.terminate();
      };
      this.call(0, 'release', []).then(end, end);
    }, lingerMs);
    this.#linger.unref();
  }

  /** Runs a request on the thread; `after` runs on its reply, before the caller resumes. */
  call<T>(index: number, op: string, args: unknown[], after?: () => void): Promise<T> {
    if (this.dead) return Promise.reject(this.dead);
    const id = this.#next++;
    const p = new Promise<T>((resolve, reject) => {
      // Posted first: arguments that cannot be cloned throw here, and leave nothing pending.
      this.#worker.postMessage({ id, index, op, args });
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, after });
      if (this.#pending.size === 1) this.#worker.ref();
    });
    this.#last = p.catch(() => undefined);
    return p;
  }

  /** Resolves once every request posted so far has its reply. */
  settled(): Promise<void> {
    return this.#last.then(() => undefined);
  }
}

/** The live thread of each index file. */
const threads = new Map<string, SharedThread>();

/** One store's index on its directory's index thread: requests in order, one reply each. */
export class IndexThread {
  readonly #thread: SharedThread;
  readonly #index: number;
  #closing: Promise<void> | undefined;

  constructor(file: string) {
    let thread = threads.get(file);
    if (thread === undefined || thread.dead) {
      thread = new SharedThread(file);
      threads.set(file, thread);
    }
    this.#thread = thread;
    this.#index = this.#thread.enter();
    // Requests run in order: every later one finds the index open, or is refused with why it is not.
    this.#thread.call(this.#index, 'open', [file]).catch(() => undefined);
  }

  /** Runs a request on the index thread; `after` runs on its reply, before the caller resumes. */
  call<T>(op: string, args: unknown[], after?: () => void): Promise<T> {
    if (this.#closing) return Promise.reject(new KvflowError('the store index is closed', 'ERR_DISPOSED'));
    return this.#thread.call<T>(this.#index, op, args, after);
  }

  /** Closes the index on its thread; every call returns the first one's promise. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      try {
        await this.#thread.call(this.#index, 'close', []);
      } finally {
        this.#thread.leave();
      }
    })();
    return this.#closing;
  }
}

/** Test hooks (src/store/testing.ts): how many threads of an index file were started and have ended, whether one runs now; the linger time. */
export function indexThreadState(file: string): { starts: number; exits: number; running: boolean } {
  return { starts: started.get(file) ?? 0, exits: ended.get(file) ?? 0, running: threads.has(file) };
}

/**
 * Test hook (src/store/testing.ts): the LMDB environments of an index file
 * on its threads: opened, taken again from those kept after a store closed,
 * closed, and kept now, once the requests posted so far have their replies
 * (a store's open does not wait for its index's).
 */
export async function indexEnvState(file: string): Promise<EnvCounts> {
  await threads.get(file)?.settled();
  return { ...(envCounts.get(file) ?? { opened: 0, reused: 0, closed: 0, kept: 0 }) };
}

export function setIndexThreadLinger(ms: number): void {
  lingerMs = ms;
}
