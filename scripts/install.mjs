#!/usr/bin/env node
// Builds the kvflow addon at install time, with no downloads: cmake-js (the
// full addon, CUDA backend where nvcc exists) when cmake is present, else
// node-gyp (the portable CPU-only addon). Flags: --force (rebuild even when a
// binary exists), --builder=cmake|gyp (or KVFLOW_BUILDER). KVFLOW_CUDA=0 skips
// the CUDA backend; KVFLOW_SKIP_BUILD=1 skips building altogether.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'package.json'));
const args = process.argv.slice(2);
const force = args.includes('--force');
const builderArg = args.find((a) => a.startsWith('--builder='))?.split('=')[1] ?? process.env.KVFLOW_BUILDER;
const outputs = {
  cmake: path.join(root, 'build-cmake', 'Release', 'kvflow.node'),
  gyp: path.join(root, 'build', 'Release', 'kvflow.node'),
};

function log(msg) {
  process.stderr.write(`kvflow install: ${msg}\n`);
}

function run(cmd, cmdArgs, extraEnv = {}) {
  log(`${cmd} ${cmdArgs.join(' ')}`);
  const r = spawnSync(cmd, cmdArgs, { cwd: root, stdio: 'inherit', env: { ...process.env, ...extraEnv } });
  if (r.error) return `${cmd} could not start: ${r.error.message}`;
  return r.status === 0 ? null : `${cmd} exited with status ${r.status}`;
}

function has(cmd, flag = '--version') {
  const r = spawnSync(cmd, [flag], { stdio: 'ignore' });
  return !r.error && r.status === 0;
}

function nodeAddonApiDir() {
  return path.dirname(require.resolve('node-addon-api/package.json'));
}

function buildCmake() {
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  } catch {
    return 'cmake-js is not installed';
  }
  if (!has('cmake')) return 'cmake is not on PATH';
  const cuda = process.env.KVFLOW_CUDA === '0' ? 'OFF' : 'ON';
  return run(process.execPath, [
    cmakeJs, force ? 'rebuild' : 'compile', '--directory', 'native', '--out', 'build-cmake',
    `--CDNODE_ADDON_API_DIR=${nodeAddonApiDir()}`, `--CDKVFLOW_CUDA=${cuda}`,
  ]);
}

function buildGyp() {
  // npm sets npm_config_node_gyp to its bundled node-gyp during scripts.
  const gyp = process.env.npm_config_node_gyp;
  const nodedir = path.resolve(path.dirname(process.execPath), '..');
  const headers = path.join(nodedir, 'include', 'node', 'node_api.h');
  const extra = existsSync(headers) ? [`--nodedir=${nodedir}`] : [];
  if (gyp && existsSync(gyp)) return run(process.execPath, [gyp, 'rebuild', ...extra]);
  if (has('node-gyp')) return run('node-gyp', ['rebuild', ...extra]);
  return 'node-gyp not found (run through npm, which bundles it)';
}

function main() {
  if (process.env.KVFLOW_SKIP_BUILD === '1') {
    log('KVFLOW_SKIP_BUILD=1: not building');
    return 0;
  }
  if (!force && !builderArg && (existsSync(outputs.cmake) || existsSync(outputs.gyp))) {
    log('addon already built (npm run build:native to rebuild)');
    return 0;
  }
  const order = builderArg === 'gyp' ? ['gyp'] : builderArg === 'cmake' ? ['cmake'] : has('cmake') ? ['cmake', 'gyp'] : ['gyp'];
  const failures = [];
  for (const builder of order) {
    const err = builder === 'cmake' ? buildCmake() : buildGyp();
    if (err === null) {
      log(`built ${path.relative(root, outputs[builder])} with ${builder === 'cmake' ? 'cmake-js' : 'node-gyp (CPU backend only)'}`);
      return 0;
    }
    failures.push(`${builder}: ${err}`);
    if (order.length > 1) log(`${builder} build failed (${err}); trying the next builder`);
  }
  log(`could not build the addon:\n  ${failures.join('\n  ')}\nInstall a C++20 compiler (g++ 10+) and, for the CUDA backend, cmake and CUDA 13.`);
  return 1;
}

process.exitCode = main();
