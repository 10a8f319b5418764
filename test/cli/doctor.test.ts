import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
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
  data: Record<string, unknown>;
}

interface Report {
  verdict: { status: string; backend: string | null; summary: string; reason: string | null };
  versions: Record<string, string | null>;
  checks: Check[];
  info: { backend: string };
}

const version = (JSON.parse(readFileSync(path.resolve(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string }).version;

function doctor(args: string[], env: NodeJS.ProcessEnv = {}) {
  return spawnSync(process.execPath, [cli, 'doctor', ...args], { encoding: 'utf8', timeout: 60_000, env: { ...process.env, ...env } });
}

describe('kvflow doctor', () => {
  it('reports the addon, the backend chosen and why, and why CUDA is missing when it is', () => {
    const r = spawnSync(process.execPath, [cli, 'doctor', '--json'], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout) as Report;
    const byName = new Map(report.checks.map((c) => [c.name, c]));
    expect(byName.get('addon')?.ok).toBe(true);
    expect(byName.get('addon')?.data).toEqual({ path: expect.stringMatching(/kvflow\.node$/) as string, build: expect.stringMatching(/^(env|cmake|node-gyp)$/) as string });
    expect(byName.get('addon')?.detail).toMatch(/kvflow\.node/);
    const cuda = byName.get('cuda');
    expect(cuda).toBeDefined();
    if (cudaSkipReason !== undefined) {
      expect(cuda?.ok).toBe(false);
      expect(cudaSkipReason).toContain(cuda?.detail);
      expect(report.info.backend).toBe('cpu');
      expect(cuda?.data).toMatchObject({ available: false, reason: cuda?.detail });
      expect(report.verdict).toEqual({ status: 'cpu-only', backend: 'cpu', summary: `CPU only: ${cuda?.detail}`, reason: cuda?.detail });
    } else {
      expect(cuda?.ok).toBe(true);
      expect(byName.get('gpu')?.detail).toMatch(/compute \d+\.\d+/);
      expect(report.verdict).toMatchObject({ status: 'ready', backend: 'cuda', reason: null });
    }
    expect(report.versions).toMatchObject({ kvflow: version, node: process.version, platform: process.platform, arch: process.arch });
    expect(byName.get('backend')?.data).toMatchObject({ requested: 'auto', chosen: report.info.backend });
    expect(byName.get('environment')?.ok).toBe(true);
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
    expect(byName.get('crc32c')?.data.implementation).toMatch(/^(sse4\.2|armv8-crc|table)$/);
    expect(byName.get('crc32c')?.detail).toMatch(/^(sse4\.2 instructions|armv8-crc instructions|slicing-by-8 tables \(.+\))$/);
    const io = byName.get('nvme io');
    expect(io?.ok).toBe(true);
    const d = defaults();
    expect(io?.detail).toMatch(/^engine (posix|io_uring) \(KVFLOW_IO_ENGINE=(auto|posix|io_uring)\); io_uring: .+; .*O_DIRECT .+; /);
    expect(io?.detail).toContain(
      `KVFLOW_IO_DIRECT=${d.ioDirect} KVFLOW_IO_THREADS=${d.ioThreads} KVFLOW_IO_TASK_SIZE=${d.ioTaskSize / 2 ** 20} MiB`,
    );
    expect(io?.data).toMatchObject({ engineRequested: d.ioEngine, threads: d.ioThreads, taskSize: d.ioTaskSize, queueDepth: d.ioQueueDepth });
    expect((io?.data.direct as { dir: string }).dir).toBe(os.tmpdir());
    const gds = byName.get('gds');
    if (report.info.backend === 'cpu') {
      expect(gds?.ok).toBe(false);
      expect(gds?.data).toEqual({ status: 'not-used', requested: d.gds, dir: os.tmpdir(), reason: 'GPUDirect Storage needs the CUDA backend' });
    } else {
      // Registered for real, or refused/unavailable with cuFile's reason; never a bare "ok" without a registration.
      expect(['registered', 'refused', 'unavailable', 'not-checked', 'off']).toContain(gds?.data.status);
      expect(gds?.ok).toBe(gds?.data.status === 'registered' || gds?.data.status === 'off');
    }
    const gate = byName.get('cuda gate');
    if (report.info.backend === 'cpu') {
      expect(gate).toEqual({
        name: 'cuda gate',
        ok: true,
        detail: `not used: the CPU backend waits on gates on its own threads (KVFLOW_CUDA_GATE=${d.cudaGate})`,
        data: { mode: 'none', requested: d.cudaGate, waitValue: null },
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

  it('a bad KVFLOW_CUDA_GATE is a failed check naming the variable; the rest of the report still runs', () => {
    const r = doctor([], { KVFLOW_CUDA_GATE: 'spin' });
    expect(r.status).toBe(1);
    expect(r.stderr).toBe('');
    expect(r.stdout.split('\n')[0]).toBe('kvflow doctor: not usable: KVFLOW_CUDA_GATE is invalid (devices refuse to open)');
    expect(r.stdout).toMatch(/^no  KVFLOW_CUDA_GATE +expected 'host', 'wait-value' or 'auto' for KVFLOW_CUDA_GATE, got "spin": devices fail to open/m);
    expect(r.stdout).toMatch(/^ok  pinned memory /m);
  });

  it('KVFLOW_BACKEND=cuda where CUDA cannot be used is a failed backend check and a not-usable verdict', (ctx) => {
    if (cudaSkipReason === undefined) return ctx.skip('CUDA can be used here');
    const r = doctor(['--json'], { KVFLOW_BACKEND: 'cuda' });
    expect(r.status).toBe(1);
    const report = JSON.parse(r.stdout) as Report;
    expect(report.verdict.status).toBe('not-usable');
    expect(report.verdict.reason).toBe(`KVFLOW_BACKEND=cuda: ${cudaSkipReason}`);
    expect(report.checks.find((c) => c.name === 'backend')).toMatchObject({ ok: false, data: { requested: 'cuda', chosen: null } });
  });

  it('KVFLOW_BACKEND=cpu is ready on the CPU backend, as asked', () => {
    const r = doctor(['--json'], { KVFLOW_BACKEND: 'cpu' });
    expect(r.status).toBe(0);
    expect((JSON.parse(r.stdout) as Report).verdict).toEqual({
      status: 'ready', backend: 'cpu', summary: 'ready (the CPU backend, as KVFLOW_BACKEND=cpu asks)', reason: null,
    });
  });

  it('bad KVFLOW_* variables are failed checks in --json, each with its name, value and error', () => {
    const r = doctor(['--json'], { KVFLOW_IO_THREADS: 'abc', KVFLOW_IO_ENGINE: 'fast', KVFLOW_IO_QUEUE_DEPTH: '16' });
    expect(r.status).toBe(1);
    const report = JSON.parse(r.stdout) as Report;
    expect(report.verdict).toEqual({
      status: 'not-usable', backend: null, summary: 'not usable: KVFLOW_IO_ENGINE, KVFLOW_IO_THREADS are invalid (devices refuse to open)',
      reason: 'KVFLOW_IO_ENGINE, KVFLOW_IO_THREADS are invalid (devices refuse to open)',
    });
    const byName = new Map(report.checks.map((c) => [c.name, c]));
    expect(byName.get('environment')).toMatchObject({ ok: false, data: { invalid: ['KVFLOW_IO_ENGINE', 'KVFLOW_IO_THREADS'] } });
    expect((byName.get('environment')?.data.variables as Record<string, string>).KVFLOW_IO_QUEUE_DEPTH).toBe('16');
    expect(byName.get('KVFLOW_IO_THREADS')).toMatchObject({
      ok: false, data: { variable: 'KVFLOW_IO_THREADS', value: 'abc', error: 'expected a non-negative integer for KVFLOW_IO_THREADS, got "abc"' },
    });
    expect(byName.get('KVFLOW_IO_ENGINE')).toMatchObject({ ok: false, data: { variable: 'KVFLOW_IO_ENGINE', value: 'fast' } });
    expect(byName.get('KVFLOW_IO_ENGINE')?.data.error).toContain('for KVFLOW_IO_ENGINE, got "fast"');
    // The other checks ran with the built-in defaults for the bad variables, the good one applied.
    expect(byName.get('nvme io')?.data).toMatchObject({ threads: defaults().ioThreads, queueDepth: 16 });
    expect(byName.get('pinned memory')?.ok).toBe(true);
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

  it('prints the verdict, then the versions, then a readable table, each reason once, and exits 0', () => {
    const r = doctor([]);
    expect(r.status).toBe(0);
    const [verdict, versions] = r.stdout.split('\n');
    expect(verdict).toMatch(/^kvflow doctor: (ready \(CUDA: .+\)|CPU only: .+)$/);
    expect(versions).toBe(`kvflow ${version}, Node ${process.version} (N-API ${process.versions.napi}), ${process.platform} ${process.arch} (kernel ${os.release()})`);
    expect(r.stdout).toMatch(/^ok {2}addon/m);
    expect(r.stdout).toMatch(/^ok {2}backend/m);
    if (cudaSkipReason !== undefined) {
      const reason = verdict!.slice('kvflow doctor: CPU only: '.length);
      expect(cudaSkipReason).toContain(reason);
      expect(r.stdout.split(reason).length - 1).toBe(1);
      expect(r.stdout).toMatch(/^no {2}cuda +unavailable: the reason above$/m);
    }
  });

  it('--dir checks O_DIRECT (and GPUDirect Storage on CUDA) in that directory, and leaves nothing there', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-doctor-test-'));
    try {
      const r = doctor(['--json', '--dir', dir]);
      expect(r.status).toBe(0);
      const report = JSON.parse(r.stdout) as Report;
      const io = report.checks.find((c) => c.name === 'nvme io');
      expect((io?.data.direct as { dir: string }).dir).toBe(dir);
      expect(report.checks.find((c) => c.name === 'gds')?.data.dir).toBe(dir);
      expect(readdirSync(dir)).toEqual([]);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
