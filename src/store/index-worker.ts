/**
 * The store's index thread: runs every write transaction of one store's
 * index (flushed to disk before it returns) off the JS thread. Requests and
 * replies are plain messages; see Catalog (catalog.ts).
 */
import { parentPort, workerData } from 'node:worker_threads';

import { open } from 'lmdb';

import { KvflowError } from '../errors.js';
import { INDEX_OPTIONS, IndexTables, catalogError } from './tables.js';

interface Request {
  id: number;
  op: 'reserve' | 'commit' | 'drop' | 'record' | 'close';
  args: unknown[];
}

const { file } = workerData as { file: string };
const root = open({ path: file, ...INDEX_OPTIONS });
const tables = new IndexTables(root);
const port = parentPort!;

// The write transactions, each synchronous on this thread (see IndexTables).
const ops: Record<Exclude<Request['op'], 'close'>, (...args: never[]) => unknown> = {
  reserve: tables.reserve.bind(tables),
  commit: tables.commit.bind(tables),
  drop: tables.drop.bind(tables),
  record: tables.record.bind(tables),
};

port.on('message', (m: Request) => {
  if (m.op === 'close') {
    void root.close().then(
      () => port.postMessage({ id: m.id, ok: true }),
      (e: unknown) => port.postMessage({ id: m.id, ok: false, message: String(e), code: 'ERR_IO' }),
    );
    return;
  }
  try {
    const value = (ops[m.op] as (...args: unknown[]) => unknown)(...m.args);
    port.postMessage({ id: m.id, ok: true, value });
  } catch (e) {
    const k = e instanceof KvflowError ? e : catalogError(e, m.op);
    port.postMessage({ id: m.id, ok: false, message: k.message, code: k.code });
  }
});
