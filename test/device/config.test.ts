// The environment is read once, when a device opens, into a frozen config
// that the device's objects use; a bad variable fails at openDevice only.
import path from 'node:path';
import { writeFileSync } from 'node:fs';

import { afterEach, describe, expect, it } from 'vitest';

import { BUILT_IN_DEFAULTS, KvLayout, KvflowError, defaults, openDevice, readConfig } from '../../src/index.js';
import { codeOf, randomBytes, sameBytes } from '../helpers/backends.js';
import { scratchDirs } from '../helpers/io.js';

const tempDir = scratchDirs();

const touched = new Map<string, string | undefined>();
function setEnv(name: string, value: string): void {
  if (!touched.has(name)) touched.set(name, process.env[name]);
  process.env[name] = value;
}
afterEach(() => {
  for (const [k, v] of touched) {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  }
  touched.clear();
});

const layout = new KvLayout({ layers: 2, kvHeads: 2, headDim: 64, dtype: 'f16', blockTokens: 16, numBlocks: 8 });

describe('device.config', () => {
  it('is the environment over the built-in defaults, read at openDevice, frozen, options over both', async () => {
    setEnv('KVFLOW_IO_THREADS', '3');
    setEnv('KVFLOW_PAGED_ENGINE', 'kernel');
    const dev = openDevice({ backend: 'cpu', maxPinnedBytes: 1 << 30 });
    try {
      expect(dev.config.ioThreads).toBe(3);
      expect(dev.config.pagedEngine).toBe('kernel');
      expect(dev.config.maxPinnedBytes).toBe(1 << 30);
      expect(dev.config.backend).toBe('cpu');
      expect(dev.config.ioTaskSize).toBe(BUILT_IN_DEFAULTS.ioTaskSize);
      expect(dev.config.store).toEqual(BUILT_IN_DEFAULTS.store);
      expect(Object.isFrozen(dev.config)).toBe(true);
      expect(Object.isFrozen(dev.config.store)).toBe(true);
      expect(dev.info().config).toBe(dev.config);
      // Each decision as requested / chosen / why.
      expect(dev.selection).toMatchObject({ requested: 'cpu', chosen: 'cpu', backend: 'cpu', reason: 'the CPU backend was requested' });
      expect(dev.cudaGate()).toEqual({ requested: 'host', chosen: 'none', reason: 'the CPU backend waits on gates on its own threads' });
      // Later changes of the environment do not reach an open device.
      setEnv('KVFLOW_IO_THREADS', '5');
      expect(dev.config.ioThreads).toBe(3);
      expect(defaults().ioThreads).toBe(5);
      const file = await dev.openFile(path.join(tempDir(), 'f'), { create: true });
      expect(file.info.threads).toBe(3);
    } finally {
      await dev.dispose();
    }
  });

  it('a bad variable fails openDevice with ERR_INVALID_ARG naming it, and nothing of a device opened before it', async () => {
    const dev = openDevice({ backend: 'cpu' });
    try {
      setEnv('KVFLOW_IO_THREADS', 'many');
      const e = (() => {
        try {
          openDevice({ backend: 'cpu' });
        } catch (err) {
          return err;
        }
        return undefined;
      })();
      expect(e).toBeInstanceOf(KvflowError);
      expect((e as KvflowError).code).toBe('ERR_INVALID_ARG');
      expect((e as KvflowError).message).toBe('expected a non-negative integer for KVFLOW_IO_THREADS, got "many"');
      // The device opened before runs paged transfers and stream file IO regardless.
      const cache = dev.allocKvCache(layout);
      const s = dev.createStream();
      const blocks = [3, 1, 6];
      const bytes = layout.stagingBytes(blocks.length * layout.blockTokens);
      const staging = dev.allocPinned(bytes);
      const data = randomBytes(bytes);
      staging.array.set(data);
      cache.scatter(s, { blocks, staging });
      const back = dev.allocPinned(bytes);
      cache.prepare('gather', [{ blocks, staging: back }]).move(s);
      const dir = tempDir();
      writeFileSync(path.join(dir, 'in'), data);
      const file = await dev.openFile(path.join(dir, 'in'));
      const viaFile = dev.allocDevice(bytes);
      s.readFile(viaFile, 0, file, 0, bytes);
      await s.synchronize();
      expect(sameBytes(back.array.subarray(0, bytes), data)).toBe('equal');
    } finally {
      await dev.dispose();
    }
  });

  it('every KVFLOW_* variable is validated by readConfig, naming it', () => {
    const bad: Array<[string, string, string]> = [
      ['KVFLOW_BACKEND', 'gpu', "expected 'auto', 'cuda' or 'cpu' for KVFLOW_BACKEND"],
      ['KVFLOW_DEVICE', '-1', 'expected a non-negative integer for KVFLOW_DEVICE'],
      ['KVFLOW_IO_BOUNCE_CHUNK', '4097', 'expected a multiple of 4096 from 4096 to 1073741824 for KVFLOW_IO_BOUNCE_CHUNK'],
      ['KVFLOW_IO_BOUNCE_SLOTS', '65', 'expected an integer from 1 to 64 for KVFLOW_IO_BOUNCE_SLOTS'],
      ['KVFLOW_GDS', 'yes', "expected 'auto', 'on' or 'off' for KVFLOW_GDS"],
      ['KVFLOW_PAGED_ENGINE', 'auto', "expected 'dma' or 'kernel' for KVFLOW_PAGED_ENGINE"],
      ['KVFLOW_COMPLETION_SPIN_US', '10001', 'expected an integer from 0 to 10000 for KVFLOW_COMPLETION_SPIN_US'],
      ['KVFLOW_SHORT_WAIT_US', '1001', 'expected an integer from 0 to 1000 for KVFLOW_SHORT_WAIT_US'],
      ['KVFLOW_SHORT_WAIT_US', '-1', 'expected a non-negative integer for KVFLOW_SHORT_WAIT_US'],
    ];
    for (const [name, value, message] of bad) {
      expect(() => readConfig({ [name]: value }), name).toThrow(message);
      expect(codeOf(() => readConfig({ [name]: value })), name).toBe('ERR_INVALID_ARG');
    }
    expect(readConfig({})).toEqual(BUILT_IN_DEFAULTS);
    expect(readConfig({ KVFLOW_IO_THREADS: '' }).ioThreads).toBe(BUILT_IN_DEFAULTS.ioThreads);
    expect(readConfig({ KVFLOW_COMPLETION_SPIN_US: '0' }).completionSpinUs).toBe(0);
    expect(readConfig({ KVFLOW_SHORT_WAIT_US: '0' }).shortWaitUs).toBe(0);
    expect(readConfig({ KVFLOW_SHORT_WAIT_US: '1000' }).shortWaitUs).toBe(1000);
  });
});
