#!/usr/bin/env bash
# The poller sitting, one device call of about five and a half minutes, on
# the branch poller-streams laid out in build-bench/sit5
# (bench/tools/lay-out-verify.sh poller-streams poller-streams: main before
# 5fa598e, with the poller querying each stream's first pending event per
# round), most telling first:
#   1. copy_baseline --quick (with its polled round trips: a second thread
#      querying the event back to back or paced, and one that only spins);
#   2. a quick bench/copy with KVFLOW_TRACE_CALLS=1: the record and copy
#      calls' host time step by step;
#   3. test/device, test/pipeline and test/reference on CUDA;
#   4. bench/pipeline-host with the poller querying every entry
#      (KVFLOW_POLL_EVERY=1, as before) and each stream's first pending one
#      (the default now), alternating twice, then once traced;
#   5. bench/copy --quick with the poller's rounds paced by
#      KVFLOW_POLL_PAUSE_NS 0 and 1000, alternating twice.
# Run from the repo root with carry [".device", "build-bench/sit5"]; TOTAL (s,
# default 330) bounds it. Outputs come back as $OUT/poll.tgz.
set -u
source "$(dirname "$0")/sitting-env.sh" poll-sitting.sh /tmp/poll 330
mkdir -p $S/addon-b
xz -dc $S/addon-b.node.xz > $S/addon-b/kvflow.node
export KVFLOW_ADDON=$S/addon-b/kvflow.node
export KVFLOW_COMMIT=$(cat $S/commit)
ln -sfn ../../../node_modules $S/tree/node_modules
save() { tar czf $OUT/poll.tgz -C $R . ; }
copy() {  # name, then environment assignments
  local name=$1; shift
  env "$@" timeout 40 node $S/tree/dist/bench/copy.js --backend cuda --quick --baseline $R/copy_baseline.json --json $R/copy-$name.json > $R/copy-$name.log 2>&1
  echo "copy $name rc=$?"; grep -E "64KiB|kvflow trace" $R/copy-$name.log
}
ph() {  # name, then environment assignments
  local name=$1; shift
  env "$@" timeout 40 node $S/tree/dist/bench/pipeline-host.js --backend cuda --reps 100 --json $R/ph-$name.json > $R/ph-$name.log 2>&1
  echo "pipeline-host $name rc=$?"; grep -E "_device|kvflow trace" $R/ph-$name.log
}
timeout 40 $S/copy_baseline --quick > $R/copy_baseline.json 2> $R/copy_baseline.err
echo "copy_baseline rc=$?: $(grep -o '"latency".*' $R/copy_baseline.json)"
copy traced KVFLOW_TRACE_CALLS=1; save
if [ "$(left)" -gt 200 ]; then
  t0=$(date +%s); (cd $S/tree && timeout 130 vitest run test/device test/pipeline test/reference) > $R/tests.log 2>&1
  echo "tests rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "Test Files|Tests " $R/tests.log | tail -2; grep -E "FAIL|×" $R/tests.log | head -20
fi
save
for round in 1 2; do
  for every in 1 0; do
    [ "$(left)" -lt 40 ] && break 2
    ph every$every-$round KVFLOW_POLL_EVERY=$every
  done
  save
done
[ "$(left)" -gt 40 ] && ph traced KVFLOW_TRACE_CALLS=1 && save
for round in 1 2; do
  for p in 0 1000; do
    [ "$(left)" -lt 30 ] && break 2
    copy p$p-$round KVFLOW_POLL_PAUSE_NS=$p
  done
  save
done
save
