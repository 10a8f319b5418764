#!/usr/bin/env bash
# The least sitting, for a session with little device time left (about
# three minutes): test/device and test/pipeline of B on CUDA, then
# copy_baseline and bench/copy --quick of B and A, on the layout of
# bench/tools/ab-sitting.sh (build-bench/sit5). Run from the repo root with
# carry [".device", "build-bench/sit5"]; TOTAL (s, default 200) bounds it.
# Outputs come back as $OUT/min.tgz.
set -u
source "$(dirname "$0")/sitting-env.sh" min-sitting.sh /tmp/min 200
mkdir -p $S/addon-a $S/addon-b
xz -dc $S/addon-a.node.xz > $S/addon-a/kvflow.node; xz -dc $S/addon-b.node.xz > $S/addon-b/kvflow.node
ln -sfn ../../../node_modules $S/tree/node_modules
save() { tar czf $OUT/min.tgz -C $R . ; }
t0=$(date +%s); (cd $S/tree && KVFLOW_ADDON=$S/addon-b/kvflow.node timeout 110 vitest run test/device test/pipeline) > $R/tests.log 2>&1
echo "tests rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "Test Files|Tests " $R/tests.log | tail -2; grep -E "FAIL|×" $R/tests.log | head -20
save
$S/copy_baseline > $R/copy_baseline.json 2> $R/copy_baseline.err; echo "baseline: $(grep latency $R/copy_baseline.json)"
for v in B:$S/tree/dist:$S/addon-b/kvflow.node A:$S/dist-a:$S/addon-a/kvflow.node; do
  IFS=: read n d a <<< "$v"
  [ "$(left)" -lt 25 ] && break
  KVFLOW_COMMIT=$n KVFLOW_ADDON=$a timeout 30 node $d/bench/copy.js --backend cuda --quick --baseline $R/copy_baseline.json --json $R/copy-$n.json > $R/copy-$n.log 2>&1
  echo "copy $n rc=$?"; grep -E "64KiB" $R/copy-$n.log | tail -5; save
done
save
