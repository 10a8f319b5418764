// One index thread serves the stores of a directory, and lingers after the
// last closed (#13 item 8: a thread per store cost a worker's start and end
// at every open and close, and kept memory of each).
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

const indexOf = (dir: string): string => path.join(dir, 'index.mdb');

/** Waits until `dir`'s index thread has ended `exits` times in all and none runs (bounded). */
async function untilEnded(dir: string, exits: number): Promise<void> {
  const state = (): ReturnType<typeof indexThreadState> => indexThreadState(indexOf(dir));
  for (let i = 0; i < 300 && (state().exits < exits || state().running); i++) await sleep(10);
  expect(state()).toMatchObject({ exits, running: false });
}

describe.each(backends)('the stores\' index thread, on $backend', ({ backend, skip }) => {
  const fx = storeSuite(backend, skip, 'kvflow-index-thread-');
  afterAll(() => setIndexThreadLinger(INDEX_THREAD_LINGER_MS));

  it.skipIf(skip)('stores opened and closed one after another share one thread, and each sees what the one before it wrote', async () => {
    const dir = fx.storeDir();
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
    // One thread served all six stores of the directory, and lingers.
    expect(indexThreadState(indexOf(dir))).toEqual({ starts: 1, exits: 0, running: true });
  });

  it.skipIf(skip)('the thread ends once no store used it for the linger time, and the next open starts another', async () => {
    setIndexThreadLinger(20);
    const dir = fx.storeDir();
    let store = await fx.openStore(dir);
    const tokens = randomTokens(CHUNK * 2);
    await store.put(tokens, fx.src, randomBlocks(2 * BPC, SPEC.numBlocks), fx.stream, { durable: true });
    await store.close();
    // A second close waits for the same one.
    await store.close();
    await untilEnded(dir, 1);
    store = await fx.openStore(dir);
    expect(indexThreadState(indexOf(dir))).toEqual({ starts: 2, exits: 1, running: true });
    expect(store.lookup(tokens).tokens).toBe(2 * CHUNK);
    // The new thread writes: a second prompt becomes durable and is found after a reopen.
    const more = randomTokens(CHUNK);
    await store.put(more, fx.src, randomBlocks(BPC, SPEC.numBlocks), fx.stream, { durable: true });
    await store.close();
    await untilEnded(dir, 2);
    store = await fx.openStore(dir);
    expect(store.lookup(more).tokens).toBe(CHUNK);
    await store.close();
    await untilEnded(dir, 3);
    expect(indexThreadState(indexOf(dir)).starts).toBe(3);
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
    const closing = broken.close();
    expect(broken.close()).toBe(closing);
    await closing;
    await expect(broken.call('record', [[], {}])).rejects.toMatchObject({ code: 'ERR_DISPOSED' });
    // Arguments that cannot cross to the thread throw at once and leave nothing pending.
    const other = new IndexThread(path.join(fx.root, 'other', 'index.mdb'));
    await expect(other.call('record', [[() => 1], {}])).rejects.toThrow();
    await other.close();
    const tokens = randomTokens(CHUNK);
    await store.put(tokens, fx.src, randomBlocks(BPC, SPEC.numBlocks), fx.stream, { durable: true });
    await store.close();
    const again = await fx.openStore(dir);
    expect(again.lookup(tokens).tokens).toBe(CHUNK);
    await again.close();
  });
});
