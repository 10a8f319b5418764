// One index thread serves every store of a process (#13 item 8: a thread per
// store cost a worker's start and end at every open and close, and kept
// memory of each).
import { mkdirSync } from 'node:fs';
import path from 'node:path';

import { afterAll, describe, expect, it } from 'vitest';

import { KvflowError } from '../../src/index.js';
import { IndexThread, INDEX_THREAD_LINGER_MS, indexThreadState, setIndexThreadLinger } from '../../src/store/testing.js';
import { backends } from '../helpers/backends.js';
import { CHUNK, SPEC, randomBlocks, randomTokens } from '../helpers/store.js';
import { storeSuite } from '../helpers/suite.js';

const BPC = CHUNK / SPEC.blockTokens;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** Waits until the lingering thread ended (bounded). */
async function untilStopped(): Promise<void> {
  for (let i = 0; i < 200 && indexThreadState().running; i++) await sleep(10);
  expect(indexThreadState().running).toBe(false);
}

describe.each(backends)('the stores\' index thread, on $backend', ({ backend, skip }) => {
  const fx = storeSuite(backend, skip, 'kvflow-index-thread-');
  afterAll(() => setIndexThreadLinger(INDEX_THREAD_LINGER_MS));

  it.skipIf(skip)('stores opened and closed one after another share one thread, and each sees what the one before it wrote', async () => {
    const dir = fx.storeDir();
    const before = indexThreadState().starts;
    const prompts: number[][] = [];
    for (let i = 0; i < 6; i++) {
      const store = await fx.openStore(dir);
      // Everything earlier stores made durable is found.
      for (const p of prompts) expect(store.lookup(p).tokens, `store ${i}`).toBe(CHUNK);
      const tokens = randomTokens(CHUNK);
      await store.put(tokens, fx.src, randomBlocks(BPC, SPEC.numBlocks), fx.stream, { durable: true });
      prompts.push(tokens);
      await store.close();
    }
    // One start at most: a thread that lingered from an earlier test may have served them all.
    expect(indexThreadState().starts - before).toBeLessThanOrEqual(1);
    expect(indexThreadState().running).toBe(true);
  });

  it.skipIf(skip)('the thread ends once no store used it for the linger time, and the next open starts another', async () => {
    setIndexThreadLinger(20);
    const dir = fx.storeDir();
    let store = await fx.openStore(dir);
    const tokens = randomTokens(CHUNK * 2);
    await store.put(tokens, fx.src, randomBlocks(2 * BPC, SPEC.numBlocks), fx.stream, { durable: true });
    await store.close();
    await untilStopped();
    const before = indexThreadState().starts;
    store = await fx.openStore(dir);
    expect(indexThreadState()).toEqual({ starts: before + 1, running: true });
    expect(store.lookup(tokens).tokens).toBe(2 * CHUNK);
    // The new thread writes: a second prompt becomes durable and is found after a reopen.
    const more = randomTokens(CHUNK);
    await store.put(more, fx.src, randomBlocks(BPC, SPEC.numBlocks), fx.stream, { durable: true });
    await store.close();
    store = await fx.openStore(dir);
    expect(store.lookup(more).tokens).toBe(CHUNK);
    await store.close();
    await untilStopped();
    setIndexThreadLinger(INDEX_THREAD_LINGER_MS);
  });

  it.skipIf(skip)('an index that cannot be opened on the thread fails its own requests with a code; a store beside it keeps writing', async () => {
    const dir = fx.storeDir();
    const store = await fx.openStore(dir);
    // A directory where the index file should be: the thread cannot open it.
    const bad = path.join(fx.root, 'not-an-index');
    mkdirSync(path.join(bad, 'index.mdb'), { recursive: true });
    const broken = new IndexThread(path.join(bad, 'index.mdb'));
    const refused = await broken.call('record', [[], {}]).then(() => undefined, (e: unknown) => e);
    expect(refused).toBeInstanceOf(KvflowError);
    expect(refused).toMatchObject({ code: 'ERR_IO', errno: 21 }); // EISDIR, kept across the thread
    await broken.close();
    await expect(broken.call('record', [[], {}])).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    const tokens = randomTokens(CHUNK);
    await store.put(tokens, fx.src, randomBlocks(BPC, SPEC.numBlocks), fx.stream, { durable: true });
    await store.close();
    const again = await fx.openStore(dir);
    expect(again.lookup(tokens).tokens).toBe(CHUNK);
    await again.close();
  });
});
