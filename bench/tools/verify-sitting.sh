#!/usr/bin/env bash
# A verifying sitting for a commit (B) against an earlier one (A), in one
# device call of about five minutes: attention_check (every case and
# variant), `vitest run test/device test/pipeline test/reference` on a
# snapshot of B (CUDA and CPU), Llama-3-8B 16k prefill at 90% and 95% with
# the PyTorch peer, A then B, bench/pipeline-host A, B, A, B, and bench/copy
# of B (in full once, then quick with the short wait off and on). `bash bench/tools/lay-out-verify.sh A [B]` lays it out on the
# development machine (git-ignored, carried):
#   build-bench/sit5/tree/            git archive of B (src test bench package.json tsconfig*.json vitest.config.ts) + its dist/
#   build-bench/sit5/dist-a/          A's dist
#   build-bench/sit5/addon-a.node.xz, addon-b.node.xz   sm_90 addons of A and B (xz -c)
#   build-bench/sit5/attention_check  B's
#   build-bench/sit5/copy_baseline    bench/native's
#   build-bench/sit5/commit           B's short hash
# then run `bash bench/tools/verify-sitting.sh` from the repo root with
# carry [".device", "build-bench/sit5"]; TOTAL (s, default 290) bounds it.
# Outputs come back as $OUT/sit5.tgz.
set -u
source "$(dirname "$0")/sitting-env.sh" verify-sitting.sh /tmp/r5 290
mkdir -p $S/addon-a $S/addon-b
xz -dc $S/addon-a.node.xz > $S/addon-a/kvflow.node; xz -dc $S/addon-b.node.xz > $S/addon-b/kvflow.node
C=$(cat $S/commit)
# 1. attention_check, every case and variant
t0=$(date +%s); timeout 90 $S/attention_check > $R/attcheck.jsonl 2> $R/attcheck.err; echo "attention_check rc=$? in $(( $(date +%s) - t0 ))s: $(tail -n 1 $R/attcheck.jsonl)"
# 2. tests on CUDA and CPU, snapshot of HEAD with its dist
ln -sfn ../../../node_modules $S/tree/node_modules
t0=$(date +%s); (cd $S/tree && KVFLOW_ADDON=$S/addon-b/kvflow.node timeout 150 vitest run test/device test/pipeline test/reference) > $R/tests.log 2>&1; echo "tests rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "Test Files|Tests " $R/tests.log | tail -2; grep -E "FAIL|×" $R/tests.log | head -20
# 3. 8B 16k prefill: peer, then A (beed728) and B (HEAD)
t0=$(date +%s); python3 $S/tree/bench/peers/torch_prefill.py --model llama-3-8b --tokens 16384 --hits 0.9,0.95 --samples 3 > $R/peer.json 2> $R/peer.err; echo "peer rc=$? in $(( $(date +%s) - t0 ))s"
for v in A:$S/dist-a:$S/addon-a/kvflow.node:beed728 B:$S/tree/dist:$S/addon-b/kvflow.node:$C; do
  IFS=: read n d a c <<< "$v"
  [ "$(left)" -lt 40 ] && break
  t0=$(date +%s)
  KVFLOW_COMMIT=$c KVFLOW_ADDON=$a timeout 60 node $d/bench/prefill.js --backend cuda --peer $R/peer.json --dir /tmp/kvp --json $R/prefill-$n.json \
    --model llama-3-8b --tokens 16384 --hits 0.9,0.95 --tiers dram --samples 3 > $R/prefill-$n.log 2>&1
  echo "prefill $n rc=$? in $(( $(date +%s) - t0 ))s"; rm -rf /tmp/kvp
  grep -E "^16384 9.pct (dram|recompute)" $R/prefill-$n.log | cut -c1-200
done
# 4. pipeline-host A/B
for round in 1 2; do
  for v in A:$S/dist-a:$S/addon-a/kvflow.node B:$S/tree/dist:$S/addon-b/kvflow.node; do
    IFS=: read n d a <<< "$v"
    [ "$(left)" -lt 25 ] && break 2
    KVFLOW_ADDON=$a timeout 40 node $d/bench/pipeline-host.js --backend cuda --reps 100 --json $R/ph-$n$round.json > $R/ph-$n$round.log 2>&1
    echo "ph $n$round rc=$?"; grep -E "_device" $R/ph-$n$round.log
  done
done
# 5. copy of B: in full once, then quick runs alternating the short wait off
# and on (KVFLOW_SHORT_WAIT_US 0 / default)
if [ "$(left)" -gt 60 ]; then
  $S/copy_baseline > $R/copy_baseline.json
  KVFLOW_COMMIT=$C KVFLOW_ADDON=$S/addon-b/kvflow.node timeout 60 node $S/tree/dist/bench/copy.js --backend cuda --baseline $R/copy_baseline.json --json $R/copy.json > $R/copy.log 2>&1
  echo "copy rc=$?"; grep -E "64KiB" $R/copy.log | tail -5
  for round in 1 2 3; do
    for sw in 0 20; do
      [ "$(left)" -lt 15 ] && break 2
      KVFLOW_SHORT_WAIT_US=$sw KVFLOW_COMMIT=$C KVFLOW_ADDON=$S/addon-b/kvflow.node timeout 20 node $S/tree/dist/bench/copy.js --backend cuda --quick --baseline $R/copy_baseline.json --json $R/copy-short$sw-$round.json > $R/copy-short$sw-$round.log 2>&1
      echo "copy short=$sw round $round rc=$?: $(grep -E "latency_64KiB|bidir_64KiB" $R/copy-short$sw-$round.log | tr -s ' ' | tr '\n' ';')"
    done
  done
fi
tar czf $OUT/sit5.tgz -C $R .
