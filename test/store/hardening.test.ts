// The store against a failing machine and a hostile caller (issue #13):
// damaged index files (opened in child processes, so that a crash is seen as
// a signal instead of killing the runner), a create that runs out of space,
// a directory that cannot be made, a full disk under the index, and calls
// rejected before they change anything. Children run the built package
// (dist/, made by `npm test`'s pretest step).
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, mkdtempSync, openSync, readdirSync, readlinkSync, rmSync, statSync, truncateSync, writeFileSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvLayout, KvStore, type Device, type KvCache, type Stream } from '../../src/index.js';
import { checkIndexFile } from '../../src/store/index-check.js';
import { INDEX_THREAD_LINGER_MS, indexThreadState, setIndexThreadLinger } from '../../src/store/testing.js';
import { MIN_INDEX_FREE, catalogError, indexRoomNeeded } from '../../src/store/tables.js';
import { open } from '../helpers/backends.js';
import { mountTemp } from '../helpers/io.js';
import { CHUNK, FP, SPEC, randomBlocks, randomTokens } from '../helpers/store.js';

const root = path.resolve(import.meta.dirname, '..', '..');
const entry = pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href;
const child = path.join(import.meta.dirname, 'open-child.mjs');
const base = mkdtempSync(path.join(os.tmpdir(), 'kvflow-harden-'));
const layout = new KvLayout(SPEC);
const BPC = CHUNK / SPEC.blockTokens;

afterAll(() => rmSync(base, { recursive: true, force: true }));

interface Outcome {
  ok: boolean;
  code?: string | null;
  errno?: number | null;
  message?: string;
  warning?: string | null;
  chunks?: number;
}

interface Run {
  out: Outcome | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Opens the store `dir` in a child (open-child.mjs); a child still running after 30 s is killed (a hang). */
function run(dir: string, options: object = {}, put = 0, flag = '--put'): Promise<Run> {
  return new Promise((resolve, reject) => {
    const args = [child, entry, dir, JSON.stringify(options), ...(put || flag !== '--put' ? [flag, String(put)] : [])];
    const p = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KVFLOW_BACKEND: 'cpu' } });
    let stdout = '';
    let stderr = '';
    const guard = setTimeout(() => p.kill('SIGKILL'), 30_000);
    p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(guard);
      const line = stdout.trim().split('\n').pop();
      resolve({ out: line ? (JSON.parse(line) as Outcome) : undefined, code, signal, stderr });
    });
  });
}

/** Overwrites `bytes` at `offset` of `file`. */
function patch(file: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.length, offset);
  } finally {
    closeSync(fd);
  }
}

function random(n: number): Uint8Array {
  const b = new Uint8Array(n);
  for (let i = 0; i < n; i++) b[i] = Math.floor(Math.random() * 256);
  return b;
}

function u64(n: bigint): Uint8Array {
  const b = Buffer.alloc(8);
  b.writeBigUInt64LE(n);
  return b;
}

/** Fills the filesystem of `file` (a new file there) until `left` bytes are free. */
function fill(file: string, left: number): void {
  const fd = openSync(file, 'w');
  try {
    for (;;) writeSync(fd, new Uint8Array(65536));
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  } finally {
    closeSync(fd);
  }
  try {
    const fd2 = openSync(file, 'a');
    try {
      for (;;) writeSync(fd2, new Uint8Array(4096));
    } finally {
      closeSync(fd2);
    }
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOSPC') throw e;
  }
  truncateSync(file, Math.max(0, statSync(file).size - left));
}

/** Paths under `dir` that this process holds open. */
function openUnder(dir: string): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      const target = readlinkSync(path.join('/proc/self/fd', fd));
      if (target.startsWith(dir + path.sep)) out.push(target);
    } catch {
      // Closed meanwhile.
    }
  }
  return out;
}

const PAGE = 4096;
/** Offset of the main tree's root page number in a meta page: header 24 + magic, version, address, mapsize 24 + free DB 48 + 40. */
const MAIN_ROOT = 24 + 24 + 48 + 40;

/** How each case damages a store directory that holds 20 chunks. */
const damages: { name: string; damage(dir: string): void }[] = [
  { name: 'garbage in the index', damage: (d) => writeFileSync(path.join(d, 'index.mdb'), random(40_000)) },
  {
    name: 'the index truncated to 5,000 bytes',
    damage: (d) => truncateSync(path.join(d, 'index.mdb'), 5000),
  },
  { name: 'both meta pages overwritten', damage: (d) => patch(path.join(d, 'index.mdb'), 0, random(2 * PAGE)) },
  {
    name: 'meta pages whose root lies past the end of the file',
    damage: (d) => {
      const f = path.join(d, 'index.mdb');
      patch(f, MAIN_ROOT, u64(1n << 40n));
      patch(f, PAGE + MAIN_ROOT, u64(1n << 40n));
    },
  },
  {
    name: 'zeroed data pages',
    damage: (d) => {
      const f = path.join(d, 'index.mdb');
      patch(f, 2 * PAGE, new Uint8Array(statSync(f).size - 2 * PAGE));
    },
  },
  {
    name: 'random data pages',
    damage: (d) => {
      const f = path.join(d, 'index.mdb');
      patch(f, 2 * PAGE, random(statSync(f).size - 2 * PAGE));
    },
  },
  {
    name: 'a file named writers where the folder should be',
    damage: (d) => {
      rmSync(path.join(d, 'writers'), { recursive: true, force: true });
      writeFileSync(path.join(d, 'writers'), 'not a folder');
    },
  },
];

describe('a damaged store directory (child processes)', () => {
  let n = 0;
  async function stored(): Promise<string> {
    const dir = path.join(base, `damaged-${n++}`);
    const made = await run(dir, {}, 20);
    expect(made.out).toMatchObject({ ok: true, chunks: 20 });
    return dir;
  }

  it('a sound index passes the check and keeps its chunks', async () => {
    const dir = await stored();
    expect(checkIndexFile(path.join(dir, 'index.mdb'))).toEqual({ state: 'sound' });
    const again = await run(dir);
    expect(again.signal).toBeNull();
    expect(again.out).toMatchObject({ ok: true, chunks: 20, warning: null });
  });

  it.for(damages)('$name: a typed error naming onCorruptIndex, never a signal; reset starts empty and says so', async ({ damage }) => {
    const dir = await stored();
    damage(dir);
    const failed = await run(dir);
    expect(failed.signal, failed.stderr).toBeNull();
    expect(failed.code).toBe(0);
    expect(failed.out).toMatchObject({ ok: false, code: 'ERR_IO' });
    expect(failed.out!.message).toMatch(/damaged.*onCorruptIndex: 'reset'/);
    // Failing changed nothing: the same error again.
    expect((await run(dir)).out).toMatchObject({ ok: false, code: 'ERR_IO' });

    const reset = await run(dir, { onCorruptIndex: 'reset' }, 2);
    expect(reset.signal, reset.stderr).toBeNull();
    expect(reset.out).toMatchObject({ ok: true, chunks: 2 });
    expect(reset.out!.warning).toMatch(/set aside as .*damaged-.*starts empty/);
    expect(readdirSync(dir).some((f) => /\.damaged-/.test(f))).toBe(true);
    // The reset store is a sound store from then on.
    expect((await run(dir)).out).toMatchObject({ ok: true, chunks: 2, warning: null });
  });
});

describe('store options and directories', () => {
  it('onCorruptIndex other than fail or reset is ERR_INVALID_ARG', async () => {
    const r = await run(path.join(base, 'opt'), { onCorruptIndex: 'ignore' });
    expect(r.out).toMatchObject({ ok: false, code: 'ERR_INVALID_ARG' });
  });

  it.for(['/proc/kvflow', '/proc/self/kvflow/store', '/sys/kvflow'])('opening %s fails with a code instead of hanging', async (dir) => {
    const r = await run(dir);
    expect(r.signal, 'the open hung and was killed').toBeNull();
    expect(r.out).toMatchObject({ ok: false, code: 'ERR_IO' });
    expect(r.out!.message).toContain('cannot create the store directory');
  });

  it('a directory path under a regular file fails with ERR_IO, naming it', async () => {
    const file = path.join(base, 'plain-file');
    writeFileSync(file, 'x');
    const r = await run(path.join(file, 'store'));
    expect(r.out).toMatchObject({ ok: false, code: 'ERR_IO' });
    expect(r.out!.message).toContain('is not a directory');
  });

  it('missing parents are made', async () => {
    const dir = path.join(base, 'a', 'b', 'c');
    expect((await run(dir, {}, 1)).out).toMatchObject({ ok: true, chunks: 1 });
    expect(statSync(dir).mode & 0o777).toBe(0o700);
  });
});

describe('index failures keep their cause', () => {
  it('ENOSPC and a full map are ERR_NO_SPACE, other errnos ERR_IO, each with its errno; LMDB damage codes are marked', () => {
    const lmdbError = (code: number, message: string): Error => Object.assign(new Error(message), { code });
    expect(catalogError(lmdbError(28, 'No space left on device'), 'entering chunks')).toMatchObject({ code: 'ERR_NO_SPACE', errno: 28 });
    expect(catalogError(lmdbError(-30792, 'MDB_MAP_FULL'), 'entering chunks')).toMatchObject({ code: 'ERR_NO_SPACE' });
    // The message says nothing of space; the cause does.
    expect(catalogError(lmdbError(28, 'write failed'), 'entering chunks')).toMatchObject({ code: 'ERR_NO_SPACE' });
    expect(catalogError(lmdbError(13, 'No space left? (a misleading text)'), 'x')).toMatchObject({ code: 'ERR_IO', errno: 13 });
    // An EIO (LMDB's short write) on a filesystem with room is an IO error.
    expect(catalogError(lmdbError(5, 'Input/output error'), 'x', path.join(base, 'index.mdb'))).toMatchObject({ code: 'ERR_IO', errno: 5 });
  });
});

describe('index writes are sized before LMDB starts them', () => {
  it('the room a write may need grows with the keys it changes, up to the whole index again, never below the floor', () => {
    const touches = (n: number) => [Array.from({ length: n }, (_, i) => ({ key: `k${i}`, t: i, r: i })), {}];
    expect(indexRoomNeeded('record', touches(0), 1 << 20)).toBe(MIN_INDEX_FREE);
    const sizes = [1, 10, 100, 1000, 10000].map((n) => indexRoomNeeded('record', touches(n), 1 << 20));
    for (let i = 1; i < sizes.length; i++) expect(sizes[i]!).toBeGreaterThan(sizes[i - 1]!);
    // Never more than the whole index rewritten, plus what the keys add.
    expect(indexRoomNeeded('record', touches(10000), 1 << 20)).toBe(MIN_INDEX_FREE + (1 << 20) + 10000 * 512);
    expect(indexRoomNeeded('commit', [[{}, {}], [1], 'inst', { hits: 1 }], 1 << 30)).toBeGreaterThan(MIN_INDEX_FREE + 5 * 4096);
    expect(indexRoomNeeded('reserve', [64, [], {}, 100, {}], 1 << 30)).toBeGreaterThan(MIN_INDEX_FREE + 64 * 4096);
    expect(indexRoomNeeded('drop', ['k', 1, {}], 1 << 30)).toBeGreaterThan(MIN_INDEX_FREE);
  });
});

/**
 * Waits (bounded) until the index thread of the store `dir` has ended: the
 * LMDB environment it kept after the last close is closed, so the mount
 * holding `dir` can go.
 */
async function indexReleased(dir: string): Promise<void> {
  const file = path.join(dir, 'index.mdb');
  for (let i = 0; i < 500 && indexThreadState(file).running; i++) await new Promise((r) => setTimeout(r, 10));
  expect(indexThreadState(file).running).toBe(false);
}

describe('a full disk under the store (tmpfs)', () => {
  let dev: Device;
  let stream: Stream;
  let cache: KvCache;
  beforeAll(() => {
    dev = open('cpu');
    stream = dev.createStream();
    cache = dev.allocKvCache(layout);
    setIndexThreadLinger(20);
  });
  afterAll(async () => {
    setIndexThreadLinger(INDEX_THREAD_LINGER_MS);
    await dev?.dispose();
  });

  it('a create larger than the free space is ERR_NO_SPACE and leaves nothing behind; a later smaller create works', async (ctx) => {
    const small = mountTemp('tmpfs', 'size=1m,mode=0700');
    if ('reason' in small) return ctx.skip(small.reason);
    try {
      const dir = path.join(small.dir, 'store');
      const opts = { device: dev, layout, fingerprint: FP, dir, chunkTokens: CHUNK, dramBytes: 8 * 12288 };
      await expect(KvStore.open({ ...opts, nvmeBytes: 4 << 20 })).rejects.toMatchObject({ code: 'ERR_NO_SPACE' });
      expect(existsSync(dir)).toBe(false);
      // An existing, empty directory is kept, and left empty.
      mkdirSync(dir, { mode: 0o700 });
      await expect(KvStore.open({ ...opts, nvmeBytes: 4 << 20 })).rejects.toMatchObject({ code: 'ERR_NO_SPACE' });
      expect(readdirSync(dir)).toEqual([]);
      const store = await KvStore.open({ ...opts, nvmeBytes: 32 * 12288 });
      expect(store.geometry.slotCount).toBe(32);
      await store.close();
      await indexReleased(dir);
    } finally {
      small.release();
    }
  });

  it('close on a full disk resolves: the store closes, its files and lock are released, lost use records are a warning', async (ctx) => {
    const small = mountTemp('tmpfs', 'size=1m,mode=0700');
    if ('reason' in small) return ctx.skip(small.reason);
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w);
    };
    try {
      const dir = path.join(small.dir, 'store');
      const store = await KvStore.open({ device: dev, layout, fingerprint: FP, dir, chunkTokens: CHUNK, dramBytes: 8 * 12288, nvmeBytes: 16 * 12288 });
      const tokens = randomTokens(CHUNK * 2);
      await store.put(tokens, cache, randomBlocks(2 * BPC, SPEC.numBlocks), stream, { durable: true });
      fill(path.join(small.dir, 'filler'), 0);
      // A lookup's counters are batched: the index write at close meets the full disk.
      store.lookup(tokens).release();
      process.on('warning', onWarning);
      await expect(store.close()).resolves.toBeUndefined();
      await new Promise<void>((r) => setImmediate(r)); // warnings are emitted on the next tick
      expect(store.closed).toBe(true);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatchObject({ name: 'KvflowWarning', code: 'KVFLOW_USE_RECORDS_LOST' });
      expect(warnings[0]!.message).toMatch(/lost 0 batched chunk use\(s\) and \d+ counter update\(s\): store index: .*disk is full/);
      // Released: no descriptor of the process names the directory, the writer lock is gone (an index
      // whose write failed is closed at once, never kept for the next open).
      expect(openUnder(dir)).toEqual([]);
      expect(readdirSync(path.join(dir, 'writers'))).toEqual([]);
      rmSync(path.join(small.dir, 'filler'));
      // The durable chunks are still there for the next open.
      const again = await KvStore.open({ device: dev, layout, fingerprint: FP, dir, chunkTokens: CHUNK, dramBytes: 8 * 12288, nvmeBytes: 16 * 12288 });
      const hit = again.lookup(tokens);
      expect(hit.chunks).toHaveLength(2);
      hit.release();
      await again.close();
      await indexReleased(dir);
    } finally {
      process.off('warning', onWarning);
      small.release();
    }
  });

  // In a child, whose stderr is the user's output: nothing may be printed there.
  it.for([0, 4096, 96 * 1024])('index writes on a full disk are ERR_NO_SPACE with errno 28, stderr silent (%i bytes left)', async (left, ctx) => {
    const small = mountTemp('tmpfs', 'size=1m,mode=0700');
    if ('reason' in small) return ctx.skip(small.reason);
    try {
      const r = await run(path.join(small.dir, 'store'), { nvmeBytes: 16 * 12288 }, left, '--fill');
      expect(r.signal).toBeNull();
      expect(r.out).toMatchObject({ ok: false, code: 'ERR_NO_SPACE', errno: 28 });
      expect(r.out!.message).toMatch(/^store index: /);
      expect(r.stderr).toBe('');
    } finally {
      small.release();
    }
  });
});

// LMDB prints "Write error: ..." to the process's stderr when a page write of a
// transaction finds the disk full, and reports a short one as EIO. A batch of
// use records for 6,400 chunks dirties far more than the 64 KiB floor.
describe('a large index write on a nearly full disk (child processes, tmpfs)', () => {
  const bigChild = path.join(import.meta.dirname, 'big-txn-child.mjs');
  const testing = pathToFileURL(path.join(root, 'dist', 'src', 'store', 'testing.js')).href;
  function runBig(dir: string, left: string): Promise<Run> {
    return new Promise((resolve, reject) => {
      const p = spawn(process.execPath, [bigChild, entry, testing, dir, left], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KVFLOW_BACKEND: 'cpu' } });
      let stdout = '';
      let stderr = '';
      const guard = setTimeout(() => p.kill('SIGKILL'), 60_000);
      p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      p.on('error', reject);
      p.on('close', (code, signal) => {
        clearTimeout(guard);
        const line = stdout.trim().split('\n').pop();
        resolve({ out: line ? (JSON.parse(line) as Outcome) : undefined, code, signal, stderr });
      });
    });
  }

  it.for(['none', '98304', '163840', '262144'])('%s bytes left: refused up front with ERR_NO_SPACE, stderr silent; with room it is written', { timeout: 90_000 }, async (left, ctx) => {
    const small = mountTemp('tmpfs', 'size=40m,mode=0700');
    if ('reason' in small) return ctx.skip(small.reason);
    try {
      const r = await runBig(path.join(small.dir, 'store'), left);
      expect(r.signal).toBeNull();
      expect(r.stderr).toBe('');
      if (left === 'none') {
        expect(r.out).toMatchObject({ ok: true });
      } else {
        expect(r.out).toMatchObject({ ok: false, code: 'ERR_NO_SPACE', errno: 28 });
        // Refused before LMDB started it: no page write was tried.
        expect(r.out!.message).toMatch(/^store index: record failed: the disk is full \(\d+ bytes free, fewer than the \d+ this index write may need\)$/);
      }
    } finally {
      small.release();
    }
  });
});

describe('rejected calls change nothing', () => {
  let dev: Device;
  let stream: Stream;
  let cache: KvCache;
  let store: KvStore;
  beforeAll(async () => {
    dev = open('cpu');
    stream = dev.createStream();
    cache = dev.allocKvCache(layout);
    store = await KvStore.open({ device: dev, layout, fingerprint: FP, chunkTokens: CHUNK, dramBytes: 16 * 12288, nvmeBytes: 16 * 12288 });
  });
  afterAll(async () => {
    await store?.close();
    await dev?.dispose();
  });

  function unchanged(tokens: number[], used: number): void {
    expect(store.lookup(tokens).chunks).toHaveLength(0);
    expect(store.stats().dram.usedBytes).toBe(used);
  }

  it.for([
    ['a string for options', 'durable'],
    ['a non-boolean durable', { durable: 'yes' }],
    ['a non-Stream stream', 'stream'],
    ['a short block table', 'blocks'],
  ] as const)('put with %s is ERR_INVALID_ARG before any chunk is taken', async ([, bad]) => {
    const tokens = randomTokens(CHUNK * 4);
    const blocks = randomBlocks(4 * BPC, SPEC.numBlocks);
    const used = store.stats().dram.usedBytes;
    const s = bad === 'stream' ? ({ record() {} } as unknown as Stream) : stream;
    const b = bad === 'blocks' ? blocks.slice(1) : blocks;
    const o = bad === 'stream' || bad === 'blocks' ? {} : (bad as unknown as object);
    await expect(store.put(tokens, cache, b, s, o)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    unchanged(tokens, used);
    // The prompt can be put afterwards, whole.
    expect((await store.put(tokens, cache, blocks, stream)).added).toBe(4);
  });

  it('null options are the defaults, for put and commit', async () => {
    const tokens = randomTokens(CHUNK * 4);
    const blocks = randomBlocks(4 * BPC, SPEC.numBlocks);
    expect((await store.put(tokens, cache, blocks, stream, null)).added).toBe(4);
    expect(store.lookup(tokens).chunks).toHaveLength(4);
    const other = randomTokens(CHUNK * 3);
    const put = store.beginPut(other);
    for (let l = 0; l < SPEC.layers; l++) store.putLayer(put, l, cache, blocks.slice(0, 3 * BPC), stream);
    expect((await store.commit(put, null)).added).toBe(3);
    expect(store.lookup(other).chunks).toHaveLength(3);
  });

  it('close with bad options is ERR_INVALID_ARG and leaves the store open; null options are the defaults', async () => {
    const s = await KvStore.open({ device: dev, layout, fingerprint: FP, chunkTokens: CHUNK, dramBytes: 4 * 12288, nvmeBytes: 4 * 12288 });
    for (const bad of [1.5, 'abandon', [true], { abandon: 'yes' }, { abandn: true }, 10n]) {
      await expect(s.close(bad as never), String(bad)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
      expect(s.closed).toBe(false);
    }
    const tokens = randomTokens(CHUNK);
    expect((await s.put(tokens, cache, randomBlocks(BPC, SPEC.numBlocks), stream)).added).toBe(1);
    await s.close(null);
    expect(s.closed).toBe(true);
  });

  it('commit with bad options is ERR_INVALID_ARG and leaves the put open', async () => {
    const tokens = randomTokens(CHUNK * 2);
    const blocks = randomBlocks(2 * BPC, SPEC.numBlocks);
    const put = store.beginPut(tokens);
    for (let l = 0; l < SPEC.layers; l++) store.putLayer(put, l, cache, blocks, stream);
    await expect(store.commit(put, 5 as unknown as object)).rejects.toMatchObject({ code: 'ERR_INVALID_ARG' });
    expect(store.lookup(tokens).chunks).toHaveLength(0);
    expect((await store.commit(put)).added).toBe(2);
  });
});
