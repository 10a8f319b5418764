// The index thread keeps a closed store's LMDB environment for the next open
// of the same file while it lingers (#13 item 8: lmdb-js keeps ~3 KiB of
// every environment that really closes, so a store closed and opened again
// in a loop grew without bound), and never hands it to a file that replaced
// the one it has open: a directory made again, an index reset.
import { spawnSync } from 'node:child_process';
import { closeSync, openSync, readFileSync, readdirSync, realpathSync, rmSync, statSync, writeSync } from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, afterEach, describe, expect, it } from 'vitest';

import type { KvStore } from '../../src/index.js';
import { INDEX_THREAD_LINGER_MS, indexEnvState, indexThreadState, setIndexThreadLinger } from '../../src/store/testing.js';
import { backends, randomBytes } from '../helpers/backends.js';
import { CHUNK, FP, SPEC, fillCache, pieceOf, randomBlocks, randomTokens, readCache } from '../helpers/store.js';
import { storeSuite } from '../helpers/suite.js';

const BPC = CHUNK / SPEC.blockTokens;
const PAGE = 4096;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const indexOf = (dir: string): string => path.join(dir, 'index.mdb');

/**
 * The process's mappings of `file` (LMDB maps an environment's data file
 * once): each as its address range and inode, live or of a removed file.
 * One environment the whole time shows as the same range; a new one maps
 * the file anew.
 */
function mappings(file: string): { live: string[]; removed: string[] } {
  const live: string[] = [];
  const removed: string[] = [];
  for (const line of readFileSync('/proc/self/maps', 'utf8').split('\n')) {
    const f = line.trim().split(/\s+/);
    const name = f.slice(5).join(' ');
    if (name === file) live.push(`${f[0]} ${f[4]}`);
    else if (name === `${file} (deleted)`) removed.push(`${f[0]} ${f[4]}`);
  }
  return { live, removed };
}

/** Overwrites `bytes` of `file` at `offset`, in place (the same inode). */
function patch(file: string, offset: number, bytes: Uint8Array): void {
  const fd = openSync(file, 'r+');
  try {
    writeSync(fd, bytes, 0, bytes.byteLength, offset);
  } finally {
    closeSync(fd);
  }
}

describe.each(backends)('the index thread\'s kept environment, on $backend', ({ backend, skip }) => {
  const fx = storeSuite(backend, skip, 'kvflow-index-env-');
  afterEach(() => setIndexThreadLinger(INDEX_THREAD_LINGER_MS));
  afterAll(() => setIndexThreadLinger(INDEX_THREAD_LINGER_MS));

  /** A fresh store directory and its index file, as /proc names it. */
  function place(): { dir: string; file: string } {
    const dir = path.join(realpathSync(fx.root), path.basename(fx.storeDir()));
    return { dir, file: indexOf(dir) };
  }

  /** Puts a random prompt of `chunks` chunks, durably; returns its tokens and source blocks. */
  async function putSome(store: KvStore, chunks: number): Promise<{ tokens: number[]; from: number[] }> {
    const tokens = randomTokens(chunks * CHUNK);
    const from = randomBlocks(chunks * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, from, fx.stream, { durable: true });
    return { tokens, from };
  }

  /** The prompt is found whole on NVMe (a store's DRAM tier starts empty) and loads back byte for byte into a poisoned cache. */
  async function loadsBack(store: KvStore, p: { tokens: number[]; from: number[] }, what: string): Promise<void> {
    const hit = store.lookup(p.tokens);
    expect(hit.tokens, what).toBe(p.tokens.length);
    expect(hit.nvme, what).toBe(p.tokens.length / CHUNK);
    await fillCache(fx.dev, fx.stream, fx.dst, fx.dst.buffers.map((b) => new Uint8Array(b.byteLength).fill(0xa5)));
    const to = randomBlocks(p.from.length, SPEC.numBlocks);
    for (let layer = 0; layer < SPEC.layers; layer++) store.loadLayer(hit.chunks, layer, fx.dst, to, fx.stream);
    expect(await hit.settled(), what).toMatchObject({ ok: true });
    hit.release();
    const got = await readCache(fx.dev, fx.stream, fx.dst);
    for (let layer = 0; layer < SPEC.layers; layer++) {
      for (let i = 0; i < to.length; i++) {
        for (const kv of [0, 1] as const) {
          const same = Buffer.compare(pieceOf(fx.dst, got, layer, kv, to[i]!), pieceOf(fx.src, fx.srcData, layer, kv, p.from[i]!));
          expect(same, `${what}: layer ${layer} block ${i} kv ${kv}`).toBe(0);
        }
      }
    }
  }

  /** No chunk of the prompt is found. */
  function gone(store: KvStore, tokens: number[]): void {
    const hit = store.lookup(tokens);
    expect(hit.tokens).toBe(0);
    hit.release();
  }

  /** Closes the last store of `dir` with a short linger and waits (bounded) until its thread ended. */
  async function closeForGood(store: KvStore, dir: string): Promise<void> {
    setIndexThreadLinger(20);
    const exits = indexThreadState(indexOf(dir)).exits;
    await store.close();
    for (let i = 0; i < 300 && (indexThreadState(indexOf(dir)).exits === exits || indexThreadState(indexOf(dir)).running); i++) await sleep(10);
    expect(indexThreadState(indexOf(dir))).toMatchObject({ exits: exits + 1, running: false });
  }

  it.skipIf(skip)('a store closed and opened again within the linger takes the kept environment: none is opened, the file stays mapped as it was, chunks written before the close load back exactly', async () => {
    setIndexThreadLinger(60_000);
    const { dir, file } = place();
    let store = await fx.openStore(dir);
    const a = await putSome(store, 2);
    const mapped = mappings(file);
    expect(mapped.live).toHaveLength(1);
    await store.close();
    // Closed, and still mapped: the thread kept the environment (before, the last close unmapped it).
    expect(await indexEnvState(file)).toEqual({ opened: 1, reused: 0, closed: 0, kept: 1 });
    expect(mappings(file)).toEqual(mapped);
    store = await fx.openStore(dir);
    expect(await indexEnvState(file)).toEqual({ opened: 1, reused: 1, closed: 0, kept: 0 });
    // One environment, the same one: this thread's open and the thread's both joined it.
    expect(mappings(file)).toEqual(mapped);
    await loadsBack(store, a, 'after the first reopen');
    // Writes go through the kept environment, and are there after the next reopen.
    const b = await putSome(store, 1);
    await store.close();
    store = await fx.openStore(dir);
    expect(await indexEnvState(file)).toEqual({ opened: 1, reused: 2, closed: 0, kept: 0 });
    await loadsBack(store, a, 'after the second reopen (a)');
    await loadsBack(store, b, 'after the second reopen (b)');
    // Past the linger the environment is closed for real and the file no longer mapped.
    await closeForGood(store, dir);
    expect(await indexEnvState(file)).toEqual({ opened: 1, reused: 2, closed: 1, kept: 0 });
    expect(mappings(file)).toEqual({ live: [], removed: [] });
    // The next open starts a thread and opens an environment again, and finds everything.
    store = await fx.openStore(dir);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 2, closed: 1, kept: 0 });
    await loadsBack(store, a, 'after the linger (a)');
    await loadsBack(store, b, 'after the linger (b)');
    await closeForGood(store, dir);
    expect(await indexEnvState(file)).toMatchObject({ closed: 2, kept: 0 });
  });

  it.skipIf(skip)('a directory removed and made again between a close and an open gets a fresh environment: the kept one is closed, nothing of the old index is found', async () => {
    setIndexThreadLinger(60_000);
    const { dir, file } = place();
    let store = await fx.openStore(dir);
    const a = await putSome(store, 2);
    const old = statSync(file).ino;
    await store.close();
    rmSync(dir, { recursive: true, force: true });
    // The kept environment still maps the removed file...
    expect(mappings(file)).toMatchObject({ live: [], removed: [expect.stringMatching(new RegExp(` ${old}$`))] });
    store = await fx.openStore(dir);
    // ...and is closed at the next open, which opens the new file.
    expect(statSync(file).ino).not.toBe(old);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 0, closed: 1, kept: 0 });
    expect(mappings(file)).toEqual({ live: [expect.stringMatching(new RegExp(` ${statSync(file).ino}$`))], removed: [] });
    gone(store, a.tokens);
    expect(store.stats().nvme.chunks).toBe(0);
    const b = await putSome(store, 1);
    await store.close();
    // The new file's environment is kept and taken again in turn.
    store = await fx.openStore(dir);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 1, closed: 1, kept: 0 });
    gone(store, a.tokens);
    await loadsBack(store, b, 'in the new directory');
    await closeForGood(store, dir);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 1, closed: 2, kept: 0 });
  });

  it.skipIf(skip)('an index damaged between a close and an open is still refused by the check; a reset sets it aside and gets a fresh environment with no stale entries', async () => {
    setIndexThreadLinger(60_000);
    const { dir, file } = place();
    let store = await fx.openStore(dir);
    const a = await putSome(store, 2);
    await store.close();
    expect(await indexEnvState(file)).toMatchObject({ opened: 1, kept: 1 });
    // Both meta pages overwritten in place: the file the kept environment has open.
    patch(file, 0, randomBytes(2 * PAGE));
    await expect(fx.openStore(dir)).rejects.toMatchObject({ code: 'ERR_IO', message: expect.stringMatching(/damaged.*onCorruptIndex: 'reset'/) });
    // The check ran before any open: the thread was not asked, the kept environment is untouched.
    expect(await indexEnvState(file)).toEqual({ opened: 1, reused: 0, closed: 0, kept: 1 });
    store = await fx.openStore(dir, { onCorruptIndex: 'reset' });
    expect(readdirSync(dir).some((f) => /^index\.mdb\.damaged-/.test(f))).toBe(true);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 0, closed: 1, kept: 0 });
    expect(mappings(file)).toEqual({ live: [expect.stringMatching(new RegExp(` ${statSync(file).ino}$`))], removed: [] });
    gone(store, a.tokens);
    expect(store.stats().nvme.chunks).toBe(0);
    const b = await putSome(store, 1);
    await store.close();
    store = await fx.openStore(dir);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 1, closed: 1, kept: 0 });
    gone(store, a.tokens);
    await loadsBack(store, b, 'after the reset');
    await closeForGood(store, dir);
  });

  it.skipIf(skip)('two stores open on one directory at once have an environment each; once both closed one is kept, and the next open takes it', async () => {
    setIndexThreadLinger(60_000);
    const { dir, file } = place();
    const first = await fx.openStore(dir);
    const second = await fx.openStore(dir);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 0, closed: 0, kept: 0 });
    const a = await putSome(first, 1);
    const b = await putSome(second, 2);
    // Each sees what the other made durable.
    await loadsBack(first, b, 'the first store, the second\'s prompt');
    await loadsBack(second, a, 'the second store, the first\'s prompt');
    await first.close();
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 0, closed: 0, kept: 1 });
    // The second store still writes after the first one's environment was kept.
    const c = await putSome(second, 1);
    await second.close();
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 0, closed: 1, kept: 1 });
    const third = await fx.openStore(dir);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 1, closed: 1, kept: 0 });
    for (const [p, what] of [[a, 'a'], [b, 'b'], [c, 'c']] as const) await loadsBack(third, p, `the third store, ${what}`);
    await closeForGood(third, dir);
    expect(await indexEnvState(file)).toEqual({ opened: 2, reused: 1, closed: 2, kept: 0 });
  });

  it.skipIf(skip || backend !== 'cpu')('a process whose closed store\'s environment is kept exits by itself', () => {
    const { dir } = place();
    const entry = (p: string): string => pathToFileURL(path.resolve(import.meta.dirname, '..', '..', 'dist', 'src', p)).href;
    const script = `const kv = await import(${JSON.stringify(entry('index.js'))});
const hooks = await import(${JSON.stringify(entry('store/testing.js'))});
const dev = kv.openDevice({ backend: 'cpu' });
const o = { device: dev, layout: new kv.KvLayout(${JSON.stringify(SPEC)}), fingerprint: ${JSON.stringify(FP)}, dir: ${JSON.stringify(dir)}, chunkTokens: ${CHUNK}, nvmeBytes: 8 * 12288, dramBytes: 4 * 12288 };
for (let i = 0; i < 3; i++) await (await kv.KvStore.open(o)).close();
await dev.dispose();
console.log(JSON.stringify(await hooks.indexEnvState(${JSON.stringify(indexOf(dir))})));`;
    const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8', timeout: 60_000, killSignal: 'SIGKILL', env: { ...process.env, KVFLOW_BACKEND: 'cpu' } });
    expect(r.signal, `the child hung (killed): ${r.stderr}`).toBeNull();
    expect(r.status, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout.trim().split('\n').pop()!)).toEqual({ opened: 1, reused: 2, closed: 0, kept: 1 });
  });
});
