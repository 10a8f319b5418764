import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

import { BandwidthMeter, ComputeModel, HostModel, KvflowError, attentionPairs, layerModelMs, planPrefill, type PlanRequest } from '../../src/index.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof KvflowError ? e.code : `not a KvflowError: ${String(e)}`;
  }
  return undefined;
}

describe('ComputeModel', () => {
  it('recovers floor, per-token and per-pair terms from layers of several shapes', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0, max: 5, noNaN: true }),
        fc.double({ min: 1e-4, max: 1e-2, noNaN: true }),
        fc.double({ min: 0, max: 1e-6, noNaN: true }),
        (floorMs, perTokenMs, perPairMs) => {
          const m = new ComputeModel();
          for (const [n, start] of [[512, 0], [4096, 0], [512, 3584], [1024, 15360], [2048, 2048]] as const) {
            m.observe({ newTokens: n, start, ms: floorMs + perTokenMs * n + perPairMs * attentionPairs(n, start) });
          }
          expect(m.terms.basis).toBe('measured');
          for (const [n, start] of [[256, 0], [100, 8000], [16384, 0]] as const) {
            const truth = floorMs + perTokenMs * n + perPairMs * attentionPairs(n, start);
            expect(Math.abs(m.predict(n, start) - truth)).toBeLessThanOrEqual(1e-6 * Math.max(1, truth));
          }
        },
      ),
      { numRuns: 200 },
    );
  });

  it('reads one prompt shape as a per-token time and says so', () => {
    const m = new ComputeModel();
    expect(m.calibrated).toBe(false);
    expect(m.predict(100, 0)).toBe(0);
    m.observe({ newTokens: 4096, start: 0, ms: 4 });
    m.observe({ newTokens: 4096, start: 0, ms: 6 });
    expect(m.terms).toMatchObject({ basis: 'per-token', floorMs: 0, perPairMs: 0 });
    expect(m.predict(1024, 3072)).toBeCloseTo(1.25, 12);
  });

  it('rejects samples that are not measurements, and keeps its terms', () => {
    const m = new ComputeModel();
    m.observe({ newTokens: 10, start: 0, ms: 1 });
    const before = { ...m.terms };
    expect(code(() => m.observe({ newTokens: 0, start: 0, ms: 1 }))).toBe('ERR_INVALID_ARG');
    expect(code(() => m.observe({ newTokens: 1, start: -1, ms: 1 }))).toBe('ERR_INVALID_ARG');
    expect(code(() => m.observe({ newTokens: 1, start: 0, ms: Number.NaN }))).toBe('ERR_INVALID_ARG');
    expect(code(() => m.observe(null as never))).toBe('ERR_INVALID_ARG');
    expect(m.terms).toEqual(before);
  });
});

describe('BandwidthMeter', () => {
  it('starts from a prior, then follows measured loads and shares them fairly', () => {
    const m = new BandwidthMeter({ dram: 20e6 });
    expect(m.get('dram')).toEqual({ bytesPerMs: 20e6, basis: 'prior', samples: 0 });
    m.observe('dram', 1 << 10, 1); // too small to say anything
    expect(m.get('dram').basis).toBe('prior');
    m.observe('dram', 50e6, 1);
    expect(m.get('dram')).toEqual({ bytesPerMs: 50e6, basis: 'measured', samples: 1 });
    for (let i = 0; i < 40; i++) m.observe('dram', 30e6, 1);
    expect(m.get('dram').bytesPerMs).toBeCloseTo(30e6, -2);
    expect(m.share('dram', 4)).toBeCloseTo(m.get('dram').bytesPerMs / 4, 6);
    m.observe('nvme', 8e6, 4, 2); // two loads shared the disk: each saw half
    expect(m.get('nvme').bytesPerMs).toBe(4e6);
  });

  it('rejects bad samples and priors with codes', () => {
    const m = new BandwidthMeter();
    expect(code(() => m.observe('', 1e6, 1))).toBe('ERR_INVALID_ARG');
    expect(code(() => m.observe('dram', 1e7, 0))).toBe('ERR_INVALID_ARG');
    expect(code(() => new BandwidthMeter({ dram: -1 }))).toBe('ERR_INVALID_ARG');
    expect(m.get('dram').basis).toBe('prior');
  });
});

const tiers = ['dram', 'nvme'] as const;

const requestArb = fc
  .record({
    layers: fc.integer({ min: 1, max: 96 }),
    chunkTokens: fc.constantFrom(16, 64, 256),
    promptChunks: fc.integer({ min: 1, max: 80 }),
    tail: fc.integer({ min: 0, max: 255 }),
    hitChunks: fc.array(fc.integer({ min: 0, max: 30 }), { minLength: 1, maxLength: 2 }),
    heldFraction: fc.double({ min: 0, max: 1, noNaN: true }),
    floorMs: fc.double({ min: 0, max: 5, noNaN: true }),
    perTokenMs: fc.double({ min: 1e-5, max: 1e-2, noNaN: true }),
    perPairMs: fc.double({ min: 0, max: 1e-7, noNaN: true }),
    dram: fc.double({ min: 1e5, max: 6e7, noNaN: true }),
    nvme: fc.double({ min: 1e4, max: 7e6, noNaN: true }),
    bytesPerTokenPerLayer: fc.constantFrom(4096, 40960, 131072 / 32),
    sharing: fc.integer({ min: 1, max: 32 }),
  })
  .map((r) => {
    const promptTokens = r.promptChunks * r.chunkTokens + (r.tail % r.chunkTokens);
    const hit = r.hitChunks.map((c, i) => ({ tier: tiers[i]!, tokens: c * r.chunkTokens }));
    const compute = ComputeModel.fromTerms({ floorMs: r.floorMs, perTokenMs: r.perTokenMs, perPairMs: r.perPairMs });
    const bandwidth = (t: string) => (t === 'dram' ? r.dram : r.nvme);
    const req: Omit<PlanRequest, 'policy'> = {
      layers: r.layers, bytesPerTokenPerLayer: r.bytesPerTokenPerLayer, promptTokens, chunkTokens: r.chunkTokens,
      heldTokens: Math.floor(r.heldFraction * promptTokens * 0.5), hit, compute, bandwidth, sharing: r.sharing,
    };
    return req;
  });

describe('HostModel', () => {
  it('recovers base and per-chunk host time from prefills of two load sizes; flat with one, and says so', () => {
    const m = new HostModel();
    expect(m.terms.basis).toBe('none');
    expect(m.predict(8)).toBe(0);
    m.observe({ chunks: 4, ms: 0.5 });
    m.observe({ chunks: 4, ms: 0.7 });
    expect(m.terms).toMatchObject({ basis: 'flat', perChunkMs: 0, samples: 2 });
    expect(m.terms.baseMs).toBeCloseTo(0.6, 9);
    for (const [chunks, ms] of [[0, 0.1], [2, 0.3], [8, 0.9], [0, 0.1], [8, 0.9]] as const) m.observe({ chunks, ms });
    // Samples on 0.1 + 0.1 x chunks, and the two first ones (0.5, 0.7 at 4: mean 0.6 is off the line by 0.1 each).
    expect(m.terms.basis).toBe('measured');
    expect(m.terms.perChunkMs).toBeGreaterThan(0.05);
    expect(m.predict(8)).toBeGreaterThan(m.predict(0));
  });

  it('never fits a negative term, and rejects bad samples with codes, keeping its terms', () => {
    fc.assert(
      fc.property(fc.array(fc.record({ chunks: fc.integer({ min: 0, max: 64 }), ms: fc.double({ min: 0, max: 10, noNaN: true }) }), { minLength: 1, maxLength: 40 }), (samples) => {
        const m = new HostModel();
        for (const s of samples) m.observe(s);
        expect(m.terms.baseMs).toBeGreaterThanOrEqual(0);
        expect(m.terms.perChunkMs).toBeGreaterThanOrEqual(0);
        for (const c of [0, 1, 16, 64]) expect(Number.isFinite(m.predict(c)) && m.predict(c) >= 0).toBe(true);
      }),
      { numRuns: 300 },
    );
    const m = new HostModel();
    m.observe({ chunks: 2, ms: 1 });
    const before = { ...m.terms };
    for (const bad of [{ chunks: -1, ms: 1 }, { chunks: 1.5, ms: 1 }, { chunks: 1, ms: -1 }, { chunks: 1, ms: Number.NaN }, null]) {
      expect(code(() => m.observe(bad as never))).toBe('ERR_INVALID_ARG');
    }
    expect(m.terms).toEqual(before);
  });
});

describe('planPrefill', () => {
  it('a layer takes at least its host time: the floor is in every prediction, adaptive still never predicted slower than either end', () => {
    fc.assert(
      fc.property(requestArb, fc.double({ min: 0, max: 5, noNaN: true }), fc.double({ min: 0, max: 1, noNaN: true }), (req, base, perChunk) => {
        const host = (chunks: number): number => base + perChunk * chunks;
        const a = planPrefill({ ...req, policy: 'adaptive', host });
        const r = planPrefill({ ...req, policy: 'recompute', host });
        const l = planPrefill({ ...req, policy: 'load-all', host });
        expect(a.ms).toBeLessThanOrEqual(r.ms);
        expect(a.ms).toBeLessThanOrEqual(l.ms);
        const sharing = req.computeSharing ?? req.sharing ?? 1;
        for (const p of [a, r, l]) {
          expect(p.hostMsPerLayer).toBeCloseTo(host(Math.ceil(p.loadTokens / req.chunkTokens)) * Math.max(1, sharing), 9);
          expect(p.ms).toBeCloseTo(Math.max(layerModelMs(req.layers, p.loadMsPerLayer, p.computeMsPerLayer), req.layers * p.hostMsPerLayer), 9);
          if (p.ms > layerModelMs(req.layers, p.loadMsPerLayer, p.computeMsPerLayer) * (1 + 1e-6)) expect(p.reason).toContain('host-bound');
        }
      }),
      { numRuns: 300 },
    );
  });

  it('a host that loads slowly turns a load into a recompute; a HostModel serves as the host', () => {
    const req: PlanRequest = {
      policy: 'adaptive', layers: 32, bytesPerTokenPerLayer: 4096, promptTokens: 3000, chunkTokens: 256,
      hit: [{ tier: 'dram', tokens: 2560 }], compute: (n) => 0.002 * n, bandwidth: () => 50e6,
    };
    const fast = planPrefill(req);
    expect(fast.loadTokens).toBe(2560); // loading is far cheaper on the GPU
    const m = new HostModel();
    m.observe({ chunks: 0, ms: 0.5 });
    m.observe({ chunks: 10, ms: 6.5 }); // 0.6 ms of host per chunk and layer: loading 10 chunks is host-bound at 6.5 ms per layer
    const slow = planPrefill({ ...req, host: m });
    expect(slow.loadTokens).toBeLessThan(2560);
    expect(slow.ms).toBeLessThanOrEqual(slow.recomputeMs);
    expect(slow.loadAllMs).toBeCloseTo(32 * m.predict(10), 6);
  });

  it('prefills of one pipeline share compute as they share IO: the split does not change with how many are in flight', () => {
    fc.assert(
      fc.property(requestArb, fc.constantFrom<PlanRequest['policy']>('adaptive', 'load-all', 'recompute'), (req, policy) => {
        const one = planPrefill({ ...req, policy, sharing: 1 });
        const many = planPrefill({ ...req, policy, sharing: req.sharing ?? 1 });
        expect([many.loadTokens, many.computeFrom]).toEqual([one.loadTokens, one.computeFrom]);
        expect(many.ms).toBeCloseTo(one.ms * (req.sharing ?? 1), 6);
        // IO shared but compute not: recomputing costs what it costs alone, loading costs more.
        const ioOnly = planPrefill({ ...req, policy, computeSharing: 1 });
        expect(ioOnly.recomputeMs).toBeCloseTo(one.recomputeMs, 6);
        expect(ioOnly.loadAllMs).toBeGreaterThanOrEqual(one.loadAllMs * (1 - 1e-9));
      }),
      { numRuns: 300 },
    );
    expect(code(() => planPrefill({ ...fc.sample(requestArb, 1)[0]!, policy: 'adaptive', computeSharing: 0.5 }))).toBe('ERR_INVALID_ARG');
  });

  it('adaptive is never predicted slower than recompute or load-all, and its figures add up', () => {
    fc.assert(
      fc.property(requestArb, (req) => {
        const a = planPrefill({ ...req, policy: 'adaptive' });
        const r = planPrefill({ ...req, policy: 'recompute' });
        const l = planPrefill({ ...req, policy: 'load-all' });
        expect(a.ms).toBeLessThanOrEqual(r.ms);
        expect(a.ms).toBeLessThanOrEqual(l.ms);
        expect(a.recomputeMs).toBe(r.ms);
        expect(a.loadAllMs).toBe(l.ms);
        expect(r.loadTokens).toBe(0);
        for (const p of [a, r, l]) {
          const held = req.heldTokens ?? 0;
          expect(p.computeFrom).toBeGreaterThanOrEqual(held);
          expect(p.computeFrom).toBeLessThanOrEqual(req.promptTokens - 1);
          expect(p.computeTokens).toBe(req.promptTokens - p.computeFrom);
          expect(p.loaded.reduce((s, x) => s + x.tokens, 0)).toBe(p.loadTokens);
          expect(p.loadFrom % req.chunkTokens === 0 || p.loadTokens === 0).toBe(true);
          expect((p.loadFrom + p.loadTokens) % req.chunkTokens === 0 || p.loadTokens === 0).toBe(true);
          expect(p.ms).toBeCloseTo(layerModelMs(req.layers, p.loadMsPerLayer, p.computeMsPerLayer), 9);
          const hitTokens = req.hit.reduce((s, x) => s + x.tokens, 0);
          expect(p.loadFrom + p.loadTokens).toBeLessThanOrEqual(Math.max(hitTokens, p.loadFrom));
        }
      }),
      { numRuns: 500 },
    );
  });

  it('loads the first b = e/(1+e) of the prompt when the hit is larger, the whole hit when it is smaller', () => {
    fc.assert(
      fc.property(
        fc.double({ min: 0.1, max: 20, noNaN: true }),
        fc.integer({ min: 21, max: 96 }),
        fc.double({ min: 0.05, max: 1, noNaN: true }),
        (e, layers, a) => {
          const n = 16384;
          const chunk = 16;
          const t = 0.001; // ms per token per layer
          const hitTokens = Math.floor((a * n) / chunk) * chunk;
          const plan = planPrefill({
            policy: 'adaptive', layers, bytesPerTokenPerLayer: 1000, promptTokens: n, chunkTokens: chunk,
            hit: [{ tier: 'dram', tokens: hitTokens }],
            compute: (newTokens) => newTokens * t,
            bandwidth: () => 1000 / (t / e), // one token's layer loads in t/e ms
            margin: 0.01,
          });
          const b = (n * e) / (1 + e);
          // Past the balance point by more than the margin a split wins; nearer, loading the whole hit is within 3%.
          // The split pays one more layer's fill (its load equals its compute), so with few layers it wins
          // only where the hit passes b by 1/layers more: load-all ~ L*hit*t/e against the split's (L+1)*b*t/e.
          if (hitTokens > b * (1.05 + 1 / layers) + chunk) expect(Math.abs(plan.loadTokens - b)).toBeLessThanOrEqual(chunk);
          else if (hitTokens < b - chunk) expect(plan.loadTokens).toBe(hitTokens);
          // Measured against the talk's closed forms: N*T/(1+e) when IO and compute balance.
          const total = n * t * layers;
          const ideal = hitTokens > b ? total / (1 + e) : Math.max((hitTokens * t * layers) / e, (n - hitTokens) * t * layers);
          // Within the margin of the closed form, plus one chunk and one layer's fill.
          expect(plan.ms).toBeLessThanOrEqual((ideal + chunk * t * layers + total / layers) * 1.01);
        },
      ),
      { numRuns: 300 },
    );
  });

  it('recomputes while compute is not measured, and says why', () => {
    const plan = planPrefill({
      policy: 'adaptive', layers: 32, bytesPerTokenPerLayer: 4096, promptTokens: 4096, chunkTokens: 256,
      hit: [{ tier: 'dram', tokens: 3840 }], compute: new ComputeModel(), bandwidth: new BandwidthMeter(),
    });
    expect(plan.loadTokens).toBe(0);
    expect(plan.computeFrom).toBe(0);
    expect(plan.reason).toMatch(/not measured/);
    expect(plan.reason).toMatch(/dram prior/);
  });

  it('splits a hit across tiers in prompt order and counts held tokens as neither loaded nor computed', () => {
    const plan = planPrefill({
      policy: 'load-all', layers: 4, bytesPerTokenPerLayer: 4096, promptTokens: 1000, chunkTokens: 100,
      heldTokens: 150, hit: [{ tier: 'dram', tokens: 300 }, { tier: 'nvme', tokens: 400 }],
      compute: (n) => n, bandwidth: () => 1e6,
    });
    expect(plan.loadFrom).toBe(100);
    expect(plan.loaded).toEqual([{ tier: 'dram', tokens: 200 }, { tier: 'nvme', tokens: 400 }]);
    expect(plan.computeFrom).toBe(700);
    const all = planPrefill({
      policy: 'load-all', layers: 4, bytesPerTokenPerLayer: 4096, promptTokens: 700, chunkTokens: 100,
      hit: [{ tier: 'dram', tokens: 700 }], compute: (n) => n, bandwidth: () => 1e6,
    });
    expect(all.computeFrom).toBe(699); // the last token is always computed
  });

  it('rejects malformed requests with codes', () => {
    const base: PlanRequest = {
      policy: 'adaptive', layers: 2, bytesPerTokenPerLayer: 1, promptTokens: 10, chunkTokens: 5,
      hit: [{ tier: 'dram', tokens: 5 }], compute: () => 1, bandwidth: () => 1,
    };
    expect(code(() => planPrefill({ ...base, policy: 'fast' as never }))).toBe('ERR_INVALID_ARG');
    expect(code(() => planPrefill({ ...base, promptTokens: 0 }))).toBe('ERR_INVALID_ARG');
    expect(code(() => planPrefill({ ...base, hit: [{ tier: 'dram', tokens: 3 }] }))).toBe('ERR_INVALID_ARG');
    expect(code(() => planPrefill({ ...base, chunkTokens: 0 }))).toBe('ERR_INVALID_ARG');
    expect(code(() => planPrefill(null as never))).toBe('ERR_INVALID_ARG');
    expect(code(() => planPrefill(base))).toBeUndefined();
  });
});
