#!/usr/bin/env bash
# Proves a user's paths through the packed tarball (npm pack: prepack builds the
# TypeScript and copies the cmake-js addon into prebuilds/linux-x64/):
#   1. installed with --ignore-scripts, it works through the prebuilt binary;
#   2. installed with its install script allowed, it works without compiling;
#   3. a strict TypeScript ESM project (skipLibCheck: false) typechecks;
#   4. a CommonJS project require()s it and uses it, and a CommonJS
#      TypeScript project typechecks and runs;
#   5. a process that leaves a KvStore open exits on its own.
# Only the registry's packages are downloaded (kvflow's dependencies);
# TypeScript and @types/node come from this checkout's node_modules.
# Ends with one line per check and exits non-zero when any failed.
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
export npm_config_fund=false npm_config_audit=false npm_config_update_notifier=false
tsc="$root/node_modules/typescript/bin/tsc"
types="$root/node_modules/@types"

results=()
failed=0
check() { # name, then the command; records ok or FAILED
  local name=$1
  shift
  printf '\n-- %s\n' "$name"
  if "$@"; then
    results+=("ok      $name")
  else
    results+=("FAILED  $name")
    failed=1
  fi
}

cd "$root" || exit 1
tarball=$(npm pack --silent --pack-destination "$scratch" | tail -1)
if [ ! -f "$scratch/$tarball" ]; then
  echo "npm pack failed" >&2
  exit 1
fi
tar -tzf "$scratch/$tarball" > "$scratch/contents.txt"
echo "packed $tarball ($(du -h "$scratch/$tarball" | cut -f1), $(wc -l < "$scratch/contents.txt") files)"

tarball_contents() {
  local ok=0
  for f in package/LICENSE package/prebuilds/linux-x64/kvflow.node package/prebuilds/linux-x64/kvflow.json \
    package/dist/src/index.js package/dist/src/index.d.ts package/scripts/install.mjs; do
    grep -qx "$f" "$scratch/contents.txt" || { echo "missing from the tarball: $f"; ok=1; }
  done
  if grep -E '\.(o|obj|a)$|/build-cmake/|^package/build/|/testing\.d\.ts$' "$scratch/contents.txt"; then
    echo "the tarball ships build intermediates or test hooks (above)"
    ok=1
  fi
  # every source map points at a file the tarball ships
  mkdir -p "$scratch/unpacked" && tar -xzf "$scratch/$tarball" -C "$scratch/unpacked"
  node -e '
    const fs = require("fs"), path = require("path");
    const base = process.argv[1];
    let bad = 0;
    const walk = (d) => { for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith(".map")) for (const s of JSON.parse(fs.readFileSync(p, "utf8")).sources) {
        const target = path.resolve(path.dirname(p), s);
        if (!fs.existsSync(target)) { bad++; if (bad <= 5) console.log(`${path.relative(base, p)} points at ${s}, not shipped`); }
      }
    } };
    walk(base);
    process.exit(bad ? 1 : 0);
  ' "$scratch/unpacked/package" || ok=1
  return $ok
}
check "the tarball ships LICENSE, the prebuilt binary, no build intermediates, source maps that resolve" tarball_contents

# The program every project runs: a device, a round trip of random bytes,
# and where the addon came from.
cat > "$scratch/check.mjs" <<'JS'
import { openDevice } from 'kvflow';
import { randomFillSync } from 'node:crypto';
const dev = openDevice();
const s = dev.createStream();
const a = dev.allocPinned(1 << 20), b = dev.allocPinned(1 << 20), d = dev.allocDevice(1 << 20);
randomFillSync(a.array);
s.copy(d, 0, a, 0, 1 << 20); s.copy(b, 0, d, 0, 1 << 20);
await s.synchronize();
if (Buffer.compare(a.array, b.array) !== 0) throw new Error('bytes differ after a round trip');
const { addon } = dev.info();
console.log(`installed kvflow works: ${dev.backend} backend (${dev.selection.reason}); addon ${addon.build}: ${addon.path}`);
await dev.dispose();
if (process.env.EXPECT_BUILD && addon.build !== process.env.EXPECT_BUILD) {
  console.error(`expected the ${process.env.EXPECT_BUILD} addon, got ${addon.build}`);
  process.exit(1);
}
JS

new_project() { # dir [type]
  mkdir -p "$1" && (cd "$1" && npm init -y > /dev/null && npm pkg set type="${2:-module}" > /dev/null)
}

no_compiled_output() { # project dir: the installed package holds no source build
  local pkg=$1/node_modules/kvflow
  if [ -e "$pkg/build-cmake" ] || [ -e "$pkg/build" ]; then
    echo "the install compiled: $(ls -d "$pkg"/build* | tr '\n' ' ')"
    find "$pkg"/build* -name '*.o' | head -3
    return 1
  fi
}

ignore_scripts() {
  local p=$scratch/ignore-scripts
  new_project "$p" && cd "$p" || return 1
  npm install --ignore-scripts "$scratch/$tarball" || return 1
  cp "$scratch/check.mjs" . && EXPECT_BUILD=prebuilt node check.mjs || return 1
  no_compiled_output "$p" || return 1
  npx --no-install kvflow doctor > doctor.txt 2>&1
  local status=$?
  grep -E 'addon' doctor.txt | head -2
  [ "$status" -eq 0 ] || { cat doctor.txt; return 1; }
}
check "npm install --ignore-scripts: works through the prebuilt binary" ignore_scripts

with_scripts() {
  local p=$scratch/with-scripts
  new_project "$p" && cd "$p" || return 1
  # What a user does: npm install; npm 11 skips a dependency's install script
  # until it is approved (older npm runs it during the install).
  npm install --foreground-scripts "$scratch/$tarball" > install.log 2>&1 || { tail -40 install.log; return 1; }
  if npm help install-scripts > /dev/null 2>&1; then
    { npm install-scripts approve kvflow && npm rebuild kvflow --foreground-scripts; } >> install.log 2>&1 ||
      { tail -40 install.log; return 1; }
  fi
  grep 'kvflow install:' install.log
  grep -q 'kvflow install: using the prebuilt' install.log || { echo "the install script did not run, or did not take the prebuilt"; tail -20 install.log; return 1; }
  cp "$scratch/check.mjs" . && EXPECT_BUILD=prebuilt node check.mjs || return 1
  no_compiled_output "$p"
}
check "npm install with the install script: takes the prebuilt, compiles nothing, works" with_scripts

ts_esm() {
  local p=$scratch/ignore-scripts
  cd "$p" || return 1
  cat > tsconfig.json <<JSON
{
  "compilerOptions": {
    "strict": true, "skipLibCheck": false, "module": "nodenext", "moduleResolution": "nodenext",
    "target": "es2022", "noEmit": true, "types": ["node"], "typeRoots": ["$types"]
  },
  "files": ["main.ts"]
}
JSON
  cat > main.ts <<'TS'
import { openDevice, KvStore, KvflowError, KvLayout, type KvEvent, type KvStoreStats } from 'kvflow';
import { ReferenceModel } from 'kvflow/reference';
// The global Event is not shadowed by kvflow's event class.
const ping: Event = new Event('ping');
const device = openDevice();
const stream = device.createStream();
const done: KvEvent = stream.record();
await done.done();
const layout = new KvLayout({ layers: 2, kvHeads: 1, headDim: 64, dtype: 'f16', blockTokens: 16, numBlocks: 8 });
function lookups(stats: KvStoreStats): number {
  return stats.local.lookups + stats.shared.lookups + stats.hits.dramTokens;
}
// Internal members are not published.
// @ts-expect-error native is internal
void device.native;
void [ping, KvStore, KvflowError, ReferenceModel, layout, lookups];
await device.dispose();
TS
  node "$tsc" -p . && echo "strict ESM TypeScript project typechecks (skipLibCheck: false)"
}
check "a strict TypeScript ESM project (skipLibCheck: false) typechecks" ts_esm

commonjs() {
  local p=$scratch/commonjs
  new_project "$p" commonjs && cd "$p" || return 1
  npm install --ignore-scripts "$scratch/$tarball" > /dev/null || return 1
  cat > main.cjs <<'JS'
const { openDevice, KvflowError } = require('kvflow');
const { presets } = require('kvflow/reference');
const dev = openDevice();
let code = 'no error';
try { dev.allocPinned(-1); } catch (e) { code = e instanceof KvflowError ? e.code : String(e); }
if (code !== 'ERR_INVALID_ARG') throw new Error(`expected ERR_INVALID_ARG, got ${code}`);
console.log(`require('kvflow') works: ${dev.backend} backend, ${Object.keys(presets).length} reference presets`);
dev.dispose().then(() => process.exitCode = 0);
JS
  node main.cjs || return 1
  cat > tsconfig.json <<JSON
{
  "compilerOptions": {
    "strict": true, "skipLibCheck": false, "module": "nodenext", "moduleResolution": "nodenext",
    "target": "es2022", "outDir": "out", "types": ["node"], "typeRoots": ["$types"]
  },
  "files": ["main.ts"]
}
JSON
  cat > main.ts <<'TS'
import { openDevice, type KvEvent } from 'kvflow';
async function main(): Promise<void> {
  const dev = openDevice();
  const e: KvEvent = dev.createStream().record();
  await e.done();
  console.log(`CommonJS TypeScript works: ${dev.backend} backend`);
  await dev.dispose();
}
void main();
TS
  node "$tsc" -p . || return 1
  grep -q 'require("kvflow")' out/main.js || { echo "the CommonJS build does not require() kvflow"; return 1; }
  node out/main.js
}
check "a CommonJS project: require('kvflow') works, CommonJS TypeScript typechecks and runs" commonjs

store_left_open() {
  local p=$scratch/ignore-scripts
  cd "$p" || return 1
  cat > open-store.mjs <<'JS'
import { openDevice, KvLayout, KvStore } from 'kvflow';
const device = openDevice();
const layout = new KvLayout({ layers: 2, kvHeads: 1, headDim: 64, dtype: 'f16', blockTokens: 16, numBlocks: 8 });
const store = await KvStore.open({
  device, layout, fingerprint: { model: 'check' }, dir: process.argv[2], nvmeBytes: 64 << 20, dramBytes: 16 << 20,
});
console.log(`store open (${store.stats().nvme.slots} slots); leaving it open`);
JS
  timeout 20 node open-store.mjs "$scratch/store"
  local status=$?
  if [ "$status" -eq 124 ]; then
    echo "a process that left a KvStore open was still running after 20 s: the store holds the event loop"
    return 1
  fi
  [ "$status" -eq 0 ]
}
check "a process with a KvStore left open exits on its own" store_left_open

printf '\npacked install checks:\n'
printf '  %s\n' "${results[@]}"
exit $failed
