// Whole-process store behaviour: writers killed with SIGKILL at random
// moments, and two writers sharing one directory. Children run the built
// package (dist/, made by `npm test`'s pretest step).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

import { KvLayout, KvStore, openDevice } from '../../src/index.js';
import { Catalog } from '../../src/store/catalog.js';
import { dropDram, expireLeases } from '../../src/store/testing.js';
import { randomBytes } from '../helpers/backends.js';
import { CHUNK, FP, SPEC, fillCache, pieceOf, randomBlocks, randomTokens, readCache } from '../helpers/store.js';

const root = path.resolve(import.meta.dirname, '..', '..');
const entry = pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href;
const child = path.join(import.meta.dirname, 'child.mjs');
const base = mkdtempSync(path.join(os.tmpdir(), 'kvflow-store-proc-'));

afterAll(() => rmSync(base, { recursive: true, force: true }));

interface Run {
  lines: string[];
  code: number | null;
  signal: NodeJS.Signals | null;
  stderr: string;
}

/** Runs the child; `killAfter(lines)` may return a delay in ms after which it is SIGKILLed. */
function run(args: string[], killAfterReady?: number, barrier?: string): Promise<Run> {
  return new Promise((resolve, reject) => {
    const env = { ...process.env, KVFLOW_BACKEND: 'cpu', ...(barrier ? { KVFLOW_TEST_BARRIER: barrier } : {}) };
    const p = spawn(process.execPath, [child, entry, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env });
    const lines: string[] = [];
    let stderr = '';
    let partial = '';
    const guard = setTimeout(() => p.kill('SIGKILL'), 60_000);
    p.stdout.setEncoding('utf8');
    p.stdout.on('data', (d: string) => {
      partial += d;
      const parts = partial.split('\n');
      partial = parts.pop()!;
      for (const line of parts) {
        lines.push(line);
        if (line === 'ready' && killAfterReady !== undefined) setTimeout(() => p.kill('SIGKILL'), killAfterReady);
      }
    });
    p.stderr.setEncoding('utf8');
    p.stderr.on('data', (d: string) => (stderr += d));
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(guard);
      if (partial) lines.push(partial);
      resolve({ lines, code, signal, stderr });
    });
  });
}

function durable(r: Run): number[] {
  return r.lines.filter((l) => l.startsWith('durable ')).map((l) => Number(l.slice(8)));
}

describe('KvStore across processes (cpu)', () => {
  it('a writer killed with SIGKILL at random moments never leaves a bad chunk and loses none reported durable', async () => {
    const dir = path.join(base, 'crash');
    const reported: number[] = [];
    let killedMidway = 0;
    for (let round = 0; round < 50; round++) {
      const first = round * 1000;
      const w = await run([dir, String(first), '400'], Math.floor(Math.random() * 120));
      expect(w.stderr, `round ${round}`).toBe('');
      if (w.signal === 'SIGKILL') killedMidway++;
      const got = durable(w);
      reported.push(...got);
      // Check this round's chunks (and one more than was reported: it may be
      // entered or not, but must be right if it is), plus a sample of older ones.
      const c = await run([dir, String(first), String(got.length + 1), '--check']);
      expect(c.stderr, `round ${round} check`).toBe('');
      const bad = c.lines.filter((l) => l.startsWith('mismatch') || l.startsWith('load-error'));
      expect(bad, `round ${round}`).toEqual([]);
      // Every slot is in exactly one of entries, free and reserved: the dead writer's reservations were freed.
      expect(c.lines.filter((l) => l.startsWith('accounting')), `round ${round}`).toEqual(['accounting ok']);
      const ok = new Set(c.lines.filter((l) => l.startsWith('ok ')).map((l) => Number(l.slice(3))));
      for (const j of got) expect(ok.has(j), `durable chunk ${j} of round ${round}`).toBe(true);
    }
    // Every chunk ever reported durable is still there and right.
    const all = await run([dir, '0', String(50 * 1000), '--check']);
    const ok = new Set(all.lines.filter((l) => l.startsWith('ok ')).map((l) => Number(l.slice(3))));
    expect(all.lines.filter((l) => l.startsWith('mismatch') || l.startsWith('load-error'))).toEqual([]);
    for (const j of reported) expect(ok.has(j), `durable chunk ${j}`).toBe(true);
    expect(killedMidway).toBeGreaterThan(25);
  }, 240_000);

  it('a live writer keeps its reservation when another process opens the store; once it is killed, the next open frees it', async () => {
    const dir = path.join(base, 'liveness');
    const proc = spawn(process.execPath, [child, entry, dir, '7', '1', '--hold'], { stdio: ['ignore', 'pipe', 'pipe'] });
    try {
      await new Promise<void>((resolve, reject) => {
        proc.stdout.setEncoding('utf8');
        proc.stdout.on('data', (d: string) => d.includes('holding') && resolve());
        proc.on('exit', () => reject(new Error('the writer exited early')));
      });
      let report = Catalog.inspect(dir);
      for (let i = 0; i < 200 && report.reserved === 0; i++) {
        await new Promise((r) => setTimeout(r, 10));
        report = Catalog.inspect(dir);
      }
      expect(report.reserved).toBe(1);
      expect(report.reservations[0]!.alive).toBe(true);
      // Another process opens the store (recovery runs): the live writer's slot stays reserved.
      const c = await run([dir, '0', '1', '--check']);
      expect(c.lines).toContain('accounting ok');
      expect(Catalog.inspect(dir).reserved).toBe(1);
    } finally {
      proc.kill('SIGKILL');
      await new Promise((r) => proc.once('close', r));
    }
    expect(Catalog.inspect(dir).reservations[0]!.alive).toBe(false);
    const c = await run([dir, '0', '1', '--check']);
    expect(c.lines).toContain('accounting ok');
    const after = Catalog.inspect(dir);
    expect([after.reserved, after.free]).toEqual([0, 1]);
  }, 60_000);

  it('two processes writing and reading one store at once: no lost index updates, no chunk mixed up', async () => {
    const dir = path.join(base, 'shared');
    const barrier = path.join(base, 'go');
    const both = Promise.all([
      run([dir, '0', '150', '--verify', '75', '150'], undefined, barrier),
      run([dir, '75', '150', '--verify', '0', '150'], undefined, barrier),
    ]);
    // Both open the store, then start writing together.
    await new Promise((r) => setTimeout(r, 1500));
    writeFileSync(barrier, '');
    const [a, b] = await both;
    for (const r of [a, b]) {
      expect(r.stderr).toBe('');
      expect(r.code).toBe(0);
      expect(r.lines.filter((l) => l.startsWith('mismatch') || l.startsWith('load-error'))).toEqual([]);
    }
    expect(durable(a)).toHaveLength(150);
    expect(durable(b)).toHaveLength(150);
    // They read each other's chunks while both wrote (how many depends on timing).
    expect([a, b].map((r) => r.lines.filter((l) => l.startsWith('verified ')).length).reduce((x, y) => x + y)).toBeGreaterThan(0);
    const c = await run([dir, '0', '225', '--check']);
    expect(c.lines.filter((l) => l.startsWith('ok '))).toHaveLength(225);
    expect(c.lines.filter((l) => l.startsWith('accounting'))).toEqual(['accounting ok']);
  }, 120_000);

  it('a hit leases its NVMe chunks against another process\'s eviction; once the lease expired, the load reports the evicted chunk (ERR_EVICTED, never thrown)', async () => {
    const dir = path.join(base, 'lease');
    const layout = new KvLayout(SPEC);
    const bpc = CHUNK / SPEC.blockTokens;
    const dev = openDevice({ backend: 'cpu' });
    const stream = dev.createStream();
    const src = dev.allocKvCache(layout);
    const dst = dev.allocKvCache(layout);
    const srcData = src.buffers.map((b) => randomBytes(b.byteLength));
    await fillCache(dev, stream, src, srcData);
    // Two NVMe slots, both holding this process's prompt.
    const store = await KvStore.open({ device: dev, layout, fingerprint: FP, dir, chunkTokens: CHUNK, nvmeBytes: 2 * 12288, dramBytes: 8 * 12288 });
    try {
      const tokens = randomTokens(2 * CHUNK);
      const from = randomBlocks(2 * bpc, SPEC.numBlocks);
      await store.put(tokens, src, from, stream, { durable: true });
      dropDram(store);
      const hit = store.lookup(tokens);
      expect(hit.nvme).toBe(2);
      // Another process needs a slot: every slot is leased, so it evicts nothing.
      const blocked = await run([dir, '900', '1', '--try']);
      expect(blocked.stderr).toBe('');
      expect(blocked.lines).toContain('put-error 900 ERR_NO_SPACE');
      const to = randomBlocks(2 * bpc, SPEC.numBlocks);
      for (const layer of [0, 1]) await store.loadLayer(hit.chunks, layer, dst, to, stream).done();
      expect(await hit.settled()).toMatchObject({ ok: true, failed: [] });
      // The lease expired: the other process evicts the prefix's tail to make room.
      expireLeases(store);
      const evicting = await run([dir, '901', '1', '--try']);
      expect(evicting.stderr).toBe('');
      expect(evicting.lines).toContain('durable 901');
      let event;
      expect(() => (event = store.loadLayer(hit.chunks, 2, dst, to, stream))).not.toThrow();
      await expect(event!.done()).rejects.toMatchObject({ code: 'ERR_EVICTED' });
      expect(await hit.settled()).toEqual({ ok: false, failed: [1], validTokens: CHUNK, codes: { 1: 'ERR_EVICTED' } });
      expect(store.stats().local.evictedLoads).toBe(1);
      const got = await readCache(dev, stream, dst);
      for (const layer of [0, 1, 2]) {
        for (let i = 0; i < to.length; i++) {
          for (const kv of [0, 1] as const) {
            const have = pieceOf(dst, got, layer, kv, to[i]!);
            if (layer === 2 && i >= bpc) expect(have.every((x) => x === 0), `layer ${layer} block ${i}`).toBe(true);
            else expect(Buffer.compare(have, pieceOf(src, srcData, layer, kv, from[i]!)), `layer ${layer} block ${i}`).toBe(0);
          }
        }
      }
      hit.release();
      expect(store.lookup(tokens).chunks).toHaveLength(1);
    } finally {
      await store.close();
      await dev.dispose();
    }
  }, 60_000);

  it('a lease ends with the process that holds it: once it is killed, another process evicts what it leased', async () => {
    const dir = path.join(base, 'lease-death');
    const dev = openDevice({ backend: 'cpu' });
    // A directory of two NVMe slots, both filled by a writer.
    await (await KvStore.open({ device: dev, layout: new KvLayout(SPEC), fingerprint: FP, dir, chunkTokens: CHUNK, nvmeBytes: 2 * 12288 })).close();
    await dev.dispose();
    const w = await run([dir, '0', '2']);
    expect(w.lines.filter((l) => l.startsWith('durable '))).toHaveLength(2);
    const holder = spawn(process.execPath, [child, entry, dir, '0', '2', '--lease'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, KVFLOW_BACKEND: 'cpu' } });
    try {
      await new Promise<void>((resolve, reject) => {
        holder.stdout.setEncoding('utf8');
        holder.stdout.on('data', (d: string) => d.includes('leased 2') && resolve());
        holder.on('exit', () => reject(new Error('the lease holder exited early')));
      });
      const blocked = await run([dir, '900', '1', '--try']);
      expect(blocked.lines).toContain('put-error 900 ERR_NO_SPACE');
    } finally {
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('close', r));
    }
    const after = await run([dir, '901', '1', '--try']);
    expect(after.stderr).toBe('');
    expect(after.lines).toContain('durable 901');
  }, 60_000);
});
