#!/usr/bin/env bash
# The small-copy sitting, one device call of about five minutes, on the
# commit laid out in build-bench/sit5 (bench/tools/lay-out-verify.sh A B; B
# is what runs): copy_baseline (now with CUDA's own event-record-and-query
# round trip and the cost of each CUDA call on the path), bench/copy in full
# twice (copyAndRecord against copy + record, alternating, and the host cost
# of each call), bench/pipeline-host twice, test/device on CUDA, and the
# Llama-3-8B 4k prefill at 90% and 95% cached with the PyTorch peer (DRAM, 5
# samples). Run from the repo root with carry [".device", "build-bench/sit5"];
# TOTAL (s, default 480) bounds it. Outputs come back as $OUT/copy-sitting.tgz.
set -u
source "$(dirname "$0")/sitting-env.sh" copy-sitting.sh /tmp/copy-sitting 480
mkdir -p $S/addon-b
xz -dc $S/addon-b.node.xz > $S/addon-b/kvflow.node
export KVFLOW_ADDON=$S/addon-b/kvflow.node
export KVFLOW_COMMIT=$(cat $S/commit)
ln -sfn ../../../node_modules $S/tree/node_modules
# 1. the C++ loop, then bench/copy twice against it
$S/copy_baseline > $R/copy_baseline.json 2> $R/copy_baseline.err
echo "copy_baseline rc=$?: $(grep latency $R/copy_baseline.json)"
for round in 1 2; do
  [ "$(left)" -lt 60 ] && break
  t0=$(date +%s)
  timeout 90 node $S/tree/dist/bench/copy.js --backend cuda --baseline $R/copy_baseline.json --json $R/copy-$round.json > $R/copy-$round.log 2>&1
  echo "copy $round rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "64KiB" $R/copy-$round.log | tail -6
done
# 2. the pipeline's own host cost, twice
for round in 1 2; do
  [ "$(left)" -lt 40 ] && break
  timeout 40 node $S/tree/dist/bench/pipeline-host.js --backend cuda --reps 100 --json $R/ph-$round.json > $R/ph-$round.log 2>&1
  echo "pipeline-host $round rc=$?"; grep -E "_device" $R/ph-$round.log
done
# 3. test/device on CUDA (and CPU)
if [ "$(left)" -gt 150 ]; then
  t0=$(date +%s); (cd $S/tree && timeout 100 vitest run test/device) > $R/tests.log 2>&1
  echo "tests rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "Test Files|Tests " $R/tests.log | tail -2; grep -E "FAIL|×" $R/tests.log | head -20
fi
# 4. 8B 4k prefill at 90% / 95% with the peer
if [ "$(left)" -gt 100 ]; then
  t0=$(date +%s); timeout 60 python3 $S/tree/bench/peers/torch_prefill.py --model llama-3-8b --tokens 4096 --hits 0.9,0.95 --samples 5 > $R/peer.json 2> $R/peer.err; echo "peer rc=$? in $(( $(date +%s) - t0 ))s"
  t0=$(date +%s)
  timeout $(( $(left) - 10 )) node $S/tree/dist/bench/prefill.js --backend cuda --peer $R/peer.json --dir /tmp/kvp --json $R/prefill.json \
    --model llama-3-8b --tokens 4096 --hits 0.9,0.95 --tiers dram --samples 5 > $R/prefill.log 2>&1
  echo "prefill rc=$? in $(( $(date +%s) - t0 ))s"; rm -rf /tmp/kvp
  grep -E "^4096 9.pct (dram|recompute)" $R/prefill.log | cut -c1-200
fi
tar czf $OUT/copy-sitting.tgz -C $R .
