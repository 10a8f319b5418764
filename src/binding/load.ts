/**
 * Finds and loads the native addon. Candidates are tried in a fixed order:
 * KVFLOW_ADDON, a source build in the package (build-cmake/, then build/),
 * then the prebuilt binary shipped in the package (prebuilds/<platform>-<arch>/).
 * A source build wins over the prebuilt: it exists only because someone built
 * it on this machine. On failure one error lists every path tried, why it
 * failed, and the fix.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { KvflowError } from '../errors.js';
import { ABI_VERSION } from './abi.js';
import type { NativeBinding } from './types.js';

const require = createRequire(import.meta.url);

/** Which build produced an addon. */
export type AddonBuild = 'env' | 'cmake' | 'node-gyp' | 'prebuilt';

/** One place an addon may be. */
export interface AddonCandidate {
  path: string;
  build: AddonBuild;
}

/** Where the binding came from. */
export interface LoadedBinding {
  binding: NativeBinding;
  path: string;
  /** Which build produced it. */
  build: AddonBuild;
}

/** What `prebuilds/<platform>-<arch>/kvflow.json` says about the prebuilt binary next to it. */
export interface PrebuiltManifest {
  platform: string;
  arch: string;
  /** The Node-API version it was built against: it loads on any Node with this version or later. */
  napi: number;
  abiVersion: number;
  cuda: boolean;
  /** The newest glibc symbol version it links (the oldest glibc it loads on). */
  glibc?: string;
  /** The newest GLIBCXX symbol version it links (the oldest libstdc++ it loads with). */
  libstdcxx?: string;
  kvflowVersion: string;
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

/** The prebuilt binary's folder for this platform and CPU. */
export function prebuiltDir(root: string = packageRoot()): string {
  return path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
}

/** Candidate addon paths in the order they are tried. */
export function candidates(): AddonCandidate[] {
  const root = packageRoot();
  const list: AddonCandidate[] = [];
  if (process.env.KVFLOW_ADDON) list.push({ path: path.resolve(process.env.KVFLOW_ADDON), build: 'env' });
  list.push({ path: path.join(root, 'build-cmake', 'Release', 'kvflow.node'), build: 'cmake' });
  list.push({ path: path.join(root, 'build', 'Release', 'kvflow.node'), build: 'node-gyp' });
  list.push({ path: path.join(prebuiltDir(root), 'kvflow.node'), build: 'prebuilt' });
  return list;
}

/** Loads the addon once per process (per worker thread). */
export function loadBinding(): LoadedBinding {
  loaded ??= loadCandidates(candidates());
  return loaded;
}

/** Why the prebuilt next to `file` cannot serve this Node, or undefined when its manifest allows it. */
function prebuiltMismatch(file: string): string | undefined {
  const manifestPath = path.join(path.dirname(file), 'kvflow.json');
  if (!existsSync(manifestPath)) return undefined;
  let manifest: PrebuiltManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as PrebuiltManifest;
  } catch (e) {
    return `unreadable ${manifestPath}: ${(e as Error).message}`;
  }
  const napi = Number(process.versions.napi ?? 0);
  if (napi < manifest.napi) return `needs Node-API ${manifest.napi}, this Node (${process.version}) has ${napi}`;
  return undefined;
}

/** True when this package sits inside a node_modules folder (installed as a dependency). */
function installedAsDependency(list: readonly AddonCandidate[]): boolean {
  return list.some((c) => c.build !== 'env' && c.path.split(path.sep).includes('node_modules'));
}

/** Loads the first candidate that works, or throws ERR_LOAD listing each path tried and why it failed. */
export function loadCandidates(list: AddonCandidate[]): LoadedBinding {
  const tried: string[] = [];
  let prebuiltFound = false;
  for (const c of list) {
    if (!existsSync(c.path)) {
      tried.push(`${c.path}: not found`);
      continue;
    }
    if (c.build === 'prebuilt') {
      prebuiltFound = true;
      const why = prebuiltMismatch(c.path);
      if (why !== undefined) {
        tried.push(`${c.path}: ${why}`);
        continue;
      }
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
  const platform = `${process.platform}-${process.arch}`;
  const why = prebuiltFound
    ? `The prebuilt binary does not load here, so kvflow must be built from source on this machine.`
    : `No prebuilt binary ships for ${platform}, so kvflow must be built from source on this machine.`;
  const fix = installedAsDependency(list)
    ? 'Fix: `npm rebuild kvflow` builds it (a C++20 compiler; cmake and CUDA 13 for the GPU backend). ' +
      'If your npm skips dependency install scripts (npm 11 without an allowScripts entry, or --ignore-scripts), ' +
      'first run `npm install-scripts approve kvflow`.'
    : 'Fix: `npm run build:native` here, or `npm rebuild kvflow` in a project that depends on it ' +
      '(a C++20 compiler; cmake and CUDA 13 for the GPU backend).';
  throw new KvflowError(
    'cannot load the kvflow native addon. Tried:\n  ' +
      tried.join('\n  ') +
      `\n${why}\n${fix} Or point KVFLOW_ADDON at a built kvflow.node.`,
    'ERR_LOAD',
  );
}
