// `kvflow demo` as a user runs it: a child process on the CPU backend (the tiny
// reference model), its JSON report, its flags, and its clean-up on Ctrl-C.
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { DemoReport } from '../../src/cli/demo.js';

const cli = path.resolve(import.meta.dirname, '..', '..', 'dist', 'src', 'cli', 'main.js');

function demo(args: string[], env: NodeJS.ProcessEnv = process.env) {
  return spawnSync(process.execPath, [cli, 'demo', ...args], { encoding: 'utf8', timeout: 120_000, env });
}

describe('kvflow demo', () => {
  let tmp: string;
  let run: ReturnType<typeof demo>;
  let report: DemoReport;

  beforeAll(() => {
    tmp = mkdtempSync(path.join(os.tmpdir(), 'kvflow-demo-test-'));
    run = demo(['--json', '--backend', 'cpu', '--turns', '3', '--tokens=256'], { ...process.env, TMPDIR: tmp });
    report = JSON.parse(run.stdout) as DemoReport;
  });
  afterAll(() => {
    rmSync(tmp, { recursive: true, force: true });
  });

  it('exits 0 with a JSON report of every turn, and removes its temporary store', () => {
    expect(run.status, run.stderr).toBe(0);
    expect(report.ok).toBe(true);
    expect(report.device.backend).toBe('cpu');
    expect(report.model).toMatchObject({ preset: 'tiny', dtype: 'f32' });
    expect(report.store.temporary).toBe(true);
    expect(report.turns.map((t) => t.turn)).toEqual([1, 2, 3]);
    // --tokens sets the first prompt; each later turn appends an answer and a message.
    expect(report.chat).toEqual({ turns: 3, firstTokens: 256, answerTokens: 170, userTokens: 100 });
    expect(report.turns.map((t) => t.promptTokens)).toEqual([256, 526, 796]);
    expect(report.turns.map((t) => t.plan.engine)).toEqual(['auto', 'auto', 'auto']);
    expect(readdirSync(tmp)).toEqual([]);
  });

  it('--engine kernel loads every turn with the kernel engine, and the outputs still equal a full recompute', () => {
    const r = demo(['--json', '--backend', 'cpu', '--turns', '2', '--tokens=256', '--engine', 'kernel'], { ...process.env, TMPDIR: tmp });
    expect(r.status, r.stderr).toBe(0);
    const k = JSON.parse(r.stdout) as DemoReport;
    expect(k.ok).toBe(true);
    expect(k.turns.map((t) => t.plan.engine)).toEqual(['kernel', 'kernel']);
    expect(k.turns[1]!.plan.loadTokens).toBeGreaterThan(0);
    expect(k.turns.every((t) => t.check.ok)).toBe(true);
  });

  it('each turn\'s final hidden states equal a full recompute, with the same predicted token', () => {
    for (const t of report.turns) {
      expect(t.check.tolerance).toBe(1e-5);
      expect(t.check.maxRelDiff).toBeLessThanOrEqual(1e-5);
      expect(t.check.ok).toBe(true);
      expect(t.predicted.kvflow).toBe(t.predicted.recompute);
      expect(t.predicted.kvflow).toBeGreaterThanOrEqual(0);
      expect(t.ttftMs.kvflow).toBeGreaterThan(0);
      expect(t.ttftMs.recompute).toBeGreaterThan(0);
      expect(t.restarts).toBe(0);
    }
  });

  it('the first turn misses; later turns hit the earlier prompts, and the plan covers the prompt', () => {
    const [first, ...later] = report.turns;
    expect(first!.hit.tokens).toBe(0);
    expect(first!.plan.computeTokens).toBe(first!.promptTokens);
    expect(first!.saved).toBeGreaterThan(0);
    let previous = first!;
    for (const t of later) {
      expect(t.promptTokens).toBeGreaterThan(previous.promptTokens);
      expect(t.hit.tokens).toBeGreaterThan(previous.hit.tokens);
      // The whole of the previous prompt's full chunks is cached.
      expect(t.hit.tokens).toBe(Math.floor(previous.promptTokens / report.store.chunkTokens) * report.store.chunkTokens);
      expect(t.plan.computeFrom).toBe(t.promptTokens - t.plan.computeTokens);
      expect(t.plan.loadTokens).toBeLessThanOrEqual(t.hit.tokens);
      expect(t.plan.loaded.reduce((a, x) => a + x.tokens, 0)).toBe(t.plan.loadTokens);
      previous = t;
    }
    // The comparison with a full recompute means something only where kvflow loaded KV.
    expect(later.some((t) => t.plan.loadTokens > 0)).toBe(true);
  });

  it('each turn reports where its prefills spent their time: loads only where kvflow loaded, host time by who spent it', () => {
    for (const t of report.turns) {
      for (const tl of [t.timeline.kvflow, t.timeline.recompute]) {
        expect(['device', 'host']).toContain(tl.timeSource);
        expect(tl.computeMsMedian).toBeGreaterThan(0);
        for (const v of [tl.stallMs, tl.hostUs.own, tl.hostUs.store, tl.hostUs.compute]) expect(v).toBeGreaterThanOrEqual(0);
        expect(tl.hostUs.compute).toBeGreaterThan(0); // the model's launches
      }
      expect(t.timeline.recompute.loadMsMedian).toBe(0);
      expect(t.timeline.recompute.stallMs).toBe(0);
      if (t.plan.loadTokens > 0) {
        expect(t.timeline.kvflow.loadMsMedian).toBeGreaterThan(0);
        expect(t.timeline.kvflow.hostUs.store).toBeGreaterThan(0);
      }
    }
  });

  it('prints a table and the verdict without --json', () => {
    const r = demo(['--backend', 'cpu', '--turns', '3', '--tokens', '256']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^device {5}cpu: /);
    expect(r.stdout).toMatch(/turn +prompt +hit +loaded +computed +TTFT kvflow +recompute +speedup +next token/);
    expect(r.stdout).toContain('verified   every turn\'s final hidden states equal a full recompute');
    // Each plan reason once: consecutive turns with the same reason share a line.
    const reasons = r.stdout.split('\n').filter((l) => /^turns? \d/.test(l)).map((l) => l.replace(/^turns? [\d-]+ +/, ''));
    expect(reasons.length).toBeGreaterThan(0);
    for (let i = 1; i < reasons.length; i++) expect(reasons[i]).not.toBe(reasons[i - 1]);
    // No progress line when stderr is not a terminal.
    expect(r.stderr).toBe('');
  });

  it('--help exits 0 with the options', () => {
    const r = demo(['--help']);
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('usage: kvflow demo');
    expect(r.stdout).toContain('--store-check');
    expect(r.stdout).toContain('--json');
  });

  it.each([
    [['--bogus'], /unknown option '--bogus'/],
    [['--turns', 'x'], /--turns.*'x'/],
    [['--backend', 'tpu'], /expected auto, cuda or cpu for --backend, got 'tpu'/],
    [['--tokens', '10'], /expected an integer from 64 to 32768 for --tokens, got '10'/],
    [['--store-check', '--json'], /--json does not apply to --store-check/],
    [['extra'], /extra/],
  ])('%j exits 2 naming what is wrong', (args, message) => {
    const r = demo(args);
    expect(r.status).toBe(2);
    expect(r.stderr).toMatch(message);
    expect(r.stdout).toBe('');
  });

  it('--store-check stores a prompt\'s KV, reopens, loads it back and checks every byte', () => {
    const r = demo(['--store-check', '--backend', 'cpu', '--tokens', '512']);
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('verified     every byte of both loads equals the byte stored');
  });

  it('Ctrl-C stops it, exits 130 and removes the temporary store', async () => {
    const dir = mkdtempSync(path.join(tmp, 'sigint-'));
    const child = spawn(process.execPath, [cli, 'demo', '--backend', 'cpu', '--turns', '15'], { env: { ...process.env, TMPDIR: dir }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
    // Wait until the store directory exists, then interrupt.
    const t0 = Date.now();
    while (readdirSync(dir).length === 0 && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 50));
    expect(readdirSync(dir).length).toBe(1);
    await new Promise((r) => setTimeout(r, 1500));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code).toBe(130);
    expect(stderr).toContain('interrupted: stopping and removing the temporary store');
    expect(readdirSync(dir)).toEqual([]);
  });

  it('Ctrl-C during --store-check stops it too, exits 130 and removes the temporary store', async () => {
    const dir = mkdtempSync(path.join(tmp, 'sigint-check-'));
    const child = spawn(process.execPath, [cli, 'demo', '--store-check', '--backend', 'cpu', '--tokens', '1024'], {
      env: { ...process.env, TMPDIR: dir }, stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
    const t0 = Date.now();
    while (readdirSync(dir).length === 0 && Date.now() - t0 < 30_000) await new Promise((r) => setTimeout(r, 50));
    expect(readdirSync(dir).length).toBe(1);
    await new Promise((r) => setTimeout(r, 500));
    child.kill('SIGINT');
    const code = await new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
    expect(code).toBe(130);
    expect(stderr).toContain('interrupted: stopping and removing the temporary store');
    expect(readdirSync(dir)).toEqual([]);
  });
});
