// The addon interface version has one value: native/include/kvflow/abi.hpp's
// kAbiVersion, which the addon reports, and src/binding/abi.ts's copy, which
// the loader compares with it. An addon reporting another version is refused
// with ERR_LOAD naming both.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { describe, expect, it } from 'vitest';

import { KvflowError } from '../../src/index.js';
import { ABI_VERSION } from '../../src/binding/abi.js';
import { loadBinding, loadCandidates } from '../../src/binding/load.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

describe('addon interface version', () => {
  it('the header and the TypeScript constant agree, and the loaded addon reports it', () => {
    const header = readFileSync(path.join(root, 'native', 'include', 'kvflow', 'abi.hpp'), 'utf8');
    const match = /inline constexpr int kAbiVersion = (\d+);/.exec(header);
    expect(match, 'kAbiVersion not found in abi.hpp').not.toBeNull();
    expect(Number(match![1])).toBe(ABI_VERSION);
    expect(loadBinding().binding.abiVersion).toBe(ABI_VERSION);
  });

  it('an addon of another version is refused with ERR_LOAD naming both versions', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-abi-'));
    const fake = path.join(dir, 'kvflow.node');
    writeFileSync(fake, '');
    const require = createRequire(import.meta.url);
    // Stands in for an addon built from another version: the loader's require finds it in the module cache.
    require.cache[fake] = { id: fake, filename: fake, loaded: true, exports: { abiVersion: ABI_VERSION + 1 } } as never;
    try {
      let error: unknown;
      try {
        loadCandidates([{ path: fake, build: 'env' }]);
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(KvflowError);
      expect((error as KvflowError).code).toBe('ERR_LOAD');
      expect((error as KvflowError).message).toContain(
        `${fake}: built from another kvflow version (abi ${ABI_VERSION + 1}, expected ${ABI_VERSION})`,
      );
    } finally {
      delete require.cache[fake];
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
