// The C++ unit tests of the pure native planners (native/test/planners.cc:
// task splitting, bounce chunks, kernel-engine spans, the IO priority take).
// Runs the kvflow_unit binary that `npm run build:cmake` builds next to the
// addon; where there is none (a node-gyp-only checkout), builds it here with
// the system C++ compiler from native/sources.json's "unit" list. Skips, with
// the reason, only when neither a binary nor a compiler is found.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterAll, describe, expect, it } from 'vitest';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const built = path.join(root, 'build-cmake', 'Release', 'kvflow_unit');
let scratch: string | undefined;

function findOrBuild(): { binary?: string; reason?: string; buildError?: string } {
  if (existsSync(built)) return { binary: built };
  const sources = (JSON.parse(readFileSync(path.join(root, 'native', 'sources.json'), 'utf8')) as { unit: string[] }).unit;
  const compiler = process.env.CXX ?? 'c++';
  if (spawnSync(compiler, ['--version'], { stdio: 'ignore' }).status !== 0) {
    return { reason: `no ${built} (npm run build:cmake builds it) and no C++ compiler '${compiler}' to build it` };
  }
  scratch = mkdtempSync(path.join(os.tmpdir(), 'kvflow-unit-'));
  const binary = path.join(scratch, 'kvflow_unit');
  const r = spawnSync(
    compiler,
    ['-std=c++20', '-O1', `-I${path.join(root, 'native', 'include')}`, `-I${path.join(root, 'native', 'src')}`,
      path.join(root, 'native', 'test', 'planners.cc'), ...sources.map((s) => path.join(root, s)), '-o', binary],
    { encoding: 'utf8' },
  );
  // A compiler that fails on these sources is a defect, reported by the test below.
  if (r.status !== 0) return { binary, buildError: `${r.stdout}\n${r.stderr}` };
  return { binary };
}

const found = findOrBuild();

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

describe('native planners (kvflow_unit)', () => {
  it.skipIf(found.reason !== undefined)(`every check passes${found.reason ? ` (skipped: ${found.reason})` : ''}`, () => {
    expect(found.binary && existsSync(found.binary), `kvflow_unit was not built: ${found.buildError ?? ''}`).toBe(true);
    const r = spawnSync(found.binary!, [], { encoding: 'utf8', timeout: 60_000 });
    expect(r.status, `${r.stdout}\n${r.stderr}`).toBe(0);
    expect(r.stdout).toMatch(/kvflow_unit: [1-9]\d* checks, 0 failed/);
  });
});
