/**
 * What the IO suites need from the host: the engines that can run here (io_uring
 * skipped with the kernel's reason where it cannot), temporary directories,
 * and filesystems mounted for real faults where this machine lets a test
 * mount them (a full tmpfs, a ramfs that refuses O_DIRECT).
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll } from 'vitest';

import type { Device, IoEngineKind } from '../../src/index.js';
import { probeDirectIo, probeIoUring } from '../../src/io/probe.js';
import { open } from './backends.js';

/** Why io_uring suites are skipped here, or undefined when they run. */
export const uringSkipReason: string | undefined = (() => {
  const p = probeIoUring();
  return p.ok ? undefined : p.reason;
})();

/** [engine, skip] pairs for describe.each. */
export const engines: Array<{ engine: IoEngineKind; skip: boolean }> = [
  { engine: 'posix', skip: false },
  { engine: 'io_uring', skip: uringSkipReason !== undefined },
];

/** A fresh directory under the OS temp directory. */
export function tempDir(prefix = 'kvflow-io-'): string {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/**
 * For a test file's top level: a maker of fresh temp directories, every one
 * removed after the file's tests.
 */
export function scratchDirs(prefix = 'kvflow-io-'): () => string {
  const made: string[] = [];
  afterAll(() => {
    for (const d of made.splice(0)) rmSync(d, { recursive: true, force: true });
  });
  return () => {
    const d = tempDir(prefix);
    made.push(d);
    return d;
  };
}

/** A CPU device and a temp directory, made before the suite's tests and removed after them. */
export function ioFixture(): { readonly dev: Device; readonly dir: string } {
  const fixture = {} as { dev: Device; dir: string };
  beforeAll(() => {
    fixture.dev = open('cpu');
    fixture.dir = tempDir();
  });
  afterAll(async () => {
    await fixture.dev?.dispose();
    if (fixture.dir) rmSync(fixture.dir, { recursive: true, force: true });
  });
  return fixture;
}

/** O_DIRECT's verdict in the OS temp directory, where the suites put their files. */
export const tmpDirect = probeDirectIo(os.tmpdir());

/** A filesystem mounted for a test, or why it could not be. */
export type Mounted = { dir: string; release(): void } | { reason: string };

/** Mounts `type` with `options` on a fresh temp directory (needs root or CAP_SYS_ADMIN). */
export function mountTemp(type: 'tmpfs' | 'ramfs', options: string): Mounted {
  const dir = tempDir(`kvflow-${type}-`);
  const args = ['-t', type, ...(options ? ['-o', options] : []), type, dir];
  const r = spawnSync('mount', args, { encoding: 'utf8' });
  if (r.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    const why = (r.error?.message ?? r.stderr.trim()) || `exit ${r.status}`;
    return { reason: `mount ${args.join(' ')} was refused here: ${why}` };
  }
  return {
    dir,
    release() {
      spawnSync('umount', [dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * A directory whose filesystem refuses O_DIRECT: /dev/shm where tmpfs still
 * does (kernels before 6.6), else a ramfs mounted for the test.
 */
export function directRefusingDir(): Mounted {
  const shm = '/dev/shm';
  const probe = probeDirectIo(shm);
  if (!probe.ok && probe.reason.includes('refused')) return { dir: shm, release() {} };
  const mounted = mountTemp('ramfs', '');
  if ('reason' in mounted) return { reason: `${shm} accepts O_DIRECT here (${probe.reason}), and ${mounted.reason}` };
  return mounted;
}

/** Bytes of a request that must go through O_DIRECT: the aligned middle, when the memory there is aligned too. */
export function expectedDirectBytes(address: bigint, bufferOffset: number, fileOffset: number, bytes: number, align: number): number {
  const lo = Math.ceil(fileOffset / align) * align;
  const hi = Math.floor((fileOffset + bytes) / align) * align;
  if (lo >= hi) return 0;
  return (address + BigInt(bufferOffset + lo - fileOffset)) % BigInt(align) === 0n ? hi - lo : 0;
}
