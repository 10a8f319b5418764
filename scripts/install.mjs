#!/usr/bin/env node
// kvflow's install script. When the package carries a prebuilt binary for this
// platform (prebuilds/<platform>-<arch>/kvflow.node) that loads here, it does
// nothing: kvflow also loads without this script (installs with
// --ignore-scripts, npm 11 without allowScripts). Otherwise it builds the addon
// from source, with no downloads: cmake-js (the full addon, CUDA backend where
// nvcc exists) when cmake is present, else node-gyp (the portable CPU-only
// addon). Installed as a dependency, a source build keeps only the .node and
// deletes its intermediate objects.
//
// Flags: --force (rebuild even when a binary exists), --builder=cmake|gyp (or
// KVFLOW_BUILDER). Environment: KVFLOW_BUILD_FROM_SOURCE=1 (or npm's
// --build-from-source) builds even when the prebuilt matches; KVFLOW_CUDA=0
// skips the CUDA backend; KVFLOW_SKIP_BUILD=1 skips building altogether.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'package.json'));
const args = process.argv.slice(2);
const force = args.includes('--force');
const builderArg = args.find((a) => a.startsWith('--builder='))?.split('=')[1] ?? process.env.KVFLOW_BUILDER;
const fromSource =
  force || Boolean(builderArg) || process.env.KVFLOW_BUILD_FROM_SOURCE === '1' || process.env.npm_config_build_from_source === 'true';
const installed = root.split(path.sep).includes('node_modules');
const outputs = {
  cmake: { dir: path.join(root, 'build-cmake'), file: path.join(root, 'build-cmake', 'Release', 'kvflow.node'), name: 'cmake-js' },
  gyp: { dir: path.join(root, 'build'), file: path.join(root, 'build', 'Release', 'kvflow.node'), name: 'node-gyp' },
};

function log(msg) {
  process.stderr.write(`kvflow install: ${msg}\n`);
}

/** The first line of a failed build's output that says what went wrong. */
export function firstErrorLine(output) {
  const lines = output.split('\n').map((l) => l.replace(/\x1b\[[0-9;]*m/g, '').trim());
  const patterns = [
    /Could not find compiler|No CMAKE_\w+_COMPILER could be found|is not a full path to an existing compiler/i,
    /\bfatal error:|\berror:|\berror [A-Z]+\d+:|CMake Error|undefined reference to|No such file or directory|command not found/,
    /\bERR!|\berror\b/i,
  ];
  for (const re of patterns) {
    const at = lines.findIndex((l) => re.test(l) && !/^gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l));
    if (at < 0) continue;
    let hit = lines[at];
    // "...: " followed by the detail on the next line (CMake's style)
    if (hit.endsWith(':')) hit = `${hit} ${lines.slice(at + 1).find((l) => l !== '') ?? ''}`.trim();
    return hit.length > 300 ? `${hit.slice(0, 300)}...` : hit;
  }
  return undefined;
}

/** Runs a builder, streaming its output to stderr and keeping it for the failure summary; resolves to null or why it failed. */
function run(name, cmd, cmdArgs, extraEnv = {}) {
  log(`${name}: ${path.basename(cmd)} ${cmdArgs.join(' ')}`);
  return new Promise((resolve) => {
    const chunks = [];
    const child = spawn(cmd, cmdArgs, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...extraEnv } });
    const keep = (c) => {
      chunks.push(c);
      process.stderr.write(c);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    child.on('error', (e) => resolve(`${name} could not start: ${e.message}`));
    child.on('close', (status, signal) => {
      if (status === 0) return resolve(null);
      const first = firstErrorLine(Buffer.concat(chunks).toString('utf8'));
      resolve(`${name} failed (${signal ? `signal ${signal}` : `exit status ${status}`})${first ? `: ${first}` : ''}`);
    });
  });
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
    return Promise.resolve('cmake-js is not installed');
  }
  if (!has('cmake')) return Promise.resolve('cmake is not on PATH');
  const cuda = process.env.KVFLOW_CUDA === '0' ? 'OFF' : 'ON';
  return run('cmake-js', process.execPath, [
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
  if (gyp && existsSync(gyp)) return run('node-gyp', process.execPath, [gyp, 'rebuild', ...extra]);
  if (has('node-gyp')) return run('node-gyp', 'node-gyp', ['rebuild', ...extra]);
  return Promise.resolve('node-gyp not found (run through npm, which bundles it)');
}

/** The prebuilt binary for this platform when it loads here, else why not. */
function prebuilt() {
  const dir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
  const file = path.join(dir, 'kvflow.node');
  if (!existsSync(file)) return { why: `no prebuilt binary for ${process.platform}-${process.arch}` };
  let manifest = {};
  try {
    manifest = JSON.parse(readFileSync(path.join(dir, 'kvflow.json'), 'utf8'));
  } catch {
    // no manifest: loading it is the test
  }
  const napi = Number(process.versions.napi ?? 0);
  if (manifest.napi && napi < manifest.napi) return { why: `the prebuilt binary needs Node-API ${manifest.napi}, this Node has ${napi}` };
  try {
    const binding = require(file);
    if (manifest.abiVersion !== undefined && binding.abiVersion !== manifest.abiVersion) {
      return { why: `the prebuilt binary reports abi ${binding.abiVersion}, its manifest ${manifest.abiVersion}` };
    }
  } catch (e) {
    return { why: `the prebuilt binary does not load here (${e.message.split('\n')[0]})` };
  }
  return { file, manifest };
}

/** Deletes a build folder's intermediate files, keeping only Release/kvflow.node. */
function keepOnlyAddon(out) {
  for (const entry of readdirSync(out.dir)) {
    if (entry !== 'Release') rmSync(path.join(out.dir, entry), { recursive: true, force: true });
  }
  const release = path.join(out.dir, 'Release');
  for (const entry of readdirSync(release)) {
    if (entry !== 'kvflow.node') rmSync(path.join(release, entry), { recursive: true, force: true });
  }
}

async function main() {
  if (process.env.KVFLOW_SKIP_BUILD === '1') {
    log('KVFLOW_SKIP_BUILD=1: not building');
    return 0;
  }
  if (!fromSource) {
    const built = Object.values(outputs).find((o) => existsSync(o.file));
    if (built) {
      log(`addon already built: ${path.relative(root, built.file)} (npm run build:native to rebuild)`);
      return 0;
    }
    const pre = prebuilt();
    if (pre.file) {
      log(`using the prebuilt ${path.relative(root, pre.file)} (KVFLOW_BUILD_FROM_SOURCE=1 builds from source instead)`);
      return 0;
    }
    log(`${pre.why}: building from source`);
  }
  const order = builderArg === 'gyp' ? ['gyp'] : builderArg === 'cmake' ? ['cmake'] : has('cmake') ? ['cmake', 'gyp'] : ['gyp'];
  const failures = [];
  for (const builder of order) {
    const err = await (builder === 'cmake' ? buildCmake() : buildGyp());
    const out = outputs[builder];
    if (err === null) {
      if (installed) keepOnlyAddon(out);
      log(`built ${path.relative(root, out.file)} with ${builder === 'cmake' ? 'cmake-js' : 'node-gyp (CPU backend only)'}`);
      return 0;
    }
    failures.push(err);
    if (installed && existsSync(out.dir)) rmSync(out.dir, { recursive: true, force: true });
    if (order.length > 1) log(`${err}; trying the next builder`);
  }
  log(
    `could not build the addon:\n  ${failures.join('\n  ')}\n` +
      'Install a C++20 compiler (g++ 10+) and, for the CUDA backend, cmake and CUDA 13; or set KVFLOW_ADDON to a built kvflow.node.',
  );
  return 1;
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) process.exitCode = await main();
