// Power loss without privileges (issue #13 item 7). `kill -9` keeps the page
// cache, so a missing or misordered fsync cannot show there. This test
// records a store's slab writes, fsyncs and index commits, then rebuilds the
// directory as a power cut at any point of that history could have left it:
// every write synced before the cut is there, each write issued but not
// synced is there whole, missing, or torn (an arbitrary subset of its 4 KiB
// pages), and the index is as of its last commit before the cut (LMDB syncs
// each commit; see NOTES.md, "Power loss"). The rebuilt store must serve
// every chunk reported durable before the cut, byte-exact, and never a wrong
// byte of any other.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvLayout, KvStore, type Device, type KvCache, type KvFile, type Stream } from '../../src/index.js';
import { nvmeLocation, storeFiles, storeIndex } from '../../src/store/testing.js';
import { open, randomBytes } from '../helpers/backends.js';
import { CHUNK, FP, SPEC, fillCache, pieceOf, randomBlocks, randomTokens, readCache } from '../helpers/store.js';

const layout = new KvLayout(SPEC);
const BPC = CHUNK / SPEC.blockTokens;
const PAGE = 4096;
const PROMPTS = 14;

type Event =
  | { kind: 'write'; file: number; offset: number; bytes: Uint8Array; done: number; synced: number }
  | { kind: 'index'; image: Buffer; live: Set<string> }
  | { kind: 'durable'; keys: string[] };

interface Prompt {
  tokens: number[];
  blocks: number[];
  keys: string[];
  data: Uint8Array[];
}

describe('power loss (recorded writes replayed up to a cut)', () => {
  const base = mkdtempSync(path.join(os.tmpdir(), 'kvflow-power-'));
  let dev: Device;
  let stream: Stream;
  let src: KvCache;
  let dst: KvCache;
  const events: Event[] = [];
  const prompts: Prompt[] = [];
  let initialSlabs: Buffer[] = [];
  let slabNames: string[] = [];
  let concurrentIndexWrites = 0;
  const options = (dir: string) => ({ device: dev, layout, fingerprint: FP, dir, chunkTokens: CHUNK, dramBytes: 4 * 12288, nvmeBytes: 12 * 12288, admit: 'never' as const });

  beforeAll(async () => {
    dev = open('cpu');
    stream = dev.createStream();
    src = dev.allocKvCache(layout);
    dst = dev.allocKvCache(layout);
    const dir = path.join(base, 'recorded');
    const store = await KvStore.open(options(dir));
    const files = storeFiles(store);
    slabNames = files.map((f) => path.basename(f.path));
    initialSlabs = files.map((f) => readFileSync(f.path));
    const index = storeIndex(store);
    const indexFile = path.join(dir, 'index.mdb');
    const known = (): string[] => prompts.flatMap((p) => p.keys);
    const snapshot = (): void => {
      events.push({ kind: 'index', image: readFileSync(indexFile), live: new Set(known().filter((k) => nvmeLocation(store, k))) });
    };
    snapshot();
    // Slab writes: the bytes at submission; when they completed; fsyncs: which completed writes they cover.
    const record = (file: KvFile, n: number): void => {
      const writeSummed = file.writeSummed.bind(file);
      file.writeSummed = async (buffer, pieces, o) => {
        const at = pieces.map((p) => {
          const e: Event = { kind: 'write', file: n, offset: p.fileOffset, bytes: buffer.array.slice(p.srcOffset, p.srcOffset + p.bytes), done: Infinity, synced: Infinity };
          events.push(e);
          return e;
        });
        const sums = await writeSummed(buffer, pieces, o);
        for (const e of at) if (e.kind === 'write') e.done = events.length;
        return sums;
      };
      const sync = file.sync.bind(file);
      file.sync = async () => {
        const covered = events.filter((e): e is Extract<Event, { kind: 'write' }> => e.kind === 'write' && e.file === n && e.done <= events.length && e.synced === Infinity);
        await sync();
        for (const e of covered) e.synced = events.length;
      };
    };
    files.forEach(record);
    // Index write transactions: the index file as each left it (LMDB syncs before replying).
    for (const op of ['reserve', 'commit', 'drop', 'flushTouches'] as const) {
      const original = (index[op] as (...a: unknown[]) => Promise<unknown>).bind(index);
      let inFlight = 0;
      (index as unknown as Record<string, unknown>)[op] = async (...args: unknown[]) => {
        if (++inFlight > 1) concurrentIndexWrites++;
        try {
          return await original(...args);
        } finally {
          inFlight--;
          snapshot();
        }
      };
    }
    for (let i = 0; i < PROMPTS; i++) {
      const chunks = 1 + (i % 3);
      const data = src.buffers.map((b) => randomBytes(b.byteLength));
      await fillCache(dev, stream, src, data);
      const p: Prompt = { tokens: randomTokens(chunks * CHUNK), blocks: randomBlocks(chunks * BPC, SPEC.numBlocks), keys: [], data };
      p.keys = store.keys(p.tokens);
      prompts.push(p);
      const r = await store.put(p.tokens, src, p.blocks, stream, { durable: true });
      events.push({ kind: 'durable', keys: r.durable });
    }
    await store.close();
  }, 60_000);

  afterAll(async () => {
    await dev?.dispose();
    rmSync(base, { recursive: true, force: true });
  });

  it('the recording saw evictions, syncs before every durable report, and index writes one at a time', () => {
    expect(concurrentIndexWrites).toBe(0);
    const durable = events.filter((e) => e.kind === 'durable').flatMap((e) => e.keys);
    expect(durable.length).toBe(prompts.reduce((n, p) => n + p.keys.length, 0));
    // 28 chunks through 12 slots: the last index has fewer than were made durable.
    const last = [...events].reverse().find((e) => e.kind === 'index')!;
    expect(last.kind === 'index' && last.live.size).toBeLessThan(durable.length);
    expect(events.some((e) => e.kind === 'write' && e.synced < Infinity)).toBe(true);
  });

  /**
   * Builds the directory a power cut before event `cut` (from 1: the first
   * event is the index as the open left it) leaves; `seed` decides the fate
   * of writes not synced by then.
   */
  function rebuild(dir: string, cut: number, seed: number): { required: Set<string> } {
    let rng = seed >>> 0 || 1;
    const next = (): number => {
      rng ^= rng << 13; rng >>>= 0; rng ^= rng >>> 17; rng ^= rng << 5; rng >>>= 0;
      return rng;
    };
    const slabs = initialSlabs.map((b) => Buffer.from(b));
    let index: Extract<Event, { kind: 'index' }> | undefined;
    const durable = new Set<string>();
    events.slice(0, cut).forEach((e) => {
      if (e.kind === 'index') index = e;
      if (e.kind === 'durable') for (const k of e.keys) durable.add(k);
      if (e.kind !== 'write') return;
      const slab = slabs[e.file]!;
      if (e.synced < cut) {
        slab.set(e.bytes, e.offset);
        return;
      }
      // Not synced before the cut: whole, missing, or some of its pages.
      const fate = next() % 3;
      if (fate === 1) return;
      for (let o = 0; o < e.bytes.length; o += PAGE) {
        if (fate === 0 || next() % 2 === 0) slab.set(e.bytes.subarray(o, Math.min(o + PAGE, e.bytes.length)), e.offset + o);
      }
    });
    mkdirSync(dir, { mode: 0o700 });
    writeFileSync(path.join(dir, 'index.mdb'), index!.image);
    slabs.forEach((b, i) => writeFileSync(path.join(dir, slabNames[i]!), b));
    // Reported durable and not evicted by a commit before the cut.
    return { required: new Set([...durable].filter((k) => index!.live.has(k))) };
  }

  it('every chunk reported durable before a random cut survives byte-exact; nothing else is served wrong', async () => {
    let n = 0;
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 1, max: events.length }), fc.integer({ min: 1, max: 0x7fffffff }), async (cut, seed) => {
        const dir = path.join(base, `cut-${n++}`);
        try {
          const { required } = rebuild(dir, cut, seed);
          const store = await KvStore.open(options(dir));
          try {
            // Nothing appears that was not put: every index entry is a chunk of a prompt.
            const present = prompts.flatMap((p) => p.keys).filter((k) => nvmeLocation(store, k));
            expect(store.stats().nvme.chunks).toBe(present.length);
            for (const k of required) expect(present, `durable chunk ${k} lost (cut ${cut})`).toContain(k);
            for (const p of prompts) {
              const hit = store.lookup(p.tokens);
              try {
                if (hit.chunks.length === 0) continue;
                await fillCache(dev, stream, dst, dst.buffers.map((b) => new Uint8Array(b.byteLength).fill(0xa5)));
                for (let l = 0; l < SPEC.layers; l++) {
                  await store.loadLayer(hit.chunks, l, dst, p.blocks, stream).done().catch(() => undefined);
                }
                const outcome = await hit.settled();
                const got = await readCache(dev, stream, dst);
                hit.chunks.forEach((c, i) => {
                  const key = p.keys[i]!;
                  if (outcome.failed.includes(c.index)) {
                    expect(required.has(key), `durable chunk ${key} failed its load: ${outcome.codes[c.index]} (cut ${cut})`).toBe(false);
                    return;
                  }
                  // Served: its bytes are the ones put.
                  for (let l = 0; l < SPEC.layers; l++) {
                    for (const kv of [0, 1] as const) {
                      for (const b of p.blocks.slice(i * BPC, (i + 1) * BPC)) {
                        expect(Buffer.compare(pieceOf(dst, got, l, kv, b), pieceOf(src, p.data, l, kv, b)), `chunk ${key} layer ${l} (cut ${cut})`).toBe(0);
                      }
                    }
                  }
                });
                // A required chunk whose prefix was served is found too.
                const served = hit.chunks.length;
                for (let i = served; i < p.keys.length; i++) {
                  if (i === served && required.has(p.keys[i]!)) expect.fail(`durable chunk ${p.keys[i]} not found by lookup (cut ${cut})`);
                }
              } finally {
                hit.release();
              }
            }
          } finally {
            await store.close();
          }
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }),
      { numRuns: 30 },
    );
  }, 120_000);
});
