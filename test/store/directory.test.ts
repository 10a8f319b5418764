// The store directory is the user's data (issue #17 item 5): a non-empty
// directory that is not a kvflow store is refused and left untouched, an
// existing directory's mode is never changed (a warning, once, when it is
// open to others), new directories are made 0700, and a store too small
// for a write says so with its fixed capacity and the request's size.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import fc from 'fast-check';
import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';

import { KvStore, openDevice, type Device } from '../../src/index.js';
import { DIR_MODE_WARNING, createStoreDir } from '../../src/store/directory.js';
import { CHUNK, FP, SPEC, randomTokens } from '../helpers/store.js';

const root = path.resolve(import.meta.dirname, '..', '..');
const base = mkdtempSync(path.join(os.tmpdir(), 'kvflow-dir-'));
afterAll(() => rmSync(base, { recursive: true, force: true }));

const BPC = CHUNK / SPEC.blockTokens;
let dev: Device;
let n = 0;
const fresh = (name: string): string => path.join(base, `${name}-${n++}`);
const modeOf = (p: string): number => statSync(p).mode & 0o777;

beforeEach(() => {
  dev = openDevice({ backend: 'cpu' });
});
afterEach(async () => {
  await dev.dispose();
});

const open = (dir: string, extra: object = {}) => KvStore.open({
  device: dev, layout: SPEC, fingerprint: FP, dir, chunkTokens: CHUNK, nvmeBytes: 4 * 12288, dramBytes: 4 * 12288, ...extra,
});

/** Warnings emitted while `run` runs. */
async function warningsDuring(run: () => Promise<void>): Promise<(Error & { code?: string })[]> {
  const seen: (Error & { code?: string })[] = [];
  const listener = (w: Error): void => void seen.push(w);
  process.on('warning', listener);
  try {
    await run();
    await new Promise((r) => setImmediate(r)); // warnings are emitted on the next tick
  } finally {
    process.off('warning', listener);
  }
  return seen.filter((w) => w.code === DIR_MODE_WARNING);
}

describe('store directory safety', () => {
  it('refuses a non-empty directory that is not a store, naming it and a foreign entry, and writes nothing there', async () => {
    const dir = fresh('foreign');
    mkdirSync(dir, { mode: 0o755 });
    writeFileSync(path.join(dir, 'thesis.tex'), 'years of work');
    mkdirSync(path.join(dir, 'photos'));
    const e = await open(dir).catch((x: unknown) => x as Error & { code?: string });
    expect(e).toMatchObject({ name: 'KvflowError', code: 'ERR_INVALID_ARG' });
    expect((e as Error).message).toContain(dir);
    expect((e as Error).message).toMatch(/"photos"|"thesis\.tex"/);
    expect(readdirSync(dir).sort()).toEqual(['photos', 'thesis.tex']);
    expect(modeOf(dir)).toBe(0o755);
  });

  it('kvflow demo --dir refuses it too', () => {
    const dir = fresh('demo');
    mkdirSync(dir);
    writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    const r = spawnSync(process.execPath, [path.join(root, 'dist', 'src', 'cli', 'main.js'), 'demo', '--dir', dir], {
      encoding: 'utf8', timeout: 120_000, env: { ...process.env, KVFLOW_BACKEND: 'cpu' },
    });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain(dir);
    expect(r.stderr).toContain('"notes.txt"');
    expect(readdirSync(dir)).toEqual(['notes.txt']);
  });

  it('makes a new directory and its missing parents 0700', async () => {
    const parent = fresh('parent');
    const dir = path.join(parent, 'a', 'store');
    const store = await open(dir);
    await store.close();
    expect(modeOf(parent)).toBe(0o700);
    expect(modeOf(path.join(parent, 'a'))).toBe(0o700);
    expect(modeOf(dir)).toBe(0o700);
  });

  it('never changes an existing directory\'s mode: one open to others gets a warning with a code, once', async () => {
    const dir = fresh('loose');
    mkdirSync(dir);
    chmodSync(dir, 0o755);
    const first = await warningsDuring(async () => {
      await (await open(dir)).close();
    });
    expect(first).toHaveLength(1);
    expect(first[0]!.message).toContain(dir);
    expect(first[0]!.message).toContain('0755');
    expect(modeOf(dir)).toBe(0o755);
    const again = await warningsDuring(async () => {
      await (await open(dir)).close();
    });
    expect(again).toHaveLength(0);
    expect(modeOf(dir)).toBe(0o755);

    const tight = fresh('tight');
    mkdirSync(tight);
    chmodSync(tight, 0o700);
    expect(await warningsDuring(async () => {
      await (await open(tight)).close();
    })).toHaveLength(0);
    expect(modeOf(tight)).toBe(0o700);
  });

  it('reopens its own directory, and one a failed first open left (only its own folders)', async () => {
    const dir = fresh('own');
    const store = await open(dir);
    const cache = dev.allocKvCache(SPEC);
    const stream = dev.createStream();
    const tokens = randomTokens(CHUNK);
    await store.put(tokens, cache, Array.from({ length: BPC }, (_, b) => b), stream, { durable: true });
    await store.close();
    const again = await open(dir);
    expect(again.lookup(tokens).tokens).toBe(CHUNK);
    await again.close();

    const left = fresh('left');
    mkdirSync(path.join(left, 'writers'), { recursive: true, mode: 0o700 });
    chmodSync(left, 0o700);
    await (await open(left)).close();
  });

  it('a write larger than the store names its capacity, fixed at creation, and the request\'s size', async () => {
    const dir = fresh('small');
    await (await open(dir, { nvmeBytes: 2 * 12288 })).close();
    // A larger nvmeBytes does not grow an existing store.
    const store = await open(dir, { nvmeBytes: 64 * 12288, dramBytes: 8 * 12288 });
    expect(store.stats().nvme.capacityBytes).toBe(2 * 12288);
    const cache = dev.allocKvCache(SPEC);
    const stream = dev.createStream();
    const tokens = randomTokens(4 * CHUNK);
    const e = await store.put(tokens, cache, Array.from({ length: 4 * BPC }, (_, b) => b), stream, { durable: true })
      .catch((x: unknown) => x as Error & { code?: string });
    expect(e).toMatchObject({ code: 'ERR_NO_SPACE' });
    expect((e as Error).message).toContain('capacity fixed at creation: 24 KiB');
    expect((e as Error).message).toContain('4 chunk record(s), 48 KiB');
    expect((e as Error).message).not.toContain('every slot is being read or written');
    await store.close();
  });

  it('a directory is taken when every entry is one a store makes, refused when any is not (property)', () => {
    const own = fc.constantFrom('index.mdb', 'index.mdb-lock', 'writers', 'leases', 'slab-0000.kv', 'slab-0417.kv', 'slab-12345.kv',
      'index.mdb.damaged-2026-01-01T00-00-00-000Z', '.kvflow-direct-probe-12-34-56-0');
    const foreign = fc.oneof(
      fc.constantFrom('index.mdb.bak', 'slab-1.kv', 'slab-0001.kv.tmp', 'writers.old', '.DS_Store', 'README', 'Index.mdb', 'data.db'),
      fc.stringMatching(/^[a-z][a-z0-9._-]{0,12}$/).filter((x) => !/^(index\.mdb(-lock)?|writers|leases|slab-\d{4,}\.kv)$/.test(x)),
    );
    fc.assert(fc.property(fc.uniqueArray(own, { maxLength: 5 }), fc.uniqueArray(foreign, { maxLength: 3 }), (ours, theirs) => {
      const dir = fresh('prop');
      mkdirSync(dir, { mode: 0o700 });
      chmodSync(dir, 0o700);
      const names = [...new Set([...ours, ...theirs])];
      for (const name of names) writeFileSync(path.join(dir, name), 'x');
      try {
        const strangers = theirs.filter((x) => !(ours as string[]).includes(x)).sort();
        if (strangers.length === 0) {
          expect(createStoreDir(dir)).toEqual({ dir, temporary: false, created: false });
        } else {
          expect(() => createStoreDir(dir)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
          expect(() => createStoreDir(dir)).toThrow(JSON.stringify(strangers[0]));
        }
        expect(readdirSync(dir).sort()).toEqual(names.sort());
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    }), { numRuns: 60 });
  });
});
