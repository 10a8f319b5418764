// Tenants through the pipeline and the connector: two tenants with identical
// token streams share one store, and neither ever hits the other's prefixes.

import { describe, expect, it } from 'vitest';

import { KvConnector, LayerPipeline } from '../../src/index.js';
import { backends } from '../helpers/backends.js';
import { PatternCompute, expectPattern } from '../helpers/pattern.js';
import { randomBlocks, randomTokens } from '../helpers/store.js';
import { pipelineSuite } from '../helpers/suite.js';

const SPEC = { layers: 3, kvHeads: 2, headDim: 8, dtype: 'f16' as const, blockTokens: 4, numBlocks: 256 };
const CHUNK = 8;

describe.each(backends)('tenants in the pipeline and the connector, on $backend', ({ backend, skip }) => {
  const fx = pipelineSuite(backend, skip, { prefix: 'kvflow-tenants-', spec: SPEC, chunk: CHUNK, nvmeBytes: 128 * 8192, dramBytes: 64 * 8192 });
  const { openStore } = fx;

  it.skipIf(skip)('LayerPipeline: prefills of identical prompts for two tenants never hit each other\'s prefixes; each hits its own', async () => {
    const store = await openStore();
    const pipe = new LayerPipeline({ store, cache: fx.cache, lookahead: 2 });
    const compute = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 4 + 3);
    const run = async (tenant: string | undefined, policy: 'load-all' | 'recompute' = 'load-all') => {
      const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
      const r = await pipe.prefill({ tokens: prompt, blocks, compute: compute.fn(), policy, tenant });
      await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
      return r;
    };
    // Tenant a computes and saves the prompt.
    expect(await run('a')).toMatchObject({ hitTokens: 0, saved: 4 });
    // Tenant b, the same tokens: nothing of a's is hit; b saves its own chunks.
    expect(await run('b')).toMatchObject({ hitTokens: 0, saved: 4 });
    // No tenant (the store's own keys) is a third one.
    expect(await run(undefined, 'recompute')).toMatchObject({ hitTokens: 0, saved: 4 });
    // Each tenant now hits its own prefix, loads it and saves nothing new.
    const again = await run('b');
    expect(again).toMatchObject({ hitTokens: 4 * CHUNK, saved: 0 });
    expect(again.plan.loadTokens).toBe(4 * CHUNK);
    expect(await run('a')).toMatchObject({ hitTokens: 4 * CHUNK, saved: 0 });
    expect(await run('c', 'recompute')).toMatchObject({ hitTokens: 0 });
    expect(store.stats().dram.chunks).toBe(16); // a, b, none and c: one DRAM budget
    expect(() => pipe.prefill({ tokens: prompt, blocks: randomBlocks(9, SPEC.numBlocks), compute: compute.fn(), tenant: 7 as never }))
      .toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    await pipe.dispose();
    await compute.dispose();
    await store.close();
  });

  it.skipIf(skip)('KvConnector: lookup and saves under a tenant; the other tenant\'s identical prompt is not loadable', async () => {
    const store = await openStore();
    const conn = new KvConnector({ store, cache: fx.cache });
    const pattern = new PatternCompute(fx.dev, fx.cache);
    const prompt = randomTokens(CHUNK * 3 + 2);
    const turn = async (tenant: string, expectLoadable: number, expectSaved: number): Promise<void> => {
      const req = conn.lookup(prompt, { tenant });
      expect(req.tenant).toBe(tenant);
      expect(req.loadableTokens).toBe(expectLoadable);
      const blocks = randomBlocks(Math.ceil(prompt.length / SPEC.blockTokens), SPEC.numBlocks);
      conn.startLoad(req, blocks);
      const fn = pattern.fn();
      for (let l = 0; l < SPEC.layers; l++) {
        conn.waitForLayerLoad(req, l, fx.stream);
        fn(l, { stream: fx.stream, tokens: req.tokens, blocks, computeFrom: req.loadableTokens, plan: undefined as never, attempt: 0 });
        conn.saveLayer(req, l, fx.stream, blocks);
      }
      expect(await conn.waitForSave(req)).toEqual({ saved: expectSaved });
      expect(await conn.loadResult(req)).toMatchObject({ ok: true, validTokens: expectLoadable });
      await conn.requestFinished(req);
      await expectPattern(fx.dev, fx.stream, fx.cache, prompt, blocks);
    };
    await turn('a', 0, 3);
    await turn('b', 0, 3);
    await turn('b', 3 * CHUNK, 0);
    await turn('a', 3 * CHUNK, 0);
    expect(store.lookup(prompt).tokens).toBe(0);
    expect(() => conn.lookup(prompt, { tenant: 1 as never })).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    expect(() => conn.lookup(prompt, { tenat: 'a' } as never)).toThrow(expect.objectContaining({ code: 'ERR_INVALID_ARG' }));
    await conn.dispose();
    await pattern.dispose();
    await store.close();
  });
});
