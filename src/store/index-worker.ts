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

port.on('message', (m: Request) => {
  try {
    let value: unknown;
    switch (m.op) {
      case 'reserve':
        value = (tables.reserve as (...a: unknown[]) => unknown)(...m.args);
        break;
      case 'commit':
        value = (tables.commit as (...a: unknown[]) => unknown)(...m.args);
        break;
      case 'drop':
        value = (tables.drop as (...a: unknown[]) => unknown)(...m.args);
        break;
      case 'record':
        value = (tables.record as (...a: unknown[]) => unknown)(...m.args);
        break;
      case 'close':
        void root.close().then(
          () => port.postMessage({ id: m.id, ok: true }),
          (e: unknown) => port.postMessage({ id: m.id, ok: false, message: String(e), code: 'ERR_IO' }),
        );
        return;
    }
    port.postMessage({ id: m.id, ok: true, value });
  } catch (e) {
    const k = e instanceof KvflowError ? e : catalogError(e, m.op);
    port.postMessage({ id: m.id, ok: false, message: k.message, code: k.code });
  }
});
