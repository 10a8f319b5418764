import { spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

const cli = path.resolve(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');

function kvflow(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('kvflow demo --store-check and inspect', () => {
  it('demo --store-check stores a prompt, reopens, loads it back from NVMe and DRAM and checks every byte; inspect reads the directory', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-demo-test-'));
    try {
      const r = kvflow(['demo', '--store-check', '--tokens=512', `--dir=${dir}`, '--backend', 'cpu']);
      expect(r.stderr).toBe('');
      expect(r.status).toBe(0);
      expect(r.stdout).toMatch(/next turn +812 tokens: 512 cached \(2 chunks on NVMe, 0 in DRAM\), 300 to compute/);
      expect(r.stdout).toMatch(/load DRAM +2 chunks/);
      expect(r.stdout).toContain('verified     every byte of both loads equals the byte stored');
      const text = kvflow(['inspect', dir]);
      expect(text.status).toBe(0);
      expect(text.stdout).toMatch(/used +64\.0 MiB: 2 chunks on NVMe, 0 slots being written/);
      expect(text.stdout).toMatch(/lookups +2: 4 chunks hit, 2 missed/);
      const json = JSON.parse(kvflow(['inspect', dir, '--json']).stdout) as { chunks: number; geometry: { slotBytes: number }; fingerprints: Record<string, number> };
      expect(json.chunks).toBe(2);
      expect(json.geometry.slotBytes).toBe(32 << 20);
      expect(Object.values(json.fingerprints)).toEqual([2]);

      // --verify reads every chunk: clean first, then one flipped byte in the first slot's first extent.
      const clean = kvflow(['inspect', dir, '--verify']);
      expect([clean.status, clean.stderr]).toEqual([0, '']);
      expect(clean.stdout).toMatch(/verify +2 chunks, 64 layer extents, 64\.0 MiB read: all good/);
      const slab = path.join(dir, readdirSync(dir).find((f) => f.startsWith('slab-'))!);
      const bytes = readFileSync(slab);
      bytes[100] = bytes[100]! ^ 0xff;
      writeFileSync(slab, bytes);
      const kept = kvflow(['inspect', dir, '--verify', '--keep-bad', '--json']);
      expect(kept.status).toBe(1);
      const report = JSON.parse(kept.stdout) as { chunks: number; verify: { bad: { layer: number; tier: string; code: string }[]; dropped: number } };
      expect(report.verify.bad).toEqual([expect.objectContaining({ layer: 0, tier: 'nvme', code: 'ERR_CHECKSUM' })]);
      expect(report.verify.dropped).toBe(0);
      expect(JSON.parse(kvflow(['inspect', dir, '--json']).stdout).chunks).toBe(2);
      const dropped = kvflow(['inspect', dir, '--verify']);
      expect(dropped.status).toBe(1);
      expect(dropped.stdout).toMatch(/dropped +1 chunks/);
      expect(JSON.parse(kvflow(['inspect', dir, '--json']).stdout).chunks).toBe(1);
      expect(kvflow(['inspect', dir, '--keep-bad']).status).toBe(2);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('inspect of a directory that is not a store fails with a clear error', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-inspect-test-'));
    try {
      const r = kvflow(['inspect', dir]);
      expect(r.status).toBe(1);
      expect(r.stdout).toBe('');
      expect(r.stderr).toContain('has no index.mdb');
      expect(r.stderr).toContain('[ERR_INVALID_ARG]');
      const bad = kvflow(['demo', '--store-check', '--tokens', '7']);
      expect(bad.status).toBe(2);
      expect(bad.stderr).toContain("expected an integer from 256 to 32768 for --tokens, got '7'");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
