/**
 * Opening a store: its configuration resolved, its directory made, the NVMe
 * tier's index opened (reset where damaged and allowed, and a failed first
 * open undone), the DRAM tier allocated and the core assembled; and the
 * temporary directories of open stores, removed when the process exits.
 */
import { rmSync } from 'node:fs';

import { checkSignal, throwIfAborted } from '../util/abort.js';
import { Catalog } from './catalog.js';
import { resolveStoreConfig, type KvStoreOptions } from './config.js';
import { StoreCore } from './core.js';
import { Demoter } from './demoter.js';
import { createStoreDir } from './directory.js';
import { DramTier } from './dram.js';
import type { StoreGeometry } from './geometry.js';
import { isIndexDamage } from './index-check.js';
import { STORE_FORMAT_VERSION } from './keys.js';
import { NvmeTier } from './nvme.js';
import type { Tier } from './tier.js';

/** The order of a store's tiers, from its DRAM and NVMe tiers (see store/testing.ts). */
export type ArrangeTiers = (dram: Tier, nvme: Tier) => readonly Tier[];

/** What an open made: the store's core, its directory, and what opening it had to give up. */
export interface OpenedStore {
  core: StoreCore;
  dir: string;
  temporary: boolean;
  warning: string | undefined;
}

/**
 * Opens the parts of a store (openStore in store.ts wraps them in a
 * KvStore); `arrange` (store/testing.ts) orders its tiers, which may include
 * tiers of the caller's: the DRAM tier must come first.
 */
export async function openStoreCore(options: KvStoreOptions, arrange: ArrangeTiers | undefined): Promise<OpenedStore> {
  const config = resolveStoreConfig(options);
  const signal = checkSignal(options.signal);
  throwIfAborted(signal, 'opening the store');
  const { dir, temporary, created } = createStoreDir(options.dir);
  const { device, layers, recordBytes, extentBytes } = config;
  const wanted: StoreGeometry = {
    version: STORE_FORMAT_VERSION,
    slotBytes: recordBytes,
    slotCount: Math.floor(config.nvmeBytes / recordBytes),
    slotsPerFile: Math.max(1, Math.floor(config.slabFileBytes / recordBytes)),
    layers: layers.count,
    extentBytes,
  };
  // A failed create leaves nothing behind: the geometry it wrote would bind every later open.
  const undo = (fresh: boolean): void => {
    if (temporary) rmSync(dir, { recursive: true, force: true });
    else if (fresh) Catalog.removeCreated(dir, created);
  };
  const openNvme = async (): Promise<NvmeTier> => {
    const fresh = Catalog.isNew(dir);
    try {
      const tier = await NvmeTier.open(device, dir, wanted, config.fingerprint, config.file, config.leaseMs, config.touchFlushMs, signal);
      if (signal?.aborted) {
        await tier.close();
        throwIfAborted(signal, 'opening the store');
      }
      return tier;
    } catch (e) {
      if (!(isIndexDamage(e) && config.onCorruptIndex === 'reset')) undo(fresh);
      throw e;
    }
  };
  let warning: string | undefined;
  let nvme: NvmeTier;
  try {
    nvme = await openNvme();
  } catch (e) {
    if (!(isIndexDamage(e) && config.onCorruptIndex === 'reset')) throw e;
    warning = Catalog.reset(dir, (e as Error).message);
    nvme = await openNvme();
  }
  const dram = new DramTier(extentBytes, layers.count, config.dramBytes, (bytes) => device.allocPinned(bytes), config.rank);
  let core: StoreCore;
  try {
    if (config.preallocateDram) dram.arena.preallocate();
    core = new StoreCore(config, dram, nvme, arrange ? arrange(dram, nvme) : [dram, nvme]);
  } catch (e) {
    await Promise.all(dram.arena.segments.map((b) => b.dispose()));
    await nvme.close();
    if (temporary) rmSync(dir, { recursive: true, force: true });
    throw e;
  }
  core.demoter = new Demoter(core);
  if (temporary) keepTemporary(dir);
  return { core, dir, temporary, warning };
}

/** Temporary directories of stores still open: removed when the process exits (a store left open does not keep it alive). */
const temporaryDirs = new Set<string>();
let exitHook = false;

function keepTemporary(dir: string): void {
  if (!exitHook) {
    exitHook = true;
    process.once('exit', () => {
      for (const d of temporaryDirs) rmSync(d, { recursive: true, force: true });
    });
  }
  temporaryDirs.add(dir);
}

/** A temporary directory its store removed at close. */
export function forgetTemporary(dir: string): void {
  temporaryDirs.delete(dir);
}
