/**
 * The client of the store's index thread (index-worker.ts): requests posted
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

interface Reply {
  id: number;
  ok: boolean;
  value?: unknown;
  message?: string;
  code?: KvflowError['code'];
  errno?: number;
  damage?: boolean;
}

/** The KvflowError of a failed reply, as the index thread made it. */
function replyError(r: Reply): KvflowError {
  const k = new KvflowError(r.message ?? 'store index request failed', r.code ?? 'ERR_IO');
  if (typeof r.errno === 'number') k.errno = r.errno;
  return r.damage ? markDamage(k) : k;
}

/** The index thread: requests in order, one reply each; referenced only while a request is out. */
export class IndexThread {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void; after: (() => void) | undefined }>();
  #next = 1;
  #dead: KvflowError | undefined;

  constructor(file: string) {
    // No inherited Node flags: the thread runs one compiled module, and flags of the
    // process's own entry (--input-type with --eval, say) fail a worker's start.
    this.#worker = new Worker(workerScript(), { workerData: { file }, execArgv: [] });
    this.#worker.on('message', (r: Reply) => {
      const p = this.#pending.get(r.id);
      if (!p) return;
      this.#pending.delete(r.id);
      if (this.#pending.size === 0) this.#worker.unref();
      p.after?.();
      if (r.ok) p.resolve(r.value);
      else p.reject(replyError(r));
    });
    const die = (e: KvflowError): void => {
      this.#dead ??= e;
      for (const p of this.#pending.values()) p.reject(this.#dead);
      this.#pending.clear();
    };
    this.#worker.on('error', (e) => die(new KvflowError(`the store index thread failed: ${e.message}`, 'ERR_IO')));
    this.#worker.on('exit', () => die(new KvflowError('the store index thread has exited', 'ERR_DISPOSED')));
    // Unreferenced once its listeners are in place (a listener added later references it again): an
    // open store whose index thread has nothing to do never keeps the process alive.
    this.#worker.unref();
  }

  /** Runs a request on the index thread; `after` runs on its reply, before the caller resumes. */
  call<T>(op: string, args: unknown[], after?: () => void): Promise<T> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#next++;
    return new Promise<T>((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, after });
      if (this.#pending.size === 1) this.#worker.ref();
      this.#worker.postMessage({ id, op, args });
    });
  }

  async close(): Promise<void> {
    try {
      await this.call('close', []);
    } finally {
      await this.#worker.terminate();
    }
  }
}
