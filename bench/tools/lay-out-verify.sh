#!/usr/bin/env bash
# Lays out build-bench/sit5/ for bench/tools/verify-sitting.sh on the
# development machine: commits A and B each built in a worktree of their own
# (dist, and an sm_90-only addon through cmake-js: a few minutes each on two
# cores), B's snapshot (src, test, bench without its results, configs) with
# its dist, B's attention_check, bench/native's copy_baseline and the
# checkout's wgmma_probe (native/src/cuda/reference/tools, sm_90a).
#   bash bench/tools/lay-out-verify.sh A [B]      (B defaults to HEAD)
# Then run the sitting with carry [".device", "build-bench/sit5"].
set -euo pipefail
cd "$(dirname "$0")/../.."
root=$PWD
A=${1:?usage: lay-out-verify.sh A [B]}
B=${2:-HEAD}
S=$root/build-bench/sit5
rm -rf "$S"
mkdir -p "$S"
build() { # commit name
  local wt=/tmp/kvflow-lay-$2
  git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
  git worktree add -q --detach "$wt" "$1"
  ln -s "$root/node_modules" "$wt/node_modules"
  (cd "$wt" && npx tsc -p tsconfig.json)
  (cd "$wt" && node node_modules/cmake-js/bin/cmake-js compile --directory native --out build-sm90 \
    --CDNODE_ADDON_API_DIR="$root/node_modules/node-addon-api" --CDKVFLOW_CUDA=ON --CDCMAKE_CUDA_ARCHITECTURES=90-real \
    > "/tmp/kvflow-lay-$2.log" 2>&1) || { echo "lay-out-verify.sh: the addon of $1 did not build (/tmp/kvflow-lay-$2.log)" >&2; exit 1; }
  # Node loads addons lazily: a symbol the link left undefined fails only when first called, on the GPU box.
  local undefined
  undefined=$(nm -DC --undefined-only "$wt/build-sm90/Release/kvflow.node" | grep "kvflow::" || true)
  if [ -n "$undefined" ]; then
    echo "lay-out-verify.sh: the addon of $1 leaves kvflow symbols undefined:" >&2
    echo "$undefined" >&2
    exit 1
  fi
  xz -T2 -c "$wt/build-sm90/Release/kvflow.node" > "$S/addon-$2.node.xz"
  echo "built $1 ($2)"
}
# A equal to B (a sitting with no A/B): built once.
if [ "$(git rev-parse "$A")" = "$(git rev-parse "$B")" ]; then
  build "$B" b
  cp "$S/addon-b.node.xz" "$S/addon-a.node.xz"
  git worktree remove --force /tmp/kvflow-lay-a 2>/dev/null || rm -rf /tmp/kvflow-lay-a
  git worktree add -q --detach /tmp/kvflow-lay-a "$A"
  cp -r /tmp/kvflow-lay-b/dist /tmp/kvflow-lay-a/dist
else
  build "$A" a
  build "$B" b
fi
cp -r /tmp/kvflow-lay-a/dist "$S/dist-a"
mkdir -p "$S/tree"
git archive "$B" src test bench package.json tsconfig.json tsconfig.test.json vitest.config.ts | tar x -C "$S/tree"
rm -rf "$S/tree/bench/results"
cp -r /tmp/kvflow-lay-b/dist "$S/tree/dist"
src=/tmp/kvflow-lay-b/native/src
nvcc -std=c++17 -O3 -gencode=arch=compute_90,code=sm_90 -I/tmp/kvflow-lay-b/native/include -I"$src" \
  "$src/cuda/reference/tools/attention_check.cu" "$src/cuda/reference/attention.cu" "$src/cuda/cuda_error.cc" "$src/core/error.cc" \
  -o "$S/attention_check"
nvcc -O2 -std=c++17 -gencode arch=compute_90,code=sm_90 -cudart static -o "$S/copy_baseline" /tmp/kvflow-lay-b/bench/native/copy_baseline.cu
# The probe of the checkout's own HEAD (it need not be in B).
probe=$root/native/src/cuda/reference/tools/wgmma_probe.cu
[ -f "$probe" ] && nvcc -std=c++17 -O2 -gencode arch=compute_90a,code=sm_90a -cudart static -o "$S/wgmma_probe" "$probe"
git rev-parse --short "$B" > "$S/commit"
git rev-parse --short "$A" > "$S/commit-a"
git worktree remove --force /tmp/kvflow-lay-a
git worktree remove --force /tmp/kvflow-lay-b
du -sh "$S"
