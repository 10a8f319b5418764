// The `kvflow` command line as a user meets it: the built bin run as a child
// process, its --help, --version, and the usage errors (exit 2) that name the
// flag or the value.
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { storeCheckBytes } from '../../src/cli/memory.js';
import { STORE_CHECK_BYTES_PER_TOKEN } from '../../src/cli/demo-store-check.js';
import { cudaSkipReason } from '../helpers/backends.js';

const root = path.resolve(import.meta.dirname, '..', '..');
const cli = path.join(root, 'dist', 'src', 'cli', 'main.js');
const version = (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version;

function kvflow(args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('kvflow command line', () => {
  it.each([
    [['--help'], 'usage: kvflow <command>'],
    [['-h'], 'usage: kvflow <command>'],
    [['help'], 'usage: kvflow <command>'],
    [['demo', '--help'], 'usage: kvflow demo'],
    [['demo', '-h'], 'usage: kvflow demo'],
    [['demo', '--store-check', '--help'], 'usage: kvflow demo'],
    [['help', 'demo'], 'usage: kvflow demo'],
    [['doctor', '--help'], 'usage: kvflow doctor'],
    [['doctor', '-h'], 'usage: kvflow doctor'],
    [['inspect', '--help'], 'usage: kvflow inspect <store dir>'],
    [['inspect', '-h'], 'usage: kvflow inspect <store dir>'],
    [['help', 'inspect'], 'usage: kvflow inspect <store dir>'],
  ])('%j prints the usage on stdout and exits 0', (args, usage) => {
    const r = kvflow(args);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.startsWith(usage)).toBe(true);
    expect(r.stderr).toBe('');
  });

  it('the top-level usage lists every command', () => {
    const r = kvflow(['--help']);
    for (const c of ['demo', 'doctor', 'inspect']) expect(r.stdout).toMatch(new RegExp(`^ {2}${c} +\\S`, 'm'));
    expect(r.stdout).toContain('-v, --version');
  });

  it.each([['--version'], ['-v']])('%s prints the package version and exits 0', (flag) => {
    const r = kvflow([flag]);
    expect(r.status).toBe(0);
    expect(r.stdout).toBe(`${version}\n`);
  });

  it.each([
    [[], /^kvflow: expected a command\nusage: kvflow/],
    [['frobnicate'], /^kvflow: unknown command 'frobnicate'\nusage: kvflow/],
    [['help', 'frobnicate'], /^kvflow: unknown command 'frobnicate'/],
    [['--bogus'], /^kvflow: unknown option '--bogus'/],
    [['--version', 'extra'], /^kvflow: unexpected argument 'extra' after --version/],
    [['demo', '--bogus'], /^kvflow demo: unknown option '--bogus'\n\(kvflow demo --help lists the options\)\n$/],
    [['demo', '--turns', 'x'], /^kvflow demo: expected an integer from 1 to 15 for --turns, got 'x'\n/],
    [['demo', '--turns=0'], /^kvflow demo: expected an integer from 1 to 15 for --turns, got '0'\n/],
    [['demo', '--turns'], /^kvflow demo: option '--turns <value>' argument missing\n/],
    [['demo', '--backend', 'tpu'], /^kvflow demo: expected auto, cuda or cpu for --backend, got 'tpu'\n/],
    [['demo', '--model=gpt'], /^kvflow demo: expected tiny or llama-3-8b for --model, got 'gpt'\n/],
    [['demo', '--policy', 'some'], /^kvflow demo: expected adaptive, load-all or recompute for --policy, got 'some'\n/],
    [['demo', '--engine', 'fast'], /^kvflow demo: expected auto, dma or kernel for --engine, got 'fast'\n/],
    [['demo', '--store-check', '--engine', 'dma'], /^kvflow demo: --engine does not apply to --store-check\n/],
    [['demo', '--tokens=10'], /^kvflow demo: expected an integer from 64 to 32768 for --tokens, got '10'\n/],
    [['demo', '--store-check', '--tokens', '7'], /^kvflow demo: expected an integer from 256 to 32768 for --tokens, got '7'\n/],
    [['demo', '--store-check', '--json'], /^kvflow demo: --json does not apply to --store-check\n/],
    [['demo', '--json=yes'], /^kvflow demo: option '--json' does not take an argument\n/],
    [['demo', 'extra'], /^kvflow demo: unexpected argument 'extra'\n/],
    [['doctor', '--bogus'], /^kvflow doctor: unknown option '--bogus'\n/],
    [['doctor', 'extra'], /^kvflow doctor: unexpected argument 'extra'\n/],
    [['doctor', '--dir', '/nonexistent/kvflow'], /^kvflow doctor: expected an existing directory for --dir, got '\/nonexistent\/kvflow'\n/],
    [['inspect'], /^kvflow inspect: expected a store directory\n/],
    [['inspect', 'a', 'b'], /^kvflow inspect: unexpected argument 'b' \(expected only a store directory\)\n/],
    [['inspect', '--bogus', 'a'], /^kvflow inspect: unknown option '--bogus'\n/],
  ])('%j exits 2 naming what is wrong, and prints nothing on stdout', (args, message) => {
    const r = kvflow(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it('--backend gpu is taken for cuda (it fails like --backend cuda where there is no GPU)', () => {
    const gpu = kvflow(['demo', '--store-check', '--backend', 'gpu', '--tokens=256']);
    if (cudaSkipReason === undefined) {
      expect(gpu.status, gpu.stderr).toBe(0);
      expect(gpu.stdout).toMatch(/^device {7}cuda: /);
    } else {
      const cuda = kvflow(['demo', '--store-check', '--backend', 'cuda', '--tokens=256']);
      expect(gpu.status).toBe(1);
      expect(gpu.stderr).toContain('the CUDA backend cannot be used');
      expect(gpu.stderr).toContain('[ERR_UNSUPPORTED]');
      expect(gpu.stderr).toBe(cuda.stderr);
    }
  });

  it('a --tokens above what this machine\'s memory holds is refused, naming the cap', (ctx) => {
    if (storeCheckBytes(32768, STORE_CHECK_BYTES_PER_TOKEN) <= 0.5 * os.totalmem()) return ctx.skip('this machine holds the largest --tokens');
    const r = kvflow(['demo', '--store-check', '--backend', 'cpu', '--tokens', '32768']);
    expect(r.status).toBe(2);
    const m = /^kvflow demo: --tokens 32768 needs about [\d.]+ GiB of memory; this machine has [\d.]+ GiB \(a demo plans to use at most half\): at most --tokens (\d+) here\n/.exec(r.stderr);
    expect(m, r.stderr).not.toBeNull();
    const cap = Number(m![1]);
    expect(cap % 256).toBe(0);
    expect(storeCheckBytes(cap, STORE_CHECK_BYTES_PER_TOKEN)).toBeLessThanOrEqual(0.5 * os.totalmem());
    expect(storeCheckBytes(cap + 256, STORE_CHECK_BYTES_PER_TOKEN)).toBeGreaterThan(0.5 * os.totalmem());
  });
});
