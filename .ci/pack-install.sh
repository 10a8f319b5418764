#!/usr/bin/env bash
# Proves a user's install works: packs kvflow, installs the tarball into an
# empty project (its install script builds the addon, no downloads but the
# registry's packages), then opens a device and round-trips bytes through it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
cd "$root"
tarball=$(npm pack --silent --pack-destination "$scratch" | tail -1)
cd "$scratch"
npm init -y >/dev/null
npm install --no-fund --no-audit "$scratch/$tarball"
cat > check.mjs <<'JS'
import { openDevice } from 'kvflow';
import { randomFillSync } from 'node:crypto';
const dev = openDevice();
const s = dev.createStream();
const a = dev.allocPinned(1 << 20), b = dev.allocPinned(1 << 20), d = dev.allocDevice(1 << 20);
randomFillSync(a.array);
s.copy(d, 0, a, 0, 1 << 20); s.copy(b, 0, d, 0, 1 << 20);
await s.synchronize();
if (Buffer.compare(a.array, b.array) !== 0) throw new Error('bytes differ after a round trip');
console.log(`installed kvflow works: ${dev.backend} backend (${dev.selection.reason})`);
await dev.dispose();
JS
node check.mjs
npx kvflow doctor
