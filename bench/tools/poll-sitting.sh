#!/usr/bin/env bash
# The poller sitting, one device call of about seven minutes, on the B
# build laid out in build-bench/sit5 (bench/tools/lay-out-verify.sh A B; any
# build with the per-stream poller, on main since 9006d01, and its
# KVFLOW_POLL_EVERY switch), most telling first:
#   1. copy_baseline --quick (with its polled round trips: a second thread
#      querying the event back to back or paced, and one that only spins);
#   2. a quick bench/copy with KVFLOW_TRACE_CALLS=1: the record and copy
#      calls' host time step by step;
#   3. test/device, test/pipeline and test/reference on CUDA;
#   4. bench/pipeline-host with the poller querying every entry
#      (KVFLOW_POLL_EVERY=1, as before) and each stream's first pending one
#      (the default now), alternating twice, then once traced;
#   5. bench/copy --quick with the poller's rounds paced by
#      KVFLOW_POLL_PAUSE_NS 0 and 1000, alternating twice;
#   6. the PyTorch peer, then bench/prefill for Llama-3-8B 4k at 90% and 95%
#      cached (DRAM, 5 samples) and bench/prefill-fixed, while time is left.
# Run from the repo root with carry [".device", "build-bench/sit5"]; TOTAL (s,
# default 420) bounds it. Outputs come back as $OUT/poll.tgz.
set -u
source "$(dirname "$0")/sitting-env.sh" poll-sitting.sh /tmp/poll 420
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
# bench/copy reads the baseline: without one, no copy run can report.
if [ -s $R/copy_baseline.json ]; then copy traced KVFLOW_TRACE_CALLS=1; else echo "no copy_baseline: the copy runs are skipped"; fi
save
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
if [ "$(left)" -gt 40 ]; then ph traced KVFLOW_TRACE_CALLS=1; save; fi
for round in 1 2; do
  for p in 0 1000; do
    [ "$(left)" -lt 120 ] && break 2
    [ -s $R/copy_baseline.json ] && copy p$p-$round KVFLOW_POLL_PAUSE_NS=$p
  done
  save
done
if [ "$(left)" -gt 90 ]; then
  t0=$(date +%s); timeout 40 python3 $S/tree/bench/peers/torch_prefill.py --model llama-3-8b --tokens 4096 --hits 0.9,0.95 --samples 5 > $R/peer.json 2> $R/peer.err; echo "peer rc=$? in $(( $(date +%s) - t0 ))s"
  timeout $(( $(left) - 35 )) node $S/tree/dist/bench/prefill.js --backend cuda --peer $R/peer.json --dir /tmp/kvp --json $R/prefill.json \
    --model llama-3-8b --tokens 4096 --hits 0.9,0.95 --tiers dram --samples 5 > $R/prefill.log 2>&1
  echo "prefill rc=$?"; rm -rf /tmp/kvp; grep -E "^4096 9.pct (dram|recompute)" $R/prefill.log | cut -c1-200
  save
fi
if [ "$(left)" -gt 25 ]; then
  timeout 20 node $S/tree/dist/bench/prefill-fixed.js --backend cuda --reps 300 --json $R/fixed.json > $R/fixed.log 2>&1
  echo "prefill-fixed rc=$?"; grep -E "Us " $R/fixed.log
fi
save
