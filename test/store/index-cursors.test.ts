// lmdb-js keeps one cursor per database for its next read outside a write
// transaction and never closes it (not when the root closes, not when the
// cursor is collected), so every store opened and closed leaked LMDB's
// cursors of the databases it had read (#13 item 8: the soak's creep under
// heaptrack was mdb_cursor_open). IndexTables.releaseCursors closes them
// before the root closes. These tests pin the lmdb-js behaviour the release
// relies on, so an lmdb upgrade that changes it fails here, not in a soak.
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { open } from 'lmdb';
import { afterEach, describe, expect, it, vi } from 'vitest';

import { KvLayout, KvStore, KvflowError, openDevice } from '../../src/index.js';
import { Catalog } from '../../src/store/catalog.js';
import { INDEX_OPTIONS, IndexTables, closeCachedCursor } from '../../src/store/tables.js';
import { CHUNK, FP, SPEC } from '../helpers/store.js';

type Cached = { availableCursor?: { close(): void } | null };
/** The cursor lmdb-js keeps on a database's native handle for its next read. */
const cached = (db: object): unknown => (db as { db?: Cached }).db?.availableCursor ?? null;

const dirs: string[] = [];
function freshIndex(): { root: ReturnType<typeof open>; tables: IndexTables } {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-cursors-'));
  dirs.push(dir);
  const root = open({ path: path.join(dir, 'index.mdb'), ...INDEX_OPTIONS });
  const tables = new IndexTables(root);
  tables.tx('seeding', () => {
    for (let i = 0; i < 50; i++) {
      tables.free.putSync(i * 3 + 1, true);
      tables.reserved.putSync(i * 5 + 2, { pid: 1, inst: `i${i}`, at: i });
    }
  });
  return { root, tables };
}

afterEach(() => {
  vi.restoreAllMocks();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A store directory with an index, made by a CPU store opened and closed. */
async function storeDir(): Promise<string> {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-cursors-store-'));
  dirs.push(dir);
  const device = openDevice({ backend: 'cpu' });
  try {
    const store = await KvStore.open({ device, layout: new KvLayout(SPEC), fingerprint: FP, dir, chunkTokens: CHUNK, nvmeBytes: 8 * 12288, dramBytes: 2 * 12288 });
    await store.close();
  } finally {
    await device.dispose();
  }
  return dir;
}

describe('index cursors', () => {
  it('lmdb-js keeps a cursor after a read iteration, which releaseCursors closes', async () => {
    const { root, tables } = freshIndex();
    expect(cached(tables.free)).toBeNull();
    expect([...tables.free.getKeys({ limit: 3 })]).toEqual([1, 4, 7]);
    expect(cached(tables.free)).not.toBeNull();
    for (const _ of tables.reserved.getRange()) break;
    expect(cached(tables.reserved)).not.toBeNull();

    tables.releaseCursors();
    expect(cached(tables.free)).toBeNull();
    expect(cached(tables.reserved)).toBeNull();
    // Reads after the release open a cursor again and see the same keys.
    expect([...tables.free.getKeys({ limit: 3 })]).toEqual([1, 4, 7]);
    expect([...tables.reserved.getKeys()].length).toBe(50);
    tables.releaseCursors();
    await root.close();
  });

  it('a read inside a write transaction leaves no cursor to release', async () => {
    const { root, tables } = freshIndex();
    const seen = tables.tx('reading', () => [...tables.reserved.getKeys({ limit: 2 })]);
    expect(seen).toEqual([2, 7]);
    expect(cached(tables.reserved)).toBeNull();
    await root.close();
  });

  it('a store closing and an inspect release the cursors of the tables they read, on the JS thread', async () => {
    const release = vi.spyOn(IndexTables.prototype, 'releaseCursors');
    const dir = await storeDir();
    expect(release).toHaveBeenCalled();  // the store's close
    const calls = release.mock.calls.length;
    expect(Catalog.inspect(dir).chunks).toBe(0);
    expect(release.mock.calls.length).toBe(calls + 1);
  });

  it('inspecting an index that lacks a table fails with a KvflowError and closes it', async () => {
    const dir = await storeDir();
    const file = path.join(dir, 'index.mdb');
    const root = open({ path: file, ...INDEX_OPTIONS });
    await root.openDB({ name: 'counters' }).drop();
    await root.close();
    let thrown: unknown;
    try {
      Catalog.inspect(dir);
    } catch (e) {
      thrown = e;
    }
    expect(thrown).toBeInstanceOf(KvflowError);
    // Closed: the file can be opened and changed again from here.
    const again = open({ path: file, ...INDEX_OPTIONS });
    await again.openDB<unknown, string>({ name: 'meta' }).put('probe', 1);
    await again.close();
  });

  it('closeCachedCursor does nothing where no cursor is kept, and survives a cursor that fails to close', () => {
    expect(() => closeCachedCursor(undefined)).not.toThrow();
    expect(() => closeCachedCursor({})).not.toThrow();
    expect(() => closeCachedCursor({ db: {} })).not.toThrow();
    let closed = 0;
    const handle: Cached = { availableCursor: { close: () => { closed++; throw new Error('environment gone'); } } };
    expect(() => closeCachedCursor({ db: handle })).not.toThrow();
    expect(closed).toBe(1);
    expect(handle.availableCursor).toBeNull();
    closeCachedCursor({ db: handle });
    expect(closed).toBe(1);
  });
});
