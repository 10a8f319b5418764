import { spawnSync } from 'node:child_process';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { defaults } from '../../src/index.js';
import { cudaSkipReason } from '../helpers/backends.js';
import { uringSkipReason } from '../helpers/io.js';

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
    // The whole config a device runs with, the store's defaults included.
    const config = byName.get('config')?.detail ?? '';
    const env = defaults();
    for (const key of ['backend', 'ioThreads', 'ioTaskSize', 'ioBounceChunk', 'pagedEngine', 'cudaGate'] as const) {
      expect(config).toContain(`${key}=${key === 'backend' ? report.info.backend : String(env[key])}`);
    }
    expect(config).toContain(`store.chunkTokens=${env.store.chunkTokens} `);
    expect(config).toContain(`store.dramBytes=${env.store.dramBytes} `);
    expect(byName.get('crc32c')?.detail).toMatch(/^(sse4\.2 instructions|armv8-crc instructions|slicing-by-8 tables \(.+\))$/);
    const io = byName.get('nvme io');
    expect(io?.ok).toBe(true);
    const d = defaults();
    expect(io?.detail).toMatch(/^engine (posix|io_uring) \(KVFLOW_IO_ENGINE=(auto|posix|io_uring)\); io_uring: .+; .*O_DIRECT .+; /);
    expect(io?.detail).toContain(
      `KVFLOW_IO_DIRECT=${d.ioDirect} KVFLOW_IO_THREADS=${d.ioThreads} KVFLOW_IO_TASK_SIZE=${d.ioTaskSize / 2 ** 20} MiB`,
    );
    const gate = byName.get('cuda gate');
    if (report.info.backend === 'cpu') {
      expect(gate).toEqual({
        name: 'cuda gate',
        ok: true,
        detail: `not used: the CPU backend waits on gates on its own threads (KVFLOW_CUDA_GATE=${d.cudaGate})`,
      });
    } else {
      expect(gate?.detail).toMatch(
        new RegExp(`^(wait-value|host functions) \\(KVFLOW_CUDA_GATE=${d.cudaGate}: .+\\); wait-value: (available|unavailable: .+)$`),
      );
    }
  });

  it('cuda gate reports KVFLOW_CUDA_GATE=wait-value, and whether it can work here', () => {
    const r = spawnSync(process.execPath, [cli, 'doctor', '--json'], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, KVFLOW_CUDA_GATE: 'wait-value' },
    });
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout) as { checks: Check[]; info: { backend: string } };
    const gate = report.checks.find((c) => c.name === 'cuda gate');
    expect(gate?.detail).toContain('KVFLOW_CUDA_GATE=wait-value');
    if (report.info.backend === 'cpu') {
      expect(gate?.ok).toBe(true);
      expect(gate?.detail).toMatch(/^not used: the CPU backend/);
    } else if (gate?.ok) {
      expect(gate.detail).toMatch(/^wait-value \(KVFLOW_CUDA_GATE=wait-value: wait-value was requested and works on CUDA device \d+\); wait-value: available$/);
    } else {
      expect(gate?.detail).toMatch(/^KVFLOW_CUDA_GATE=wait-value cannot be used: .+; devices fail to open with ERR_UNSUPPORTED/);
    }
  });

  it('a bad KVFLOW_CUDA_GATE is ERR_INVALID_ARG, naming the variable', () => {
    const r = spawnSync(process.execPath, [cli, 'doctor'], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, KVFLOW_CUDA_GATE: 'spin' },
    });
    expect(r.status).toBe(1);
    expect(r.stderr).toContain(`expected 'host', 'wait-value' or 'auto' for KVFLOW_CUDA_GATE, got "spin" [ERR_INVALID_ARG]`);
  });

  it('nvme io says why io_uring cannot run when KVFLOW_IO_ENGINE asks for it where it cannot', () => {
    const r = spawnSync(process.execPath, [cli, 'doctor', '--json'], {
      encoding: 'utf8',
      timeout: 60_000,
      env: { ...process.env, KVFLOW_IO_ENGINE: 'io_uring', KVFLOW_IO_THREADS: '3' },
    });
    expect(r.status).toBe(0);
    const io = (JSON.parse(r.stdout) as { checks: Check[] }).checks.find((c) => c.name === 'nvme io');
    expect(io?.ok).toBe(uringSkipReason === undefined);
    expect(io?.detail).toContain(uringSkipReason === undefined ? 'io_uring: available' : `io_uring: ${uringSkipReason}`);
    expect(io?.detail).toContain('KVFLOW_IO_THREADS=3');
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
