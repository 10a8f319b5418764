/**
 * Two copies of the addon in one process (two packages that each bring
 * kvflow): each refuses the other's objects, whose classes may be laid out
 * otherwise, with ERR_INVALID_ARG, and works with its own.
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { describe, expect, it } from 'vitest';

import { loadBinding } from '../../src/binding/load.js';

const script = `
const [first, second] = process.argv.slice(1);
class KErr extends Error { constructor(m, code) { super(m); this.code = code; } }
const load = (file) => {
  const binding = require(file);
  binding.setErrorClass(KErr);
  return binding;
};
const A = load(first);
const B = load(second);
const a = new A.Device('cpu', 0, 0, () => {}, 0, 0);
const b = new B.Device('cpu', 0, 0, () => {}, 0, 0);
const out = {};
const aSrc = a.alloc(1, 4096), aDst = a.alloc(1, 4096);
const bSrc = b.alloc(1, 4096), bDst = b.alloc(1, 4096);
const aStream = a.createStream(0);
const pieces = new Float64Array([0, 0, 0, 0, 64]);
const groups = new Uint32Array([0, 1]);
const attempt = (name, fn) => {
  try {
    fn();
    out[name] = 'accepted';
  } catch (e) {
    out[name] = e.code ?? String(e);
  }
};
attempt('ownCopy', () => aStream.copy(aDst, 0, aSrc, 0, 64));
attempt('otherDevicesBuffer', () => aStream.copy(bDst, 0, aSrc, 0, 64));
attempt('ownBatch', () => A.prepareBatch([aDst], [aSrc], pieces, groups));
// No device in the call: only the buffers' own check can tell them apart.
attempt('batchOfOtherCopysBuffers', () => B.prepareBatch([aDst], [aSrc], pieces, groups));
const bBatch = B.prepareBatch([bDst], [bSrc], pieces, groups);
attempt('otherCopysBatch', () => aStream.copyPrepared(bBatch, 0, 1, 0));
process.stdout.write(JSON.stringify(out));
process.exit(0);
`;

describe('two copies of the addon in one process', () => {
  it("each refuses the other's buffers and batches with ERR_INVALID_ARG and takes its own", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kvflow-copies-'));
    try {
      const second = path.join(dir, 'kvflow.node');
      copyFileSync(loadBinding().path, second);
      const out = execFileSync(process.execPath, ['-e', script, loadBinding().path, second], { encoding: 'utf8', timeout: 60_000 });
      expect(JSON.parse(out)).toEqual({
        ownCopy: 'accepted',
        otherDevicesBuffer: 'ERR_INVALID_ARG',
        ownBatch: 'accepted',
        batchOfOtherCopysBuffers: 'ERR_INVALID_ARG',
        otherCopysBatch: 'ERR_INVALID_ARG',
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
