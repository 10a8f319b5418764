// The memory cap of `kvflow demo --tokens`: the largest step-aligned token
// count whose estimate fits half the memory, for any monotone estimate.
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { checkTokenMemory, tokenCap } from '../../src/cli/memory.js';
import { UsageError } from '../../src/cli/args.js';

describe('tokenCap', () => {
  it('is the largest multiple of the step in range whose estimate fits half the memory (0 when none does)', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 1 << 20 }), fc.integer({ min: 0, max: 1 << 30 }), fc.double({ min: 1e6, max: 1e11, noNaN: true }), (perToken, fixed, memory) => {
        const need = (n: number): number => fixed + n * perToken;
        const cap = tokenCap(need, memory, 256, 32768, 256);
        if (need(256) > memory / 2) return cap === 0;
        expect(cap % 256).toBe(0);
        expect(cap).toBeGreaterThanOrEqual(256);
        expect(cap).toBeLessThanOrEqual(32768);
        expect(need(cap)).toBeLessThanOrEqual(memory / 2);
        if (cap < 32768) expect(need(cap + 256)).toBeGreaterThan(memory / 2);
        return true;
      }),
    );
  });

  it('checkTokenMemory passes what fits and refuses the rest with a UsageError naming --tokens and the cap', () => {
    const need = (n: number): number => n * 2 ** 20;
    expect(() => checkTokenMemory(1024, need, 2 ** 32, 'memory', 256, 32768, 256)).not.toThrow();
    expect(() => checkTokenMemory(4096, need, 2 ** 32, 'memory', 256, 32768, 256)).toThrow(
      new UsageError('--tokens 4096 needs about 4.0 GiB of memory; this machine has 4.0 GiB (a demo plans to use at most half): at most --tokens 2048 here'),
    );
  });
});
