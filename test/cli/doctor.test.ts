import { spawnSync } from 'node:child_process';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { cudaSkipReason } from '../helpers/backends.js';

const cli = path.resolve(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');

interface Check {
  name: string;
  ok: boolean;
  detail: string;
}

describe('kvflow doctor', () => {
  it('reports the addon, the backend chosen and why, and why CUDA is missing when it is', () => {
    const r = spawnSync(process.execPath, [cli, 'doctor', '--json'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout) as { checks: Check[]; info: { backend: string } };
    const byName = new Map(report.checks.map((c) => [c.name, c]));
    expect(byName.get('addon')?.ok).toBe(true);
    expect(byName.get('addon')?.detail).toMatch(/kvflow\.node/);
    const cuda = byName.get('cuda');
    expect(cuda).toBeDefined();
    if (cudaSkipReason !== undefined) {
      expect(cuda?.ok).toBe(false);
      expect(cudaSkipReason).toContain(cuda?.detail);
      expect(report.info.backend).toBe('cpu');
    } else {
      expect(cuda?.ok).toBe(true);
      expect(byName.get('gpu')?.detail).toMatch(/compute \d+\.\d+/);
    }
    expect(byName.get('backend')?.detail).toMatch(/requested auto: .+/);
    expect(byName.get('pinned memory')?.ok).toBe(true);
  });

  it('prints a readable table and exits 0', () => {
    const r = spawnSync(process.execPath, [cli, 'doctor'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    expect(r.stdout).toMatch(/^ok {2}addon/m);
    expect(r.stdout).toMatch(/backend/);
  });

  it('rejects an unknown command with usage and exit 1', () => {
    const r = spawnSync(process.execPath, [cli, 'frobnicate'], { encoding: 'utf8' });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("unknown command 'frobnicate'");
    expect(r.stderr).toContain('usage: kvflow');
  });
});
