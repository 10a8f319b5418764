#!/usr/bin/env node
// Copies the cmake-js addon (build-cmake/Release/kvflow.node: CPU backend plus
// the CUDA backend with the CUDA runtime linked statically, so it loads with or
// without a GPU) into prebuilds/<platform>-<arch>/kvflow.node, with a
// kvflow.json manifest next to it (Node-API version, addon ABI, glibc needed).
// `npm pack` runs it (prepack), so the tarball loads without an install script.
// KVFLOW_PREBUILD_CPU_ONLY=1 accepts an addon built without CUDA.
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(path.join(root, 'package.json'));
const source = path.join(root, 'build-cmake', 'Release', 'kvflow.node');
const napi = JSON.parse(readFileSync(path.join(root, 'native', 'package.json'), 'utf8')).binary.napi_versions[0];
const version = JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version;

function die(msg) {
  process.stderr.write(`kvflow prebuild: ${msg}\n`);
  process.exit(1);
}

if (!existsSync(source)) die(`${path.relative(root, source)} is missing: run \`npm run build:cmake\` first`);
const binding = require(source);
if (!binding.cudaCompiled && process.env.KVFLOW_PREBUILD_CPU_ONLY !== '1') {
  die(`${path.relative(root, source)} was built without the CUDA backend (no nvcc); ` +
    'the prebuilt binary must carry it (KVFLOW_PREBUILD_CPU_ONLY=1 to ship a CPU-only one anyway)');
}

/** The newest `${prefix}x.y[.z]` symbol version the addon needs, when objdump is there to tell. */
function newestSymbolVersion(file, prefix) {
  try {
    const out = execFileSync('objdump', ['-T', file], { encoding: 'utf8', maxBuffer: 64 << 20, stdio: ['ignore', 'pipe', 'ignore'] });
    const versions = [...out.matchAll(new RegExp(`\\b${prefix}([0-9.]+[0-9])`, 'g'))].map((m) => m[1].split('.').map(Number));
    versions.sort((a, b) => {
      for (let i = 0; i < Math.max(a.length, b.length); i++) if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) - (b[i] ?? 0);
      return 0;
    });
    return versions.at(-1)?.join('.');
  } catch {
    return undefined;
  }
}

const prebuilds = path.join(root, 'prebuilds');
const dir = path.join(prebuilds, `${process.platform}-${process.arch}`);
rmSync(prebuilds, { recursive: true, force: true });
mkdirSync(dir, { recursive: true });
const target = path.join(dir, 'kvflow.node');
copyFileSync(source, target);
const manifest = {
  platform: process.platform,
  arch: process.arch,
  napi,
  abiVersion: binding.abiVersion,
  cuda: binding.cudaCompiled,
  glibc: newestSymbolVersion(source, 'GLIBC_'),
  libstdcxx: newestSymbolVersion(source, 'GLIBCXX_'),
  kvflowVersion: version,
};
writeFileSync(path.join(dir, 'kvflow.json'), JSON.stringify(manifest, null, 2) + '\n');
const mib = (statSync(target).size / (1 << 20)).toFixed(1);
process.stderr.write(
  `kvflow prebuild: ${path.relative(root, target)} (${mib} MiB, Node-API ${napi}, abi ${manifest.abiVersion}, ` +
    `${manifest.cuda ? 'CUDA and CPU backends' : 'CPU backend only'}, glibc ${manifest.glibc ?? '?'}+, libstdc++ GLIBCXX_${manifest.libstdcxx ?? '?'}+)\n`,
);
