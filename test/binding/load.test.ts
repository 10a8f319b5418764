import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { afterEach, describe, expect, it } from 'vitest';

import { candidates, loadBinding, loadCandidates } from '../../src/binding/load.js';
import { KvflowError } from '../../src/index.js';
// @ts-expect-error an .mjs script without declarations
import { firstErrorLine } from '../../scripts/install.mjs';

const dirs: string[] = [];
function tempDir(): string {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-loadtest-'));
  dirs.push(dir);
  return dir;
}
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function loadError(list: Parameters<typeof loadCandidates>[0]): KvflowError {
  try {
    loadCandidates(list);
  } catch (e) {
    expect(e).toBeInstanceOf(KvflowError);
    return e as KvflowError;
  }
  throw new Error('loadCandidates did not throw');
}

describe('addon candidates', () => {
  it('are tried in order: KVFLOW_ADDON, the source builds, then the prebuilt binary', () => {
    const saved = process.env.KVFLOW_ADDON;
    process.env.KVFLOW_ADDON = '/nowhere/kvflow.node';
    try {
      const list = candidates();
      expect(list.map((c) => c.build)).toEqual(['env', 'cmake', 'node-gyp', 'prebuilt']);
      expect(list[0]!.path).toBe('/nowhere/kvflow.node');
      expect(list[3]!.path.endsWith(path.join('prebuilds', `${process.platform}-${process.arch}`, 'kvflow.node'))).toBe(true);
    } finally {
      if (saved === undefined) delete process.env.KVFLOW_ADDON;
      else process.env.KVFLOW_ADDON = saved;
    }
  });

  it('a prebuilt binary loads as the prebuilt build when nothing before it exists', () => {
    const real = loadBinding();
    const dir = tempDir();
    const loaded = loadCandidates([
      { path: path.join(dir, 'missing.node'), build: 'cmake' },
      { path: real.path, build: 'prebuilt' },
    ]);
    expect(loaded.build).toBe('prebuilt');
    expect(loaded.binding.abiVersion).toBe(real.binding.abiVersion);
  });

  it('a prebuilt binary whose manifest needs a newer Node-API is skipped with the reason', () => {
    const dir = tempDir();
    const pre = path.join(dir, 'node_modules', 'kvflow', 'prebuilds', 'linux-x64');
    mkdirSync(pre, { recursive: true });
    writeFileSync(path.join(pre, 'kvflow.node'), 'never loaded');
    writeFileSync(path.join(pre, 'kvflow.json'), JSON.stringify({ napi: 999, abiVersion: 4 }));
    const error = loadError([{ path: path.join(pre, 'kvflow.node'), build: 'prebuilt' }]);
    expect(error.code).toBe('ERR_LOAD');
    expect(error.message).toContain('needs Node-API 999');
    expect(error.message).toContain('does not load here');
  });

  it('installed as a dependency without a usable addon, ERR_LOAD names npm rebuild and the install-scripts approval', () => {
    const dir = tempDir();
    const pkg = path.join(dir, 'node_modules', 'kvflow');
    const error = loadError([
      { path: path.join(pkg, 'build-cmake', 'Release', 'kvflow.node'), build: 'cmake' },
      { path: path.join(pkg, 'prebuilds', 'linux-arm64', 'kvflow.node'), build: 'prebuilt' },
    ]);
    expect(error.code).toBe('ERR_LOAD');
    expect(error.message).toContain('No prebuilt binary ships for');
    expect(error.message).toContain('`npm rebuild kvflow`');
    expect(error.message).toContain('`npm install-scripts approve kvflow`');
  });

  it('in a checkout, ERR_LOAD names the build command', () => {
    const dir = tempDir();
    const error = loadError([{ path: path.join(dir, 'build-cmake', 'Release', 'kvflow.node'), build: 'cmake' }]);
    expect(error.message).toContain('`npm run build:native`');
    expect(error.message).not.toContain('install-scripts approve');
  });
});

describe("a failed build's summary", () => {
  it('quotes CMake\'s compiler error with its detail line', () => {
    const out = [
      '-- The CXX compiler identification is unknown',
      'CMake Error at CMakeLists.txt:5 (project):',
      '  Could not find compiler set in environment variable CXX:',
      '',
      '    /nonexistent/g++.',
      '-- Configuring incomplete, errors occurred!',
    ].join('\n');
    expect(firstErrorLine(out)).toBe('Could not find compiler set in environment variable CXX: /nonexistent/g++.');
  });

  it('quotes the compiler error, not the warnings before it or the builder\'s trailer', () => {
    const out = [
      '[3/35] Building CXX object src/core/a.cc.o',
      "../src/core/a.cc:10:5: warning: 'memcpy' accessing 8 bytes overlaps [-Wrestrict]",
      "../src/core/b.cc:42:7: error: 'frob' was not declared in this scope",
      'ninja: build stopped: subcommand failed.',
      'ERR! OMG Process terminated: 1',
    ].join('\n');
    expect(firstErrorLine(out)).toBe("../src/core/b.cc:42:7: error: 'frob' was not declared in this scope");
  });

  it('skips node-gyp\'s stack lines for the real error', () => {
    const out = [
      'gyp info spawn make',
      '../native/src/x.cc:1:10: fatal error: napi.h: No such file or directory',
      'gyp ERR! build error',
      'gyp ERR! stack Error: `make` failed with exit code: 2',
    ].join('\n');
    expect(firstErrorLine(out)).toBe('../native/src/x.cc:1:10: fatal error: napi.h: No such file or directory');
  });

  it('says nothing when the output has no error line', () => {
    expect(firstErrorLine('all good\nnothing to see')).toBeUndefined();
  });
});
