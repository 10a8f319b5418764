/**
 * Finds and loads the native addon. Candidates are tried in a fixed order; on
 * failure one error lists every path tried, why it failed, and the fix.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { KvflowError } from '../errors.js';
import { ABI_VERSION } from './abi.js';
import type { NativeBinding } from './types.js';

const require = createRequire(import.meta.url);

/** Where the binding came from. */
export interface LoadedBinding {
  binding: NativeBinding;
  path: string;
  /** Which build produced it. */
  build: 'env' | 'cmake' | 'node-gyp';
}

let loaded: LoadedBinding | undefined;

/** The package root: the nearest folder above this file whose package.json is kvflow's. */
export function packageRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg)) {
      try {
        if ((JSON.parse(readFileSync(pkg, 'utf8')) as { name?: string }).name === 'kvflow') return dir;
      } catch {
        // not ours: keep walking
      }
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new KvflowError('cannot find the kvflow package root above ' + import.meta.url, 'ERR_LOAD');
    dir = parent;
  }
}

/** Candidate addon paths in the order they are tried. */
export function candidates(): Array<{ path: string; build: LoadedBinding['build'] }> {
  const root = packageRoot();
  const list: Array<{ path: string; build: LoadedBinding['build'] }> = [];
  if (process.env.KVFLOW_ADDON) list.push({ path: path.resolve(process.env.KVFLOW_ADDON), build: 'env' });
  list.push({ path: path.join(root, 'build-cmake', 'Release', 'kvflow.node'), build: 'cmake' });
  list.push({ path: path.join(root, 'build', 'Release', 'kvflow.node'), build: 'node-gyp' });
  return list;
}

/** Loads the addon once per process (per worker thread). */
export function loadBinding(): LoadedBinding {
  loaded ??= loadCandidates(candidates());
  return loaded;
}

/** Loads the first candidate that works, or throws ERR_LOAD listing each path tried and why it failed. */
export function loadCandidates(list: Array<{ path: string; build: LoadedBinding['build'] }>): LoadedBinding {
  const tried: string[] = [];
  for (const c of list) {
    if (!existsSync(c.path)) {
      tried.push(`${c.path}: not found`);
      continue;
    }
    try {
      const binding = require(c.path) as NativeBinding;
      if (binding.abiVersion !== ABI_VERSION) {
        tried.push(`${c.path}: built from another kvflow version (abi ${binding.abiVersion}, expected ${ABI_VERSION})`);
        continue;
      }
      binding.setErrorClass(KvflowError as unknown as new (message: string, code: string) => Error);
      return { binding, path: c.path, build: c.build };
    } catch (e) {
      tried.push(`${c.path}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new KvflowError(
    'cannot load the kvflow native addon. Tried:\n  ' +
      tried.join('\n  ') +
      '\nFix: build it with `npm rebuild kvflow` (needs a C++20 compiler; cmake and CUDA 13 for the GPU backend), ' +
      'or point KVFLOW_ADDON at a built kvflow.node.',
    'ERR_LOAD',
  );
}
