import { createHash } from 'node:crypto';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { STORE_FORMAT_VERSION } from '../../src/index.js';
import { chunkKeys } from '../../src/store/keys.js';
import { codeOf } from '../helpers/backends.js';

/** The documented chain (src/store/keys.ts), one Hash object per chunk. */
function reference(fingerprint: string, ids: readonly number[], chunkTokens: number, limit = Infinity): string[] {
  const version = Buffer.alloc(4);
  version.writeUInt32LE(STORE_FORMAT_VERSION);
  const fp = Buffer.from(fingerprint, 'hex');
  const keys: string[] = [];
  let previous = Buffer.alloc(32);
  const count = Math.min(Math.floor(ids.length / chunkTokens), limit);
  for (let c = 0; c < count; c++) {
    const bytes = Buffer.alloc(chunkTokens * 4);
    for (let t = 0; t < chunkTokens; t++) bytes.writeUInt32LE(ids[c * chunkTokens + t]!, t * 4);
    previous = createHash('sha256').update(version).update(fp).update(previous).update(bytes).digest();
    keys.push(previous.toString('hex'));
  }
  return keys;
}

// Store fingerprints are 32 bytes; the chain takes any whole number of bytes.
const fingerprint = fc.uint8Array({ minLength: 1, maxLength: 48 }).map((b) => Buffer.from(b).toString('hex'));


describe('chunkKeys', () => {
  it('equals the documented SHA-256 chain for any ids, chunk size, fingerprint and limit', () => {
    fc.assert(
      fc.property(
        fingerprint,
        fc.integer({ min: 1, max: 64 }),
        fc.array(fc.integer({ min: 0, max: 0xffffffff }), { maxLength: 600 }),
        fc.option(fc.integer({ min: 0, max: 20 }), { nil: undefined }),
        (fp, chunkTokens, ids, limit) => {
          const want = reference(fp, ids, chunkTokens, limit);
          expect(chunkKeys(fp, ids, chunkTokens, limit)).toEqual(want);
          // A Uint32Array (hashed from its own bytes), also as a view at an offset into a larger buffer.
          expect(chunkKeys(fp, Uint32Array.from(ids), chunkTokens, limit)).toEqual(want);
          const backing = new Uint32Array(ids.length + 3);
          backing.set(ids, 3);
          expect(chunkKeys(fp, backing.subarray(3), chunkTokens, limit)).toEqual(want);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('gives a prefix the prefix of the keys, and any changed id every key from its chunk on a new value', () => {
    fc.assert(
      fc.property(fingerprint, fc.array(fc.integer({ min: 0, max: 0xffffffff }), { minLength: 64, maxLength: 256 }), fc.nat(), (fp, ids, at) => {
        const keys = chunkKeys(fp, ids, 16);
        expect(chunkKeys(fp, ids.slice(0, 32), 16)).toEqual(keys.slice(0, 2));
        const i = at % ids.length;
        const changed = ids.slice();
        changed[i] = (changed[i]! + 1) >>> 0;
        const other = chunkKeys(fp, changed, 16);
        const chunk = Math.floor(i / 16);
        for (let c = 0; c < keys.length; c++) {
          if (c < chunk) expect(other[c]).toBe(keys[c]);
          else expect(other[c]).not.toBe(keys[c]);
        }
      }),
      { numRuns: 100 },
    );
  });

  it('keeps the keys of stored chunks: a fixed prompt hashes to the same keys in every release', () => {
    // Stores on disk are found by these keys: a change here orphans every stored chunk.
    expect(STORE_FORMAT_VERSION).toBe(2);
    const fp = '00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff';
    expect(chunkKeys(fp, [1, 2, 3, 4, 5, 6, 7, 8, 9], 4)).toEqual([
      'b65595d6c991b538a022e69909d20f6642ed0006e041d0826d6a80b54dd9e5de',
      '5bf0c26c29c6633e126e95c3d0fdd5d24d11784a60cf70596e6c151e42779113',
    ]);
  });

  it('refuses a chunk size that is not a positive integer and a fingerprint that is not hex, with ERR_INVALID_ARG', () => {
    const fp = 'ab'.repeat(32);
    for (const chunkTokens of [0, -1, 1.5, Number.NaN, '4' as unknown as number]) {
      expect(codeOf(() => chunkKeys(fp, [1, 2, 3, 4], chunkTokens)), String(chunkTokens)).toBe('ERR_INVALID_ARG');
    }
    for (const bad of ['', 'abc', 'zz', 12 as unknown as string]) {
      expect(codeOf(() => chunkKeys(bad, [1, 2, 3, 4], 2)), String(bad)).toBe('ERR_INVALID_ARG');
    }
    expect(chunkKeys(fp, [1, 2, 3], 4)).toEqual([]);
    expect(chunkKeys(fp, [1, 2, 3, 4], 2, 0)).toEqual([]);
  });
});
