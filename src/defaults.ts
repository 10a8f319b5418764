/**
 * Every default in one place. Options passed to an API win over `KVFLOW_*`
 * environment variables, which win over these values; `kvflow doctor` and
 * `device.info()` echo what is in force.
 */
import { describe, fail } from './errors.js';

/** The requested backend: `auto` picks CUDA when a device can be opened, else the CPU backend. */
export type BackendRequest = 'auto' | 'cuda' | 'cpu';

/** Defaults in force, after environment overrides. */
export interface KvflowDefaults {
  /** `KVFLOW_BACKEND`: backend that {@link openDevice} uses when none is given. */
  backend: BackendRequest;
  /** `KVFLOW_DEVICE`: CUDA device ordinal. */
  ordinal: number;
  /** `KVFLOW_MAX_PINNED_BYTES`: cap on pinned host memory per device, 0 for none but the system's. */
  maxPinnedBytes: number;
  /** `KVFLOW_PAGED_ENGINE`: how paged gathers and scatters move on CUDA (see KvCache). */
  pagedEngine: 'dma' | 'kernel';
}

const BUILT_IN: KvflowDefaults = { backend: 'auto', ordinal: 0, maxPinnedBytes: 0, pagedEngine: 'dma' };

function envInteger(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isSafeInteger(value) || value < 0) {
    fail('ERR_INVALID_ARG', `expected a non-negative integer for ${name}, got ${describe(raw)}`);
  }
  return value;
}

/** The defaults in force now (environment read at each call). */
export function defaults(): KvflowDefaults {
  const backend = process.env.KVFLOW_BACKEND ?? BUILT_IN.backend;
  if (backend !== 'auto' && backend !== 'cuda' && backend !== 'cpu') {
    fail('ERR_INVALID_ARG', `expected 'auto', 'cuda' or 'cpu' for KVFLOW_BACKEND, got ${describe(backend)}`);
  }
  const pagedEngine = process.env.KVFLOW_PAGED_ENGINE || BUILT_IN.pagedEngine;
  if (pagedEngine !== 'dma' && pagedEngine !== 'kernel') {
    fail('ERR_INVALID_ARG', `expected 'dma' or 'kernel' for KVFLOW_PAGED_ENGINE, got ${describe(pagedEngine)}`);
  }
  return {
    backend,
    pagedEngine,
    ordinal: envInteger('KVFLOW_DEVICE', BUILT_IN.ordinal),
    maxPinnedBytes: envInteger('KVFLOW_MAX_PINNED_BYTES', BUILT_IN.maxPinnedBytes),
  };
}
