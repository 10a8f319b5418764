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
[ "$(left)" -gt 80 ] || { save; exit 0; }
timeout 45 $S/copy_baseline > $R/copy_baseline.json 2> $R/copy_baseline.err; echo "baseline rc=$?: $(grep latency $R/copy_baseline.json)"
CB=$(cat $S/commit); CA=$(cat $S/commit-a 2>/dev/null || echo A)
for v in B:$S/tree/dist:$S/addon-b/kvflow.node:$CB A:$S/dist-a:$S/addon-a/kvflow.node:$CA; do
  IFS=: read n d a c <<< "$v"
  [ "$(left)" -lt 35 ] && break
  KVFLOW_COMMIT=$c KVFLOW_ADDON=$a timeout 30 node $d/bench/copy.js --backend cuda --quick --baseline $R/copy_baseline.json --json $R/copy-$n.json > $R/copy-$n.log 2>&1
  echo "copy $n rc=$?"; grep -E "64KiB" $R/copy-$n.log | tail -5; save
done
save
