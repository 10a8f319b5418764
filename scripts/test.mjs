#!/usr/bin/env node
// Runs the vitest suite and ends with the plain "N passed, N failed, N skipped"
// line that CI reads. Extra arguments go to vitest (e.g. a test/ path).
//
// Before that line it says why tests were skipped (no GPU: the CUDA reason,
// with the count; any other skipped test by name), and which temp files the
// suite left behind: the tests run with TMPDIR set to a fresh directory, so
// whatever remains in it afterwards is theirs (it is then removed).
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const require = createRequire(import.meta.url);
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-test-'));
const report = path.join(dir, 'report.json');
const testTmp = path.join(dir, 'tmp'); // the tests' TMPDIR
mkdirSync(testTmp);
const vitest = path.join(path.dirname(require.resolve('vitest/package.json')), 'vitest.mjs');
const r = spawnSync(
  process.execPath,
  [vitest, 'run', '--reporter=default', '--reporter=json', `--outputFile.json=${report}`, ...process.argv.slice(2)],
  { stdio: 'inherit', env: { ...process.env, TMPDIR: testTmp } },
);

/** Why the CUDA backend cannot be used here, or undefined when it can. */
async function cudaReason() {
  try {
    const { selectBackend } = await import(pathToFileURL(path.join(root, 'dist', 'src', 'index.js')).href);
    selectBackend('cuda');
    return undefined;
  } catch (e) {
    return e.message.split('\n')[0];
  }
}

let passed = 0;
let failed = 0;
let skipped = 0;
const skippedTests = [];
try {
  const json = JSON.parse(readFileSync(report, 'utf8'));
  passed = json.numPassedTests ?? 0;
  failed = json.numFailedTests ?? 0;
  skipped = (json.numPendingTests ?? 0) + (json.numTodoTests ?? 0);
  if (json.numFailedTestSuites > 0 && failed === 0) failed = json.numFailedTestSuites;
  for (const file of json.testResults ?? []) {
    for (const t of file.assertionResults ?? []) {
      if (t.status === 'skipped' || t.status === 'pending' || t.status === 'todo') {
        skippedTests.push({ file: path.relative(root, file.name), name: [...t.ancestorTitles, t.title].join(' > ') });
      }
    }
  }
} catch (e) {
  console.error(`kvflow test: no vitest report (${e.message})`);
  failed = Math.max(failed, 1);
}

if (skippedTests.length > 0) {
  // A test is a CUDA test when its name or its suite's names say so
  // (describe.each over the backends names each suite after its backend).
  const cuda = skippedTests.filter((t) => /\bcuda\b|\bgpu\b/i.test(t.name));
  const other = skippedTests.filter((t) => !cuda.includes(t));
  if (cuda.length > 0) {
    const why = await cudaReason();
    console.log(`\nno GPU: ${cuda.length} CUDA tests skipped (${why ?? 'CUDA is usable here; skipped for conditions of their own'})`);
  }
  if (other.length > 0) {
    console.log(`${other.length} other tests skipped (a condition this machine lacks; see each test's skipIf):`);
    for (const t of other.slice(0, 20)) console.log(`  ${t.file}: ${t.name}`);
    if (other.length > 20) console.log(`  ... and ${other.length - 20} more`);
  }
}

let left = [];
try {
  left = readdirSync(testTmp);
} catch {
  // nothing made it
}
if (left.length > 0) {
  console.log(`\nthe tests left ${left.length} temp entries behind (removed now): ${left.slice(0, 10).join(', ')}${left.length > 10 ? ', ...' : ''}`);
}
rmSync(dir, { recursive: true, force: true });
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exitCode = r.status === 0 && failed === 0 ? 0 : 1;
