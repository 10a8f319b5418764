// Adversarial arguments at every public entry point (issue #13, done-when):
// fuzz-child.mjs drives openDevice, createStream, the allocations, copies,
// gather/scatter/moveRecords/prepare, files, KvStore, LayerPipeline and
// KvConnector with fast-check for a bounded time, in a child process so that
// a crash or a hang is seen here as a signal or a timeout. Every call must
// succeed or fail with a KvflowError code, settle, and change nothing in the
// store when rejected. The child runs the built package (dist/).
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { KvLayout, KvStore, type Device } from '../../src/index.js';
import { open } from '../helpers/backends.js';
import { CHUNK, FP, SPEC } from '../helpers/store.js';

const root = path.resolve(import.meta.dirname, '..', '..');
const entry = pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href;
const child = path.join(import.meta.dirname, 'fuzz-child.mjs');
/** Time the child fuzzes for; it is killed (a hang) 60 s after that. */
const FUZZ_MS = 40_000;

interface Report {
  calls: number;
  rejected: number;
  accepted: number;
  codes: Record<string, number>;
  problems: { call: string; problem: string }[];
}

/** Defects the fuzzer finds that are known and open (none now): their calls are left out of the check. */
const KNOWN: RegExp[] = [];

describe('fuzzing the public API (child process)', () => {
  it('every call succeeds or fails with a code, settles, and a rejected one changes nothing', async () => {
    // A fixed seed, so every run drives the same calls (KVFLOW_FUZZ_SEED explores others).
    const seed = process.env.KVFLOW_FUZZ_SEED ? Number(process.env.KVFLOW_FUZZ_SEED) : 20261206;
    const r = await new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve, reject) => {
      // In a directory of its own: fuzzed paths are relative to it, and it is removed after.
      const cwd = mkdtempSync(path.join(os.tmpdir(), 'kvflow-fuzz-cwd-'));
      const p = spawn(process.execPath, [child, entry, String(seed), String(FUZZ_MS)], {
        cwd,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, KVFLOW_BACKEND: 'cpu' },
      });
      let stdout = '';
      let stderr = '';
      const guard = setTimeout(() => p.kill('SIGKILL'), FUZZ_MS + 60_000);
      p.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      p.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      p.on('error', reject);
      p.on('close', (code, signal) => {
        clearTimeout(guard);
        rmSync(cwd, { recursive: true, force: true });
        resolve({ code, signal, stdout, stderr });
      });
    });
    const context = `seed ${seed}: ${r.stderr.slice(-2000)}`;
    expect(r.signal, `the fuzzed process was killed (a crash, or a hang past the guard); ${context}`).toBeNull();
    expect(r.code, context).toBe(0);
    const report = JSON.parse(r.stdout.trim().split('\n').pop()!) as Report;
    const open = report.problems.filter((p) => !KNOWN.some((k) => k.test(p.call)));
    expect(open, `seed ${seed}`).toEqual([]);
    // The fuzzer reached the API: calls were made and many were refused with codes.
    expect(report.calls).toBeGreaterThan(100);
    expect(report.rejected).toBeGreaterThan(report.calls / 5);
    expect(report.codes.ERR_INVALID_ARG).toBeGreaterThan(0);
  }, FUZZ_MS + 90_000);
});

describe('found by fuzzing', () => {
  let dev: Device;
  let store: KvStore;
  beforeAll(async () => {
    dev = open('cpu');
    store = await KvStore.open({ device: dev, layout: new KvLayout(SPEC), fingerprint: FP, chunkTokens: CHUNK, dramBytes: 4 * 12288, nvmeBytes: 4 * 12288 });
  });
  afterAll(async () => {
    await store?.close();
    await dev?.dispose();
  });

  it.for([{ length: -1 }, { length: 1.5 }, { length: 2 ** 40 }, { length: Number.NaN }])('tokens with length %o are ERR_INVALID_ARG, not a RangeError', (tokens) => {
    const before = store.stats().hits.lookups;
    expect(() => store.lookup(tokens as unknown as number[])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => store.keys(tokens as unknown as number[])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => store.beginPut(tokens as unknown as number[])).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(store.stats().hits.lookups).toBe(before);
  });
});
