#!/usr/bin/env bash
# The poller-pacing sitting, one device call of about six minutes, on the
# commit laid out in build-bench/sit5 (bench/tools/lay-out-verify.sh HEAD
# HEAD): copy_baseline (with its polled round trips: a second thread querying
# the event back to back or paced), bench/copy --quick with the poller's
# query rounds paced by KVFLOW_POLL_PAUSE_NS 0, 1000 and 3000, alternating
# over two rounds, a quick bench/copy with KVFLOW_TRACE_CALLS=1 (the record
# and copy calls' steps) at 0 and 1000, bench/pipeline-host with 0 and 1000,
# then test/device and
# test/reference on CUDA. Run from the repo root with carry [".device",
# "build-bench/sit5"]; TOTAL (s, default 400) bounds it. Outputs come back
# as $OUT/poll.tgz.
set -u
source "$(dirname "$0")/sitting-env.sh" poll-sitting.sh /tmp/poll 400
mkdir -p $S/addon-b
xz -dc $S/addon-b.node.xz > $S/addon-b/kvflow.node
export KVFLOW_ADDON=$S/addon-b/kvflow.node
export KVFLOW_COMMIT=$(cat $S/commit)
ln -sfn ../../../node_modules $S/tree/node_modules
save() { tar czf $OUT/poll.tgz -C $R . ; }
timeout 60 $S/copy_baseline > $R/copy_baseline.json 2> $R/copy_baseline.err
echo "copy_baseline rc=$?: $(grep -o '"latency".*' $R/copy_baseline.json)"
save
for round in 1 2; do
  for p in 0 1000 3000; do
    [ "$(left)" -lt 200 ] && break 2
    t0=$(date +%s)
    KVFLOW_POLL_PAUSE_NS=$p timeout 40 node $S/tree/dist/bench/copy.js --backend cuda --quick --baseline $R/copy_baseline.json --json $R/copy-p$p-$round.json > $R/copy-p$p-$round.log 2>&1
    echo "copy pause $p round $round rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "64KiB" $R/copy-p$p-$round.log | tail -5
  done
  save
done
# where the record and copy calls' host time goes, step by step (KVFLOW_TRACE_CALLS)
for p in 0 1000; do
  [ "$(left)" -lt 170 ] && break
  KVFLOW_TRACE_CALLS=1 KVFLOW_POLL_PAUSE_NS=$p timeout 40 node $S/tree/dist/bench/copy.js --backend cuda --quick --baseline $R/copy_baseline.json --json $R/copy-trace-p$p.json > $R/copy-trace-p$p.log 2>&1
  echo "copy traced pause $p rc=$?"; grep -E "latency|kvflow trace" $R/copy-trace-p$p.log
done
save
for p in 0 1000; do
  [ "$(left)" -lt 150 ] && break
  KVFLOW_POLL_PAUSE_NS=$p timeout 40 node $S/tree/dist/bench/pipeline-host.js --backend cuda --reps 100 --json $R/ph-p$p.json > $R/ph-p$p.log 2>&1
  echo "pipeline-host pause $p rc=$?"; grep -E "_device" $R/ph-p$p.log
done
save
if [ "$(left)" -gt 60 ]; then
  t0=$(date +%s); (cd $S/tree && timeout $(( $(left) - 10 )) vitest run test/device test/reference) > $R/tests.log 2>&1
  echo "tests rc=$? in $(( $(date +%s) - t0 ))s"; grep -E "Test Files|Tests " $R/tests.log | tail -2; grep -E "FAIL|×" $R/tests.log | head -20
fi
save
