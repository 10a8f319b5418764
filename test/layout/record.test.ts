import { openSync, readSync, closeSync } from 'node:fs';

import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { EXTENT_ALIGN, KvLayout, type KvDtype } from '../../src/index.js';
import { nvmeLocation } from '../../src/store/testing.js';
import { backends, codeOf, randomBytes } from '../helpers/backends.js';
import { CHUNK, SPEC, randomBlocks, randomTokens } from '../helpers/store.js';
import { storeSuite } from '../helpers/suite.js';

const DTYPES: KvDtype[] = ['f32', 'f16', 'bf16', 'fp8_e4m3', 'fp8_e5m2'];

/** Small random layouts (odd head sizes included, so extents get padding). */
const layouts = fc
  .record({
    layers: fc.integer({ min: 1, max: 6 }),
    kvHeads: fc.integer({ min: 1, max: 5 }),
    headDim: fc.integer({ min: 1, max: 200 }),
    dtype: fc.constantFrom(...DTYPES),
    blockTokens: fc.integer({ min: 1, max: 16 }),
    numBlocks: fc.integer({ min: 1, max: 8 }),
    arrangement: fc.constantFrom('layer-major' as const, 'block-major' as const),
  })
  .map((spec) => new KvLayout(spec));

describe('record offsets', () => {
  it('every (layer, kv, token) is a distinct, non-overlapping, in-bounds range; K before V; extents 4096-aligned', () => {
    fc.assert(
      fc.property(layouts, fc.integer({ min: 1, max: 40 }), (layout, tokens) => {
        const ext = layout.extentBytes(tokens);
        expect(ext % EXTENT_ALIGN).toBe(0);
        const size = layout.stagingBytes(tokens);
        const ranges: Array<[number, number]> = [];
        for (let layer = 0; layer < layout.layers; layer++) {
          // Each layer's extent starts on a 4096 boundary.
          expect(layout.recordOffset(tokens, layer, 0, 0)).toBe(layer * ext);
          expect(layout.recordOffset(tokens, layer, 0, 0) % EXTENT_ALIGN).toBe(0);
          for (const kv of [0, 1] as const) {
            for (let t = 0; t < tokens; t++) {
              const at = layout.recordOffset(tokens, layer, kv, t);
              expect(at).toBeGreaterThanOrEqual(layer * ext);
              expect(at + layout.tokenBytes).toBeLessThanOrEqual((layer + 1) * ext);
              ranges.push([at, at + layout.tokenBytes]);
            }
          }
          // Every K of the layer comes before every V; tokens in order.
          const lastK = layout.recordOffset(tokens, layer, 0, tokens - 1);
          const firstV = layout.recordOffset(tokens, layer, 1, 0);
          expect(lastK + layout.tokenBytes).toBe(firstV);
        }
        ranges.sort((a, b) => a[0] - b[0]);
        expect(ranges).toHaveLength(layout.layers * 2 * tokens);
        for (let i = 0; i < ranges.length; i++) {
          expect(ranges[i]![0]).toBeGreaterThanOrEqual(0);
          expect(ranges[i]![1]).toBeLessThanOrEqual(size);
          if (i > 0) expect(ranges[i]![0]).toBeGreaterThanOrEqual(ranges[i - 1]![1]);
        }
      }),
      { numRuns: 200 },
    );
  });

  it('readRecordToken and writeRecordToken agree with recordOffset, and views share the record memory', () => {
    fc.assert(
      fc.property(layouts, fc.integer({ min: 1, max: 20 }), fc.nat(), fc.nat(), fc.boolean(), (layout, tokens, l, t, v) => {
        const layer = l % layout.layers;
        const token = t % tokens;
        const kv = v ? 1 : 0;
        const record = randomBytes(layout.stagingBytes(tokens));
        const bytes = randomBytes(layout.tokenBytes);
        const before = record.slice();
        layout.writeRecordToken(record, tokens, layer, kv, token, bytes);
        const at = layout.recordOffset(tokens, layer, kv, token);
        // Only that token's bytes changed.
        expect(Buffer.compare(record.subarray(at, at + bytes.length), bytes)).toBe(0);
        expect(Buffer.compare(record.subarray(0, at), before.subarray(0, at))).toBe(0);
        expect(Buffer.compare(record.subarray(at + bytes.length), before.subarray(at + bytes.length))).toBe(0);
        const view = layout.readRecordToken(record, tokens, layer, kv, token);
        expect(Buffer.compare(view, bytes)).toBe(0);
        expect(view.buffer).toBe(record.buffer); // a view, not a copy
        view[0] = view[0]! ^ 0xff;
        expect(record[at]).toBe(bytes[0]! ^ 0xff);
      }),
      { numRuns: 200 },
    );
  });

  it('cacheTokenOffset is the token inside its piece, and cache helpers agree with it', () => {
    fc.assert(
      fc.property(layouts, fc.nat(), fc.nat(), fc.nat(), fc.boolean(), (layout, l, b, s, v) => {
        const layer = l % layout.layers;
        const block = b % layout.numBlocks;
        const slot = s % layout.blockTokens;
        const kv = v ? 1 : 0;
        const piece = layout.piece(layer, kv, block);
        const at = layout.cacheTokenOffset(layer, kv, block, slot);
        expect(at).toEqual({ buffer: piece.buffer, offset: piece.offset + slot * layout.tokenBytes });
        const buffers = Array.from({ length: layout.bufferCount }, () => randomBytes(layout.bufferBytes));
        const bytes = randomBytes(layout.tokenBytes);
        layout.writeCacheToken(buffers, layer, kv, block, slot, bytes);
        expect(Buffer.compare(buffers[at.buffer]!.subarray(at.offset, at.offset + bytes.length), bytes)).toBe(0);
        const view = layout.readCacheToken(buffers, layer, kv, block, slot);
        expect(Buffer.compare(view, bytes)).toBe(0);
        expect(view.buffer).toBe(buffers[at.buffer]!.buffer);
      }),
      { numRuns: 100 },
    );
  });

  it('refuses bad arguments with codes and "expected X for Y, got Z"', () => {
    const layout = new KvLayout(SPEC); // 3 layers, 32 bytes per token
    const record = new Uint8Array(layout.stagingBytes(CHUNK));
    const tok = new Uint8Array(layout.tokenBytes);
    expect(codeOf(() => layout.recordOffset(0, 0, 0, 0))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => layout.recordOffset(1.5, 0, 0, 0))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => layout.recordOffset(CHUNK, 3, 0, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.recordOffset(CHUNK, -1, 0, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.recordOffset(CHUNK, 0.5, 0, 0))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => layout.recordOffset(CHUNK, 0, 2 as 0, 0))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => layout.recordOffset(CHUNK, 0, 0, CHUNK))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.recordOffset(CHUNK, 0, 0, '1' as unknown as number))).toBe('ERR_INVALID_ARG');
    expect(() => layout.recordOffset(CHUNK, 0, 0, CHUNK)).toThrow('expected an integer from 0 to 7 for token, got 8');
    expect(() => layout.recordOffset(CHUNK, 5, 0, 0)).toThrow('expected an integer from 0 to 2 for layerIndex, got 5');
    expect(() => layout.recordOffset(CHUNK, 0, 2 as 0, 0)).toThrow('expected 0 (K) or 1 (V) for kv, got 2');
    // The record is too short for layer 2 (a record of two layers).
    const twoLayers = new Uint8Array(layout.stagingBytes(CHUNK, 2));
    expect(layout.readRecordToken(twoLayers, CHUNK, 1, 1, CHUNK - 1)).toHaveLength(layout.tokenBytes);
    expect(codeOf(() => layout.readRecordToken(twoLayers, CHUNK, 2, 0, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.writeRecordToken(twoLayers, CHUNK, 2, 0, 0, tok))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.readRecordToken([] as unknown as Uint8Array, CHUNK, 0, 0, 0))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => layout.writeRecordToken(record, CHUNK, 0, 0, 0, tok.subarray(1)))).toBe('ERR_INVALID_ARG');
    expect(() => layout.writeRecordToken(record, CHUNK, 0, 0, 0, tok.subarray(1))).toThrow('expected 32 bytes (tokenBytes) for bytes, got 31 bytes');
    // A refused write leaves the record alone.
    expect(record.every((x) => x === 0)).toBe(true);
    // Cache helpers.
    const buffers = Array.from({ length: layout.bufferCount }, () => new Uint8Array(layout.bufferBytes));
    expect(codeOf(() => layout.cacheTokenOffset(0, 0, 0, SPEC.blockTokens))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.cacheTokenOffset(0, 0, SPEC.numBlocks, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.cacheTokenOffset(SPEC.layers, 0, 0, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.readCacheToken(buffers.slice(1), 0, 0, 0, 0))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => layout.readCacheToken([...buffers.slice(1), new Uint8Array(8)], 2, 0, 0, 0))).toBe('ERR_OUT_OF_RANGE');
    expect(codeOf(() => layout.writeCacheToken(buffers, 0, 0, 0, 0, new Uint8Array(33)))).toBe('ERR_INVALID_ARG');
  });
});

describe.each(backends)('record helpers against what KvStore writes on $backend', ({ backend, skip }) => {
  const layout = new KvLayout(SPEC);
  const BPC = CHUNK / SPEC.blockTokens;
  const fx = storeSuite(backend, skip, 'kvflow-record-test-');

  it.skipIf(skip)('a durable put writes each token where recordOffset says', async () => {
    const store = await fx.openStore();
    const chunks = 4;
    const tokens = randomTokens(CHUNK * chunks);
    const blocks = randomBlocks(chunks * BPC, SPEC.numBlocks);
    await store.put(tokens, fx.src, blocks, fx.stream, { durable: true });
    const records = store.keys(tokens).map((key) => {
      const loc = nvmeLocation(store, key)!;
      expect(loc).toBeDefined();
      const bytes = new Uint8Array(layout.stagingBytes(CHUNK));
      const fd = openSync(loc.file.path, 'r');
      try {
        expect(readSync(fd, bytes, 0, bytes.length, loc.offset)).toBe(bytes.length);
      } finally {
        closeSync(fd);
      }
      return bytes;
    });
    await store.close();
    // Random tokens of random chunks and layers: K and V in the slab equal the cache's bytes.
    fc.assert(
      fc.property(fc.integer({ min: 0, max: chunks - 1 }), fc.integer({ min: 0, max: CHUNK - 1 }), fc.integer({ min: 0, max: SPEC.layers - 1 }), (chunk, token, layer) => {
        const block = blocks[chunk * BPC + Math.floor(token / SPEC.blockTokens)]!;
        const slot = token % SPEC.blockTokens;
        for (const kv of [0, 1] as const) {
          const fromSlab = layout.readRecordToken(records[chunk]!, CHUNK, layer, kv, token);
          const fromCache = layout.readCacheToken(fx.srcData, layer, kv, block, slot);
          expect(Buffer.compare(fromSlab, fromCache), `chunk ${chunk} layer ${layer} kv ${kv} token ${token}`).toBe(0);
        }
      }),
      { numRuns: 100 },
    );
    // And every token of every chunk, exhaustively (the record is small).
    for (let chunk = 0; chunk < chunks; chunk++) {
      for (let layer = 0; layer < SPEC.layers; layer++) {
        for (const kv of [0, 1] as const) {
          for (let token = 0; token < CHUNK; token++) {
            const block = blocks[chunk * BPC + Math.floor(token / SPEC.blockTokens)]!;
            const want = layout.readCacheToken(fx.srcData, layer, kv, block, token % SPEC.blockTokens);
            expect(Buffer.compare(layout.readRecordToken(records[chunk]!, CHUNK, layer, kv, token), want)).toBe(0);
          }
        }
      }
    }
  });
});
