import { describe, expect, it } from 'vitest';

import { KvflowError } from '../../src/index.js';
import { busyKernel, gemmLoad } from '../../src/device/testing.js';
import { backends, codeOf, deviceSuite, randomBytes, sameBytes } from '../helpers/backends.js';

// The compute loads of bench/paged's contention figures.
describe.each(backends)('benchmark compute loads on $backend', ({ backend, skip }) => {
  const fx = deviceSuite(backend, skip);

  it.skipIf(skip)('the FMA load runs in stream order: a copy behind it lands, and its event completes', async () => {
    const s = fx.dev.createStream();
    const src = fx.dev.allocPinned(1 << 20);
    const dst = fx.dev.allocPinned(1 << 20);
    const data = randomBytes(src.byteLength);
    src.array.set(data);
    busyKernel(s, 10_000);
    s.copy(dst, 0, src, 0, src.byteLength);
    await s.record().done();
    expect(sameBytes(dst.array, data)).toBe('equal');
    await Promise.all([src.dispose(), dst.dispose()]);
  });

  it.skipIf(skip)('the GEMM load runs on CUDA where cuBLAS loads, and is refused with ERR_UNSUPPORTED otherwise', async () => {
    const s = fx.dev.createStream();
    let refused: KvflowError | undefined;
    try {
      gemmLoad(s, 2, 256);
    } catch (e) {
      expect(e).toBeInstanceOf(KvflowError);
      refused = e as KvflowError;
    }
    if (backend === 'cpu') {
      expect(refused?.code).toBe('ERR_UNSUPPORTED');
      expect(refused?.message).toMatch(/CUDA backend/);
      return;
    }
    if (refused !== undefined) {
      // No cuBLAS on this host: the message says what was tried. Where
      // KVFLOW_CUBLAS names a library, the GEMMs must run.
      expect(process.env.KVFLOW_CUBLAS ?? '', refused.message).toBe('');
      expect(refused.code).toBe('ERR_UNSUPPORTED');
      expect(refused.message).toMatch(/cuBLAS/);
      return;
    }
    await s.record().done();
    expect(codeOf(() => gemmLoad(s, 1, 100))).toBe('ERR_INVALID_ARG');
    expect(codeOf(() => gemmLoad(s, 5000, 256))).toBe('ERR_INVALID_ARG');
    // Work behind the GEMMs still runs in order.
    const src = fx.dev.allocPinned(4096);
    const dst = fx.dev.allocPinned(4096);
    const data = randomBytes(4096);
    src.array.set(data);
    gemmLoad(s, 4, 1024);
    s.copy(dst, 0, src, 0, 4096);
    await s.record().done();
    expect(sameBytes(dst.array, data)).toBe('equal');
    await Promise.all([src.dispose(), dst.dispose()]);
  });
});
