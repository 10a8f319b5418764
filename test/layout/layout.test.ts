import { describe, expect, it } from 'vitest';

import { KvLayout, planPieces, type KvLayoutSpec } from '../../src/index.js';
import { codeOf } from '../helpers/backends.js';

const llama: KvLayoutSpec = { layers: 32, kvHeads: 8, headDim: 128, dtype: 'bf16', blockTokens: 16, numBlocks: 1000 };


describe('KvLayout', () => {
  it('derives the sizes of a Llama-3-8B-shaped cache', () => {
    const l = new KvLayout(llama);
    expect(l.tokenBytes).toBe(8 * 128 * 2);
    expect(l.pieceBytes).toBe(32 * 1024);
    expect(l.bytesPerTokenPerLayer).toBe(4096);
    expect(l.bytesPerToken).toBe(128 * 1024); // 128 KiB per token, as DESIGN.md says
    expect(l.bufferCount).toBe(32);
    expect(l.bufferBytes).toBe(2 * 1000 * 32 * 1024);
    expect(l.totalBytes).toBe(32 * 2 * 1000 * 32 * 1024);
    expect(l.extentBytes(256)).toBe(256 * 4096);
    expect(l.stagingBytes(256, 4)).toBe(4 * 256 * 4096);
  });

  it('pads extents to 4 KiB', () => {
    const odd = new KvLayout({ ...llama, kvHeads: 1, headDim: 100, dtype: 'f16' });
    expect(odd.extentBytes(3)).toBe(4096); // 1200 bytes of K and V
    expect(odd.extentBytes(11)).toBe(8192); // 4400 bytes
  });

  it('knows every dtype size', () => {
    const sizes = { f32: 4, f16: 2, bf16: 2, fp8_e4m3: 1, fp8_e5m2: 1 } as const;
    for (const [dtype, bytes] of Object.entries(sizes)) {
      expect(new KvLayout({ ...llama, dtype: dtype as KvLayoutSpec['dtype'] }).elementBytes).toBe(bytes);
    }
  });

  it('places pieces per arrangement', () => {
    const lm = new KvLayout({ ...llama, numBlocks: 10 });
    expect(lm.piece(3, 1, 7)).toEqual({ buffer: 3, offset: (10 + 7) * 32768 });
    const bm = new KvLayout({ ...llama, numBlocks: 10, arrangement: 'block-major' });
    expect(bm.bufferCount).toBe(1);
    expect(bm.piece(3, 1, 7)).toEqual({ buffer: 0, offset: ((7 * 32 + 3) * 2 + 1) * 32768 });
  });

  it('rejects bad specs and out-of-range accesses with codes', () => {
    expect(codeOf(() => new KvLayout({ ...llama, layers: 0 }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => new KvLayout({ ...llama, headDim: 1.5 }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => new KvLayout({ ...llama, dtype: 'int4' as never }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => new KvLayout({ ...llama, arrangement: 'diagonal' as never }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => new KvLayout({ ...llama, numBlocks: 2 ** 31, layers: 4096 }))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => new KvLayout(null as never))).toBe('ERR_INVALID_ARG');
    const l = new KvLayout(llama);
    expect(codeOf(() => l.piece(32, 0, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => l.piece(0, 0, 1000))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => l.piece(0, 0, -1))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => l.piece(0.5, 0, 0))).toBe('ERR_INVALID_ARG');
  });

  it('merges pieces that continue each other on both sides', () => {
    const l = new KvLayout({ ...llama, numBlocks: 100 });
    // blocks 5,6,7 are adjacent in the cache and in staging: one piece per K and per V
    const plan = planPieces(l, [5, 6, 7, 20], { first: 2, count: 1 });
    expect(plan.count).toBe(4);
    expect(Array.from(plan.table.subarray(0, 4))).toEqual([2, 5 * 32768, 0, 3 * 32768]);
    expect(Array.from(plan.table.subarray(4, 8))).toEqual([2, 20 * 32768, 3 * 32768, 32768]);
    expect(plan.stagingBytes).toBe(l.extentBytes(4 * 16));
    // block-major: K and V of one block are adjacent in the cache but not in staging
    const bm = new KvLayout({ ...llama, numBlocks: 100, arrangement: 'block-major' });
    expect(planPieces(bm, [5, 6], { first: 0, count: 1 }).count).toBe(4);
  });
});
