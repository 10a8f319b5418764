// kvflow's diagnostics_channel messages, as a subscriber sees them: the
// fallbacks the CPU backend and this host produce, and the store's evictions,
// checksum failures and dropped demotions provoked for real.
import diagnostics from 'node:diagnostics_channel';
import { closeSync, mkdirSync, mkdtempSync, openSync, readSync, rmSync, writeSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';

import {
  CHANNEL_NAMES, KvLayout, KvStore, openDevice, type ChecksumMessage, type DemoteDroppedMessage, type Device, type EvictMessage,
  type FallbackMessage, type KvCache, type Stream,
} from '../../src/index.js';
import { dropDram, nvmeLocation } from '../../src/store/testing.js';
import { channels } from '../../src/util/diagnostics.js';
import { cudaSkipReason, randomBytes } from '../helpers/backends.js';
import { directRefusingDir, uringSkipReason, type Mounted } from '../helpers/io.js';
import { CHUNK, FP, SPEC, fillCache, randomBlocks, randomTokens } from '../helpers/store.js';

const layout = new KvLayout(SPEC);
const BPC = CHUNK / SPEC.blockTokens;
const RECORD = 12288;

/** Collects what `name` publishes until the test ends. */
const subscriptions: Array<() => void> = [];
function listen<T>(name: string): T[] {
  const got: T[] = [];
  const listener = (m: unknown): void => void got.push(m as T);
  diagnostics.subscribe(name, listener);
  subscriptions.push(() => diagnostics.unsubscribe(name, listener));
  return got;
}
afterEach(() => {
  for (const off of subscriptions.splice(0)) off();
});

describe('diagnostics channels', () => {
  let dev: Device;
  let stream: Stream;
  let src: KvCache;
  let dst: KvCache;
  let root: string;
  let n = 0;
  const dir = (): string => path.join(root, `s${n++}`);
  const openStore = (d: string, extra: Partial<Parameters<typeof KvStore.open>[0]> = {}): Promise<KvStore> =>
    KvStore.open({ device: dev, layout, fingerprint: FP, dir: d, chunkTokens: CHUNK, nvmeBytes: 16 * RECORD, dramBytes: 8 * RECORD, ...extra });

  beforeAll(async () => {
    dev = openDevice({ backend: 'cpu' });
    stream = dev.createStream();
    src = dev.allocKvCache(layout);
    dst = dev.allocKvCache(layout);
    await fillCache(dev, stream, src, src.buffers.map((b) => randomBytes(b.byteLength)));
    root = mkdtempSync(path.join(os.tmpdir(), 'kvflow-diag-test-'));
  });
  afterAll(async () => {
    await dev?.dispose();
    if (root) rmSync(root, { recursive: true, force: true });
  });

  it('has the documented names, and nothing subscribed by default', () => {
    expect(CHANNEL_NAMES).toEqual({
      fallback: 'kvflow:fallback', evict: 'kvflow:store:evict', checksum: 'kvflow:store:checksum', demoteDropped: 'kvflow:store:demote-dropped',
    });
    for (const [role, name] of Object.entries(CHANNEL_NAMES)) {
      expect(channels[role as keyof typeof channels].name).toBe(name);
      expect(channels[role as keyof typeof channels].hasSubscribers).toBe(false);
    }
  });

  it('an auto backend without a usable GPU publishes the CPU fallback with its reason; an asked-for CPU publishes nothing', async () => {
    const got = listen<FallbackMessage>(CHANNEL_NAMES.fallback);
    await openDevice({ backend: 'cpu' }).dispose();
    expect(got).toEqual([]);
    await openDevice({ backend: 'auto' }).dispose();
    if (cudaSkipReason === undefined) {
      expect(got).toEqual([]);
    } else {
      expect(got).toHaveLength(1);
      expect(got[0]).toEqual({ what: 'backend', requested: 'auto', chosen: 'cpu', reason: expect.stringMatching(/^no usable CUDA device: .+/) as string });
    }
  });

  it("engine 'auto' where io_uring cannot run publishes the fall back to posix, naming the file", async () => {
    const got = listen<FallbackMessage>(CHANNEL_NAMES.fallback);
    const p = path.join(dir(), 'engine.bin');
    mkdirSync(path.dirname(p));
    const f = await dev.openFile(p, { create: true, engine: 'auto', direct: 'off' });
    await f.dispose();
    const engine = got.filter((m) => m.what === 'io-engine');
    if (uringSkipReason === undefined) {
      expect(engine).toEqual([]);
    } else {
      expect(engine).toEqual([{ what: 'io-engine', requested: 'auto', chosen: 'posix', reason: `io_uring cannot be used: ${uringSkipReason}`, path: p }]);
    }
    // direct 'off' was asked for: no fallback; the CPU backend has no GPUDirect Storage to fall back from.
    expect(got.filter((m) => m.what !== 'io-engine')).toEqual([]);
  });

  describe('on a filesystem that refuses O_DIRECT', () => {
    let refusing: Mounted;
    beforeAll(() => {
      refusing = directRefusingDir();
    });
    afterAll(() => {
      if ('release' in refusing) refusing.release();
    });

    it("direct 'auto' publishes the fall back to buffered IO with the filesystem's reason", async (ctx) => {
      if ('reason' in refusing) return ctx.skip(refusing.reason);
      const got = listen<FallbackMessage>(CHANNEL_NAMES.fallback);
      const p = path.join(refusing.dir, `kvflow-diag-${process.pid}.bin`);
      try {
        const f = await dev.openFile(p, { create: true, engine: 'posix', direct: 'auto' });
        await f.dispose();
      } finally {
        rmSync(p, { force: true });
      }
      expect(got).toEqual([{
        what: 'direct', requested: 'auto', chosen: 'buffered', reason: `buffered IO: O_DIRECT refused by the filesystem at ${refusing.dir}: EINVAL`, path: p,
      }]);
    });
  });

  it('a DRAM eviction names the chunk evicted', async () => {
    const store = await openStore(dir(), { dramBytes: 2 * RECORD, admit: 'never' });
    const got = listen<EvictMessage>(CHANNEL_NAMES.evict);
    const prompts = [0, 1, 2].map(() => randomTokens(CHUNK));
    const blocks = randomBlocks(BPC, SPEC.numBlocks);
    for (const t of prompts) {
      await store.put(t, src, blocks, stream);
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(got).toEqual([{ tier: 'dram', keys: store.keys(prompts[0]!) }]);
    expect(store.stats().dram.evictions).toBe(1);
    await store.close();
  });

  it('an NVMe eviction names the chunks evicted', async () => {
    const store = await openStore(dir(), { nvmeBytes: 2 * RECORD });
    const got = listen<EvictMessage>(CHANNEL_NAMES.evict);
    const prompts = [0, 1, 2].map(() => randomTokens(CHUNK));
    const blocks = randomBlocks(BPC, SPEC.numBlocks);
    for (const t of prompts) {
      await store.put(t, src, blocks, stream, { durable: true });
      await new Promise((r) => setTimeout(r, 5));
    }
    expect(got.filter((m) => m.tier === 'nvme')).toEqual([{ tier: 'nvme', keys: store.keys(prompts[0]!) }]);
    expect(store.stats().shared.evictions).toBe(1);
    await store.close();
  });

  it('a flipped byte on NVMe publishes a checksum failure naming the chunk and layer', async () => {
    const d = dir();
    let store = await openStore(d);
    const tokens = randomTokens(CHUNK * 2);
    const blocks = randomBlocks(2 * BPC, SPEC.numBlocks);
    await store.put(tokens, src, blocks, stream, { durable: true });
    const bad = store.keys(tokens)[1]!;
    const loc = nvmeLocation(store, bad)!;
    await store.close();
    const fd = openSync(loc.file.path, 'r+');
    const at = loc.offset + store.extentBytes * 2 + 7; // layer 2 of chunk 1
    const b = Buffer.alloc(1);
    readSync(fd, b, 0, 1, at);
    b[0] = b[0]! ^ 0x01;
    writeSync(fd, b, 0, 1, at);
    closeSync(fd);

    store = await openStore(d);
    const got = listen<ChecksumMessage>(CHANNEL_NAMES.checksum);
    const hit = store.lookup(tokens);
    const to = randomBlocks(2 * BPC, SPEC.numBlocks);
    const events = [0, 1, 2].map((layer) => store.loadLayer(hit.chunks, layer, dst, to, stream));
    const outcomes = await Promise.allSettled(events.map((e) => e.done()));
    hit.release();
    await store.flush();
    expect(outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'rejected']);
    expect(got).toEqual([{ tier: 'nvme', key: bad, index: 1, layer: 2 }]);
    expect(store.stats().local.checksumFailures).toBe(1);
    await store.close();
  });

  it('a chunk past the demotion backlog publishes a dropped demotion', async () => {
    const store = await openStore(dir(), { admit: 'always', demoteBacklog: 1 });
    const got = listen<DemoteDroppedMessage>(CHANNEL_NAMES.demoteDropped);
    const tokens = randomTokens(CHUNK * 3);
    await store.put(tokens, src, randomBlocks(3 * BPC, SPEC.numBlocks), stream);
    await store.flush();
    const dropped = store.stats().local.demoteDropped ?? 0;
    expect(dropped).toBeGreaterThan(0);
    expect(got).toHaveLength(dropped);
    const keys = new Set(store.keys(tokens));
    for (const m of got) {
      expect(m.reason).toBe('backlog');
      expect(keys.has(m.key)).toBe(true);
    }
    dropDram(store);
    expect(store.lookup(tokens).chunks.length).toBeLessThan(3);
    await store.close();
  });
});
