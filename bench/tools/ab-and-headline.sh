#!/usr/bin/env bash
# One GPU sitting from a snapshot of a commit (so work in progress in the
# tree does not travel): the prefill A/B of two addons (prefill-ab.sh, with
# test/reference first), bench/pipeline-host of an earlier dist against this
# one, then the headline prefill set with addon B, model by model while time
# is left. Lay out on the development machine (all git-ignored, carried):
#   build-bench/head/        git archive of the commit (src test bench configs) + its dist/ + .commit
#   build-bench/old/kvflow.node.xz, build-bench/new/kvflow.node.xz   addons A and B (xz -c)
#   build-bench/dist-before/ the earlier commit's dist (pipeline-host baseline)
# then run `bash build-bench/head/bench/tools/ab-and-headline.sh` from the
# repo root with carry [".device", "build-bench/head", "build-bench/old",
# "build-bench/new", "build-bench/dist-before"]. TOTAL (s, default 470)
# bounds the sitting; HEADLINE="model tokens seconds-needed;..." picks the
# headline runs (default: Llama-3-8B 4k+16k, Qwen3-14B 4k+16k, Llama-3-70B 4k).
set -u
root="$(cd "$(dirname "$0")/../../../.." && pwd)"
cd "$root"
source .device/env.sh
cd build-bench/head
ln -sfn ../../node_modules node_modules; ln -sfn ../../.device .device; ln -sfn ../../build-cmake build-cmake
mkdir -p build-bench; ln -sfn ../../old build-bench/old; ln -sfn ../../new build-bench/new; ln -sfn ../../dist-before build-bench/dist-before
export KVFLOW_CUBLAS=/usr/local/cuda/lib64/libcublas.so.13
export LD_LIBRARY_PATH=/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export KVFLOW_COMMIT=$(cat .commit)
T0=$(date +%s); left() { echo $(( ${TOTAL:-470} - ($(date +%s) - T0) )); }
export KVFLOW_ADDON=$PWD/build-bench/new/kvflow.node
TESTS=${TESTS-test/reference} SKIP_CHECK=${SKIP_CHECK:-1} ROUNDS=${ROUNDS:-2} DEADLINE=${AB_S:-120} NEED_S=25 SAMPLES=3 \
VARIANTS="A=dist:build-bench/old/kvflow.node B=dist:build-bench/new/kvflow.node" bash bench/tools/prefill-ab.sh
H=/tmp/hl; mkdir -p $H
for v in before:build-bench/dist-before after:dist; do
  n=${v%%:*}; d=${v#*:}
  timeout 60 node $d/bench/pipeline-host.js --backend cuda --reps 100 --json $H/ph-$n.json > $H/ph-$n.log 2>&1
  echo "pipeline-host $n rc=$?"
done
if [ -n "${HEADLINE:-}" ]; then IFS=';' read -ra specs <<< "$HEADLINE"
else specs=("llama-3-8b 4096,16384 150" "qwen3-14b 4096,16384 210" "llama-3-70b 4096 120"); fi
for spec in "${specs[@]}"; do
  set -- $spec
  if [ "$(left)" -lt "$3" ]; then echo "skip $1: $(left)s left"; continue; fi
  t0=$(date +%s)
  OUT=$H/$1 BENCH=prefill NVME_DIR=/tmp/kvflow-nv LIMIT_S=$(( $(left) - 5 )) bash bench/run-gpu.sh --model $1 --tokens $2 --samples 5 > $H/$1.log 2>&1
  echo "headline $1 rc=$? in $(( $(date +%s) - t0 ))s"
done
tar czf $OUT/headline.tgz -C $H .
